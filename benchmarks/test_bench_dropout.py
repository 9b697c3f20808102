"""Dropout forward + backward: the numba layer, its numpy twin, and idiomatic numpy dropout.

    pytest benchmarks/test_bench_dropout.py --benchmark-group-by=param:shape

Run as a script for interleaved medians and ratios (the numbers quoted in the
layer's design notes), and for the measurement behind the backward's design
(a stored uint8 mask against regenerating the mask from the counters):

    python benchmarks/test_bench_dropout.py
"""

import functools

import numpy as np
import pytest
from numba import prange

from fastbp.bench.timing import interleaved
from fastbp.jit import kernel
from fastbp.kernels import dropout as K
from fastbp.layers.dropout import Dropout

SHAPES = [(256, 512), (1024, 2048)]
P = 0.5


def numpy_dropout(rng, p, draw_dtype):
    """Idiomatic numpy dropout: a mask from numpy's RNG (``rng.random(shape) >= p``), kept for backward."""

    def step(x, dy):
        mask = (rng.random(x.shape, dtype=draw_dtype) >= p) * x.dtype.type(1 / (1 - p))
        return x * mask, dy * mask

    return step


def layer_step(backend):
    layer = Dropout(P, seed=0, backend=backend)

    def step(x, dy):
        return layer.forward(x), layer.backward(dy)

    return step


def impls(rng):
    return {
        "numba": layer_step("numba"),
        "numpy-twin": layer_step("numpy"),
        # rng.random(shape) draws float64, as most numpy code writes it; dtype=float32 draws half the bytes.
        "numpy-rng-f64": numpy_dropout(rng, P, np.float64),
        "numpy-rng-f32": numpy_dropout(rng, P, np.float32),
    }


def _data(rng, shape):
    return rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("impl", ["numba", "numpy-twin", "numpy-rng-f64", "numpy-rng-f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{m}" for n, m in SHAPES])
def test_dropout_forward_backward(benchmark, rng, shape, impl):
    step = impls(rng)[impl]
    x, dy = _data(rng, shape)
    step(x, dy)  # warm-up: numba compiles here, not in the timed body
    benchmark(step, x, dy)


# -- the backward's design: stored mask or regenerated mask -------------------------------


def _mask_and_scale(x, y, seed, step, threshold, scale):
    """dropout_forward without writing the mask: a backward that regenerates the mask runs it on (dy, dx)."""
    n, m = x.shape
    zero = x.dtype.type(0.0)
    key = K.stream_key(seed, step)
    for i in prange(n):
        xr, yr = x[i], y[i]
        z = key + np.uint64(i) * np.uint64(m) * K._GAMMA
        for j in range(m):
            z += K._GAMMA
            yr[j] = xr[j] * (scale if (K.mix64(z) >> K._S11) >= threshold else zero)


def _design_sides(mask_and_scale, x, dy):
    y, dx, mask = np.empty_like(x), np.empty_like(x), np.empty(x.shape, np.uint8)
    seed, step, t, s = np.uint64(1), np.uint64(2), np.uint64(2**52), np.float32(2)

    def stored():
        K.dropout_forward(x, y, mask, seed, step, t, s)
        K.dropout_backward(dy, mask, s, dx)

    def regenerated():
        mask_and_scale(x, y, seed, step, t, s)
        mask_and_scale(dy, dx, seed, step, t, s)

    return {"stored": stored, "regenerated": regenerated}


def design(rng):
    mask_and_scale = kernel(_mask_and_scale)
    for shape in SHAPES:
        r = interleaved(_design_sides(mask_and_scale, *_data(rng, shape)), rounds=100)
        print(
            f"  {shape[0]}x{shape[1]}: stored uint8 mask {r['stored'] * 1e3:.3f} ms, "
            f"regenerated {r['regenerated'] * 1e3:.3f} ms (regenerated / stored {r['regenerated'] / r['stored']:.2f})"
        )


def main():
    rng = np.random.default_rng(2024)
    print(f"Dropout(p={P}) forward + backward, float32, interleaved medians (ratio: side / numba):")
    for shape in SHAPES:
        x, dy = _data(rng, shape)
        fns = {k: functools.partial(f, x, dy) for k, f in impls(rng).items()}
        r = interleaved(fns, rounds=100)
        cells = ", ".join(f"{k} {t * 1e3:.3f} ms ({t / r['numba']:.2f})" for k, t in r.items())
        print(f"  {shape[0]}x{shape[1]}: {cells}")
    print("Backward design, kernels only (forward + backward):")
    design(rng)


if __name__ == "__main__":
    main()
