"""Threading report: the MLP training step, fastbp vs the same algorithm in plain numpy.

Each configuration runs in a fresh process (the numba threading layer and the
OpenMP wait policy are fixed at load time); inside it, the fastbp step and the
numpy step are interleaved and their medians compared.

    python benchmarks/threading_report.py            # all configurations
    python benchmarks/threading_report.py --quick    # fewer rounds

MLP 784-512-256-10, float32, SGD, batch 32/256/1024.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CONFIGS = [
    ("fastbp default (serial kernels below 4M elements, threaded BLAS)", {}),
    ("every kernel parallel, OpenMP workers sleep (fastbp's layer setup)", {"FASTBP_PARALLEL_MIN_WORK": "0"}),
    # An empty value keeps fastbp from asking for PASSIVE, and GNU OpenMP then
    # falls back to its default policy (it prints "Invalid value" once).
    (
        "every kernel parallel, GNU OpenMP's default wait policy",
        {"FASTBP_PARALLEL_MIN_WORK": "0", "OMP_WAIT_POLICY": ""},
    ),
    ("one thread for numba and BLAS (fastbp.set_num_threads(1))", {"FASTBP_REPORT_THREADS": "1"}),
]
BATCHES = (32, 256, 1024)


def child(rounds: int, optimizer: str) -> dict:
    import fastbp
    from fastbp.bench import FastbpStep, NumpyMLP, interleaved, make_problem

    if os.environ.get("FASTBP_REPORT_THREADS"):
        fastbp.set_num_threads(int(os.environ["FASTBP_REPORT_THREADS"]))
    out = {}
    for batch in BATCHES:
        model, x, y = make_problem(batch=batch)
        fb, npy = FastbpStep(model, x, y, optimizer), NumpyMLP(model, x, y, optimizer)
        r = interleaved({"fastbp": fb.step, "numpy": npy.step}, rounds=max(5, rounds * 32 // batch))
        out[batch] = r
    out["info"] = fastbp.threading_info()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    rounds = 60 if args.quick else 300
    if args.child:
        print(json.dumps(child(rounds, args.optimizer)))
        return 0
    results = []
    print(
        f"MLP 784-512-256-10 float32 {args.optimizer.upper()} step, median ms (fastbp/numpy ratio), "
        f"{os.cpu_count()} cores"
    )
    print(f"{'configuration':70s} " + " ".join(f"{'batch ' + str(b):>22s}" for b in BATCHES))
    for name, env in CONFIGS:
        e = {k: val for k, val in os.environ.items() if k not in ("OMP_WAIT_POLICY", "FASTBP_PARALLEL_MIN_WORK")}
        e.update(env)
        cmd = [sys.executable, __file__, "--child", "--optimizer", args.optimizer] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, env=e, capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        cells = []
        for b in BATCHES:
            f, n = r[str(b)]["fastbp"] * 1e3, r[str(b)]["numpy"] * 1e3
            cells.append(f"{f:6.2f} vs {n:6.2f} ({f / n:4.2f})")
        print(f"{name:70s} " + " ".join(f"{c:>22s}" for c in cells))
        results.append({"configuration": name, "env": env, "results": r})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
