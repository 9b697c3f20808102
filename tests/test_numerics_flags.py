"""fastmath that cannot overflow, optimizer constants rounded once, wide rows (docs/numerics.md).

Property-based: every kernel runs in both compiled versions (``.serial`` and
``.parallel``), against its numpy twin and a float64 (or PyTorch) reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbp
from fastbp import kernels as K
from fastbp import reference as R
from fastbp.jit import ELEMENTWISE, REDUCTION

VERSIONS = ["serial", "parallel"]
DTYPES = [np.float32, np.float64]
FEW = settings(max_examples=30, deadline=None)


def adam_args(dtype, w, g, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    t = np.dtype(dtype).type
    n = w.shape[0]
    arrays = [w.astype(dtype), g.astype(dtype), np.zeros(n, dtype), np.zeros(n, dtype)]
    # One first step: step_size = lr / (1 - b1), inv_sqrt_bc2 = 1 / sqrt(1 - b2), constants in float64.
    scalars = (t(lr / (1 - b1)), t(1 / np.sqrt(1 - b2)), t(eps), t(b1), t(b2), t(1 - b1), t(1 - b2), t(0), t(1))
    return arrays, scalars


@FEW
@given(
    version=st.sampled_from(VERSIONS),
    dtype=st.sampled_from(DTYPES),
    log_g=st.floats(0, 1),  # |g| from 1 to the largest value whose square still fits... and beyond
    sign=st.sampled_from([-1.0, 1.0]),
)
def test_adam_large_gradients_stay_finite(version, dtype, log_g, sign):
    """|g| up to the dtype's max: (1 - b2) g g must be formed as ((1 - b2) g) g, never g g first."""
    big = np.finfo(dtype).max
    g = sign * np.exp(log_g * np.log(big / 2)) * np.ones(33)  # up to max/2: (1 - b2) g g may still overflow
    arrays, scalars = adam_args(dtype, np.full(33, 0.5), g)
    twin = [a.copy() for a in arrays]
    getattr(K.adam, version)(*arrays, *scalars)
    R.adam(*twin, *scalars)
    for a, b in zip(arrays, twin):
        # Same formula, same order: the twin is the reference; 4 ulp for contract (FMA) rounding.
        np.testing.assert_array_max_ulp(a, b, maxulp=4)
    w = arrays[0]
    assert np.isfinite(w).all()
    # |m / sqrt(v)| <= 1 / sqrt(1 - b2) for one step, so w moves by at most lr * (1 + tiny).
    assert np.all(np.abs(w - 0.5) <= 1.001e-3)


def test_adam_example_from_the_issue_matches_torch():
    torch = pytest.importorskip("torch")
    for dtype, g in ((np.float32, 2e19), (np.float64, 2e154)):
        p = fastbp.Parameter(np.full(4, 0.5, dtype))
        opt = fastbp.Adam([p], lr=1e-3)
        p.grad[:] = g
        opt.step()
        tp = torch.tensor(np.full(4, 0.5, dtype), requires_grad=True)
        topt = torch.optim.Adam([tp], lr=1e-3)
        tp.grad = torch.full((4,), g, dtype=tp.dtype)
        topt.step()
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=4 * np.finfo(dtype).eps)
        assert np.isfinite(opt.state["exp_avg_sq"][0]).all()


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("beta2", [0.999, 0.9999])
def test_float32_adam_step_is_unbiased(backend, beta2):
    """A float32 step agrees with the same step in float64 to float32 rounding, not to 8e-5 (1 - beta2 in float32)."""
    g = np.random.default_rng(0).standard_normal(1000)
    got = {}
    for dtype in (np.float32, np.float64):
        # From w = 0 the weights are the sum of the steps: no cancellation against w in float32.
        p = fastbp.Parameter(np.zeros(1000, dtype))
        opt = fastbp.Adam([p], lr=1e-3, betas=(0.9, beta2), backend=backend)
        for _ in range(3):
            p.grad[:] = g.astype(dtype)
            opt.step()
        got[dtype] = (p.data.astype(np.float64), opt.state["exp_avg_sq"][0].astype(np.float64))
    for a32, a64 in zip(got[np.float32], got[np.float64]):
        rel = np.abs(a32 - a64) / np.abs(a64)
        # A few float32 roundings (eps/2 = 6e-8 each) per step and g's own rounding: 1e-6 is
        # generous; 1 - beta2 formed in float32 was a constant 8e-5 (0.9999) or 7e-6 (0.999).
        assert np.max(rel) < 1e-6


def test_every_kernel_has_reviewed_flags():
    for name in K.__all__:
        kern = getattr(K, name)
        if hasattr(kern, "fastmath"):
            assert kern.fastmath in (ELEMENTWISE, REDUCTION), name
            assert "nnan" not in kern.fastmath and "ninf" not in kern.fastmath
    for name in ("sgd", "adam", "scale_", "bias_act", "act_backward", "bias_grad"):
        assert "reassoc" not in getattr(K, name).fastmath, name  # elementwise: nothing to vectorise by reordering


# -- wide rows ---------------------------------------------------------------------

WIDE = settings(max_examples=8, deadline=None)


@WIDE
@given(version=st.sampled_from(VERSIONS), m=st.integers(1, 300_000), seed=st.integers(0, 2**16))
def test_wide_row_reductions_stay_near_float32_eps(version, m, seed):
    """mse and bce_logits over one row of m columns, against float64: a few eps for any m."""
    rng = np.random.default_rng(seed)
    f = np.float32
    p = rng.standard_normal((1, m)).astype(f)
    t = rng.standard_normal((1, m)).astype(f)
    d = p.astype(np.float64) - t
    grad, none = np.empty_like(p), np.empty((0, 0), f)
    got = getattr(K.mse, version)(p, t, f(1 / m), f(1 / m), grad, none)
    # d is formed in float32 (1/2 ulp each), squares and blocks add a few ulps: 8 eps relative.
    np.testing.assert_allclose(got, np.mean(d * d), rtol=8 * np.finfo(f).eps)
    y = (t > 0).astype(f)
    z = p.astype(np.float64)
    ref = np.sum(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
    got = getattr(K.bce_logits, version)(p, y, f(1 / m), grad, none)
    # The float32 exp is within 2 ulp and log1p within 1; 8 eps bounds the sum.
    np.testing.assert_allclose(got, ref, rtol=8 * np.finfo(f).eps)


@WIDE
@given(version=st.sampled_from(VERSIONS), k=st.integers(1, 200_000), seed=st.integers(0, 2**16))
def test_wide_softmax_rows_sum_to_one(version, k, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((2, k)) * 3).astype(np.float32)
    y = np.empty_like(x)
    getattr(K.softmax_forward, version)(x, y)
    # The shift x - max is formed in float32 by the kernel too (its rounding, amplified by
    # |x - max|, is the input's, not the sum's), so the reference starts from the same values.
    ref = np.exp((x - x.max(axis=1, keepdims=True)).astype(np.float64))
    ref /= ref.sum(axis=1, keepdims=True)
    # Each output is e_j / s with e_j within 2 ulp and s within a few: 8 eps relative, any k.
    np.testing.assert_allclose(y, ref, rtol=8 * np.finfo(np.float32).eps, atol=1e-30)
    np.testing.assert_allclose(y.sum(axis=1, dtype=np.float64), 1.0, rtol=8 * np.finfo(np.float32).eps)


def test_the_wide_row_example_from_the_issue():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1, 5_000_000)).astype(np.float32)
    b = rng.standard_normal((1, 5_000_000)).astype(np.float32)
    ref = np.mean((a.astype(np.float64) - b) ** 2)
    for backend in ("numba", "numpy"):
        loss, _ = fastbp.losses.mse_loss(a, b, backend=backend)
        np.testing.assert_allclose(loss, ref, rtol=8 * np.finfo(np.float32).eps)  # was 2.5e-3 off
