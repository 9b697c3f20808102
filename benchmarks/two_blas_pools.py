"""Matmuls through numba's ``np.dot`` (scipy's BLAS) next to numpy's, against numpy's gemm called from numba.

The digits step's five matmuls (64-100-10, batch 200, float32) timed as numpy
matmuls, then as the same calls from numba: through ``np.dot`` (scipy's OpenBLAS,
a second thread pool) or through :func:`fastbp.kernels.blas.gemm` (numpy's own
OpenBLAS). Each numba variant runs in its own process, interleaved there with the
numpy matmuls; medians of 7-step blocks. docs/threading.md, "One BLAS in the
process, not two".

    python benchmarks/two_blas_pools.py
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np


def _measure(variant: str, rounds: int = 300) -> None:
    import numba

    from fastbp.kernels.blas import gemm, gemm_addresses

    dt = np.float32
    rng = np.random.default_rng(0)
    x = rng.random((200, 64), dt)
    W0, W1 = (rng.random(s, dt) * 0.01 for s in ((64, 100), (100, 10)))
    h, z, dx = np.empty((200, 100), dt), np.empty((200, 10), dt), np.empty((200, 100), dt)
    g0, g1 = np.empty_like(W0), np.empty_like(W1)

    def numpy_step():
        np.matmul(x, W0, out=h)
        np.matmul(h, W1, out=z)
        np.matmul(h.T, z, out=g1)
        np.matmul(z, W1.T, out=dx)
        np.matmul(x.T, dx, out=g0)

    @numba.njit
    def dot_step(x, W0, W1, h, z, g0, g1, dx):
        np.dot(x, W0, h)
        np.dot(h, W1, z)
        np.dot(h.T, z, g1)
        np.dot(z, W1.T, dx)
        np.dot(x.T, dx, g0)

    @numba.njit
    def gemm_step(fn, x, W0, W1, h, z, g0, g1, dx):
        gemm(fn, x, False, W0, False, h)
        gemm(fn, h, False, W1, False, z)
        gemm(fn, h, True, z, False, g1)
        gemm(fn, z, False, W1, True, dx)
        gemm(fn, x, True, dx, False, g0)

    if variant == "dot":
        step = lambda: dot_step(x, W0, W1, h, z, g0, g1, dx)  # noqa: E731
    else:
        fn = gemm_addresses()[0]
        step = lambda: gemm_step(fn, x, W0, W1, h, z, g0, g1, dx)  # noqa: E731
    step()
    t_np, t_nb = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(7):
            numpy_step()
        t1 = time.perf_counter()
        for _ in range(7):
            step()
        t2 = time.perf_counter()
        t_np.append(t1 - t0)
        t_nb.append(t2 - t1)
    name = "np.dot in numba (scipy's BLAS)" if variant == "dot" else "fastbp.kernels.blas.gemm (numpy's BLAS)"
    print(
        f"{name:42s}: 7 numba steps {np.median(t_nb) * 1e3:.2f} ms, the 7 numpy steps between them "
        f"{np.median(t_np) * 1e3:.2f} ms"
    )


def main():
    if len(sys.argv) > 1:
        _measure(sys.argv[1])
        return
    for variant in ("gemm", "dot", "gemm", "dot"):
        subprocess.run([sys.executable, __file__, variant], check=True)


if __name__ == "__main__":
    main()
