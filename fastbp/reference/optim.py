"""numpy twins of :mod:`fastbp.kernels.optim`, written the idiomatic numpy way."""

import numpy as np


def sgd(w, g, buf, lr, momentum, weight_decay, nesterov):
    d = g + weight_decay * w
    if buf.shape[0]:
        buf *= momentum
        buf += d
        d = d + momentum * buf if nesterov else buf
    w -= lr * d


def adam(w, g, m, v, step_size, inv_sqrt_bc2, eps, beta1, beta2, one_minus_beta1, one_minus_beta2, weight_decay, decay):
    w *= decay
    d = g + weight_decay * w
    m[...] = beta1 * m + one_minus_beta1 * d
    v[...] = beta2 * v + one_minus_beta2 * d * d  # left to right: (c2 d) d cannot overflow where d d would
    w -= step_size * m / (np.sqrt(v) * inv_sqrt_bc2 + eps)


def sum_squares(g):
    return float(np.dot(g, g))


def scale_(g, factor):
    g *= factor
