"""What the optimizer pass alone costs next to the matmul floor at small batches (784-512-256-10, float32).

The step target "<= 1.6x the matmul floor below batch 256" leaves 0.6 floors for
everything that is not a matmul. This times, interleaved in one process, medians:

* the BLAS floor step (``fastbp.bench.mlp.BlasFloor``) at each batch;
* the fused Adam and SGD-with-momentum kernels over the MLP's 535k parameters after
  the floor's matmuls (as in training: the gradients were just written);
* a kernel with Adam's memory traffic and no math (read w, g, m, v; write w, m, v),
  and one with SGD's (read w, g, buf; write w, buf): the bandwidth bound of each pass.

    python benchmarks/small_batch_bound.py
"""

from __future__ import annotations

import time

import numba
import numpy as np

from fastbp.bench.mlp import BlasFloor, make_regularized_problem
from fastbp.kernels import adam, sgd

SIZES = (784, 512, 256, 10)


@numba.njit(nogil=True, error_model="numpy")
def adam_traffic(w, g, m, v):
    for i in range(w.shape[0]):
        a, b, c, d = w[i], g[i], m[i], v[i]
        m[i] = c + b
        v[i] = d + b
        w[i] = a + b


@numba.njit(nogil=True, error_model="numpy")
def sgd_traffic(w, g, buf):
    for i in range(w.shape[0]):
        b = buf[i] + g[i]
        buf[i] = b
        w[i] = w[i] + b


def main(batches=(16, 32, 64), rounds=400):
    f = np.float32
    model, x, _ = make_regularized_problem(SIZES, max(batches), np.dtype("float32"))
    params = model.parameters()
    n = sum(p.data.size for p in params)
    w, g, m, v = (np.random.default_rng(i).standard_normal(n).astype(f) * 1e-3 for i in range(4))
    v = np.abs(v)
    floors = {b: BlasFloor(model, x[:b].copy()) for b in batches}
    sides = {
        "adam": lambda: adam(w, g, m, v, f(1e-3), f(1.0), f(1e-8), f(0.9), f(0.999), f(0.1), f(1e-3), f(0), f(1)),
        "adam traffic": lambda: adam_traffic(w, g, m, v),
        "sgd momentum": lambda: sgd(w, g, m, f(1e-3), f(0.9), f(0), False),
        "sgd traffic": lambda: sgd_traffic(w, g, m),
    }
    for fn in sides.values():
        fn()
    t: dict = {}
    for _ in range(rounds):
        for b, fl in floors.items():
            t0 = time.perf_counter()
            fl.step()
            t.setdefault(("floor", b), []).append(time.perf_counter() - t0)
        for name, fn in sides.items():
            floors[batches[0]].step()  # the gradients were just written, as in training
            t0 = time.perf_counter()
            fn()
            t.setdefault(name, []).append(time.perf_counter() - t0)
    med = {k: float(np.median(s)) * 1e3 for k, s in t.items()}
    print(f"784-512-256-10 float32, {n} parameters; median ms over {rounds} interleaved rounds")
    for name in sides:
        print(f"  {name:14s} {med[name]:.3f} ms")
    for b in batches:
        fl = med[("floor", b)]
        print(
            f"  batch {b:4d}: floor {fl:.3f} ms; 0.6 floors = {0.6 * fl:.3f} ms for all non-matmul work; "
            f"Adam alone is {med['adam'] / fl:.2f} floors, SGD momentum {med['sgd momentum'] / fl:.2f}"
        )


if __name__ == "__main__":
    main()
