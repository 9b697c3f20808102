"""Whether two threads calling numpy's one-thread BLAS at once get twice the throughput.

Splitting a small network's step over the two cores (each thread runs half the
batch's rows, its matmuls on one BLAS thread, and the passes between them on data its
own core wrote) only pays if two concurrent streams of small matmuls run side by side.
This times ``matmul`` streams at a step's shapes, one thread against two at once
(each doing the same number of calls), with numpy's BLAS limited to one thread;
``scaling`` is ``2 x one stream's time / two streams' time`` (2.0: perfect, 1.0: the
calls ran one after the other). Medians of interleaved rounds.

    python benchmarks/two_gemm_streams.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import threading

import numpy as np
from threadpoolctl import threadpool_limits

from fastbp.bench.timing import interleaved

SHAPES = (
    (100, 64, 100),  # half of a digits batch, first layer
    (200, 64, 100),  # a whole digits batch
    (384, 384, 384),  # large enough to be compute-bound
)


def _stream(m, k, n, calls):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)

    def run():
        for _ in range(calls):
            np.matmul(a, b, out=c)

    return run


def measure(shape, rounds):
    m, k, n = shape
    calls = max(20, int(2e8 / (2 * m * k * n)))
    one, first, second = (_stream(m, k, n, calls) for _ in range(3))

    def two():
        threads = [threading.Thread(target=f) for f in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    with threadpool_limits(1, "blas"):
        t = interleaved({"one": one, "two": two}, rounds=rounds)
    print(
        f"{m}x{k} @ {k}x{n} float32: one stream {t['one'] / calls * 1e6:8.2f} us/call, "
        f"two at once {t['two'] / calls * 1e6:8.2f} us per pair of calls, scaling {2 * t['one'] / t['two']:4.2f}"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)
    for shape in SHAPES:
        measure(shape, args.rounds)


if __name__ == "__main__":
    main()
