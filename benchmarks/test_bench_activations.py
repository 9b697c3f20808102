"""LeakyReLU, ELU, GELU, GELU (tanh), SiLU, Softplus: forward + backward, kernel against numpy twin.

One step of a layer with the activation fused (``Linear``'s bias pass and the backward
before the matmuls): ``bias_act_param`` (saving the pre-activation where the backward
reads it) then ``act_backward_param``, float32, at (256, 512) and (1024, 2048). Kernels
run as fastbp runs them (serial below fastbp.threads' parallel threshold of 4M elements).

pytest benchmarks/test_bench_activations.py   (grouped by activation and shape)

``python benchmarks/test_bench_activations.py`` prints the ratios instead: both sides
interleaved (fastbp.bench.timing.interleaved), medians, one process.
"""

import numpy as np
import pytest

from fastbp import kernels as K
from fastbp import reference as R
from fastbp.backend import resolve_activation

SHAPES = [(256, 512), (1024, 2048)]
CASES = {
    "leaky_relu": ("leaky_relu", {}),
    "elu": ("elu", {}),
    "gelu": ("gelu", {}),
    "gelu_tanh": ("gelu_tanh", {}),
    "silu": ("silu", {}),
    "softplus": ("softplus", {}),
}
IMPLS = {"numba": K, "numpy": R}


def make_step(mod, case, shape, rng):
    """``(restore, step)``: ``restore()`` puts the pre-activation back (the matmul's output in a layer),
    ``step()`` runs forward then backward in place, as ``Linear`` does."""
    act = resolve_activation(*CASES[case])
    t = np.float32
    x = (rng.standard_normal(shape) * 3).astype(t)
    b = rng.standard_normal(shape[1]).astype(t)
    dy = rng.standard_normal(shape).astype(t)
    y, dx = np.empty_like(x), np.empty_like(x)
    z = np.empty_like(x) if act.reads_input else np.empty((0, 0), t)
    p1, p2 = t(act.p1), t(act.p2)

    def restore():
        np.copyto(y, x)

    def step():
        mod.bias_act_param(y, b, act.code, p1, p2, z)
        mod.act_backward_param(dy, y, z, act.code, p1, p2, dx)

    return restore, step


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{m}" for n, m in SHAPES])
@pytest.mark.parametrize("case", list(CASES))
def test_activation_forward_backward(benchmark, rng, case, shape, impl):
    restore, step = make_step(IMPLS[impl], case, shape, rng)
    restore()
    step()  # compilation (numba) and first-touch of the buffers, not timed
    benchmark.group = f"{case} {shape[0]}x{shape[1]}"
    benchmark.pedantic(step, setup=restore, rounds=30 if shape[0] > 256 else 200, warmup_rounds=2)


def ratios(rounds: int = 60) -> list[tuple]:
    """``(case, shape, numba s, numpy s, copy s)`` medians; each call restores the input first (a copy,
    timed alone as ``copy`` so that it can be subtracted)."""
    from fastbp.bench.timing import interleaved

    rng = np.random.default_rng(2024)
    rows = []
    for shape in SHAPES:
        for case in CASES:
            fns = {}
            for impl, mod in IMPLS.items():
                restore, step = make_step(mod, case, shape, rng)
                fns[impl] = lambda restore=restore, step=step: (restore(), step())
            fns["copy"] = restore  # the restore of the last side alone: same size
            t = interleaved(fns, rounds=rounds if shape[0] > 256 else 4 * rounds, warmup=3)
            rows.append((case, shape, t["numba"], t["numpy"], t["copy"]))
    return rows


if __name__ == "__main__":
    print("float32, forward + backward per call, medians of interleaved rounds (ms)")
    print(f"{'activation':<11} {'shape':>10} {'fastbp':>8} {'numpy':>8} {'copy':>7} {'ratio':>6} {'net':>6}")
    for case, (n, m), a, b, c in ratios():
        net = (b - c) / max(a - c, 1e-9)
        print(f"{case:<11} {f'{n}x{m}':>10} {a * 1e3:8.3f} {b * 1e3:8.3f} {c * 1e3:7.3f} {b / a:6.1f} {net:6.1f}")
