"""Run step benchmarks in worker processes that take turns, and collect medians."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

# Which worker process runs which implementation: torch alone (its spinning
# OpenMP workers would slow the others); the rest share one, steps interleaved.
FAMILY = {"fastbp": "main", "numpy": "main", "floor": "main", "torch": "torch"}


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


def measure(configs, impls, *, rounds=10, block=None, threads=None, progress=None, handover=0.25):
    """Median seconds per step for each (config, impl).

    ``configs``: dicts with sizes, batch, optimizer, dtype. For each config the
    implementations take turns ``rounds`` times, ``block`` steps per turn (by
    default 2000 samples' worth), each family in its own process; ``handover``
    seconds pass whenever the turn moves to another process.
    Returns a list of dicts: config, impl, median, warmup.
    """
    workers = {}
    results = []
    try:
        for cfg in configs:
            per_impl = {i: [] for i in impls}
            warm = {}
            steps = block or max(3, int(2_000 // max(1, cfg["batch"])))  # a few ms of work per turn
            last = None
            for _ in range(rounds):
                for impl in impls:
                    fam = FAMILY[impl]
                    if fam not in workers:
                        workers[fam] = Worker(threads)
                    if last is not None and fam != last and handover:
                        # OpenBLAS and OpenMP threads keep spinning for a while after their last call;
                        # let the previous process's threads go idle before the next one's turn.
                        time.sleep(handover)
                    last = fam
                    ans = workers[fam].run(dict(cfg, impl=impl, steps=steps))
                    per_impl[impl] += ans["times"]
                    if ans["warmup"] is not None:
                        warm[impl] = ans["warmup"]
            for impl in impls:
                results.append(
                    {
                        **cfg,
                        "impl": impl,
                        "median": float(np.median(per_impl[impl])),
                        "steps": len(per_impl[impl]),
                        "warmup": warm.get(impl),
                    }
                )
            if progress:
                progress(cfg)
    finally:
        for w in workers.values():
            w.close()
    return results
