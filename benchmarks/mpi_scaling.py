"""MPI scaling on this machine, measured, and the cost model's projection for clusters (docs/scaling.md).

    python benchmarks/mpi_scaling.py                                  # writes docs/bench/mpi_scaling.json
    python benchmarks/mpi_scaling.py --out /tmp/s.json --reps 3       # fewer repetitions

(a) all-reduce seconds per call against parameter count: float32 buffers of 1 .. 3e7
    elements (the two MLPs' exact counts among them), 2 ranks, ``MPI.IN_PLACE``
    ``Allreduce``, interleaved rounds, medians; latency + bytes/bandwidth fitted to it.
(b) samples/s of training the 784-512-256-10 MLP (float32, SGD): 1 rank x 2 threads at
    batch 256 against 2 ranks x 1 thread at 256 per rank (global 512) and at 128 per rank
    (global 256), plus the 1-thread single-rank rates the cost model takes as compute.
    2-rank points run ``fastbp.fit(..., comm=comm)`` when fit has ``comm``; a hand-written
    data-parallel step (forward/backward, pack, ``Allreduce``, unpack, update) runs too,
    timing each part. Each configuration is a fresh process with its thread count set by
    environment and checked from inside (threadpoolctl, numba, fastbp); configurations
    are interleaved over repetitions and medians reported.
(c) the cost model's projection for 8, 32 and 128 nodes (fastbp.bench.scaling), with the
    compute time per step measured here, and its check against the 2-rank point of (b).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from fastbp.bench.timing import rel_iqr

SMALL = (784, 512, 256, 10)
LARGE = (1024, 2048, 2048, 10)
THREAD_ENV = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
NODES = (8, 32, 128)
GBITS = (10, 25)
LATENCIES = (5e-6, 50e-6)  # alpha assumed: 5 us (tuned stack, quiet network) to 50 us (ordinary kernel TCP)


# -- workers (run inside mpiexec or a plain subprocess) -------------------------------------------


def _comm():
    """MPI.COMM_WORLD when launched by mpiexec with more than one rank, else None (MPI not imported)."""
    if int(os.environ.get("PMI_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))) < 2:
        return None
    from mpi4py import MPI

    return MPI.COMM_WORLD


def _thread_check(n_threads: int) -> dict:
    """Set fastbp's threads to ``n_threads`` and report what numba, fastbp and every thread pool use."""
    import numba
    from threadpoolctl import threadpool_info

    import fastbp

    fastbp.set_num_threads(n_threads)
    pools = [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads")} for p in threadpool_info()]
    info = {
        "numba_config_threads": int(numba.config.NUMBA_NUM_THREADS),
        "numba_threads": int(numba.get_num_threads()),
        "fastbp_threads": fastbp.get_num_threads(),
        "pools": pools,
    }
    wrong = [p for p in pools if p["num_threads"] != n_threads]
    if wrong or info["numba_threads"] != n_threads or info["fastbp_threads"] != n_threads:
        raise RuntimeError(f"expected {n_threads} threads everywhere, got {info}")
    return info


def worker_allreduce(args) -> dict:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    sizes = [int(s) for s in args.sizes.split(",")]
    buf = np.zeros(max(sizes), np.float32)  # zeros: the sum stays finite however often it runs
    # Each call's time is short for small buffers: time a batch of calls and divide.
    inner = {n: int(min(1000, max(1, 2e6 // max(n, 1)))) for n in sizes}
    times: dict[int, list[float]] = {n: [] for n in sizes}
    for r in range(args.rounds + 2):  # two warm-up rounds (page faults, shared-memory setup)
        for n in sizes:
            view = buf[:n]
            comm.Barrier()
            t0 = time.perf_counter()
            for _ in range(inner[n]):
                comm.Allreduce(MPI.IN_PLACE, view, op=MPI.SUM)
            dt = (time.perf_counter() - t0) / inner[n]
            dt = comm.allreduce(dt, op=MPI.MAX)  # the slower rank decides when the step can go on
            if r >= 2:
                times[n].append(dt)
    return {"ranks": comm.size, "median_s": {n: float(np.median(t)) for n, t in times.items()}, "inner": inner}


def _data(sizes, rows: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], rows)
    return X, y


def worker_train(args) -> dict:
    """Train ``args.steps`` steps per epoch for ``args.epochs`` epochs; wall-clock samples/s over all ranks."""
    threads = _thread_check(args.threads)
    import fastbp
    from fastbp.bench import make_problem

    comm = _comm()
    ranks, rank = (1, 0) if comm is None else (comm.size, comm.rank)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    model, _, _ = make_problem(sizes, batch=args.batch)  # same seed: every rank starts from the same weights
    X, y = _data(sizes, args.batch * args.steps, seed=1 + rank)  # each rank its own shard
    opt = fastbp.SGD(model.parameters(), lr=0.01)
    loss = fastbp.SoftmaxCrossEntropy()
    if args.mode == "manual":
        return {"threads": threads, "ranks": ranks, **_manual(model, loss, opt, X, y, args, comm)}
    kw = dict(loss=loss, optimizer=opt, batch_size=args.batch, progress=False, seed=0)
    if comm is not None:
        kw["comm"] = comm
    fastbp.fit(model, X, y, epochs=1, **kw)  # warm-up: compilation, first touches
    if comm is not None:
        comm.Barrier()
    t0 = time.perf_counter()
    hist = fastbp.fit(model, X, y, epochs=args.epochs, **kw)
    if comm is not None:
        comm.Barrier()
    wall = time.perf_counter() - t0
    rows = ranks * X.shape[0] * args.epochs
    from threadpoolctl import threadpool_info

    # Pools loaded during training (numba's OpenMP layer, if a kernel ran in parallel) are checked too.
    threads["pools_after"] = [
        {k: p.get(k) for k in ("user_api", "internal_api", "num_threads")} for p in threadpool_info()
    ]
    if any(p["num_threads"] != args.threads for p in threads["pools_after"]):
        raise RuntimeError(f"expected {args.threads} threads in every pool after training, got {threads}")
    return {
        "threads": threads,
        "ranks": ranks,
        "samples_per_sec": rows / wall,
        "step_s": wall / (args.epochs * args.steps),
        "history_samples_per_sec": [float(s) for s in hist.samples_per_sec],
    }


def _manual(model, loss, opt, X, y, args, comm) -> dict:
    """The data-parallel step written out, each part timed: compute, pack/unpack, all-reduce."""
    from fastbp.loop import Batches, count_correct, forward_loss

    # What fit's step does besides the all-reduce (gather a shuffled batch, count hits), so the
    # two time the same work; the "1x1 b256 manual" configuration checks that against fit.
    batches, order = Batches(X, y), np.random.default_rng(0).permutation(X.shape[0])
    params = model.parameters()
    flat = np.empty(sum(p.grad.size for p in params), np.float32)
    ranks = 1 if comm is None else comm.size
    if comm is not None:
        from mpi4py import MPI
    parts: dict[str, list[float]] = {"compute": [], "pack": [], "allreduce": [], "step": []}
    b, n_steps = args.batch, args.steps
    total = args.epochs * n_steps
    warm = n_steps  # one epoch of warm-up, as fit's
    for s in range(warm + total):
        start = (s % n_steps) * b
        t0 = time.perf_counter()
        xb, yb = batches.gather(order[start : start + b])
        out, _ = forward_loss(model, loss, xb, yb)
        count_correct(out, yb, loss)
        model.backward(loss.backward(), input_grad=False)
        t1 = time.perf_counter()
        off = 0
        for p in params:
            flat[off : off + p.grad.size] = p.grad.reshape(-1)
            off += p.grad.size
        t2 = time.perf_counter()
        if comm is not None:
            comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        t3 = time.perf_counter()
        flat *= np.float32(1.0 / ranks)
        off = 0
        for p in params:
            p.grad.reshape(-1)[:] = flat[off : off + p.grad.size]
            off += p.grad.size
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()
        if s >= warm:
            parts["compute"].append((t1 - t0) + (t5 - t4))
            parts["pack"].append((t2 - t1) + (t4 - t3))
            parts["allreduce"].append(t3 - t2)
            parts["step"].append(t5 - t0)
    med = {k: float(np.median(v)) for k, v in parts.items()}
    return {"median_s": med, "samples_per_sec": ranks * b / med["step"]}


# -- the driver ----------------------------------------------------------------------------------


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _busy_seconds() -> float:
    """CPU seconds every process on the machine has used since boot (/proc/stat; NaN where there is none)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # user .. steal (guest is inside user)
    except (OSError, ValueError):
        return float("nan")
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def _own_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # includes mpiexec's ranks: it waits for them
    return r.ru_utime + r.ru_stime


# A run during which other processes used more than this fraction of the machine is run again
# (at most --retries times): a second thread, or a second rank, then shares its core.
MAX_FOREIGN_CPU = 0.05


def _run(cmd_args: list[str], ranks: int, threads: int) -> dict:
    """Run one worker (under mpiexec for ranks > 1) with ``threads`` set in its environment; its result dict.

    Adds ``load_before`` (the 1, 5, 15 minute load averages) and ``foreign_cpu``: the
    fraction of all cores that processes other than this run used while it ran.
    """
    env = dict(os.environ)
    env.update({k: str(threads) for k in THREAD_ENV})
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        cmd = [sys.executable, os.path.abspath(__file__), *cmd_args, "--result", result]
        if ranks > 1:
            cmd = ["mpiexec", "-n", str(ranks), *cmd]
        load_before = _load()
        busy0, own0, t0 = _busy_seconds(), _own_seconds(), time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        busy1, own1, wall = _busy_seconds(), _own_seconds(), time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        with open(result) as f:
            out = json.load(f)
    foreign = ((busy1 - busy0) - (own1 - own0)) / (wall * (os.cpu_count() or 1))
    out["load_before"], out["foreign_cpu"] = load_before, round(max(foreign, 0.0), 3)
    return out


def _quiet_run(cmd_args, ranks, threads, retries: int) -> dict:
    """:func:`_run`, again after a pause while other processes used the machine; the least disturbed attempt.

    Adds ``attempts`` (the other processes' CPU share during each attempt).
    """
    tries = []
    for attempt in range(1 + retries):
        if attempt:
            time.sleep(5)
        tries.append(_run(cmd_args, ranks, threads))
        if not tries[-1]["foreign_cpu"] > MAX_FOREIGN_CPU:
            break
    best = min(tries, key=lambda o: o["foreign_cpu"])
    best["attempts"] = [o["foreign_cpu"] for o in tries]
    return best


def fit_has_comm() -> bool:
    import fastbp

    return "comm" in inspect.signature(fastbp.fit).parameters


def measure_allreduce(rounds: int, retries: int) -> dict:
    from fastbp.bench.scaling import FLOAT32_BYTES, fit_latency_bandwidth, mlp_parameter_count

    grid = [int(round(x)) for x in np.geomspace(1e4, 3e7, 12)]
    sizes = sorted({1, 100, 1000, mlp_parameter_count(SMALL), mlp_parameter_count(LARGE), *grid})
    out = _quiet_run(
        ["--worker", "allreduce", "--sizes", ",".join(map(str, sizes)), "--rounds", str(rounds)], 2, 1, retries
    )
    med = {int(n): t for n, t in out["median_s"].items()}
    n = np.array(sorted(med))
    t = np.array([med[k] for k in n])
    # The fit over 1e4 .. 3e7 elements (the sizes models have); tiny buffers measure the latency alone.
    big = n >= 1e4
    model = fit_latency_bandwidth(n[big] * FLOAT32_BYTES, t[big], n_nodes=2)
    out.update(median_s={int(k): float(v) for k, v in zip(n, t)}, fit=model, fit_range_elements=[int(n[big][0]), 3e7])
    print(
        f"\n(a) all-reduce, 2 ranks, float32, MPI.IN_PLACE (load {out['load_before']}, "
        f"other processes' CPU {out['foreign_cpu']:.0%}, attempts {len(out['attempts'])})"
    )
    print(f"{'elements':>10} {'MB':>8} {'median':>11} {'fit':>11} {'GB/s':>7}")
    for k, v in zip(n, t):
        pred = model["intercept"] + model["seconds_per_byte"] * k * FLOAT32_BYTES
        print(f"{k:10d} {k * 4 / 1e6:8.3f} {v * 1e6:9.1f}us {pred * 1e6:9.1f}us {k * 4 / v / 1e9:7.2f}")
    print(
        f"fit over >= 1e4 elements: latency alpha = {model['latency'] * 1e6:.2f} us "
        f"(intercept 2*alpha = {model['intercept'] * 1e6:.2f} us), bandwidth B = {model['bandwidth'] / 1e9:.2f} GB/s, "
        f"max relative residual {model['max_rel_residual']:.2f}"
    )
    return out


def _train_configs(with_comm: bool) -> dict:
    s = ",".join(map(str, SMALL))
    big = ",".join(map(str, LARGE))
    two_rank_mode = "fit" if with_comm else "manual"
    cfg = {
        "1x2 b256": (1, 2, ["--sizes", s, "--batch", "256", "--mode", "fit"]),
        "1x1 b256": (1, 1, ["--sizes", s, "--batch", "256", "--mode", "fit"]),
        "1x1 b128": (1, 1, ["--sizes", s, "--batch", "128", "--mode", "fit"]),
        "2x1 b256": (2, 1, ["--sizes", s, "--batch", "256", "--mode", two_rank_mode]),
        "2x1 b128": (2, 1, ["--sizes", s, "--batch", "128", "--mode", two_rank_mode]),
        "large 1x2 b256": (1, 2, ["--sizes", big, "--batch", "256", "--mode", "fit", "--steps", "8", "--epochs", "3"]),
    }
    cfg["1x1 b256 manual"] = (1, 1, ["--sizes", s, "--batch", "256", "--mode", "manual"])
    if with_comm:  # the written-out step as well, for its breakdown
        cfg["2x1 b256 manual"] = (2, 1, ["--sizes", s, "--batch", "256", "--mode", "manual"])
        cfg["2x1 b128 manual"] = (2, 1, ["--sizes", s, "--batch", "128", "--mode", "manual"])
    return cfg


def summarize(outs: list[dict]) -> dict:
    """Medians of one configuration's runs: over the undisturbed ones when there are at least two.

    Two ranks on two cores wait for each other every step, so another process taking a
    core for part of a run halves its rate; such runs are kept in the record but would
    decide a median of five.
    """
    quiet = [o for o in outs if not o["foreign_cpu"] > MAX_FOREIGN_CPU]
    used = quiet if len(quiet) >= 2 else outs
    rates = [o["samples_per_sec"] for o in used]
    entry = {
        "median_samples_per_sec": float(np.median(rates)),
        "median_over": "undisturbed runs" if used is quiet else "all runs (fewer than 2 undisturbed)",
        "rel_iqr": rel_iqr(rates),
        "samples_per_sec": [o["samples_per_sec"] for o in outs],
        "median_all_runs": float(np.median([o["samples_per_sec"] for o in outs])),
        "loads": [o["load_before"] for o in outs],
        "foreign_cpu": [o["foreign_cpu"] for o in outs],
        "contended_runs": len(outs) - len(quiet),
        "threads_seen": outs[0]["threads"],
    }
    if "median_s" in outs[0]:
        entry["median_parts_s"] = {k: float(np.median([o["median_s"][k] for o in used])) for k in outs[0]["median_s"]}
    return entry


def measure_training(reps: int, with_comm: bool, retries: int) -> dict:
    configs = _train_configs(with_comm)
    runs: dict[str, list[dict]] = {k: [] for k in configs}
    for r in range(reps):  # interleaved: every configuration once per repetition
        for name, (ranks, threads, extra) in configs.items():
            out = _quiet_run(["--worker", "train", "--threads", str(threads), *extra], ranks, threads, retries)
            runs[name].append(out)
            print(
                f"  rep {r + 1} {name:16s} {out['samples_per_sec']:9.0f} samples/s  load {out['load_before']}  "
                f"other CPU {out['foreign_cpu']:4.0%}  attempts {len(out['attempts'])}"
            )
    summary = {name: summarize(outs) for name, outs in runs.items()}
    for name, entry in summary.items():
        if "median_parts_s" in entry:
            parts = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in entry["median_parts_s"].items())
            print(f"  {name} per step (median of medians): {parts}")
    return summary


def _rate(train, name):
    return train[name]["median_samples_per_sec"]


def check_and_project(allreduce: dict, train: dict) -> dict:
    from fastbp.bench import scaling as S

    fit = allreduce["fit"]
    nb_small = S.mlp_parameter_count(SMALL) * S.FLOAT32_BYTES
    two = "2x1 b{}"
    check = {}
    print("\n(c) the model's 2-rank prediction here (compute: 1 rank x 1 thread; all-reduce: fit of (a))")
    for b in (256, 128):
        compute = b / _rate(train, f"1x1 b{b}")
        measured_ar = allreduce["median_s"][S.mlp_parameter_count(SMALL)]
        pred_fit = S.samples_per_sec(2, b, S.step_seconds(2, compute, nb_small, fit["bandwidth"], fit["latency"]))
        pred_meas = S.samples_per_sec(2, b, compute + measured_ar)
        got = _rate(train, two.format(b))
        check[b] = {
            "compute_s": compute,
            "allreduce_fit_s": S.ring_allreduce_seconds(2, nb_small, fit["bandwidth"], fit["latency"]),
            "allreduce_measured_s": measured_ar,
            "predicted_samples_per_sec": pred_fit,
            "predicted_with_measured_allreduce": pred_meas,
            "measured_samples_per_sec": got,
            "measured_over_predicted": got / pred_fit,
        }
        print(
            f"  2x1 b{b}: compute {compute * 1e3:.2f} ms + all-reduce {check[b]['allreduce_fit_s'] * 1e3:.2f} ms -> "
            f"predicted {pred_fit:.0f} samples/s (with the all-reduce measured at this size: {pred_meas:.0f}); "
            f"measured {got:.0f} ({got / pred_fit:.2f}x the prediction)"
        )
    ratios = {
        "2x1 b256 / 1x2 b256": _rate(train, "2x1 b256") / _rate(train, "1x2 b256"),
        "2x1 b128 / 1x2 b256": _rate(train, "2x1 b128") / _rate(train, "1x2 b256"),
        "1x2 b256 / 1x1 b256": _rate(train, "1x2 b256") / _rate(train, "1x1 b256"),
    }
    print("  ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))
    proj = {}
    print("\n(c) projection: batch 256 per node, compute per node = 1 rank x 2 threads here")
    for label, sizes, key in (("784-512-256-10", SMALL, "1x2 b256"), ("1024-2048-2048-10", LARGE, "large 1x2 b256")):
        n_params = S.mlp_parameter_count(sizes)
        compute = 256 / _rate(train, key)
        proj[label] = {"parameters": n_params, "bytes": n_params * S.FLOAT32_BYTES, "compute_s": compute, "rows": []}
        print(f"  {label}: {n_params} parameters, {n_params * 4 / 1e6:.2f} MB, compute {compute * 1e3:.1f} ms/step")
        print(f"    {'Gbit/s':>6} {'alpha us':>8} {'faster node':>11}" + "".join(f" {f'N={n}':>16}" for n in NODES))
        for gbit in GBITS:
            for alpha in LATENCIES:
                for faster in (1, 8):  # a server node computing 8x faster than this 2-core machine
                    rows = S.projection(
                        NODES,
                        compute_seconds=compute / faster,
                        batch=256,
                        nbytes=n_params * S.FLOAT32_BYTES,
                        bandwidth=S.gbit_to_bytes_per_sec(gbit),
                        latency=alpha,
                    )
                    proj[label]["rows"].append(
                        {"gbit": gbit, "latency_s": alpha, "compute_speedup": faster, "by_nodes": rows}
                    )
                    cells = "".join(f" {r['speedup']:7.1f}x ({r['efficiency']:4.0%})" for r in rows)
                    print(f"    {gbit:6d} {alpha * 1e6:8.0f} {faster:10d}x{cells}")
    return {"check_2_ranks": check, "ratios": ratios, "projection": proj}


def markdown(result: dict) -> str:
    """The tables docs/scaling.md quotes, from a result (as written to JSON)."""
    from fastbp.bench import scaling as S

    lines = ["| elements | MB | median | fit | GB/s |", "| ---: | ---: | ---: | ---: | ---: |"]
    fit = result["allreduce"]["fit"]
    for k, v in result["allreduce"]["median_s"].items():
        n = int(k)
        pred = fit["intercept"] + fit["seconds_per_byte"] * n * S.FLOAT32_BYTES
        lines.append(f"| {n:,} | {n * 4e-6:.3f} | {v * 1e6:,.1f} us | {pred * 1e6:,.1f} us | {n * 4 / v / 1e9:.2f} |")
    lines += [
        "",
        "| configuration | samples/s (median) | runs (* disturbed) | rel. IQR | runs disturbed |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for name, e in result["training"].items():
        runs = ", ".join(
            f"{r / 1e3:.1f}k" + ("*" if f > MAX_FOREIGN_CPU else "")
            for r, f in zip(e["samples_per_sec"], e["foreign_cpu"])
        )
        lines.append(
            f"| {name} | {e['median_samples_per_sec']:,.0f} | {runs} | {e['rel_iqr']:.2f} | {e['contended_runs']} |"
        )
    lines += ["", "| per rank | compute | all-reduce | predicted | measured | measured / predicted |"]
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for b, c in result["check_2_ranks"].items():
        lines.append(
            f"| {b} | {c['compute_s'] * 1e3:.2f} ms | {c['allreduce_fit_s'] * 1e3:.2f} ms "
            f"(measured {c['allreduce_measured_s'] * 1e3:.2f}) | {c['predicted_samples_per_sec']:,.0f} | "
            f"{c['measured_samples_per_sec']:,.0f} | {c['measured_over_predicted']:.2f} |"
        )
    for label, p in result["projection"].items():
        for faster in (1, 8):
            head = f"{label}, compute {p['compute_s'] / faster * 1e3:.1f} ms/step" + (
                "" if faster == 1 else f" (a node {faster}x faster than this one)"
            )
            lines += ["", head, "", "| Gbit/s | alpha | " + " | ".join(f"N = {n}" for n in NODES) + " |"]
            lines.append("| ---: | ---: | " + " | ".join("---:" for _ in NODES) + " |")
            for row in p["rows"]:
                if row["compute_speedup"] != faster:
                    continue
                cells = " | ".join(
                    f"{r['speedup']:.1f}x ({r['efficiency']:.0%}, all-reduce {r['allreduce_s'] * 1e3:.1f} ms)"
                    for r in row["by_nodes"]
                )
                lines.append(f"| {row['gbit']} | {row['latency_s'] * 1e6:.0f} us | {cells} |")
    return "\n".join(lines)


def _versions() -> dict:
    import mpi4py
    import numba

    import fastbp

    return {
        "fastbp": fastbp.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "mpi4py": mpi4py.__version__,
        "python": platform.python_version(),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/bench/mpi_scaling.json", help="where to write the results (JSON)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each training configuration")
    ap.add_argument("--rounds", type=int, default=30, help="rounds of the all-reduce sweep")
    ap.add_argument("--retries", type=int, default=2, help="re-runs of a run other processes disturbed")
    ap.add_argument("--worker", choices=["allreduce", "train"], help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=25, help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["fit", "manual"], default="fit", help=argparse.SUPPRESS)
    ap.add_argument("--markdown", metavar="JSON", help="print the tables of a saved result as markdown, and exit")
    args = ap.parse_args(argv)
    if args.markdown:
        with open(args.markdown) as f:
            print(markdown(json.load(f)))
        return
    if args.worker:
        out = worker_allreduce(args) if args.worker == "allreduce" else worker_train(args)
        comm = _comm()
        if comm is None or comm.rank == 0:
            with open(args.result, "w") as f:
                json.dump(out, f)
        return
    for name, value, low in (("--reps", args.reps, 1), ("--rounds", args.rounds, 1), ("--retries", args.retries, 0)):
        if value < low:
            ap.error(f"{name}: expected an int >= {low}, got {value}")
    started = time.time()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    with_comm = fit_has_comm()
    print(f"fastbp.fit has comm=: {with_comm}; {os.cpu_count()} CPUs; {uptime}")
    allreduce = measure_allreduce(args.rounds, args.retries)
    print(f"\n(b) training {'-'.join(map(str, SMALL))} float32 SGD, {args.reps} interleaved repetitions")
    train = measure_training(args.reps, with_comm, args.retries)
    derived = check_and_project(allreduce, train)
    result = {
        "command": "python benchmarks/mpi_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
        "cpu_count": os.cpu_count(),
        "uptime_start": uptime,
        "uptime_end": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "fit_has_comm": with_comm,
        "two_rank_mode": "fastbp.fit(comm=)" if with_comm else "hand-written data-parallel step (manual)",
        "versions": _versions(),
        "allreduce": allreduce,
        "training": train,
        **derived,
        "elapsed_s": round(time.time() - started, 1),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {args.out} ({result['elapsed_s']} s); its tables as markdown:\n")
    print(markdown(json.loads(json.dumps(result))))


if __name__ == "__main__":
    main()
