"""Loss kernels: one pass per row computes the loss and its gradient.

Each kernel writes the per-row (or per-element) loss and the gradient already
multiplied by ``scale`` (``1/N`` for a mean, 1 for a sum; the caller decides),
and returns the unscaled sum of the losses as a float64 scalar.
"""

import numpy as np
from numba import prange
from numba.extending import overload

from ..jit import REDUCTION, jit, kernel
from .vmath import BLOCK, exp, exp_nonpos, exp_shifted

# Rows narrower than this (digits' 10 classes) take the blocked path below. A row at a time, the
# exp of a short row runs mostly in the vector loop's scalar remainder (a row of 10 float32 scores
# is shorter than one AVX-512 vector), and float64 calls libm's scalar exp: on 200 x 10 the blocked
# path is 1.4x faster in float32 and 2.4x in float64 (python benchmarks/narrow_softmax.py), and it
# still wins at 63 classes. From 64 classes a row fills whole vectors.
NARROW = 64
ROWS = 64  # rows per block of the narrow path: a block's scores stay in L1


def _loss_and_grad_row(gr, t, acc, s, scale, c_t, big_c, eps_k, weights):
    """The end of one row: returns its loss ``acc + C log s`` and turns ``gr``, holding
    ``exp(z - m)``, into the gradient ``scale (C p - c)`` (``p = gr / s``; see :func:`softmax_xent_labels`)."""
    one = gr.dtype.type(1.0)
    weighted = weights.shape[0] != 0
    inv_s = one / s
    for j in range(gr.shape[0]):
        wj = weights[j] if weighted else one
        gr[j] = scale * (big_c * gr[j] * inv_s - eps_k * wj)
    gr[t] -= scale * c_t
    return acc + big_c * np.log(s)


_loss_and_grad = jit(_loss_and_grad_row, inline="always", fastmath=set(REDUCTION))


def _exp_block(a):
    """``a = exp(a)`` in place for a 2-D block of max-shifted scores (see the overload)."""
    a[:] = np.exp(a)


@overload(_exp_block)
def _exp_block_overload(a):
    if a.layout == "C":  # one flat run: the loop vectorises across rows

        def flat(a):
            v = a.reshape(-1)
            for e in range(v.shape[0]):
                v[e] = exp_nonpos(v[e])

        return flat

    def rows(a):  # a strided block (numba types contiguous arrays "C"): row by row
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                a[i, j] = exp_nonpos(a[i, j])

    return rows


def _softmax_xent_labels_narrow_rows(z, labels, weights, smoothing, scale, grad, row_loss, w_sum):
    """:func:`softmax_xent_labels` for narrow rows and a C-contiguous ``grad``, ``ROWS`` rows at a time.

    Per block: each row's max ``m`` and the shifted scores ``z - m`` into ``grad``
    (which may be ``z`` itself), with the loss terms ``c_k (m - z_k)`` taken from them;
    then one ``exp`` over the whole block as a flat run, which vectorises across rows;
    then each row's sum, log and gradient. The values are the row path's within a few ulps
    (``m - z_k`` is ``-(z_k - m)`` exactly; the float64 exp is :func:`~.vmath.exp_nonpos`,
    which gives 0 below ``exp(-707)``, and the vectorised sums add in their own order).
    A row's bits do not depend on where in its block it lies (tests/test_kernel_determinism.py).
    """
    n, k = z.shape
    one = z.dtype.type(1.0)
    zero = z.dtype.type(0.0)
    weighted = weights.shape[0] != 0
    eps_k = smoothing / z.dtype.type(k)
    total = 0.0
    for c in prange((n + ROWS - 1) // ROWS):
        i0 = c * ROWS
        i1 = min(i0 + ROWS, n)
        for i in range(i0, i1):
            zr = z[i]
            gr = grad[i]
            m = zr[0]
            for j in range(1, k):
                if zr[j] > m:
                    m = zr[j]
            t = labels[i]
            w_t = weights[t] if weighted else one
            c_t = (one - smoothing) * w_t
            acc = c_t * (m - zr[t])
            for j in range(k):
                gr[j] = zr[j] - m
            if smoothing != zero:
                part = zero  # k < NARROW <= BLOCK: one block
                for j in range(k):
                    wj = weights[j] if weighted else one
                    part += wj * -gr[j]
                acc += eps_k * part  # the row path's float64 total of one block is this value
            row_loss[i] = acc
        _exp_block(grad[i0:i1])
        for i in range(i0, i1):
            gr = grad[i]
            t = labels[i]
            s = zero
            for j in range(k):
                s += gr[j]
            w_t = weights[t] if weighted else one
            c_t = (one - smoothing) * w_t
            li = _loss_and_grad(gr, t, row_loss[i], s, scale, c_t, c_t + eps_k * w_sum, eps_k, weights)
            row_loss[i] = li
            total += li
    return total


_softmax_xent_labels_narrow = jit(_softmax_xent_labels_narrow_rows, inline="always", fastmath=set(REDUCTION))


@kernel(reduction=True)
def softmax_xent_labels(z, labels, weights, smoothing, scale, grad, row_loss):
    """Fused softmax + cross-entropy on integer labels.

    ``z`` (n, k) logits, ``labels`` (n,) ints in [0, k), ``weights`` (k,) class
    weights or (0,), ``smoothing`` in [0, 1). Row ``i`` puts weight
    ``c_k = (1-smoothing)[k == t] w_t + smoothing/k w_k`` on ``-log p_k``, so
    ``loss_i = sum_k c_k (m - z_k) + C log(s)`` with ``m`` the row max,
    ``s = sum exp(z - m)`` and ``C = sum_k c_k``; the gradient is
    ``C p - c``, which is ``p - onehot`` without weights or smoothing.
    """
    n, k = z.shape
    one = z.dtype.type(1.0)
    zero = z.dtype.type(0.0)
    weighted = weights.shape[0] != 0
    eps_k = smoothing / z.dtype.type(k)
    w_sum = z.dtype.type(k)
    if weighted:
        w_total = 0.0  # float64: k may be wide
        for j in range(k):
            w_total += weights[j]
        w_sum = z.dtype.type(w_total)
    if k < NARROW:
        return _softmax_xent_labels_narrow(z, labels, weights, smoothing, scale, grad, row_loss, w_sum)
    total = 0.0
    for i in prange(n):
        zr = z[i]
        gr = grad[i]
        t = labels[i]
        m, s64 = exp_shifted(zr, gr)
        s = z.dtype.type(s64)  # the float64 row sum, rounded once
        w_t = weights[t] if weighted else one
        c_t = (one - smoothing) * w_t  # extra coefficient on the target class
        big_c = c_t + eps_k * w_sum
        # loss_i = sum_k c_k (m - z_k) + C log s, with c_k = c_t [k == t] + eps_k w_k
        acc = c_t * (m - zr[t])
        if smoothing != zero:
            sm = 0.0  # float64 over float32 blocks: see vmath.BLOCK
            for b in range((k + BLOCK - 1) // BLOCK):  # not range(0, k, BLOCK): that stops vectorising
                j0 = b * BLOCK
                part = zero
                for jj in range(min(BLOCK, k - j0)):
                    j = j0 + jj
                    wj = weights[j] if weighted else one
                    part += wj * (m - zr[j])
                sm += part
            acc += eps_k * z.dtype.type(sm)
        li = _loss_and_grad(gr, t, acc, s, scale, c_t, big_c, eps_k, weights)
        row_loss[i] = li
        total += li
    return total


@kernel(reduction=True)
def softmax_xent_probs(z, q, weights, smoothing, scale, grad, row_loss):
    """Fused softmax + cross-entropy on target probability rows ``q`` (n, k).

    ``c_k = w_k ((1-smoothing) q_k + smoothing/k)``; loss and gradient as in
    :func:`softmax_xent_labels` (``C p - c``, i.e. ``p - q`` when rows sum to 1
    and there are no weights).
    """
    n, k = z.shape
    one = z.dtype.type(1.0)
    zero = z.dtype.type(0.0)
    weighted = weights.shape[0] != 0
    keep = one - smoothing
    eps_k = smoothing / z.dtype.type(k)
    total = 0.0
    for i in prange(n):
        zr = z[i]
        qr = q[i]
        gr = grad[i]
        m, s64 = exp_shifted(zr, gr)
        s = z.dtype.type(s64)  # the float64 row sum, rounded once
        inv_s = one / s
        big_c64, acc64 = 0.0, 0.0  # float64 over float32 blocks: see vmath.BLOCK
        for b in range((k + BLOCK - 1) // BLOCK):  # not range(0, k, BLOCK): that stops vectorising
            j0 = b * BLOCK
            big_c_part, acc_part = zero, zero
            for jj in range(min(BLOCK, k - j0)):
                j = j0 + jj
                c = keep * qr[j] + eps_k
                if weighted:
                    c *= weights[j]
                big_c_part += c
                acc_part += c * (m - zr[j])
            big_c64 += big_c_part
            acc64 += acc_part
        big_c, acc = z.dtype.type(big_c64), z.dtype.type(acc64)
        li = acc + big_c * np.log(s)
        row_loss[i] = li
        total += li
        for j in range(k):
            c = keep * qr[j] + eps_k
            if weighted:
                c *= weights[j]
            gr[j] = scale * (big_c * gr[j] * inv_s - c)
    return total


@kernel
def xent_labels(x, labels, eps, scale, grad, row_loss):
    """Cross-entropy on probabilities ``x`` (n, k) and integer labels.

    ``loss_i = -log(max(x_it, eps))``; the gradient is ``-1/max(x_it, eps)``
    times ``scale`` at the target and 0 elsewhere (``-1/(x_t N)`` for a mean:
    docs/derivations.md, "Cross-entropy on probabilities").
    """
    n, k = x.shape
    zero = x.dtype.type(0.0)
    total = 0.0
    for i in prange(n):
        gr = grad[i]
        for j in range(k):
            gr[j] = zero
        t = labels[i]
        v = max(x[i, t], eps)
        li = -np.log(v)
        row_loss[i] = li
        total += li
        gr[t] = -scale / v
    return total


@kernel(reduction=True)
def xent_probs(x, q, eps, scale, grad, row_loss):
    """Cross-entropy on probabilities ``x`` and target rows ``q``: ``-sum_k q_k log(max(x_k, eps))``."""
    n, k = x.shape
    zero = x.dtype.type(0.0)
    total = 0.0
    for i in prange(n):
        xr = x[i]
        qr = q[i]
        gr = grad[i]
        li = 0.0  # float64 over float32 blocks: see vmath.BLOCK
        for b in range((k + BLOCK - 1) // BLOCK):  # not range(0, k, BLOCK): that stops vectorising
            j0 = b * BLOCK
            part = zero
            for jj in range(min(BLOCK, k - j0)):
                j = j0 + jj
                v = max(xr[j], eps)
                part -= qr[j] * np.log(v)
                gr[j] = -scale * qr[j] / v
            li += part
        row_loss[i] = li
        total += li
    return total


@kernel(reduction=True)
def mse(pred, target, lscale, gscale, grad, elem_loss):
    """Squared error: ``grad = gscale (pred - target)``; returns ``lscale * sum (pred - target)**2``.

    ``elem_loss`` is (n, m) to receive ``lscale (pred - target)**2`` per element, or (0, 0) to skip.
    """
    n, m = pred.shape
    want_elem = elem_loss.shape[0] != 0
    total = 0.0
    for i in prange(n):
        pr = pred[i]
        tr = target[i]
        gr = grad[i]
        acc = 0.0  # float64 over float32 blocks: see vmath.BLOCK
        for b in range((m + BLOCK - 1) // BLOCK):  # not range(0, m, BLOCK): that stops vectorising
            j0 = b * BLOCK
            part = pred.dtype.type(0.0)
            for jj in range(min(BLOCK, m - j0)):
                j = j0 + jj
                d = pr[j] - tr[j]
                gr[j] = gscale * d
                part += d * d
            acc += part
        if want_elem:
            for j in range(m):
                d = pr[j] - tr[j]
                elem_loss[i, j] = lscale * d * d
        total += acc
    return lscale * total


@kernel(reduction=True)
def bce_logits(z, y, gscale, grad, elem_loss):
    """Binary cross-entropy on logits, stable for any ``z``.

    ``loss = max(z, 0) - z y + log1p(exp(-|z|))``, ``grad = gscale (sigmoid(z) - y)``.
    ``elem_loss`` is (n, m) or (0, 0) to skip; returns the unscaled sum.
    """
    n, m = z.shape
    zero = z.dtype.type(0.0)
    one = z.dtype.type(1.0)
    want_elem = elem_loss.shape[0] != 0
    total = 0.0
    for i in prange(n):
        zr = z[i]
        yr = y[i]
        gr = grad[i]
        acc = 0.0  # float64 over float32 blocks: see vmath.BLOCK
        for b in range((m + BLOCK - 1) // BLOCK):  # not range(0, m, BLOCK): that stops vectorising
            j0 = b * BLOCK
            part = zero
            for jj in range(min(BLOCK, m - j0)):
                j = j0 + jj
                v = zr[j]
                e = exp(-np.abs(v))
                # (1-y) max(z, 0) + y max(-z, 0), not max(z, 0) - z y: that is inf - inf at z = +inf.
                li = (one - yr[j]) * max(v, zero) + yr[j] * max(-v, zero) + np.log1p(e)
                sig = one / (one + e)
                if v < zero:
                    sig = e * sig
                gr[j] = gscale * (sig - yr[j])
                part += li
                if want_elem:
                    elem_loss[i, j] = li
            acc += part
        total += acc
    return total


@kernel
def count_hits(scores, labels):
    """Rows of ``scores`` (n, k) whose first maximum is at ``labels[i]``: accuracy without temporaries."""
    hits = 0
    for i in prange(scores.shape[0]):
        row = scores[i]
        best = 0
        if row[0] == row[0]:  # as numpy's argmax: the first NaN is the maximum
            for j in range(1, row.shape[0]):
                v = row[j]
                if v != v:
                    best = j
                    break
                if v > row[best]:
                    best = j
        hits += 1 if best == labels[i] else 0
    return hits
