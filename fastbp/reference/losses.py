"""numpy twins of :mod:`fastbp.kernels.losses` (same arguments, same outputs)."""

import numpy as np


def _log_softmax(z):
    m = z.max(axis=1, keepdims=True)
    shifted = z - m
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _xent_finish(logp, c, li, scale, grad, row_loss):
    # Row loss li = sum_k c_k (-log p_k); gradient C p - c with C = sum_k c_k.
    row_loss[...] = li
    np.copyto(grad, scale * (c.sum(axis=1, keepdims=True) * np.exp(logp) - c))
    return float(li.sum(dtype=np.float64))


def softmax_xent_labels(z, labels, weights, smoothing, scale, grad, row_loss):
    n, k = z.shape
    rows = np.arange(n)
    w = weights if weights.shape[0] else np.ones(k, z.dtype)
    logp = _log_softmax(z)
    # -log p of the target, plus every class's only when smoothing, as the kernel and torch's cross_entropy
    # sum them: the dense sum_k c_k (-log p_k) would add 0 * inf = NaN for a -inf logit (p = 0) off the target.
    # (A class of weight 0 with a -inf logit still gives NaN when smoothing, in all three.)
    li = (1 - smoothing) * w[labels] * -logp[rows, labels]
    if smoothing:
        li += (smoothing / k) * -(w * logp).sum(axis=1)
    c = np.broadcast_to((smoothing / k) * w, z.shape).astype(z.dtype)
    c[rows, labels] += (1 - smoothing) * w[labels]
    return _xent_finish(logp, c, li, scale, grad, row_loss)


def softmax_xent_probs(z, q, weights, smoothing, scale, grad, row_loss):
    k = z.shape[1]
    c = (1 - smoothing) * q + smoothing / k
    if weights.shape[0]:
        c = c * weights
    c = c.astype(z.dtype, copy=False)
    logp = _log_softmax(z)
    # Every class enters, as in the kernel and torch's cross_entropy on probability rows: a -inf logit
    # with target 0 gives 0 * inf = NaN in all three.
    return _xent_finish(logp, c, -(c * logp).sum(axis=1), scale, grad, row_loss)


def _clamp(x, eps):
    # max(x, eps) as the kernel (Python's max) and torch.clamp compute it: x unless x < eps. So NaN passes
    # through and, with eps = 0, -0 stays -0 and its gradient -scale/v is +inf; np.maximum would give +0.
    return np.where(x < eps, eps, x)


def xent_labels(x, labels, eps, scale, grad, row_loss):
    n = x.shape[0]
    v = _clamp(x[np.arange(n), labels], eps)
    row_loss[...] = -np.log(v)
    grad[...] = 0
    grad[np.arange(n), labels] = -scale / v
    return float(row_loss.sum(dtype=np.float64))


def xent_probs(x, q, eps, scale, grad, row_loss):
    v = _clamp(x, eps)
    row_loss[...] = -(q * np.log(v)).sum(axis=1)
    np.copyto(grad, -scale * q / v)
    return float(row_loss.sum(dtype=np.float64))


def mse(pred, target, lscale, gscale, grad, elem_loss):
    d = pred - target
    np.multiply(d, gscale, out=grad)
    sq = d * d
    if elem_loss.shape[0]:
        np.multiply(sq, lscale, out=elem_loss)
    return float(lscale) * float(sq.sum(dtype=np.float64))


def bce_logits(z, y, gscale, grad, elem_loss):
    e = np.exp(-np.abs(z))
    # (1 - y) max(z, 0) + y max(-z, 0) is the kernel's max(z, 0) - z y for finite z; at z = +inf it is inf
    # for y < 1 like torch's, where max(z, 0) - z y is inf - inf = NaN. Exception: at z = -inf with y > 0
    # it is the true loss inf, like the kernel, where torch's log-sum-exp form gives NaN. Where the limit
    # is 0 * inf (z = inf, y = 1; z = -inf, y = 0) it is NaN in all three.
    li = (1 - y) * np.maximum(z, 0) + y * np.maximum(-z, 0) + np.log1p(e)
    s = 1 / (1 + e)
    sig = np.where(z >= 0, s, e * s)
    np.copyto(grad, gscale * (sig - y))
    if elem_loss.shape[0]:
        elem_loss[...] = li
    return float(li.sum(dtype=np.float64))


def count_hits(scores, labels):
    return int((scores.argmax(axis=1) == labels).sum())
