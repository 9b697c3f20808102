"""Dropout kernels: a counter-based mask, fused with the scale, and its backward.

Element ``e`` (the flat index ``i * m + j`` of an (n, m) batch) is kept at step
``step`` of the generator seeded ``seed`` iff its uniform number
``u = (h >> 11) * 2**-53`` is ``>= p``, where ``h`` is a 64-bit hash of
``(seed, step, e)``; kernels take ``threshold = ceil(p * 2**53)`` and compare
the 53-bit integer ``h >> 11`` with it, which is exactly ``u >= p`` (p = 1 gives
``2**53``: nothing is kept). The hash, from SplitMix64 (Steele, Lea and Flood,
OOPSLA 2014):

* ``key = mix64(mix64(seed) + (step + 1) * STEP_GAMMA)``: one key per step, the
  steps walking a SplitMix64 sequence of their own;
* ``h = mix64(key + (e + 1) * GAMMA)``: the elements of a step are the SplitMix64
  stream from that key.

``mix64`` is SplitMix64's finalizer (Stafford's "Mix13"), a bijection of 64-bit
integers with full avalanche. Each element depends only on its index, so any
split of the rows over threads gives the same mask. All arithmetic is uint64 and
wraps modulo 2**64; :mod:`fastbp.reference.dropout` computes the same bits with
numpy.
"""

import numpy as np
from numba import prange

from ..jit import jit, kernel

__all__ = ["GAMMA", "STEP_GAMMA", "dropout_forward", "dropout_backward", "stream_key"]

GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment: 2**64 / golden ratio, odd
STEP_GAMMA = 0xD1B54A32D192ED03  # another odd constant: odd, so distinct steps give distinct keys

_GAMMA = np.uint64(GAMMA)
_STEP_GAMMA = np.uint64(STEP_GAMMA)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_ONE = np.uint64(1)


def _mix64(z):
    # Every operand stays uint64: numba turns uint64 op int64 into float64.
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


mix64 = jit(_mix64, inline="always")


@jit
def stream_key(seed, step):
    """The key of step ``step`` of the generator seeded ``seed`` (both uint64)."""
    # np.uint64(...): a Python int would type as int64, and int64 op uint64 is float64 in numba.
    return mix64(mix64(np.uint64(seed)) + (np.uint64(step) + _ONE) * _STEP_GAMMA)


@kernel
def dropout_forward(x, y, mask, seed, step, threshold, scale):
    """``y = x * (mask * scale)`` with ``mask[e] = (h(seed, step, e) >> 11) >= threshold``; all (n, m).

    ``mask`` (uint8) receives 1 for kept elements, 0 for dropped ones. ``seed``,
    ``step`` and ``threshold`` are uint64; ``scale`` is of ``x``'s dtype. A dropped
    element is ``x * 0`` (NaN and inf give NaN, as in PyTorch), not a plain 0.
    """
    n, m = x.shape
    zero = x.dtype.type(0.0)
    key = stream_key(seed, step)
    threshold = np.uint64(threshold)
    for i in prange(n):
        xr = x[i]
        yr = y[i]
        mr = mask[i]
        # The stream's state before row i's first element. Stepping z by GAMMA (an induction
        # variable, not key + (e + 1) * GAMMA per element) saves a vector multiply: 1.2-1.3x.
        z = key + np.uint64(i) * np.uint64(m) * _GAMMA
        for j in range(m):
            z += _GAMMA
            keep = (mix64(z) >> _S11) >= threshold
            mr[j] = keep
            yr[j] = xr[j] * (scale if keep else zero)


@kernel
def dropout_backward(dy, mask, scale, dx):
    """``dx = dy * (mask * scale)`` with the forward's ``mask``; all (n, m), ``dx`` may be ``dy``."""
    n, m = dy.shape
    zero = dy.dtype.type(0.0)
    for i in prange(n):
        g = dy[i]
        mr = mask[i]
        d = dx[i]
        for j in range(m):
            d[j] = g[j] * (scale if mr[j] else zero)
