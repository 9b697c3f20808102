"""Fused optimizer updates: read weights, gradient and moments once, write once.

Arrays are flat views of a parameter (``p.data.reshape(-1)``). Scalars arrive
already cast to the array dtype, so a float32 update stays float32 throughout.
Each variant has its own loop so that every loop is a plain vector loop.
"""

import numpy as np
from numba import prange

from ..jit import kernel


@kernel
def sgd(w, g, buf, lr, momentum, weight_decay, nesterov):
    """PyTorch's SGD (dampening 0): ``g += wd w``; ``buf = mu buf + g``; ``w -= lr (g + mu buf if nesterov else buf)``.

    ``buf`` is empty when ``momentum == 0`` (then ``w -= lr g``).
    """
    n = w.shape[0]
    if buf.shape[0] == 0:
        for i in prange(n):
            w[i] -= lr * (g[i] + weight_decay * w[i])
    elif nesterov:
        for i in prange(n):
            gi = g[i] + weight_decay * w[i]
            b = momentum * buf[i] + gi
            buf[i] = b
            w[i] -= lr * (gi + momentum * b)
    else:
        for i in prange(n):
            b = momentum * buf[i] + g[i] + weight_decay * w[i]
            buf[i] = b
            w[i] -= lr * b


@kernel
def adam(w, g, m, v, step_size, inv_sqrt_bc2, eps, beta1, beta2, one_minus_beta1, one_minus_beta2, weight_decay, decay):
    """PyTorch's Adam/AdamW step for one parameter.

    ``w *= decay`` (AdamW: ``1 - lr wd``; Adam: 1); ``g += weight_decay w``
    (Adam's L2; 0 for AdamW); ``m = b1 m + (1-b1) g``; ``v = b2 v + (1-b2) g^2``;
    ``w -= step_size m / (sqrt(v) inv_sqrt_bc2 + eps)`` with
    ``step_size = lr / (1 - b1^t)`` and ``inv_sqrt_bc2 = 1 / sqrt(1 - b2^t)``.
    ``one_minus_beta1/2`` come from the caller, formed in float64 and rounded
    once: ``1 - beta2`` formed in float32 from a rounded 0.9999 is off by 8e-5.
    """
    n = w.shape[0]
    for i in prange(n):
        wi = w[i] * decay
        gi = g[i] + weight_decay * wi
        mi = beta1 * m[i] + one_minus_beta1 * gi
        # (c2 g) g, in this order: g g alone overflows float32 for |g| > 1.8e19. The kernel
        # compiles without ``reassoc`` (see ELEMENTWISE in fastbp/jit.py) so the order holds.
        vi = beta2 * v[i] + (one_minus_beta2 * gi) * gi
        m[i] = mi
        v[i] = vi
        w[i] = wi - step_size * mi / (np.sqrt(vi) * inv_sqrt_bc2 + eps)


@kernel(reduction=True)
def sum_squares(g):
    """``sum(g**2)`` of a flat array, accumulated in float64 (for global-norm clipping)."""
    total = 0.0
    for i in prange(g.shape[0]):
        total += g[i] * g[i]
    return total


@kernel
def scale_(g, factor):
    """``g *= factor`` in place."""
    for i in prange(g.shape[0]):
        g[i] *= factor
