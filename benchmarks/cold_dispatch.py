"""What one small kernel call costs inside a training step: right after a matmul, not in a warm loop.

    python benchmarks/cold_dispatch.py              # a 1 us call, warm and after each kind of eviction
    python benchmarks/cold_dispatch.py --rounds 600

A microbenchmark calls the same function in a loop, so the interpreter's objects, the
numba dispatcher's type caches and the code itself stay in the core's caches. In a
step, each small call (a bias kernel, a running-statistics update, a buffer lookup, a
shape check) comes right after a matmul or a memory pass that has replaced the core's
L2 (1 MiB here). The call measured is BatchNorm's running-statistics update on 512
features (a few hundred nanoseconds of arithmetic), interleaved with what precedes it:

* nothing (the warm loop);
* a 256x784 @ 784x512 float32 matmul, numpy's default BLAS threads, then one thread;
* two 4 MiB copies (a memory pass, no BLAS);
* a 1 ms sleep (the core idles; another process may run).

Medians of interleaved rounds. On the 2-core development machine (2026-12-03, three runs):
2.0-2.5 us warm; 6.5-11.7 us after the two-thread matmul, 10.5-20.7 us after the
one-thread one, 7.2-15.2 us after the copies, 10.0-15.9 us after the sleep (one other run
gave 1.1, 2.6, 5.2, 2.8 and 3.8 us: the machine is shared). This is why the fused BatchNorm run does its
bookkeeping (running statistics, counters) inside its kernel and why the hot path avoids
Python-level calls (docs/normalization.md, "Fusion in Sequential").
"""

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fastbp.kernels import norm as KN


def measure(rounds=300):
    rng = np.random.default_rng(0)
    m = 512
    running_mean, running_var = np.zeros(m, np.float32), np.ones(m, np.float32)
    stats = np.abs(rng.standard_normal((2, m)))
    a = rng.standard_normal((256, 784), dtype=np.float32)
    b = rng.standard_normal((784, 512), dtype=np.float32)
    c = np.empty((256, 512), np.float32)
    big, big2 = np.ones(1 << 20, np.float32), np.empty(1 << 20, np.float32)

    def call():
        KN.batchnorm_running(running_mean, running_var, stats, 0.1, 256)

    def gemm_one_thread():
        with threadpool_limits(1, user_api="blas"):
            np.matmul(a, b, out=c)

    before = {
        "warm (nothing before)": lambda: None,
        "after a matmul, default BLAS threads": lambda: np.matmul(a, b, out=c),
        "after a matmul, one BLAS thread": gemm_one_thread,
        "after two 4 MiB copies": lambda: (np.copyto(big2, big), np.copyto(big, big2)),
        "after a 1 ms sleep": lambda: time.sleep(0.001),
    }
    for f in before.values():
        f()
        call()
    times: dict = {k: [] for k in before}
    for _ in range(rounds):
        for k, f in before.items():
            f()
            t0 = time.perf_counter()
            call()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) * 1e6 for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    med = measure(args.rounds)
    print("BatchNorm running-statistics update (512 features), median us per call:")
    for k, us in med.items():
        print(f"  {k:40s} {us:6.1f}")


if __name__ == "__main__":
    main()
