"""Each kernel against its numpy twin over batch x width x dtype.

pytest benchmarks/test_bench_kernels.py --benchmark-group-by=param:kernel,param:shape,param:dtype
"""

import numpy as np
import pytest

from fastbp import kernels as K
from fastbp import reference as R

BATCHES = [16, 256, 1024]
WIDTHS = [64, 512, 4096]
SHAPES = [(b, w) for b in BATCHES for w in WIDTHS]
IMPLS = {"numba": K, "numpy": R}


def _args(kernel, shape, dtype, rng):
    n, m = shape
    t = np.dtype(dtype).type
    a = lambda: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    if kernel == "linear_forward_relu":  # the fused bias + activation pass after the matmul
        return "bias_act", (a(), rng.standard_normal(m).astype(dtype), K.RELU)
    if kernel in ("relu_backward", "sigmoid_backward", "tanh_backward"):
        code = {"relu_backward": K.RELU, "sigmoid_backward": K.SIGMOID, "tanh_backward": K.TANH}[kernel]
        return "act_backward", (a(), rng.random(shape).astype(dtype), code, np.empty(shape, dtype))
    if kernel == "bias_grad":
        return "bias_grad", (a(), np.empty(m, dtype), np.empty((8, m), dtype))
    if kernel == "softmax_backward":
        y = rng.random(shape).astype(dtype)
        return "softmax_backward", (a(), y / y.sum(1, keepdims=True), np.empty(shape, dtype))
    if kernel == "softmax_xent":
        return "softmax_xent_labels", (
            a(),
            rng.integers(0, m, n),
            np.empty(0, dtype),
            t(0),
            t(1 / n),
            np.empty(shape, dtype),
            np.empty(n, dtype),
        )
    if kernel == "sgd_momentum":
        w = a().reshape(-1)
        return "sgd", (w, a().reshape(-1), np.zeros_like(w), t(1e-6), t(0.9), t(0), False)
    if kernel == "adam":
        w = a().reshape(-1)
        return "adam", (
            w,
            a().reshape(-1),
            np.zeros_like(w),
            np.zeros_like(w),
            t(1e-6),
            t(1),
            t(1e-8),
            t(0.9),
            t(0.999),
            t(1 - 0.9),
            t(1 - 0.999),
            t(0),
            t(1),
        )
    raise ValueError(kernel)


KERNELS = [
    "linear_forward_relu",
    "relu_backward",
    "sigmoid_backward",
    "tanh_backward",
    "bias_grad",
    "softmax_backward",
    "softmax_xent",
    "sgd_momentum",
    "adam",
]


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{b}x{w}" for b, w in SHAPES])
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel(benchmark, rng, kernel, shape, dtype, impl):
    name, args = _args(kernel, shape, np.dtype(dtype), rng)
    fn = getattr(IMPLS[impl], name)
    fn(*args)  # warm-up: numba compiles here, not in the timed body
    benchmark(fn, *args)


@pytest.mark.parametrize("impl", ["numba", "numpy"])
@pytest.mark.parametrize("shape", [(256, 1024), (1024, 4096)], ids=["256x1024", "1024x4096"])
def test_linear_backward(benchmark, rng, shape, impl):
    """Linear backward as the layer runs it: dW and dx matmuls plus the bias reduction."""
    import fastbp

    n, m = shape
    layer = fastbp.Linear(m, m, activation="relu", seed=0, backend=impl)
    x = rng.standard_normal((n, m)).astype(np.float32)
    dy = rng.standard_normal((n, m)).astype(np.float32)
    layer.forward(x)
    layer.backward(dy)  # warm-up
    benchmark(layer.backward, dy)
