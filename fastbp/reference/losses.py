"""numpy twins of :mod:`fastbp.kernels.losses` (same arguments, same outputs)."""

import numpy as np


def _log_softmax(z):
    m = z.max(axis=1, keepdims=True)
    shifted = z - m
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _xent_from_coefficients(z, c, scale, grad, row_loss):
    # Row loss sum_k c_k (-log p_k); gradient C p - c with C = sum_k c_k.
    logp = _log_softmax(z)
    li = -(c * logp).sum(axis=1)
    row_loss[...] = li
    np.copyto(grad, scale * (c.sum(axis=1, keepdims=True) * np.exp(logp) - c))
    return float(li.sum(dtype=np.float64))


def softmax_xent_labels(z, labels, weights, smoothing, scale, grad, row_loss):
    n, k = z.shape
    w = weights if weights.shape[0] else np.ones(k, z.dtype)
    onehot = np.zeros_like(z)
    onehot[np.arange(n), labels] = 1
    c = (1 - smoothing) * onehot * w[labels][:, None] + (smoothing / k) * w
    return _xent_from_coefficients(z, c.astype(z.dtype, copy=False), scale, grad, row_loss)


def softmax_xent_probs(z, q, weights, smoothing, scale, grad, row_loss):
    k = z.shape[1]
    c = (1 - smoothing) * q + smoothing / k
    if weights.shape[0]:
        c = c * weights
    return _xent_from_coefficients(z, c.astype(z.dtype, copy=False), scale, grad, row_loss)


def xent_labels(x, labels, eps, scale, grad, row_loss):
    n = x.shape[0]
    v = np.maximum(x[np.arange(n), labels], eps)
    row_loss[...] = -np.log(v)
    grad[...] = 0
    grad[np.arange(n), labels] = -scale / v
    return float(row_loss.sum(dtype=np.float64))


def xent_probs(x, q, eps, scale, grad, row_loss):
    v = np.maximum(x, eps)
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
    li = np.maximum(z, 0) - z * y + np.log1p(e)
    s = 1 / (1 + e)
    sig = np.where(z >= 0, s, e * s)
    np.copyto(grad, gscale * (sig - y))
    if elem_loss.shape[0]:
        elem_loss[...] = li
    return float(li.sum(dtype=np.float64))


def count_hits(scores, labels):
    return int((scores.argmax(axis=1) == labels).sum())
