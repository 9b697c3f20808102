"""numpy twins of :mod:`fastbp.kernels.activations`."""

import numpy as np

from ..jit import RELU, SIGMOID, TANH


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


def softmax_forward(x, y):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.divide(e, e.sum(axis=1, keepdims=True), out=y)


def softmax_backward(dy, y, dx):
    np.copyto(dx, y * (dy - (dy * y).sum(axis=1, keepdims=True)))
