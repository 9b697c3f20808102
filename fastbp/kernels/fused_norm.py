"""BatchNorm1d fused with the activation and inverted dropout that follow it: one kernel per direction.

``Sequential`` runs ``BatchNorm1d -> activation -> Dropout`` (either of the last two
may be missing) through these in training (:mod:`fastbp.layers.fused`). Each gives
the bits of the unfused chain (:func:`fastbp.kernels.norm.batchnorm_forward`, the
activation kernels' ``bias_act``/``bias_act_param``, :func:`fastbp.kernels.dropout.dropout_forward`
and their backwards): the same expressions in the same order, so
``tests/test_fused_layers.py`` compares them bitwise. What changes is the memory traffic:

* forward: the statistics pass reads ``x``; one more pass reads ``x`` and writes the
  output (and the dropout mask), where the chain also wrote and re-read the BatchNorm
  output and the activation output;
* backward: the column sums and the ``dx`` pass read ``dy``, the mask and ``x`` and
  recompute the upstream gradient of the BatchNorm output (dropout, then the
  activation's derivative) in registers, where the chain wrote and re-read two
  (batch, features) gradients.

ReLU and LeakyReLU differentiate from the BatchNorm output, recomputed from ``x``
(two flops); Sigmoid and Tanh from their output, which the forward stores (``a``).
Other activations are not fused. Activation codes are those of :mod:`fastbp.jit`.

The statistics loop is a copy of :func:`~fastbp.kernels.norm.batchnorm_forward`'s, and
the gradient sums of :func:`~fastbp.kernels.norm.batchnorm_backward`'s (same chunks,
same 4-row sweep, same order): keep them in step (the bitwise tests fail otherwise).
"""

import numpy as np
from numba import prange

from ..jit import IDENTITY, LEAKY_RELU, RELU, SIGMOID, TANH, jit, kernel
from .dropout import _GAMMA, _ONE, _S11, mix64, stream_key
from .norm import CHUNKS, _mean_residual, running_at
from .vmath import exp

__all__ = ["FUSED_ACTIVATIONS", "bn_act_drop_forward", "bn_act_drop_backward"]

# The activations these kernels apply (codes of fastbp.jit); IDENTITY is "no activation layer".
FUSED_ACTIVATIONS = (IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH)
# Those whose derivative the backward reads from the stored activation output ``a``.
STORES_OUTPUT = (SIGMOID, TANH)


def _act_py(v, act, p1, zero, one):
    """The activation layer's forward of one element, as its kernel computes it.

    ReLU, Sigmoid, Tanh run ``bias_act`` with a bias of +0.0 (``v + 0`` turns -0 into +0);
    LeakyReLU runs ``bias_act_param`` with a bias of -0.0 (``v + -0`` is ``v``).
    """
    if act == RELU:
        w = v + zero
        return zero if w < zero else w
    if act == SIGMOID:
        return _sigmoid(v + zero, zero, one)
    if act == TANH:
        return np.tanh(v + zero)
    if act == LEAKY_RELU:
        w = v + (-zero)
        return w if w > zero else p1 * w
    return v


def _sigmoid_py(w, zero, one):
    """``bias_act``'s sigmoid of ``w``; a function of its own, so that ``exp`` is inlined once (see
    fastbp/kernels/activations.py, "Inlining": numba inlining it twice into one function trips its SSA check).
    """
    e = exp(-np.abs(w))
    s = one / (one + e)
    return s if w >= zero else e * s


def _mul_py(a, b):
    """``a * b`` compiled without ``contract``: the product stays a rounded product.

    The chain stores each upstream gradient to memory before the BatchNorm sums add
    them; computed in registers, ``g0 + g1`` with ``g0 = d * s`` could become a fused
    multiply-add (one rounding less) and change the bits. LLVM keeps this instruction's
    flags when it inlines the function.
    """
    return a * b


_sigmoid = jit(_sigmoid_py)
_act = jit(_act_py, inline="always")
_mul = jit(_mul_py, fastmath=set())


def _grad_py(g, keep, v, o, act, p1, drop, dscale, zero, one):
    """The gradient at the BatchNorm output from ``g`` at the block's output: dropout's, then the activation's.

    ``keep`` the mask byte, ``v`` the recomputed BatchNorm output (ReLU, LeakyReLU),
    ``o`` the stored activation output (Sigmoid, Tanh). The expressions of
    ``dropout_backward``, ``act_backward`` and ``act_backward_param``.
    """
    d = _mul(g, dscale if keep else zero) if drop else g
    if act == RELU:
        # act_backward: d if y > 0 with y = relu(v + 0), and y > 0 exactly when v > 0
        return d if v > zero else zero
    if act == SIGMOID:
        return _mul(d * o, one - o)
    if act == TANH:
        return _mul(d, one - o * o)
    if act == LEAKY_RELU:
        # from the input v (= v + -0), which for slope >= 0 is what the output-based rule gives
        return d if v > zero else _mul(d, p1)
    return d


_grad = jit(_grad_py, inline="always")


def _grad_at_py(e, q, r, o, j, k, sc, sh, act, p1, drop, reads, dscale, zero, one):
    """:func:`_grad_py` at column ``j`` of one row: ``e`` of dy, ``q`` of the mask (with ``drop``),
    ``r`` of x (centred by ``k``, scaled by ``sc``, shifted by ``sh``: the BatchNorm output) and
    ``o`` of the activation output (when the derivative ``reads`` it)."""
    return _grad(
        e[j], q[j] if drop else 1, (r[j] - k) * sc + sh, o[j] if reads else sc, act, p1, drop, dscale, zero, one
    )


_grad_at = jit(_grad_at_py, inline="always")


_NAMES = {IDENTITY: "identity", RELU: "relu", LEAKY_RELU: "leaky_relu", SIGMOID: "sigmoid", TANH: "tanh"}
_KERNELS: dict = {}


def fused_kernels(act: int, drop: bool):
    """The (forward, backward) :class:`~fastbp.jit.Kernel` pair for activation code ``act`` and ``drop``.

    One pair per variant, compiled on first use: ``act`` and ``drop`` are constants of
    its code, so every loop is a plain vector loop (a generic kernel branching on them
    inside the loops measured 1.2-1.8x slower than the unfused chain).
    """
    key = (int(act), bool(drop))
    if key not in _KERNELS:
        if key[0] not in _NAMES:
            raise ValueError(f"act: expected one of the fused activation codes {FUSED_ACTIVATIONS}, got {act!r}")
        _KERNELS[key] = _make(*key)
    return _KERNELS[key]


def _make(act, drop):
    reads = act in STORES_OUTPUT  # backward reads the activation output o
    store = drop and reads  # forward writes it to a (without dropout it is y itself)

    def forward(
        x, gamma, beta, eps, p1, seed, steps, threshold, dscale, y, a, mask, stats, save, acc,
        running_mean, running_var, momentum, tracked,
    ):  # fmt: skip
        """:func:`bn_act_drop_forward` for this variant."""
        n, m = x.shape
        dt = x.dtype.type
        zero, one = dt(0.0), dt(1.0)
        chunks = min(CHUNKS, n)
        step_rows = (n + chunks - 1) // chunks
        shift0 = stats[0]
        for j in range(m):
            shift0[j] = x[0, j]
        for c in prange(chunks):
            s1 = acc[0, c]
            s2 = acc[1, c]
            for j in range(m):
                s1[j] = 0.0
                s2[j] = 0.0
            i = c * step_rows
            end = min(n, i + step_rows)
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
            if var < 0.0:
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
        # The state the layers' own forwards update, here rather than in more calls from Python
        # (each costs 10-20 us in a training step, where a matmul has just evicted the interpreter's
        # data from the caches; docs/normalization.md, "Fusion in Sequential").
        if running_mean.shape[0]:
            tracked[0] += 1
            factor = momentum if momentum >= 0.0 else 1.0 / np.float64(tracked[0])
            keep, unbias = 1.0 - factor, n / (n - 1.0)
            for j in range(m):
                running_at(running_mean, running_var, stats, j, keep, factor, unbias)
        step = steps[0]
        if drop:
            steps[0] = step + _ONE
        center, scale, shift = save[0], save[3], save[4]
        key = stream_key(seed, step)
        thr = np.uint64(threshold)
        for i in prange(n):
            row = x[i]
            out = y[i]
            if drop:
                mr = mask[i]
                z = key + np.uint64(i) * np.uint64(m) * _GAMMA  # as dropout_forward: the stream before row i
                if store:
                    ar = a[i]
                    for j in range(m):
                        h = _act((row[j] - center[j]) * scale[j] + shift[j], act, p1, zero, one)
                        ar[j] = h
                        z += _GAMMA
                        keep = (mix64(z) >> _S11) >= thr
                        mr[j] = keep
                        out[j] = h * (dscale if keep else zero)
                else:
                    for j in range(m):
                        h = _act((row[j] - center[j]) * scale[j] + shift[j], act, p1, zero, one)
                        z += _GAMMA
                        keep = (mix64(z) >> _S11) >= thr
                        mr[j] = keep
                        out[j] = h * (dscale if keep else zero)
            else:
                for j in range(m):
                    out[j] = _act((row[j] - center[j]) * scale[j] + shift[j], act, p1, zero, one)

    def backward(dy, x, save, o, mask, p1, dscale, need_dx, dx, dgamma, dbeta, acc, work):
        """:func:`bn_act_drop_backward` for this variant."""
        n, m = dy.shape
        dt = dy.dtype.type
        zero, one = dt(0.0), dt(1.0)
        chunks = min(CHUNKS, n)
        step_rows = (n + chunks - 1) // chunks
        center, inv_std, offset, scale, shift = save[0], save[1], save[2], save[3], save[4]
        for c in prange(chunks):
            sb = acc[0, c]
            sg = acc[1, c]
            for j in range(m):
                sb[j] = 0.0
                sg[j] = 0.0
            i = c * step_rows
            end = min(n, i + step_rows)
            while i + 4 <= end:
                r0, r1, r2, r3 = x[i], x[i + 1], x[i + 2], x[i + 3]
                e0, e1, e2, e3 = dy[i], dy[i + 1], dy[i + 2], dy[i + 3]
                # Absent arrays are (0, m): their row 0 would be out of bounds, so index them only when present.
                q0 = mask[i] if drop else mask[:0].reshape(-1)
                q1 = mask[i + 1] if drop else q0
                q2 = mask[i + 2] if drop else q0
                q3 = mask[i + 3] if drop else q0
                o0 = o[i] if reads else o[:0].reshape(-1)
                o1 = o[i + 1] if reads else o0
                o2 = o[i + 2] if reads else o0
                o3 = o[i + 3] if reads else o0
                for j in range(m):
                    k = center[j]
                    sc, sh = scale[j], shift[j]
                    g0 = _grad_at(e0, q0, r0, o0, j, k, sc, sh, act, p1, drop, reads, dscale, zero, one)
                    g1 = _grad_at(e1, q1, r1, o1, j, k, sc, sh, act, p1, drop, reads, dscale, zero, one)
                    g2 = _grad_at(e2, q2, r2, o2, j, k, sc, sh, act, p1, drop, reads, dscale, zero, one)
                    g3 = _grad_at(e3, q3, r3, o3, j, k, sc, sh, act, p1, drop, reads, dscale, zero, one)
                    sb[j] += np.float64((g0 + g1) + (g2 + g3))
                    sg[j] += np.float64((g0 * (r0[j] - k) + g1 * (r1[j] - k)) + (g2 * (r2[j] - k) + g3 * (r3[j] - k)))
                i += 4
            while i < end:
                r0 = x[i]
                e0 = dy[i]
                q0 = mask[i] if drop else mask[:0].reshape(-1)
                o0 = o[i] if reads else o[:0].reshape(-1)
                for j in range(m):
                    k = center[j]
                    g0 = _grad_at(e0, q0, r0, o0, j, k, scale[j], shift[j], act, p1, drop, reads, dscale, zero, one)
                    sb[j] += np.float64(g0)
                    sg[j] += np.float64(g0 * (r0[j] - k))
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
            s = np.float64(scale[j])
            work[0, j] = dt(-s * sum_dyx * inv_n * np.float64(inv_std[j]))
            work[1, j] = dt(-s * (sum_dy + sum_dyx * np.float64(offset[j])) * inv_n)
        if not need_dx:
            return
        b, e = work[0], work[1]
        for i in prange(n):
            r = x[i]
            gr = dy[i]
            q = mask[i] if drop else mask[:0].reshape(-1)
            orow = o[i] if reads else o[:0].reshape(-1)
            out = dx[i]
            for j in range(m):
                k = center[j]
                g = _grad_at(gr, q, r, orow, j, k, scale[j], shift[j], act, p1, drop, reads, dscale, zero, one)
                out[j] = scale[j] * g + (b[j] * (r[j] - k) + e[j])

    name = f"bn_{_NAMES[act]}{'_dropout' if drop else ''}"
    pair = []
    for f, part in ((forward, "forward"), (backward, "backward")):
        # Their own names: the cache keeps one file per qualified name.
        f.__name__ = f.__qualname__ = f"{name}_{part}"
        pair.append(kernel(f))
    return tuple(pair)


def bn_act_drop_forward(
    x, gamma, beta, eps, act, p1, drop, seed, steps, threshold, dscale, y, a, mask, stats, save, acc,
    running_mean, running_var, momentum, tracked,
):  # fmt: skip
    """Training-mode BatchNorm, then ``act``, then (``drop``) inverted dropout, into ``y``.

    Parameters
    ----------
    x : (n, m), n >= 2
    gamma, beta, eps, stats, save, acc : as :func:`fastbp.kernels.norm.batchnorm_forward`
    act : int, one of :data:`FUSED_ACTIVATIONS`; ``p1`` (x's dtype) LeakyReLU's slope, else unused
    drop : bool; ``seed``, ``threshold`` (uint64) and ``dscale`` (x's dtype) as
        :func:`fastbp.kernels.dropout.dropout_forward`
    steps : (1,) uint64, the Dropout's step counter: the mask is drawn at ``steps[0]``, which
        then goes up by one with ``drop`` (left alone without)
    y : (n, m) output: the dropout output, or the activation output without ``drop``
    a : (n, m) output, the activation output, when ``drop`` and ``act`` in :data:`STORES_OUTPUT`;
        else any (0, m) array (unused)
    mask : (n, m) uint8 output, 1 where kept, with ``drop``; else any (0, m) uint8 array (unused)
    running_mean, running_var : (m,) running statistics, updated as
        :func:`fastbp.kernels.norm.batchnorm_running` does; (0,) arrays when not tracked
    momentum : float, the BatchNorm's momentum, or -1.0 for None (the cumulative average:
        the factor is 1 / ``tracked[0]``)
    tracked : (1,) int64 ``num_batches_tracked``, incremented when the statistics are tracked
    """
    fused_kernels(act, drop)[0](
        x, gamma, beta, eps, p1, seed, steps, threshold, dscale, y, a, mask, stats, save, acc,
        running_mean, running_var, momentum, tracked,
    )  # fmt: skip


def bn_act_drop_backward(dy, x, save, o, mask, act, p1, drop, dscale, need_dx, dx, dgamma, dbeta, acc, work):
    """Backward of :func:`bn_act_drop_forward`: ``dgamma``, ``dbeta`` (overwritten) and, if ``need_dx``, ``dx``.

    Parameters
    ----------
    dy : (n, m), the gradient at the block's output ``y``
    x, save : the forward's input and what it saved
    o : (n, m) the activation output (the forward's ``a`` with ``drop``, else its ``y``) for
        ``act`` in :data:`STORES_OUTPUT`; else any (0, m) array (unused)
    mask : the forward's mask with ``drop``; else any (0, m) uint8 array (unused)
    act, p1, drop, dscale : as the forward
    need_dx, dx, dgamma, dbeta, acc, work : as :func:`fastbp.kernels.norm.batchnorm_backward`
        in training mode
    """
    fused_kernels(act, drop)[1](dy, x, save, o, mask, p1, dscale, need_dx, dx, dgamma, dbeta, acc, work)
