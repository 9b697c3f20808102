"""The kernels' vectorisable exps (float32 ``exp``, ``exp_nonpos`` in both dtypes) against exact references."""

import numba
import numpy as np
import pytest

from fastbp.jit import JIT_OPTIONS, REDUCTION
from fastbp.kernels.vmath import HI_64, LO_64, exp, exp_nonpos


# With the reduction kernels' flags (``reassoc`` included): the range reduction
# ``v - k*C1 + k*C2`` must keep its order for the 2-ulp bound to hold.
@numba.njit(**{**JIT_OPTIONS, "fastmath": set(REDUCTION), "cache": False})
def _apply(x, out):
    for i in range(x.shape[0]):
        out[i] = exp(x[i])


@numba.njit(**{**JIT_OPTIONS, "fastmath": set(REDUCTION), "cache": False})
def _apply_nonpos(x, out):
    for i in range(x.shape[0]):
        out[i] = exp_nonpos(x[i])


def run(x, fn=_apply):
    out = np.empty_like(x)
    fn(x, out)
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


def test_float64_exp_nonpos_within_two_ulp_of_the_exact_value(rng):
    # The reference is the x87 80-bit exp (64-bit mantissa) rounded once to float64: within 0.5 ulp
    # of the exact value plus 2**-11 ulp. Where long double is float64 (not x86), np.exp (1 ulp).
    x = np.concatenate([-rng.random(1_000_000) * -LO_64, -rng.random(100_000) * 1e-3, np.linspace(LO_64, 0, 100_001)])
    got = run(x, _apply_nonpos)
    ref = np.exp(x.astype(np.longdouble)).astype(np.float64)
    assert got.dtype == np.float64
    bound = 2 if np.finfo(np.longdouble).nmant > 52 else 3
    np.testing.assert_array_max_ulp(got, ref, maxulp=bound)


def test_exp_nonpos_special_values_and_the_ends_of_its_range():
    x = np.array([np.nan, -np.inf, 0.0, -0.0, -1e-300, LO_64, np.nextafter(LO_64, -np.inf), -745.0, -1e300])
    got = run(x, _apply_nonpos)
    assert np.isnan(got[0])
    np.testing.assert_array_equal(got[1:4], [0.0, 1.0, 1.0])
    assert got[4] == 1.0 and 0 < got[5] == pytest.approx(np.exp(LO_64), rel=1e-15)
    np.testing.assert_array_equal(got[6:], 0.0)  # below exp(-707) ~ 1e-307: 0, never a subnormal
    # Outside its use (x > 0): finite and accurate up to 709, then inf, never NaN or a wrapped exponent.
    up = np.array([1.0, 300.0, HI_64, np.nextafter(HI_64, np.inf), 709.9, 1e300, np.inf])
    got = run(up, _apply_nonpos)
    np.testing.assert_array_max_ulp(got[:3], np.exp(up[:3]), maxulp=3)
    np.testing.assert_array_equal(got[3:], np.inf)


def test_float32_exp_nonpos_is_exp():
    x = np.linspace(-87.33, 0, 100_001).astype(np.float32)
    np.testing.assert_array_equal(run(x, _apply_nonpos), run(x))
