"""How much a small Python-level call costs right after a large matmul.

The scikit-learn estimators' step is planned to keep Python-level lookups few
(``fastbp/sklearn/_network.py``) because of this: a 200x784x512 matmul flushes
the 1 MB L2 cache, and the loss call that follows runs several times slower
than the same call in a warm loop, even with single-threaded BLAS and with a
pause in between (so not spinning BLAS threads).

Run: ``python benchmarks/cold_cache_overhead.py`` (and with OPENBLAS_NUM_THREADS=1).
"""

import time

import numpy as np

from fastbp.sklearn._outputs import OutputLoss


def main(repeats=300):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((200, 784)).astype(np.float32)
    W = rng.standard_normal((784, 512)).astype(np.float32)
    out = np.empty((200, 512), np.float32)
    z = rng.standard_normal((200, 10)).astype(np.float32)
    t = rng.integers(0, 10, 200)
    loss = OutputLoss("softmax", np.float32)
    loss(z, t, None)  # compile / load from cache
    for mode in ["warm loop", "after a matmul", "after a matmul and a 2 ms pause", "warm loop"]:
        times = []
        for _ in range(repeats):
            if "matmul" in mode:
                np.matmul(A, W, out=out)
            if "pause" in mode:
                time.sleep(0.002)
            t0 = time.perf_counter()
            loss(z, t, None)
            times.append(time.perf_counter() - t0)
        print(f"loss call (200 x 10), {mode}: median {np.median(times) * 1e6:.1f} us")


if __name__ == "__main__":
    main()
