"""Two passes of the estimators' compiled step against the forms they replaced, on digits' shapes.

* the batch gather (200 rows of 64 features): element by element, as
  ``fastbp.kernels.mlp_epoch`` copies, against ``x[r] = X[i]`` through row views;
* the ReLU derivative and the bias sums (200 x 100): ``relu_backward_bias_grad`` in one
  pass against ``act_backward`` then ``bias_grad``.

Each in a numba loop of 1000 calls, the two forms interleaved, medians in us per call.

    python benchmarks/epoch_passes.py
"""

from __future__ import annotations

import numpy as np

from fastbp.bench.timing import interleaved
from fastbp.jit import RELU, jit
from fastbp.kernels import mlp_epoch as me

CALLS = 1000


def _gather_elements(n, X, order, xb):
    for _ in range(n):
        for r in range(xb.shape[0]):
            i = order[r]
            for j in range(xb.shape[1]):
                xb[r, j] = X[i, j]


def _gather_rows(n, X, order, xb):
    for _ in range(n):
        for r in range(xb.shape[0]):
            xb[r] = X[order[r]]


def _fused(n, dy, y, dz, db, scratch):
    for _ in range(n):
        me.relu_backward_bias_grad(dy, y, dz, db, scratch)


def _two_kernels(n, dy, y, dz, db, scratch):
    for _ in range(n):
        me.ab(dy, y, RELU, dz)
        me.bg(dz, db, scratch)


gather_elements, gather_rows, fused, two_kernels = (
    jit(f) for f in (_gather_elements, _gather_rows, _fused, _two_kernels)
)


def main():
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        X = rng.standard_normal((1347, 64)).astype(dt)
        order, xb = rng.permutation(1347)[:200], np.empty((200, 64), dt)
        dy = rng.standard_normal((200, 100)).astype(dt)
        y = np.maximum(rng.standard_normal((200, 100)), 0).astype(dt)
        dz, db, scratch = np.empty_like(dy), np.empty(100, dt), np.empty((8, 100), dt)
        g, b = (X, order, xb), (dy, y, dz, db, scratch)
        fns = {
            "gather, element by element": lambda g=g: gather_elements(CALLS, *g),
            "gather, row views": lambda g=g: gather_rows(CALLS, *g),
            "relu_backward_bias_grad": lambda b=b: fused(CALLS, *b),
            "act_backward + bias_grad": lambda b=b: two_kernels(CALLS, *b),
        }
        t = interleaved(fns, rounds=21, warmup=1)
        print(np.dtype(dt).name + ":  " + ",  ".join(f"{k} {v / CALLS * 1e6:.2f} us" for k, v in t.items()))


if __name__ == "__main__":
    main()
