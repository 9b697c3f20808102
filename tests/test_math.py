"""The kernels' vectorisable float32 exp against numpy's."""

import numba
import numpy as np
import pytest

from fastbp.jit import JIT_OPTIONS, REDUCTION
from fastbp.kernels.vmath import exp


# With the reduction kernels' flags (``reassoc`` included): the range reduction
# ``v - k*C1 + k*C2`` must keep its order for the 2-ulp bound to hold.
@numba.njit(**{**JIT_OPTIONS, "fastmath": set(REDUCTION), "cache": False})
def _apply(x, out):
    for i in range(x.shape[0]):
        out[i] = exp(x[i])


def run(x):
    out = np.empty_like(x)
    _apply(x, out)
    return out


def test_float32_exp_within_two_ulp_over_the_normal_range():
    x = np.linspace(-87.33, 88.72, 3_000_001).astype(np.float32)
    got = run(x).astype(np.float64)
    ref = np.exp(x.astype(np.float64))
    ulp = np.spacing(ref.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - ref) / ulp) <= 2.0


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_float32_exp_special_values():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 89.0, -88.0, -1e30, 1e30], np.float32)
    got = run(x)
    assert np.isnan(got[0])
    np.testing.assert_array_equal(got[1:], [np.inf, 0.0, 1.0, 1.0, np.inf, 0.0, 0.0, np.inf])
    assert got.dtype == np.float32


def test_float64_uses_numpy_exp():
    # float64 is not routed through the float32 polynomial (which would be ~1e-7 relative,
    # i.e. ~1e9 float64 ulps, off): numba's float64 np.exp calls libm's exp. The reference
    # np.exp is a different correct implementation whose loop numpy picks from the CPU at
    # run time (its own AVX-512 loop where available: 501 of these 10001 values then differ
    # by 1 ulp), so the two are not bit-identical. Bound: glibc's exp is within 1 ulp of the
    # correctly rounded result, and numpy's accuracy suite (numpy/_core/tests/data/
    # umath-validation-set-exp.csv) allows its float64 exp 1 ulp from it: 2 ulps apart at most.
    x = np.linspace(-700, 700, 10001)
    got = run(x)
    assert got.dtype == np.float64
    np.testing.assert_array_max_ulp(got, np.exp(x), maxulp=2)
