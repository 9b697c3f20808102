"""numpy twins of :mod:`fastbp.kernels.fused_norm`: the unfused chain of twins, one after the other.

BatchNorm (:mod:`fastbp.reference.norm`), the activation (:mod:`fastbp.reference.activations`,
with the activation layers' biases: +0.0, or -0.0 for LeakyReLU) and dropout
(:mod:`fastbp.reference.dropout`), with the temporaries numpy needs.
"""

import numpy as np

from ..jit import IDENTITY, LEAKY_RELU, RELU, SIGMOID, TANH
from . import activations as _act
from . import dropout as _drop
from . import norm as _norm

FUSED_ACTIVATIONS = (IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH)
STORES_OUTPUT = (SIGMOID, TANH)


def _activate(h, act, p1):
    """In place on ``h``, as the activation layer's forward."""
    if act == LEAKY_RELU:
        t = h.dtype.type
        _act.bias_act_param(h, np.full(h.shape[1], -0.0, h.dtype), act, t(p1), t(0), np.empty((0, 0), h.dtype))
    elif act != IDENTITY:
        _act.bias_act(h, np.zeros(h.shape[1], h.dtype), act)


def bn_act_drop_forward(
    x, gamma, beta, eps, act, p1, drop, seed, steps, threshold, dscale, y, a, mask, stats, save, acc,
    running_mean, running_var, momentum, tracked,
):  # fmt: skip
    h = np.empty_like(x)
    _norm.batchnorm_forward(x, gamma, beta, eps, h, stats, save, acc)
    if running_mean.shape[0]:  # the BatchNorm layer's running statistics, then the Dropout's step
        tracked += 1
        factor = momentum if momentum >= 0.0 else 1.0 / float(tracked[0])
        _norm.batchnorm_running(running_mean, running_var, stats, factor, x.shape[0])
    step = steps[0]
    if drop:
        steps += np.uint64(1)
    _activate(h, act, p1)
    if drop:
        if a.shape[0]:
            a[...] = h
        _drop.dropout_forward(h, y, mask, seed, step, threshold, dscale)
    else:
        y[...] = h


def bn_act_drop_backward(dy, x, save, o, mask, act, p1, drop, dscale, need_dx, dx, dgamma, dbeta, acc, work):
    g = np.empty_like(dy)
    if drop:
        _drop.dropout_backward(dy, mask, dscale, g)
    else:
        g[...] = dy
    if act in STORES_OUTPUT:
        _act.act_backward(g, o, act, g)
    elif act != IDENTITY:
        # ReLU and LeakyReLU from the BatchNorm output, recomputed as the kernel does
        v = (x - save[0]) * save[3] + save[4]
        if act == RELU:
            np.copyto(g, np.where(v > 0, g, 0))
        else:
            np.copyto(g, np.where(v > 0, g, g * g.dtype.type(p1)))
    _norm.batchnorm_backward(g, x, save, True, need_dx, dx, dgamma, dbeta, acc, work)
