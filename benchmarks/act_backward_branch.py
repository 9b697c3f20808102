"""``act_backward`` with the activation branch outside its row loop (fastbp's) against inside it.

The same source otherwise, both serial numba builds, ReLU on (200, 100) float32 (the
digits MLP's hidden layer at batch 200); with the branch inside the loop LLVM left
the inner loops scalar. Interleaved calls, medians.

    python benchmarks/act_backward_branch.py
"""

from __future__ import annotations

import time

import numba
import numpy as np

from fastbp.jit import RELU, SIGMOID, TANH
from fastbp.kernels import act_backward


@numba.njit(nogil=True, fastmath={"contract"}, error_model="numpy")
def branch_inside(dy, y, act, dx):
    n, m = dy.shape
    zero, one = dy.dtype.type(0.0), dy.dtype.type(1.0)
    for i in range(n):
        g, o, d = dy[i], y[i], dx[i]
        if act == RELU:
            for j in range(m):
                d[j] = g[j] if o[j] > zero else zero
        elif act == SIGMOID:
            for j in range(m):
                d[j] = g[j] * o[j] * (one - o[j])
        elif act == TANH:
            for j in range(m):
                d[j] = g[j] * (one - o[j] * o[j])
        else:
            for j in range(m):
                d[j] = g[j]


def main(shape=(200, 100), rounds=5000):
    rng = np.random.default_rng(0)
    dy, y = rng.standard_normal((2, *shape)).astype(np.float32)
    dx = np.empty_like(dy)
    sides = {
        "outside (fastbp)": lambda: act_backward.serial(dy, y, RELU, dx),
        "inside": lambda: branch_inside(dy, y, RELU, dx),
    }
    times: dict = {k: [] for k in sides}
    for f in sides.values():
        f()
    for _ in range(rounds):
        for k, f in sides.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    for k, v in times.items():
        print(f"act_backward relu {shape} float32, branch {k}: {np.median(v) * 1e6:.2f} us")


if __name__ == "__main__":
    main()
