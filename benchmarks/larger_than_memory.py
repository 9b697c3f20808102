"""Memory and speed of fit's batch sources (fastbp/data.py, docs/data.md). Not a test: a report.

    python benchmarks/larger_than_memory.py            # everything (writes a 4 GB file in /tmp, then deletes it)
    python benchmarks/larger_than_memory.py --quick    # 1/10 of the sizes

Each measurement runs in a fresh process, so one's memory never shows in another's. Memory is
sampled every 5 ms by a thread reading /proc/self/status during the measured call: RssAnon
(the process's own memory; a memory-mapped file's page-cache pages are the kernel's to reclaim,
so they are not counted) and VmRSS. Reported:

1. memmap epoch: one epoch of a small model over a 4 GB float32 .npy file on disk, memory-mapped:
   the maximum RssAnon during the epoch (target: under 1 GB).
2. in-memory float32: one epoch over 500,000 x 784 float32 rows in memory: peak RSS (VmHWM) over
   the data's size (target: under 1.2x) and the extra anonymous memory of the epoch.
3. conversion: the extra anonymous memory (max during the call minus before it) of fit, predict,
   evaluate and the scikit-learn estimator (dtype="float32") on 500,000 x 784 float64 and
   Fortran-ordered input (a whole float32 copy would be 1.57 GB).
4. throughput: the same epochs from a memory-mapped file in the page cache and from memory,
   interleaved, medians of the repeats and their ratio (target: memmap within 1.3x).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

D, K = 784, 10
TMP = "/tmp"


def _status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


class Sampler:
    """The maximum RssAnon and VmRSS while the ``with`` block runs, sampled every ``every`` seconds."""

    def __init__(self, every: float = 0.005):
        self.every, self.max_anon, self.max_rss = every, 0, 0
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            s = _status()
            self.max_anon, self.max_rss = max(self.max_anon, s["RssAnon"]), max(self.max_rss, s["VmRSS"])
            self._stop.wait(self.every)

    def __enter__(self):
        self.before = _status()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        s = _status()
        self.max_anon, self.max_rss = max(self.max_anon, s["RssAnon"]), max(self.max_rss, s["VmRSS"])
        self.hwm = s["VmHWM"]


def _model():
    import fastbp

    return fastbp.Sequential(fastbp.Linear(D, 32, activation="relu", seed=0), fastbp.Linear(32, K, seed=1))


def _fit(X, y, epochs=1, batch_size=256):
    import fastbp

    model = _model()
    opt = fastbp.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    history = fastbp.fit(
        model,
        X,
        y,
        loss=fastbp.SoftmaxCrossEntropy(),
        optimizer=opt,
        epochs=epochs,
        batch_size=batch_size,
        progress=False,
        seed=0,
    )
    return model, time.perf_counter() - t0, history


def _warm():
    """Compile (or load) the kernels, so that no measurement includes it."""
    X = np.random.default_rng(0).standard_normal((512, D)).astype(np.float32)
    _fit(X, np.zeros(512, np.int64))


def _labels(n):
    return np.random.default_rng(1).integers(0, K, n)


def _x32(n):
    return np.random.default_rng(0).standard_normal((n, D), dtype=np.float32)


def _x64(n, order):
    if order == "C":
        return np.random.default_rng(0).standard_normal((n, D))
    X = np.empty((n, D), order="F")  # filled a column at a time: never two copies at once
    rng = np.random.default_rng(0)
    for j in range(D):
        X[:, j] = rng.standard_normal(n)
    return X


def _write_npy(path, n, chunk=65536):
    """A float32 (n, D) .npy file written a chunk at a time (never the whole array in memory)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, D))
    rng = np.random.default_rng(0)
    for s in range(0, n, chunk):
        out[s : s + chunk] = rng.standard_normal((min(chunk, n - s), D), dtype=np.float32)
    out.flush()
    del out


# -- the cases, each run in its own process ------------------------------------------------------


def case_memmap_epoch(path, n):
    _warm()
    y = _labels(n)
    with Sampler() as s:
        _, seconds, history = _fit(path, y)
    return {
        "rows": n,
        "file_bytes": os.path.getsize(path),
        "max_rss_anon": s.max_anon,
        "max_rss": s.max_rss,
        "rss_anon_before": s.before["RssAnon"],
        "seconds": seconds,
        "samples_per_sec": n / seconds,
    }


def case_in_memory(n):
    _warm()
    X, y = _x32(n), _labels(n)
    with Sampler() as s:
        _fit(X, y)
    return {
        "rows": n,
        "data_bytes": X.nbytes,
        "peak_rss": s.hwm,
        "peak_rss_over_data": s.hwm / X.nbytes,
        "extra_anon": s.max_anon - s.before["RssAnon"],
    }


def case_convert(n, order, op):
    import fastbp
    from fastbp.training import evaluate, predict

    _warm()
    X, y = _x64(n, order), _labels(n)
    loss = fastbp.SoftmaxCrossEntropy()
    if op in ("predict", "evaluate"):
        model = _fit(X[:1024], y[:1024])[0]
    if op == "estimator":
        from fastbp.sklearn import MLPClassifier

        est = MLPClassifier(hidden_layer_sizes=(32,), max_iter=1, random_state=0, dtype="float32")
        est.fit(X[:2000], y[:2000])  # compiles; sklearn imported
    with Sampler() as s:
        if op == "fit":
            _fit(X, y)
        elif op == "predict":
            predict(model, X)
        elif op == "evaluate":
            evaluate(model, X, y, loss=loss)
        else:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.fit(X, y)
            est.predict_proba(X)
    return {"rows": n, "order": order, "op": op, "data_bytes": X.nbytes, "extra_anon": s.max_anon - s.before["RssAnon"]}


def case_throughput(path, n, repeats):
    _warm()
    y = _labels(n)
    X_mem = np.load(path)  # in memory
    X_map = np.load(path, mmap_mode="r")
    _fit(X_map, y)  # reads the file: into the page cache
    mem, mapped = [], []
    for _ in range(repeats):  # interleaved: drifting load on a shared machine affects both alike
        mem.append(n / _fit(X_mem, y)[1])
        mapped.append(n / _fit(X_map, y)[1])
    m, p = statistics.median(mem), statistics.median(mapped)
    return {
        "rows": n,
        "repeats": repeats,
        "in_memory": m,
        "memmap": p,
        "slowdown": m / p,
        "all_in_memory": mem,
        "all_memmap": mapped,
    }


def _child(args) -> None:
    fn = globals()["case_" + args.case]
    print(json.dumps(fn(*json.loads(args.args))))


def _run(case, *args) -> dict:
    cmd = [sys.executable, __file__, "--case", case, "--args", json.dumps(args)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gb(b) -> str:
    return f"{b / 1e9:.2f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--args", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return _child(args)
    scale = 10 if args.quick else 1
    big_rows = (4 * 1000**3 // (D * 4) + 1) // scale  # a 4 GB float32 file
    rows = 500_000 // scale
    results: dict = {}

    big = os.path.join(TMP, f"fastbp_larger_than_memory_{os.getpid()}.npy")
    try:
        _write_npy(big, big_rows)
        r = results["memmap_epoch"] = _run("memmap_epoch", big, big_rows)
        print(
            f"1. memmap epoch: {r['rows']:,} rows ({_gb(r['file_bytes'])} file), max RssAnon {_gb(r['max_rss_anon'])} "
            f"(before {_gb(r['rss_anon_before'])}), max VmRSS {_gb(r['max_rss'])}, {r['seconds']:.1f} s, "
            f"{r['samples_per_sec']:,.0f} samples/s",
            flush=True,
        )
    finally:
        if os.path.exists(big):
            os.remove(big)

    r = results["in_memory"] = _run("in_memory", rows)
    print(
        f"2. in-memory float32: {r['rows']:,} x {D} ({_gb(r['data_bytes'])}): peak RSS {_gb(r['peak_rss'])} = "
        f"{r['peak_rss_over_data']:.2f}x the data; epoch's extra RssAnon {_gb(r['extra_anon'])}",
        flush=True,
    )

    print(
        f"3. extra RssAnon with float64 input into a float32 model ({rows:,} x {D}; a float32 copy is "
        f"{_gb(rows * D * 4)}):",
        flush=True,
    )
    results["convert"] = []
    for order in ("C", "F"):
        for op in ("fit", "predict", "evaluate", "estimator"):
            r = _run("convert", rows, order, op)
            results["convert"].append(r)
            print(f"   {op:9s} float64 {order}-order: {_gb(r['extra_anon'])}", flush=True)

    path = os.path.join(TMP, f"fastbp_throughput_{os.getpid()}.npy")
    try:
        _write_npy(path, rows)
        r = results["throughput"] = _run("throughput", path, rows, args.repeats)
        print(
            f"4. throughput ({r['rows']:,} rows, median of {r['repeats']} interleaved epochs): in memory "
            f"{r['in_memory']:,.0f}, memmap (page cache) {r['memmap']:,.0f} samples/s: in-memory/memmap "
            f"{r['slowdown']:.2f}x",
            flush=True,
        )
    finally:
        if os.path.exists(path):
            os.remove(path)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
