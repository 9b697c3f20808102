"""numpy twins of :mod:`fastbp.kernels.norm`: same signatures, same outputs, idiomatic numpy.

Statistics and gradient sums are taken in float64 (``dtype=np.float64``), as the
kernels take them: a float32 column sum of values near 1e6 cancels (docs/normalization.md).
Workspace arguments (``acc``, ``work``) are the kernels'; unused here.
"""

import numpy as np


def _center_offset(hi, lo, inv, dtype):
    """The mean ``hi + lo`` (float64) rounded to ``dtype``, and the offset ``-(what rounding dropped) * inv``."""
    center = (hi + lo).astype(dtype)
    return center, -((hi - center) + lo) * inv  # Fast2Sum's error term: hi - center is exact


def _fill_save(save, hi, lo, var, eps, gamma, beta):
    """``save`` rows ``center, inv_std, offset, scale, shift`` for the mean ``hi + lo`` and ``var``."""
    inv = 1.0 / np.sqrt(var + eps)
    center, offset = _center_offset(hi, lo, inv, save.dtype)
    save[0] = center
    save[1] = inv
    save[2] = offset
    save[3] = gamma * inv
    save[4] = gamma * offset + beta


def batchnorm_forward(x, gamma, beta, eps, y, stats, save, acc):
    # Shifted by the first row, as the kernel: a sum of values near 1e9 loses what the noise
    # around them carries. The differences are float64: exact for float32 input.
    shift = x[0].astype(np.float64)
    d = x - shift
    mean_d = d.mean(axis=0)
    var = d.var(axis=0)
    stats[0], stats[1] = shift + mean_d, var
    _fill_save(save, shift, mean_d, var, eps, gamma, beta)
    np.subtract(x, save[0], out=y)
    y *= save[3]
    y += save[4]


def batchnorm_eval(x, gamma, beta, running_mean, running_var, eps, y, save):
    inv = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    save[0] = running_mean
    save[1] = inv
    save[2] = 0
    save[3] = gamma * inv
    save[4] = beta
    np.subtract(x, save[0], out=y)
    y *= save[3]
    y += save[4]


def batchnorm_backward(dy, x, save, batch_stats, need_dx, dx, dgamma, dbeta, acc, work):
    center, inv_std, offset, scale = save[:4]
    x_hat = (x - center) * inv_std + offset
    sum_dy = dy.sum(axis=0, dtype=np.float64)
    sum_dyx = (dy * x_hat).sum(axis=0, dtype=np.float64)
    dbeta[...] = sum_dy
    dgamma[...] = sum_dyx
    if not need_dx:
        return
    if batch_stats:
        n = dy.shape[0]
        dx[...] = scale * ((dy - (sum_dy / n).astype(dy.dtype)) - x_hat * (sum_dyx / n).astype(dy.dtype))
    else:
        np.multiply(dy, scale, out=dx)


def batchnorm_running(running_mean, running_var, stats, factor, n):
    keep = 1.0 - factor  # in float64, rounded once to the running arrays' dtype
    running_mean[...] = keep * running_mean.astype(np.float64) + factor * stats[0]
    running_var[...] = keep * running_var.astype(np.float64) + factor * (stats[1] * (n / (n - 1.0)))


def layernorm_forward(x, gamma, beta, eps, y, save):
    # The corrected two-pass algorithm, as the kernel: the mean of the deviations removes the
    # rounding error of the first mean (large when the row sits near 1e9).
    mean = x.mean(axis=1, dtype=np.float64)
    d = x - mean[:, None]
    mean_d = d.mean(axis=1)
    var = (d * d).mean(axis=1) - mean_d * mean_d
    inv = 1.0 / np.sqrt(var + eps)
    save[0], save[2] = _center_offset(mean, mean_d, inv, x.dtype)
    save[1] = inv
    x_hat = (x - save[0][:, None]) * save[1][:, None] + save[2][:, None]
    np.multiply(x_hat, gamma, out=y)
    y += beta


def layernorm_backward(dy, x, gamma, save, need_dx, dx, dgamma, dbeta, acc):
    x_hat = (x - save[0][:, None]) * save[1][:, None] + save[2][:, None]
    dbeta[...] = dy.sum(axis=0, dtype=np.float64)
    dgamma[...] = (dy * x_hat).sum(axis=0, dtype=np.float64)
    if not need_dx:
        return
    g = dy * gamma
    mean_g = g.mean(axis=1, dtype=np.float64, keepdims=True).astype(dy.dtype)
    mean_gx = (g * x_hat).mean(axis=1, dtype=np.float64, keepdims=True).astype(dy.dtype)
    dx[...] = save[1][:, None] * ((g - mean_g) - x_hat * mean_gx)
