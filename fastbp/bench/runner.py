"""Run step benchmarks in worker processes that take turns, and collect medians and spreads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from .timing import MAX_REL_IQR, rel_iqr, settle

# Which worker process runs which implementation: torch alone (its spinning
# OpenMP workers would slow the others); the rest share one, steps interleaved.
FAMILY = {"fastbp": "main", "numpy": "main", "floor": "main", "torch": "torch"}
# Inference latency: every runtime in a process of its own (ONNX Runtime's and torch's
# thread pools spin after each call, and no runtime should warm another's caches).
PREDICT_FAMILY = {impl: impl for impl in ("fastbp", "numpy", "floor", "torch", "onnxruntime")}


def family(cfg: dict, impl: str) -> str:
    """The worker process that runs ``impl`` for ``cfg``."""
    return PREDICT_FAMILY[impl] if cfg.get("task") == "predict" else FAMILY[impl]


class Worker:
    def __init__(self, threads: int | None = None):
        cmd = [sys.executable, "-m", "fastbp.bench.worker"] + (["--threads", str(threads)] if threads else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ)
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both are pipes
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout

    def run(self, spec: dict) -> dict:
        self.stdin.write(json.dumps(spec) + "\n")
        self.stdin.flush()
        line = self.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker exited (status {self.proc.poll()}) on {spec}")
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.stdin.close()
            self.proc.wait(timeout=30)


def torch_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None
    except ImportError:  # pragma: no cover
        return False


def measure(
    configs,
    impls,
    *,
    rounds=10,
    block=None,
    threads=None,
    progress=None,
    handover=0.25,
    reruns=2,
    max_rel_iqr=MAX_REL_IQR,
):
    """Median seconds per step for each (config, impl), with the spread and a stability verdict.

    ``configs``: dicts with sizes, batch, optimizer, dtype. For each config the
    implementations take turns ``rounds`` times, ``block`` steps per turn (by
    default 2000 samples' worth), each family in its own process; ``handover``
    seconds pass whenever the turn moves to another process. The order of the
    turns rotates every round, so no side always runs first after a pause or
    right after the same neighbour. A config whose per-step times of some side
    spread too widely is measured again, up to ``reruns`` times
    (:func:`fastbp.bench.timing.settle`). ``progress(cfg)`` is called after
    each config, ``progress(cfg, rerun={impl: rel_iqr})`` before each rerun.

    Returns a list of dicts: config, impl, median, iqr, rel_iqr, steps,
    warmup, attempts, and unstable (whether that impl's spread was still above
    ``max_rel_iqr``).
    """
    workers = {}
    results = []

    def run_turn(cfg, impl, steps, last):
        fam = family(cfg, impl)
        if fam not in workers:
            workers[fam] = Worker(threads)
        if last is not None and fam != last and handover:
            # OpenBLAS and OpenMP threads keep spinning for a while after their last call;
            # let the previous process's threads go idle before the next one's turn.
            time.sleep(handover)
        return fam, workers[fam].run(dict(cfg, impl=impl, steps=steps))

    try:
        for cfg in configs:
            warm = {}
            steps = block or max(3, int(2_000 // max(1, cfg["batch"])))  # a few ms of work per turn

            def attempt(cfg=cfg, steps=steps, warm=warm):
                per_impl = {i: [] for i in impls}
                last = None
                for r in range(rounds):
                    for impl in impls[r % len(impls) :] + impls[: r % len(impls)]:
                        last, ans = run_turn(cfg, impl, steps, last)
                        per_impl[impl] += ans["times"]
                        if ans["warmup"] is not None:
                            warm[impl] = ans["warmup"]
                return per_impl

            on_rerun = (lambda bad, cfg=cfg: progress(cfg, rerun=bad)) if progress else None
            times, attempts, bad = settle(attempt, reruns=reruns, max_rel_iqr=max_rel_iqr, on_rerun=on_rerun)
            for impl in impls:
                q1, med, q3 = np.percentile(times[impl], [25, 50, 75])
                results.append(
                    {
                        **cfg,
                        "impl": impl,
                        "median": float(med),
                        "iqr": float(q3 - q1),
                        "rel_iqr": rel_iqr(times[impl]),
                        "steps": len(times[impl]),
                        "warmup": warm.get(impl),
                        "attempts": attempts,
                        "unstable": impl in bad,
                    }
                )
            if progress:
                progress(cfg)
    finally:
        for w in workers.values():
            w.close()
    return results
