"""BatchNorm1d and LayerNorm forward + backward: the numba layer, its numpy twin, and textbook float32 numpy.

    pytest benchmarks/test_bench_norm.py --benchmark-group-by=param:layer,param:shape

Run as a script for interleaved medians and ratios (the numbers quoted in
docs/normalization.md), every side taking turns in one process:

    python benchmarks/test_bench_norm.py [--rounds 100]
"""

import argparse
import time

import numpy as np
import pytest

from fastbp.bench.timing import interleaved, rel_iqr
from fastbp.layers.norm import BatchNorm1d, LayerNorm

SHAPES = [(256, 512), (1024, 2048)]
LAYERS = {"BatchNorm1d": BatchNorm1d, "LayerNorm": LayerNorm}


def layer_step(cls, m, backend):
    layer = cls(m, backend=backend)

    def step(x, dy):
        layer.forward(x)
        return layer.backward(dy)

    return step


def textbook_batchnorm(m, dtype=np.float32, eps=1e-5):
    """BatchNorm as most numpy code writes it: float32 throughout, temporaries, the textbook backward.

    Not a fastbp twin: its float32 column sums cancel at large offsets. A floor for what
    plain numpy costs, next to the twin, which pays for float64 statistics.
    """
    gamma, beta = np.ones(m, dtype), np.zeros(m, dtype)

    def step(x, dy):
        mean = x.mean(axis=0)
        var = x.var(axis=0)
        inv = 1 / np.sqrt(var + dtype(eps))
        x_hat = (x - mean) * inv
        y = x_hat * gamma + beta  # noqa: F841 - the forward's output
        n = x.shape[0]
        dbeta = dy.sum(axis=0)
        dgamma = (dy * x_hat).sum(axis=0)
        dx_hat = dy * gamma
        return inv / n * (n * dx_hat - dx_hat.sum(axis=0) - x_hat * (dx_hat * x_hat).sum(axis=0)), dgamma, dbeta

    return step


def textbook_layernorm(m, dtype=np.float32, eps=1e-5):
    gamma, beta = np.ones(m, dtype), np.zeros(m, dtype)

    def step(x, dy):
        mean = x.mean(axis=1, keepdims=True)
        var = x.var(axis=1, keepdims=True)
        inv = 1 / np.sqrt(var + dtype(eps))
        x_hat = (x - mean) * inv
        y = x_hat * gamma + beta  # noqa: F841
        dgamma, dbeta = (dy * x_hat).sum(axis=0), dy.sum(axis=0)
        g = dy * gamma
        return (
            inv * (g - g.mean(axis=1, keepdims=True) - x_hat * (g * x_hat).mean(axis=1, keepdims=True)),
            dgamma,
            dbeta,
        )

    return step


def impls(name, m):
    cls = LAYERS[name]
    textbook = textbook_batchnorm if cls is BatchNorm1d else textbook_layernorm
    return {"numba": layer_step(cls, m, "numba"), "numpy-twin": layer_step(cls, m, "numpy"), "numpy-f32": textbook(m)}


def _data(rng, shape):
    return rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("impl", ["numba", "numpy-twin", "numpy-f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{m}" for n, m in SHAPES])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_norm_forward_backward(benchmark, rng, layer, shape, impl):
    step = impls(layer, shape[1])[impl]
    x, dy = _data(rng, shape)
    step(x, dy)  # warm-up: numba compiles here, not in the timed body
    benchmark(step, x, dy)


def _recorded(fn, x, dy, times):
    """``fn(x, dy)`` as a no-argument call that also keeps its own times (for the spread)."""

    def run():
        t0 = time.perf_counter()
        fn(x, dy)
        times.append(time.perf_counter() - t0)

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print("median us per forward+backward, float32 (side / numba); spread: IQR / median of each side's times")
    for name in LAYERS:
        for shape in SHAPES:
            x, dy = _data(rng, shape)
            times: dict = {}
            sides = {k: _recorded(fn, x, dy, times.setdefault(k, [])) for k, fn in impls(name, shape[1]).items()}
            med = interleaved(sides, rounds=args.rounds, warmup=5)
            cols = ", ".join(
                f"{k} {med[k] * 1e6:.0f} ({med[k] / med['numba']:.2f}x, spread {rel_iqr(times[k][-args.rounds :]):.2f})"
                for k in sides
            )
            print(f"{name} {shape[0]}x{shape[1]}: {cols}")


if __name__ == "__main__":
    main()
