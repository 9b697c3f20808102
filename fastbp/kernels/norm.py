"""Normalization kernels: BatchNorm over the batch (columns), LayerNorm over the features (rows).

Arrays are row-major (batch, features). Derivations and numerics: docs/normalization.md.

What a forward saves for its backward (``save``, in the input's dtype) describes
``x_hat`` exactly enough for any offset::

    x_hat = (x - center) * inv_std + offset

``center`` is the mean rounded to the dtype and ``offset = -(mean - center) * inv_std``
carries the part of the mean that rounding dropped (float32 at a mean of 1e6 drops up
to 0.03). ``x - center`` is exact when ``x`` is within a factor 2 of ``center``
(Sterbenz), so the centring never cancels; ``offset`` is a small term added last.

BatchNorm's column sums walk rows and accumulate into feature-length float64 vectors,
one per row chunk: :data:`CHUNKS` fixed chunks that threads share, added in a fixed
order, so the serial and parallel versions give the same bits for any thread count.
These kernels are elementwise in their inner loops (over features) and need no
``reassoc`` to vectorise; LayerNorm's row sums do, and get it.
"""

import numpy as np
from numba import prange

from ..jit import jit, kernel


def _mean_residual_py(hi, lo, center):
    """``(hi + lo) - center``, the part of the mean ``hi + lo`` that rounding it to ``center`` dropped.

    ``hi - center`` is exact (the two are close); Fast2Sum's error term. A function of its
    own, compiled without ``reassoc`` and called (not inlined by numba): in a reduction
    kernel LLVM could otherwise fold ``(hi - (hi + lo)) + lo`` to 0.
    """
    return (hi - center) + lo


_mean_residual = jit(_mean_residual_py)

# Row chunks of the column reductions: a constant, so the order of additions (and so
# the result) is the same for any thread count and for both compiled versions.
CHUNKS = 8


@kernel
def batchnorm_forward(x, gamma, beta, eps, y, stats, save, acc):
    """Training-mode BatchNorm: statistics over the batch, normalize, scale and shift.

    Parameters
    ----------
    x : (n, m), n >= 1
    gamma, beta : (m,) scale and shift, x's dtype
    eps : float, added to the variance
    y : (n, m) output, overwritten
    stats : (2, m) float64 output: the batch mean and the biased batch variance
    save : (5, m) x's dtype output: ``center, inv_std, offset`` (``x_hat`` above) and
        ``scale = gamma * inv_std``, ``shift = gamma * offset + beta``, so that
        ``y = (x - center) * scale + shift``
    acc : (2, CHUNKS, m) float64 workspace

    Notes
    -----
    One read of ``x`` for the statistics: sums of ``d = x - x[0]`` and ``d**2`` in
    float64 (the shifted-data algorithm: ``var = E[d^2] - E[d]^2`` cancels by at most a
    factor n, since ``(mean - x[0])**2 <= n var``; float32 ``d`` is exact in float64).
    One more read of ``x`` and one write of ``y``.
    """
    n, m = x.shape
    dt = x.dtype.type
    chunks = min(CHUNKS, n)
    step = (n + chunks - 1) // chunks
    shift0 = stats[0]  # the shift x[0] in float64 until the mean replaces it
    for j in range(m):
        shift0[j] = x[0, j]
    for c in prange(chunks):
        s1 = acc[0, c]
        s2 = acc[1, c]
        for j in range(m):
            s1[j] = 0.0
            s2[j] = 0.0
        i = c * step
        end = min(n, i + step)
        # Four rows per sweep: the accumulators go through memory once per four rows.
        while i + 4 <= end:
            r0, r1, r2, r3 = x[i], x[i + 1], x[i + 2], x[i + 3]
            for j in range(m):
                k = shift0[j]
                d0 = np.float64(r0[j]) - k
                d1 = np.float64(r1[j]) - k
                d2 = np.float64(r2[j]) - k
                d3 = np.float64(r3[j]) - k
                s1[j] += (d0 + d1) + (d2 + d3)
                s2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
            i += 4
        while i < end:
            r0 = x[i]
            for j in range(m):
                d0 = np.float64(r0[j]) - shift0[j]
                s1[j] += d0
                s2[j] += d0 * d0
            i += 1
    for c in range(1, chunks):
        for j in range(m):
            acc[0, 0, j] += acc[0, c, j]
            acc[1, 0, j] += acc[1, c, j]
    inv_n = 1.0 / n
    for j in range(m):
        md = acc[0, 0, j] * inv_n
        var = acc[1, 0, j] * inv_n - md * md
        if var < 0.0:  # rounding; NaN stays NaN
            var = 0.0
        mean = shift0[j] + md
        inv = 1.0 / np.sqrt(var + eps)
        c0 = dt(mean)
        offset = -_mean_residual(shift0[j], md, np.float64(c0)) * inv
        g = np.float64(gamma[j])
        stats[0, j] = mean
        stats[1, j] = var
        save[0, j] = c0
        save[1, j] = dt(inv)
        save[2, j] = dt(offset)
        save[3, j] = dt(g * inv)
        save[4, j] = dt(g * offset + np.float64(beta[j]))
    center, scale, shift = save[0], save[3], save[4]
    for i in prange(n):
        row = x[i]
        out = y[i]
        for j in range(m):
            out[j] = (row[j] - center[j]) * scale[j] + shift[j]


@kernel
def batchnorm_eval(x, gamma, beta, running_mean, running_var, eps, y, save):
    """Eval-mode BatchNorm with running statistics: ``y = (x - running_mean) * scale + beta``.

    ``running_mean``, ``running_var`` (m,) in x's dtype; ``y`` and ``save`` as in
    :func:`batchnorm_forward` (``center`` is the running mean, ``offset`` 0).
    """
    n, m = x.shape
    dt = x.dtype.type
    for j in range(m):
        inv = 1.0 / np.sqrt(np.float64(running_var[j]) + eps)
        save[0, j] = running_mean[j]
        save[1, j] = dt(inv)
        save[2, j] = dt(0.0)
        save[3, j] = dt(np.float64(gamma[j]) * inv)
        save[4, j] = beta[j]
    center, scale, shift = save[0], save[3], save[4]
    for i in prange(n):
        row = x[i]
        out = y[i]
        for j in range(m):
            out[j] = (row[j] - center[j]) * scale[j] + shift[j]


@kernel
def batchnorm_backward(dy, x, save, batch_stats, need_dx, dx, dgamma, dbeta, acc, work):
    """BatchNorm backward: ``dgamma``, ``dbeta`` (overwritten) and, if ``need_dx``, ``dx``.

    Parameters
    ----------
    dy, x : (n, m), the upstream gradient and the forward's input
    save : (5, m) what the forward saved (:func:`batchnorm_forward`)
    batch_stats : bool, the forward normalized with batch statistics (training mode),
        so ``dx`` flows through the mean and variance; else (running statistics)
        ``dx = dy * scale``
    need_dx : bool
    dx : (n, m) output, or any (0, m) array when not ``need_dx``
    dgamma, dbeta : (m,) outputs: ``sum(dy * x_hat)``, ``sum(dy)`` over the batch
    acc : (2, CHUNKS, m) float64 workspace
    work : (2, m) workspace in x's dtype

    Notes
    -----
    Two passes. The column sums ``sum(dy)`` and ``sum(dy * (x - center))`` (float32
    partials of four rows, float64 totals), from which
    ``dgamma = inv_std * sum(dy * (x - center)) + offset * dbeta``. Then
    ``dx = scale * ((dy - dbeta / n) - x_hat * dgamma / n)``, computed as
    ``scale * dy + b * (x - center) + e`` with the per-feature ``b`` and ``e`` folded in float64.
    """
    n, m = dy.shape
    dt = dy.dtype.type
    chunks = min(CHUNKS, n)
    step = (n + chunks - 1) // chunks
    center, inv_std, offset, scale = save[0], save[1], save[2], save[3]
    for c in prange(chunks):
        sb = acc[0, c]
        sg = acc[1, c]
        for j in range(m):
            sb[j] = 0.0
            sg[j] = 0.0
        i = c * step
        end = min(n, i + step)
        while i + 4 <= end:
            g0, g1, g2, g3 = dy[i], dy[i + 1], dy[i + 2], dy[i + 3]
            r0, r1, r2, r3 = x[i], x[i + 1], x[i + 2], x[i + 3]
            for j in range(m):
                k = center[j]
                sb[j] += np.float64((g0[j] + g1[j]) + (g2[j] + g3[j]))
                sg[j] += np.float64(
                    (g0[j] * (r0[j] - k) + g1[j] * (r1[j] - k)) + (g2[j] * (r2[j] - k) + g3[j] * (r3[j] - k))
                )
            i += 4
        while i < end:
            g0 = dy[i]
            r0 = x[i]
            for j in range(m):
                sb[j] += np.float64(g0[j])
                sg[j] += np.float64(g0[j] * (r0[j] - center[j]))
            i += 1
    for c in range(1, chunks):
        for j in range(m):
            acc[0, 0, j] += acc[0, c, j]
            acc[1, 0, j] += acc[1, c, j]
    inv_n = 1.0 / n
    for j in range(m):
        sum_dy = acc[0, 0, j]
        sum_dyx = np.float64(inv_std[j]) * acc[1, 0, j] + np.float64(offset[j]) * sum_dy
        dbeta[j] = dt(sum_dy)
        dgamma[j] = dt(sum_dyx)
        # dx = scale*dy - scale*mean(dy*x_hat)*inv_std*(x - center) - scale*(mean(dy) + mean(dy*x_hat)*offset)
        a = np.float64(scale[j])
        work[0, j] = dt(-a * sum_dyx * inv_n * np.float64(inv_std[j]))
        work[1, j] = dt(-a * (sum_dy + sum_dyx * np.float64(offset[j])) * inv_n)
    if not need_dx:
        return
    if batch_stats:
        b, e = work[0], work[1]
        for i in prange(n):
            g = dy[i]
            r = x[i]
            out = dx[i]
            for j in range(m):
                out[j] = scale[j] * g[j] + (b[j] * (r[j] - center[j]) + e[j])
    else:
        for i in prange(n):
            g = dy[i]
            out = dx[i]
            for j in range(m):
                out[j] = g[j] * scale[j]


def _running_at_py(running_mean, running_var, stats, j, keep, factor, unbias):
    """Feature ``j`` of :func:`batchnorm_running` (``keep = 1 - factor``, ``unbias = n / (n - 1)``);
    shared with the fused BatchNorm forward, so both give the same bits."""
    dt = running_mean.dtype.type
    running_mean[j] = dt(keep * np.float64(running_mean[j]) + factor * stats[0, j])
    running_var[j] = dt(keep * np.float64(running_var[j]) + factor * (stats[1, j] * unbias))


running_at = jit(_running_at_py, inline="always")


@kernel
def batchnorm_running(running_mean, running_var, stats, factor, n):
    """Running statistics, PyTorch's convention: ``running = (1 - factor) * running + factor * batch``.

    ``stats`` (2, m) float64 from :func:`batchnorm_forward` (mean, biased variance);
    the variance enters unbiased (``* n / (n - 1)``), n >= 2. Computed in float64 and
    rounded once to the running arrays' dtype.
    """
    keep = 1.0 - factor
    unbias = n / (n - 1.0)
    for j in prange(running_mean.shape[0]):
        running_at(running_mean, running_var, stats, j, keep, factor, unbias)


@kernel(reduction=True)
def layernorm_forward(x, gamma, beta, eps, y, save):
    """LayerNorm over each row: ``y = x_hat * gamma + beta``, ``x_hat`` from the row's mean and biased variance.

    ``x`` (n, m); ``gamma``, ``beta`` (m,); ``y`` (n, m) output; ``save`` (3, n) output
    in x's dtype: per row ``center, inv_std, offset`` (``x_hat`` in the module docstring).

    Two passes over the row (it stays in cache), both summing in float64: the mean,
    then ``sum(d)`` and ``sum(d**2)`` of ``d = x - mean`` (the corrected two-pass
    algorithm: ``mean(d)`` is the first mean's rounding error, ``var = mean(d**2) - mean(d)**2``).
    """
    n, m = x.shape
    dt = x.dtype.type
    inv_m = 1.0 / m
    for i in prange(n):
        row = x[i]
        out = y[i]
        total = 0.0
        for j in range(m):
            total += np.float64(row[j])
        mean = total * inv_m
        s1 = 0.0
        s2 = 0.0
        for j in range(m):
            d = np.float64(row[j]) - mean
            s1 += d
            s2 += d * d
        md = s1 * inv_m
        var = s2 * inv_m - md * md
        if var < 0.0:
            var = 0.0
        inv = 1.0 / np.sqrt(var + eps)
        center = dt(mean + md)
        offset = dt(-_mean_residual(mean, md, np.float64(center)) * inv)
        inv_t = dt(inv)
        save[0, i] = center
        save[1, i] = inv_t
        save[2, i] = offset
        for j in range(m):
            out[j] = ((row[j] - center) * inv_t + offset) * gamma[j] + beta[j]


@kernel(reduction=True)
def layernorm_backward(dy, x, gamma, save, need_dx, dx, dgamma, dbeta, acc):
    """LayerNorm backward: ``dgamma``, ``dbeta`` (overwritten) and, if ``need_dx``, ``dx``.

    ``dy``, ``x`` (n, m); ``gamma`` (m,); ``save`` (3, n) from :func:`layernorm_forward`;
    ``dx`` (n, m) output or any (0, m) array; ``dgamma``, ``dbeta`` (m,) outputs;
    ``acc`` (2, CHUNKS, m) float64 workspace. Per row, with ``g = dy * gamma``:
    ``dx = inv_std * ((g - mean(g)) - x_hat * mean(g * x_hat))``.
    """
    n, m = dy.shape
    dt = dy.dtype.type
    chunks = min(CHUNKS, n)
    step = (n + chunks - 1) // chunks
    inv_m = 1.0 / m
    for c in prange(chunks):
        sb = acc[0, c]
        sg = acc[1, c]
        for j in range(m):
            sb[j] = 0.0
            sg[j] = 0.0
        for i in range(c * step, min(n, (c + 1) * step)):
            r = x[i]
            d = dy[i]
            center, inv_std, offset = save[0, i], save[1, i], save[2, i]
            if need_dx:
                a = 0.0
                b = 0.0
                for j in range(m):
                    xh = (r[j] - center) * inv_std + offset
                    sb[j] += np.float64(d[j])
                    sg[j] += np.float64(d[j] * xh)
                    g = d[j] * gamma[j]
                    a += np.float64(g)
                    b += np.float64(g * xh)
                mean_g = dt(a * inv_m)
                mean_gx = dt(b * inv_m)
                out = dx[i]
                for j in range(m):
                    xh = (r[j] - center) * inv_std + offset
                    out[j] = inv_std * ((d[j] * gamma[j] - mean_g) - xh * mean_gx)
            else:
                for j in range(m):
                    xh = (r[j] - center) * inv_std + offset
                    sb[j] += np.float64(d[j])
                    sg[j] += np.float64(d[j] * xh)
    for c in range(1, chunks):
        for j in range(m):
            acc[0, 0, j] += acc[0, c, j]
            acc[1, 0, j] += acc[1, c, j]
    for j in range(m):
        dbeta[j] = dt(acc[0, 0, j])
        dgamma[j] = dt(acc[1, 0, j])
