"""Activation kernels: forward fused with the bias add, backward from the output.

Activation codes are small ints so one compiled kernel serves every activation;
the branch is outside the inner loops, so each loop stays a tight vector loop.
"""

import numpy as np
from numba import prange

from ..jit import IDENTITY, RELU, SIGMOID, TANH, kernel
from .vmath import BLOCK, exp, exp_shifted

__all__ = ["IDENTITY", "RELU", "SIGMOID", "TANH", "bias_act", "act_backward", "softmax_forward", "softmax_backward"]


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
    for i in prange(n):
        g = dy[i]
        o = y[i]
        d = dx[i]
        if act == RELU:
            for j in range(m):
                d[j] = g[j] if o[j] > zero else zero
        elif act == SIGMOID:
            for j in range(m):
                d[j] = g[j] * o[j] * (one - o[j])
        elif act == TANH:
            for j in range(m):
                d[j] = g[j] * (one - o[j] * o[j])
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
