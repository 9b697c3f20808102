"""Activation kernels: forward fused with the bias add, backward from the output or the saved input.

Activation codes are small ints so one compiled kernel serves every activation;
the branch is outside the inner loops, so each loop stays a tight vector loop.
``bias_act``/``act_backward`` serve the parameter-free activations whose derivative
is a function of the output (identity, relu, sigmoid, tanh); ``bias_act_param``/
``act_backward_param`` the others (leaky_relu, elu, gelu, gelu_tanh, silu, softplus),
with up to two parameters and, where the output does not determine the
derivative, the pre-activation saved by the forward (docs/derivations.md).
"""

import math

import numpy as np
from numba import prange, types
from numba.extending import overload

from ..jit import ELU, GELU, GELU_TANH, IDENTITY, LEAKY_RELU, RELU, SIGMOID, SILU, SOFTPLUS, TANH, jit, kernel
from .vmath import BLOCK, exp, exp_shifted

__all__ = [
    "IDENTITY",
    "RELU",
    "SIGMOID",
    "TANH",
    "LEAKY_RELU",
    "ELU",
    "GELU",
    "GELU_TANH",
    "SILU",
    "SOFTPLUS",
    "bias_act",
    "act_backward",
    "bias_act_param",
    "act_backward_param",
    "softmax_forward",
    "softmax_backward",
]


@kernel
def bias_act(y, b, act):
    """In place on ``y`` (n, m): ``y = act(y + b)`` with ``b`` (m,) (zeros for no bias).

    One loop per activation, each a single pass that adds the bias and applies
    the activation (two loops or a branch inside one measured 5x slower).
    """
    n, m = y.shape
    zero = y.dtype.type(0.0)
    one = y.dtype.type(1.0)
    if act == RELU:
        for i in prange(n):
            row = y[i]
            for j in range(m):
                v = row[j] + b[j]
                # `v < 0` rather than `v > 0` so that NaN passes through, as numpy's maximum does.
                row[j] = zero if v < zero else v
    elif act == SIGMOID:
        for i in prange(n):
            row = y[i]
            for j in range(m):
                v = row[j] + b[j]
                # exp of -|v| never overflows; e/(1+e) keeps precision for very negative v.
                e = exp(-np.abs(v))
                s = one / (one + e)
                row[j] = s if v >= zero else e * s
    elif act == TANH:
        for i in prange(n):
            row = y[i]
            for j in range(m):
                row[j] = np.tanh(row[j] + b[j])
    else:
        for i in prange(n):
            row = y[i]
            for j in range(m):
                row[j] += b[j]


@kernel
def act_backward(dy, y, act, dx):
    """``dx = dy * act'(.)`` expressed through the output ``y``; all (n, m), ``dx`` may be ``dy``.

    relu: ``dy * (y > 0)`` (derivative 0 at exactly 0); sigmoid: ``dy * y * (1 - y)``;
    tanh: ``dy * (1 - y*y)``; identity: ``dy``.
    """
    n, m = dy.shape
    zero = dy.dtype.type(0.0)
    one = dy.dtype.type(1.0)
    # One row loop per activation, the branch outside it: with the branch inside, LLVM left
    # the loops scalar (relu on 200 x 100 float32 took 5.1 us, 2.5 us this way).
    if act == RELU:
        for i in prange(n):
            g, o, d = dy[i], y[i], dx[i]
            for j in range(m):
                d[j] = g[j] if o[j] > zero else zero
    elif act == SIGMOID:
        for i in prange(n):
            g, o, d = dy[i], y[i], dx[i]
            for j in range(m):
                d[j] = g[j] * o[j] * (one - o[j])
    elif act == TANH:
        for i in prange(n):
            g, o, d = dy[i], y[i], dx[i]
            for j in range(m):
                d[j] = g[j] * (one - o[j] * o[j])
    else:
        for i in prange(n):
            g, d = dy[i], dx[i]
            for j in range(m):
                d[j] = g[j]


# -- float32 math the parameterised activations need, in a form LLVM vectorises --------------------------
#
# numba calls libm's scalar functions for np.expm1, np.log1p and math.erfc (the PyPI llvmlite has no SVML):
# correct, but one call per element. For float32 these are polynomials over vmath's exp instead; float64
# keeps libm.
#
# Inlining. LLVM's inliner declines the larger helpers (GELU's Phi), and a loop with a call in it does
# not vectorise (GELU 30x slower), so these are numba-inlined (``inline="always"``), as vmath's exp. But
# numba's inlining of a function twice into another trips its SSA check ("NumbaIRAssumptionWarning:
# variable ... is not in scope"), and each level of inlining inside an inlined function multiplies the
# compile time (3 levels over exp: 4 s a function). Hence the shape below: each activation's loop is a
# row function of its own (``_fwd_*``, ``_bwd_*``, called once per row: the kernels' own branches
# stay small), with its math written out and at most one helper (which may inline exp).

# expm1(x) = x + x^2 Q(x) for -0.7 <= x <= 0, Q in x (degree 6); below -0.7, exp(x) - 1 loses < 1 ulp.
EXPM1_Q = (0.5, 0.16666666, 0.041666593, 0.008332713, 0.001386346, 0.00019299776, 1.8928116e-05)
# Cephes' logf polynomial: log(1 + u) = u - u^2/2 + u^3 P(u) for sqrt(1/2) - 1 <= u <= sqrt(2) - 1.
LOG1P_P = (
    3.3333331174e-1,
    -2.4999993993e-1,
    2.0000714765e-1,
    -1.6668057665e-1,
    1.4249322787e-1,
    -1.2420140846e-1,
    1.1676998740e-1,
    -1.1514610310e-1,
    7.0376836292e-2,
)
# The normal CDF Phi(x) = erfc(-x / sqrt 2) / 2 in two pieces, switching at |x| = 1:
#   |x| < 1:  Phi(x) = 1/2 + x S(x^2)                         (S degree 5)
#   |x| >= 1: Phi(-|x|) = exp(-x^2/2) t T(t), t = 1/(1 + |x|/2)  (T degree 9)
# and Phi(|x|) = 1 - Phi(-|x|). The tail form keeps full relative precision as Phi(x) -> 0, where
# 1/2 + erf(x / sqrt 2) / 2 (PyTorch's formula) cancels: at x = -5 that loses 17% in float32.
PHI_S = (0.3989423, -0.06649036, 0.009973324, -0.00118633, 0.00011348646, -7.654238e-06)
PHI_T = (
    0.19947436,
    0.19936594,
    0.15105392,
    0.03892902,
    -0.014032011,
    -0.23154053,
    0.07670649,
    0.31847942,
    -0.3544594,
    0.11655867,
)
INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)
# gelu_tanh: 0.5 x (1 + tanh(u)) = x sigmoid(2u), 2u = x (TANH_C0 + TANH_C1 x^2), PyTorch's constants:
# u = sqrt(2/pi) (x + 0.044715 x^3).
TANH_C0 = 2.0 * math.sqrt(2.0 / math.pi)
TANH_C1 = 2.0 * math.sqrt(2.0 / math.pi) * 0.044715


# The float32 helpers' constants are made at typing time and reach the compiled code as closure
# constants, not as ``np.float32(...)`` calls in the body, typed again at every inlined use.


def expm1(x):
    """``exp(x) - 1`` for ``x <= 0``, in kernels; float32 vectorises."""
    return np.expm1(x)


@overload(expm1, inline="always")
def _expm1_overload(x):
    if x != types.float32:
        return lambda x: np.expm1(x)
    q0, q1, q2, q3, q4, q5, q6 = map(np.float32, EXPM1_Q)
    lo, zero, one = np.float32(-0.7), np.float32(0.0), np.float32(1.0)

    def impl(x):
        p = ((((((q6 * x + q5) * x + q4) * x + q3) * x + q2) * x + q1) * x) + q0
        r = x + x * x * p if x >= lo else exp(x) - one
        return x if x == zero else r  # expm1(-0) = -0, as libm's

    return impl


def log1p_unit(e):
    """``log(1 + e)`` for ``0 <= e <= 1`` (and NaN), in kernels; float32 vectorises."""
    return np.log1p(e)


@overload(log1p_unit, inline="always")
def _log1p_unit_overload(e):
    if e != types.float32:
        return lambda e: np.log1p(e)
    c0, c1, c2, c3, c4, c5, c6, c7, c8 = map(np.float32, LOG1P_P)
    # + ln 2 in two parts, as Cephes: 0.693359375 is exact in a few bits
    split, half, one, ln2_lo, ln2_hi = map(np.float32, (0.41421356, 0.5, 1.0, -2.12194440e-4, 0.693359375))

    def impl(e):
        # 1 + e = 2 (1 + u) with u = (e - 1)/2 above sqrt 2 - 1, so |u| <= sqrt 2 - 1 either way
        big = e > split
        u = (e - one) * half if big else e
        z = u * u
        p = (((((((c8 * u + c7) * u + c6) * u + c5) * u + c4) * u + c3) * u + c2) * u + c1) * u + c0
        y = u * (z * p)
        y = u + ((y + ln2_lo if big else y) - half * z)
        return y + ln2_hi if big else y

    return impl


def phi(x):
    """``(Phi(x), exp(-x*x/2))``: the normal CDF and the Gaussian factor of its density, in kernels."""
    return 0.5 * math.erfc(-x * 0.7071067811865476), np.exp(-0.5 * x * x)


@overload(phi, inline="always")
def _phi_overload(x):
    if x != types.float32:

        def impl64(x):
            return 0.5 * math.erfc(-x * 0.7071067811865476), np.exp(-0.5 * x * x)

        return impl64

    s0, s1, s2, s3, s4, s5 = map(np.float32, PHI_S)
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 = map(np.float32, PHI_T)
    zero, half, one, fourteen, scale, unscale = map(np.float32, (0.0, 0.5, 1.0, 14.0, 256.0, 1 / 256))
    sixth, twentyfourth = np.float32(1 / 6), np.float32(1 / 24)

    def impl(x):
        ax = np.abs(x)
        # exp(-x^2/2) with x = xh + xl, xh = x to 8 fractional bits: xh^2 is exact, and the rest,
        # w = xl (xh + xl/2) < 0.055, goes through a short series. exp(-x*x/2) directly would carry the
        # rounding of x*x into the exponent: 60 ulp near x = -13, where Phi leaves float32's range.
        xc = ax if ax < fourteen else fourteen  # beyond 14, exp(-x^2/2) is 0 in float32; NaN becomes 14
        xh = np.float32(np.int32(xc * scale)) * unscale
        xl = xc - xh
        w = xl * (xh + half * xl)
        ew = one - w * (one - w * (half - w * (sixth - w * twentyfourth)))
        e = exp(-half * xh * xh) * ew if ax < fourteen else zero  # x e is then 0, not inf * 0, at x = inf
        t = one / (one + half * ax)
        p = ((((((((c9 * t + c8) * t + c7) * t + c6) * t + c5) * t + c4) * t + c3) * t + c2) * t + c1) * t + c0
        tail = e * (t * p)  # Phi(-|x|)
        v = x * x
        q = ((((s5 * v + s4) * v + s3) * v + s2) * v + s1) * v + s0
        small = half + x * q
        big = tail if x < zero else one - tail
        return (small if ax < one else big), e

    return impl


# -- the row loops, one function per activation and direction (see "Inlining" above) -----------------
# Forward: in place on ``row``, ``row = f(row + b)``. Backward: ``d = g * f'`` reading ``s``, the saved
# input or (leaky_relu, elu from the output) the output; ``d`` may be ``g``. The math is written out in
# each: a helper inlined into a helper costs seconds of compile time per level. Sigmoids are formed
# from e = exp(-|v|) and r = 1/(1 + e): s = r for v >= 0, e r otherwise, s (1 - s) = e r^2, none of
# which overflows. -0.0 is returned where x * sigmoid(x) or x * Phi(x) would be -inf * 0 = NaN: the
# limit at -inf (PyTorch gives NaN); a derivative term x e is 0 where e underflows, not inf * 0.


def _fwd_leaky_relu(row, b, p1, p2):
    zero = row.dtype.type(0.0)
    for j in range(row.shape[0]):
        v = row[j] + b[j]
        row[j] = v if v > zero else p1 * v


def _fwd_elu(row, b, p1, p2):
    zero = row.dtype.type(0.0)
    for j in range(row.shape[0]):
        v = row[j] + b[j]
        row[j] = v if v > zero else p1 * expm1(v)


def _fwd_gelu(row, b, p1, p2):
    zero = row.dtype.type(0.0)
    for j in range(row.shape[0]):
        v = row[j] + b[j]
        p, _ = phi(v)
        row[j] = -zero if p == zero else v * p


def _fwd_gelu_tanh(row, b, p1, p2):
    t = row.dtype.type
    zero, one, c0, c1 = t(0.0), t(1.0), t(TANH_C0), t(TANH_C1)
    for j in range(row.shape[0]):
        v = row[j] + b[j]
        u = v * (c0 + c1 * v * v)  # 2u
        e = exp(-np.abs(u))
        r = one / (one + e)
        s = r if u >= zero else e * r
        row[j] = -zero if s == zero else v * s


def _fwd_silu(row, b, p1, p2):
    t = row.dtype.type
    zero, one = t(0.0), t(1.0)
    for j in range(row.shape[0]):
        v = row[j] + b[j]
        e = exp(-np.abs(v))
        r = one / (one + e)
        s = r if v >= zero else e * r
        row[j] = -zero if s == zero else v * s


def _fwd_softplus(row, b, p1, p2):
    # PyTorch's threshold (p2): linear above it. Below, max(t, 0) + log1p(exp(-|t|)) never overflows
    # (PyTorch's log1p(exp(t)) is inf from t = 89 in float32, with a threshold that large). p1 = beta.
    zero = row.dtype.type(0.0)
    for j in range(row.shape[0]):
        v = row[j] + b[j]
        t = p1 * v
        pos = t if t > zero else zero
        row[j] = v if t > p2 else (pos + log1p_unit(exp(-np.abs(t)))) / p1


def _bwd_leaky_relu(g, s, p1, p2, d):
    zero = g.dtype.type(0.0)
    for j in range(g.shape[0]):
        d[j] = g[j] if s[j] > zero else g[j] * p1


def _bwd_elu_from_output(g, s, p1, p2, d):
    zero = g.dtype.type(0.0)
    for j in range(g.shape[0]):
        d[j] = g[j] * (s[j] + p1) if s[j] <= zero else g[j]


def _bwd_elu_from_input(g, s, p1, p2, d):
    zero = g.dtype.type(0.0)
    for j in range(g.shape[0]):
        d[j] = g[j] * p1 * exp(s[j]) if s[j] <= zero else g[j]


def _bwd_gelu(g, s, p1, p2, d):
    # Phi(x) + x phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi)
    t = g.dtype.type
    zero, c = t(0.0), t(INV_SQRT_2PI)
    for j in range(g.shape[0]):
        x = s[j]
        p, e = phi(x)
        d[j] = g[j] * (p if e == zero else p + x * e * c)


def _bwd_gelu_tanh(g, s, p1, p2, d):
    # s + x s (1 - s) (2u)', (2u)' = c0 + 3 c1 x^2
    t = g.dtype.type
    zero, one, c0, c1, c3 = t(0.0), t(1.0), t(TANH_C0), t(TANH_C1), t(3.0 * TANH_C1)
    for j in range(g.shape[0]):
        x = s[j]
        x2 = x * x
        u = x * (c0 + c1 * x2)
        e = exp(-np.abs(u))
        r = one / (one + e)
        sg = r if u >= zero else e * r
        d[j] = g[j] * (sg if e == zero else sg + x * e * r * r * (c0 + c3 * x2))


def _bwd_silu(g, s, p1, p2, d):
    # s (1 + x (1 - s)) = s + x e r^2
    t = g.dtype.type
    zero, one = t(0.0), t(1.0)
    for j in range(g.shape[0]):
        x = s[j]
        e = exp(-np.abs(x))
        r = one / (one + e)
        sg = r if x >= zero else e * r
        d[j] = g[j] * (sg if e == zero else sg + x * e * r * r)


def _bwd_softplus(g, s, p1, p2, d):
    # sigmoid(beta x), 1 above the threshold (p1 = beta, p2 = threshold)
    t = g.dtype.type
    zero, one = t(0.0), t(1.0)
    for j in range(g.shape[0]):
        u = p1 * s[j]
        e = exp(-np.abs(u))
        r = one / (one + e)
        sg = r if u >= zero else e * r
        d[j] = g[j] if u > p2 else g[j] * sg


_fwd_leaky_relu, _fwd_elu, _fwd_gelu, _fwd_gelu_tanh, _fwd_silu, _fwd_softplus = (
    jit(f) for f in (_fwd_leaky_relu, _fwd_elu, _fwd_gelu, _fwd_gelu_tanh, _fwd_silu, _fwd_softplus)
)
_bwd_leaky_relu, _bwd_elu_from_output, _bwd_elu_from_input, _bwd_gelu, _bwd_gelu_tanh, _bwd_silu, _bwd_softplus = (
    jit(f)
    for f in (
        _bwd_leaky_relu,
        _bwd_elu_from_output,
        _bwd_elu_from_input,
        _bwd_gelu,
        _bwd_gelu_tanh,
        _bwd_silu,
        _bwd_softplus,
    )
)


@kernel
def bias_act_param(y, b, act, p1, p2, z):
    """In place on ``y`` (n, m): ``y = act(y + b)`` for the activations with parameters or a saved input.

    ``act``: LEAKY_RELU (``p1`` = negative_slope), ELU (``p1`` = alpha), GELU, GELU_TANH,
    SILU, SOFTPLUS (``p1`` = beta, ``p2`` = threshold); unused parameters are ignored.
    ``p1``, ``p2`` are scalars of ``y``'s dtype (a float64 constant would turn a float32
    loop into float64). ``z`` is (n, m) to receive the pre-activation ``y + b`` that
    :func:`act_backward_param` reads, or (0, 0) to save nothing.
    """
    n, m = y.shape
    save = z.shape[0] != 0
    for i in prange(n):
        row = y[i]
        if save:  # a pass of its own: the row is in L1 for the next one
            zr = z[i]
            for j in range(m):
                zr[j] = row[j] + b[j]
        if act == LEAKY_RELU:
            _fwd_leaky_relu(row, b, p1, p2)
        elif act == ELU:
            _fwd_elu(row, b, p1, p2)
        elif act == GELU:
            _fwd_gelu(row, b, p1, p2)
        elif act == GELU_TANH:
            _fwd_gelu_tanh(row, b, p1, p2)
        elif act == SILU:
            _fwd_silu(row, b, p1, p2)
        elif act == SOFTPLUS:
            _fwd_softplus(row, b, p1, p2)
        else:
            for j in range(m):
                row[j] += b[j]


@kernel
def act_backward_param(dy, y, z, act, p1, p2, dx):
    """``dx = dy * act'(x)`` for :func:`bias_act_param`'s activations; all (n, m), ``dx`` may be ``dy``.

    GELU, GELU_TANH, SILU and SOFTPLUS read the saved pre-activation ``z`` (their derivative
    is not a function of the output: GELU and SiLU are not monotonic, Softplus's threshold
    makes two inputs share an output); ``y`` may then be (0, 0). LEAKY_RELU and ELU read
    ``z`` when it has rows and the output ``y`` otherwise, which is exact only for
    ``p1 >= 0`` (with a negative slope or alpha, ``y > 0`` comes from either sign of ``x``):
    leaky_relu ``dy if y > 0 else p1 * dy``; elu ``dy * (y + p1) if y <= 0 else dy``
    (``p1 * exp(x)``, from the input). Comparisons are PyTorch's, so a NaN input gives what
    PyTorch gives (leaky_relu ``p1 * dy``, elu ``dy``).
    """
    n, m = dy.shape
    given = z.shape[0] != 0
    for i in prange(n):
        g = dy[i]
        d = dx[i]
        s = z[i] if given else y[i]
        if act == LEAKY_RELU:
            _bwd_leaky_relu(g, s, p1, p2, d)
        elif act == ELU:
            if given:
                _bwd_elu_from_input(g, s, p1, p2, d)
            else:
                _bwd_elu_from_output(g, s, p1, p2, d)
        elif act == GELU:
            _bwd_gelu(g, s, p1, p2, d)
        elif act == GELU_TANH:
            _bwd_gelu_tanh(g, s, p1, p2, d)
        elif act == SILU:
            _bwd_silu(g, s, p1, p2, d)
        elif act == SOFTPLUS:
            _bwd_softplus(g, s, p1, p2, d)
        else:
            for j in range(m):
                d[j] = g[j]


@kernel(reduction=True)
def softmax_forward(x, y):
    """Row-wise softmax of ``x`` (n, m) into ``y`` (may be ``x``); the row max is subtracted first."""
    n, m = x.shape
    for i in prange(n):
        yr = y[i]
        _, s = exp_shifted(x[i], yr)
        inv = x.dtype.type(1.0) / x.dtype.type(s)  # s: the float64 row sum, rounded once
        for j in range(m):
            yr[j] *= inv


@kernel(reduction=True)
def softmax_backward(dy, y, dx):
    """Softmax Jacobian-vector product row by row: ``dx = y * (dy - sum(dy * y))``; ``dx`` may be ``dy``."""
    n, m = dy.shape
    for i in prange(n):
        g = dy[i]
        o = y[i]
        d = dx[i]
        total = 0.0  # float64 over float32 blocks: see vmath.BLOCK
        for b in range((m + BLOCK - 1) // BLOCK):  # not range(0, m, BLOCK): that stops vectorising
            j0 = b * BLOCK
            part = dy.dtype.type(0.0)
            for jj in range(min(BLOCK, m - j0)):
                j = j0 + jj
                part += g[j] * o[j]
            total += part
        s = dy.dtype.type(total)
        for j in range(m):
            d[j] = o[j] * (g[j] - s)
