"""numpy twins of :mod:`fastbp.kernels.dropout`: the same hash in numpy uint64 arithmetic, the same bits."""

import numpy as np

from ..kernels.dropout import GAMMA, STEP_GAMMA

_GAMMA = np.uint64(GAMMA)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix64(z):
    """SplitMix64's finalizer on a uint64 array, in place (numpy's uint64 array arithmetic wraps silently)."""
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def stream_key(seed, step):
    """The key of step ``step`` of the generator seeded ``seed``, as a numpy uint64."""
    s = _mix64(np.array([seed], np.uint64))
    s += (np.array([step], np.uint64) + np.uint64(1)) * np.uint64(STEP_GAMMA)
    return _mix64(s)[0]


def keep_mask(shape, seed, step, threshold):
    """The boolean mask of kept elements for a batch of ``shape`` (n, m)."""
    z = np.arange(1, shape[0] * shape[1] + 1, dtype=np.uint64)
    z *= _GAMMA
    z += stream_key(seed, step)
    return (_mix64(z) >> np.uint64(11) >= np.uint64(threshold)).reshape(shape)


def dropout_forward(x, y, mask, seed, step, threshold, scale):
    keep = keep_mask(x.shape, seed, step, threshold)
    np.copyto(mask, keep)
    # x * (mask * scale), as PyTorch multiplies by its mask: NaN * 0 stays NaN.
    np.multiply(x, np.where(keep, x.dtype.type(scale), x.dtype.type(0)), out=y)


def dropout_backward(dy, mask, scale, dx):
    np.multiply(dy, np.where(mask, dy.dtype.type(scale), dy.dtype.type(0)), out=dx)
