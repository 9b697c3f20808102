"""numpy twins of :mod:`fastbp.kernels.activations`."""

import math

import numpy as np

from ..jit import ELU, GELU, GELU_TANH, LEAKY_RELU, RELU, SIGMOID, SILU, SOFTPLUS, TANH
from ..kernels.activations import INV_SQRT_2PI, PHI_S, PHI_T, TANH_C0, TANH_C1


def _sigmoid(x, out):
    # Same stable form as the kernel: exp(-|x|) never overflows.
    e = np.exp(-np.abs(x))
    s = 1 / (1 + e)
    np.copyto(out, np.where(x >= 0, s, e * s).astype(out.dtype, copy=False))
    return out


def bias_act(y, b, act):
    y += b
    if act == RELU:
        # Like the kernel and torch.relu: only y < 0 becomes 0, so NaN passes through and -0 stays -0
        # (np.maximum(y, 0) would turn -0 into +0).
        y[y < 0] = 0
    elif act == SIGMOID:
        _sigmoid(y, y)
    elif act == TANH:
        np.tanh(y, out=y)


def act_backward(dy, y, act, dx):
    if act == RELU:
        # dy * [y > 0] as a select, not a product: dy * (y > 0) is inf * 0 = NaN for an infinite or NaN dy
        # where y <= 0, where the kernel and torch give 0. A NaN y also gives 0 ([NaN > 0] is 0, as in the
        # kernel); PyTorch's threshold_backward (``y <= 0 ? 0 : dy``) passes dy through there instead.
        np.copyto(dx, np.where(y > 0, dy, 0))
    elif act == SIGMOID:
        np.copyto(dx, dy * y * (1 - y))
    elif act == TANH:
        np.copyto(dx, dy * (1 - y * y))
    else:
        np.copyto(dx, dy)


def _sigmoid3(v):
    """``(sigmoid(v), e, r)`` with ``e = exp(-|v|)``, ``r = 1/(1 + e)``, as the kernels."""
    e = np.exp(-np.abs(v))
    r = 1 / (1 + e)
    return np.where(v >= 0, r, e * r), e, r


def _horner(x, coeffs):
    p = np.full_like(x, coeffs[-1])
    for c in coeffs[-2::-1]:
        p = p * x + x.dtype.type(c)
    return p


_erfc = np.frompyfunc(math.erfc, 1, 1)


def _phi(x):
    """``(Phi(x), exp(-x*x/2))``, the normal CDF and the Gaussian factor of its density.

    numpy has no erf. float64 calls ``math.erfc`` per element (slow, exact to libm's
    rounding, as the float64 kernel does); float32 evaluates the kernels' polynomials
    (:data:`fastbp.kernels.activations.PHI_S`, ``PHI_T``, accuracy in docs/derivations.md, "GELU").
    """
    if x.dtype != np.float32:
        return (0.5 * _erfc(-x * 0.7071067811865476)).astype(x.dtype), np.exp(-0.5 * x * x)
    ax = np.abs(x)
    xc = np.where(ax < 14, ax, np.float32(14))  # NaN becomes 14 here, as in the kernel
    xh = np.trunc(xc * 256) / 256  # x to 8 fractional bits: xh * xh is exact
    xl = xc - xh
    w = xl * (xh + 0.5 * xl)
    e = np.exp(-0.5 * xh * xh) * (1 - w * (1 - w * (0.5 - w * (np.float32(1 / 6) - w * np.float32(1 / 24)))))
    e = np.where(ax < 14, e, 0)  # not numpy's subnormal exp(-98): x * e would be inf * e at x = inf
    t = 1 / (1 + 0.5 * ax)
    tail = e * (t * _horner(t, PHI_T))
    small = 0.5 + x * _horner(x * x, PHI_S)
    return np.where(ax < 1, small, np.where(x < 0, tail, 1 - tail)), e


def _x_times(v, s):
    # x * sigmoid(x) or x * Phi(x); -0.0 (the limit) where that is -inf * 0
    return np.where(s == 0, -0.0, v * s)


def _param_forward(v, act, p1, p2):
    if act == LEAKY_RELU:
        return np.where(v > 0, v, p1 * v)
    if act == ELU:
        return np.where(v > 0, v, p1 * np.expm1(v))
    if act == GELU:
        return _x_times(v, _phi(v)[0])
    if act == GELU_TANH:
        return _x_times(v, _sigmoid3(v * (TANH_C0 + TANH_C1 * v * v))[0])
    if act == SILU:
        return _x_times(v, _sigmoid3(v)[0])
    if act == SOFTPLUS:
        t = p1 * v
        # PyTorch's threshold; below it max(t, 0) + log1p(exp(-|t|)), which never overflows
        return np.where(t > p2, v, (np.where(t > 0, t, 0) + np.log1p(np.exp(-np.abs(t)))) / p1)
    return v


def bias_act_param(y, b, act, p1, p2, z):
    y += b
    if z.shape[0]:
        np.copyto(z, y)
    # np.where computes both sides: overflows and NaNs in the side not taken are expected.
    with np.errstate(over="ignore", invalid="ignore"):
        np.copyto(y, _param_forward(y, act, p1, p2))


def _param_backward(dy, y, z, act, p1, p2):
    if act == LEAKY_RELU:
        return np.where((z if z.shape[0] else y) > 0, dy, dy * p1)
    if act == ELU:
        # from the input when saved (alpha * exp(x)), else from the output (y + alpha); PyTorch's comparisons
        if z.shape[0]:
            return np.where(z <= 0, dy * p1 * np.exp(z), dy)
        return np.where(y <= 0, dy * (y + p1), dy)
    if act == GELU:
        p, e = _phi(z)
        return dy * np.where(e == 0, p, p + z * e * INV_SQRT_2PI)
    if act == GELU_TANH:
        z2 = z * z
        s, e, r = _sigmoid3(z * (TANH_C0 + TANH_C1 * z2))
        return dy * np.where(e == 0, s, s + z * e * r * r * (TANH_C0 + 3 * TANH_C1 * z2))
    if act == SILU:
        s, e, r = _sigmoid3(z)
        return dy * np.where(e == 0, s, s + z * e * r * r)
    if act == SOFTPLUS:
        t = p1 * z
        return np.where(t > p2, dy, dy * _sigmoid3(t)[0])
    return dy


def act_backward_param(dy, y, z, act, p1, p2, dx):
    with np.errstate(over="ignore", invalid="ignore"):
        np.copyto(dx, _param_backward(dy, y, z, act, p1, p2))


def softmax_forward(x, y):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.divide(e, e.sum(axis=1, keepdims=True), out=y)


def softmax_backward(dy, y, dx):
    np.copyto(dx, y * (dy - (dy * y).sum(axis=1, keepdims=True)))
