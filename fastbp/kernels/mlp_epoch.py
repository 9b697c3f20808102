"""A run of scikit-learn-style minibatch steps of a plain MLP in one compiled call.

On small networks (digits: 64-100-10, batch 200) a step's matmuls take about 70 us
and the Python around them (a dozen kernel calls, buffer lookups, the loss's numpy
calls) as much again: :class:`fastbp.sklearn._base._Epoch` spent 150 us a step.
:func:`epoch_kernel` runs the same step from inside numba, batch after batch: the
matmuls are calls of numpy's own BLAS ``gemm`` (:mod:`fastbp.kernels.blas`; not
``np.dot``, which in numba is scipy's BLAS and its second thread pool) and everything
else is the very kernels the Python step calls (their serial builds), in the same
order, so the arithmetic is the same; only the loss's float64 row sum is a plain
loop instead of numpy's pairwise one. :mod:`fastbp.sklearn._compiled` prepares the
arguments and is where the Python step it replaces is named.

The step, for batch rows ``order[start:stop]`` (``m`` rows):

1. gather the rows of ``X`` and of the targets ``T`` into ``xb`` and ``tb``;
2. forward: ``y_l = act(y_{l-1} @ W_l + b_l)`` (no activation on the last layer);
3. the output loss and its delta on the scores (scaled by ``1/m``), the per-row
   losses clipped to ``[lo, hi]`` as scikit-learn clips probabilities, plus
   ``0.5 alpha |W|^2 / m``;
4. backward: the activation derivative and ``gb_l = sum d`` (one pass for a ReLU),
   ``gW_l = y_{l-1}^T d``, ``d = d W_l^T`` (not for the first layer);
5. the solver's update of the two flat segments (weights with the L2 term
   ``alpha / m``, intercepts without): scikit-learn's SGD (as
   :class:`fastbp.sklearn._solvers.SGD`) or Adam with the step's learning rate
   ``rates[step]`` (computed by the caller in Python's float arithmetic).
"""

from ..jit import IDENTITY, RELU, jit
from .activations import act_backward, bias_act
from .blas import gemm
from .linear import bias_grad, row_chunks, sum_chunks
from .losses import bce_logits, mse, softmax_xent_labels
from .optim import adam, sgd, sum_squares

__all__ = ["OUTPUTS", "SOLVERS", "epoch_kernel"]

OUTPUTS = ("softmax", "logistic", "identity")  # the output activations compiled here
SOLVERS = ("sgd", "adam")
_KERNELS: dict = {}

# The serial builds of the Python step's kernels, which numba compiles into the loop. Module
# globals, not closure cells: numba keys a closure's cache entry on its cells' pickled values,
# and a pickled dispatcher differs from process to process (every process compiled anew).
sx, bl, ms, ba, ab, bg, ad, sg, ss = (
    k.serial for k in (softmax_xent_labels, bce_logits, mse, bias_act, act_backward, bias_grad, adam, sgd, sum_squares)
)


def _relu_backward_bias_grad(dy, y, dx, db, scratch):
    """``act_backward(dy, y, RELU, dx)`` then ``bias_grad(dx, db, scratch)``, in one pass over the rows.

    The same values and the same sums in the same order as the two kernels (the serial
    build of ``bias_grad``: its row chunks into the rows of ``scratch``, then their total);
    a ReLU has no product that the sum could fuse with. On 200 x 100 this saves a pass.
    """
    n, m = dy.shape
    chunks, step = row_chunks(n)
    zero = dy.dtype.type(0.0)
    for c in range(chunks):
        acc = scratch[c]
        for j in range(m):
            acc[j] = zero
        for i in range(c * step, min(n, (c + 1) * step)):
            g, o, d = dy[i], y[i], dx[i]
            for j in range(m):
                v = g[j] if o[j] > zero else zero
                d[j] = v
                acc[j] += v
    sum_chunks(db, scratch, chunks)


relu_backward_bias_grad = jit(_relu_backward_bias_grad)


def epoch_kernel(out: str, solver: str):
    """The compiled batch loop for output activation ``out`` and ``solver`` (compiled on first use).

    One function per pair: both are constants of its code, so numba drops the other
    branches (a softmax's int labels and a regressor's float targets cannot share one typing).
    """
    key = (out, solver)
    if key not in _KERNELS:
        if out not in OUTPUTS or solver not in SOLVERS:
            raise ValueError(f"out, solver: expected one of {OUTPUTS} and of {SOLVERS}, got {out!r}, {solver!r}")
        _KERNELS[key] = _make(OUTPUTS.index(out), solver == "adam")
    return _KERNELS[key]


def _make(out_kind, use_adam):
    softmax, logistic = out_kind == 0, out_kind == 1

    def run(
        fn, X, T, order, xorder, first, last, batch_size, Ws, bs, gWs, gbs, acts, ys, dzs, dxs, scratches,
        xb, tb, grad, rows, elems, class_w, segs, gsegs, s1, s2, alpha, lo, hi,
        rates, momentum, nesterov, beta1, beta2, eps,
    ):  # fmt: skip
        """Batches ``first`` to ``last - 1`` of the epoch order ``order``; returns sum(batch loss x rows).

        ``fn``: the address of numpy's ``cblas_?gemm`` for X's dtype (:mod:`fastbp.kernels.blas`).
        Batch row ``r`` is target ``T[order[r]]`` and input ``X[xorder[r]]`` (``xorder`` is
        ``order`` mapped through the training subset's row numbers, or ``order`` itself).

        ``s1``/``s2``: per segment, the momentum buffers (empty without momentum) or
        Adam's moments; ``rates[k]``: the learning rate of the k-th step of this call.
        """
        n = order.shape[0]
        dt = X.dtype.type
        lo_t, hi_t = dt(lo), dt(hi)  # np.clip on the dtype's rows rounds its bounds the same way
        n_layers = len(Ws)
        total = 0.0
        step = 0
        for bi in range(first, last):
            start = bi * batch_size
            stop = min(start + batch_size, n)
            m = stop - start
            x = xb[:m]
            for r in range(m):
                # element by element: ``x[r] = X[i]`` copies through a row view at 2-5x the cost
                i = xorder[start + r]
                for j in range(x.shape[1]):
                    x[r, j] = X[i, j]
                it = order[start + r]
                if softmax:  # labels
                    tb[r] = T[it]
                else:  # target rows
                    for j in range(tb.shape[1]):
                        tb[r, j] = T[it, j]
            t = tb[:m]
            # forward
            h = x
            for li in range(n_layers):
                y = ys[li][:m]
                gemm(fn, h, False, Ws[li], False, y)
                ba(y, bs[li], acts[li])
                h = y
            # output loss and delta
            g = grad[:m]
            rw = rows[:m]
            scale = dt(1.0 / m)
            loss_sum = 0.0
            if softmax:
                sx(h, t, class_w, dt(0.0), scale, g, rw)
                for r in range(m):
                    loss_sum += min(max(rw[r], lo_t), hi_t)
            elif logistic:
                el = elems[:m]
                bl(h, t, scale, g, el)
                k = el.shape[1]
                for r in range(m):
                    s = dt(0.0)
                    for j in range(k):
                        s += min(max(el[r, j], lo_t), hi_t)
                    loss_sum += s
            else:
                el = elems[:m]
                k = el.shape[1]
                ms(h, t, dt(0.5 / k), scale, g, el)
                for r in range(m):
                    s = dt(0.0)
                    for j in range(k):
                        s += el[r, j]
                    loss_sum += s
            loss = loss_sum / m
            if alpha != 0.0:
                loss += 0.5 * alpha * ss(segs[0]) / m
            # backward
            d = g
            for li in range(n_layers - 1, -1, -1):
                if acts[li] == RELU:  # the ReLU mask and the bias sums in one pass
                    dz = dzs[li][:m]
                    relu_backward_bias_grad(d, ys[li][:m], dz, gbs[li], scratches[li])
                    d = dz
                elif acts[li] != IDENTITY:
                    dz = dzs[li][:m]
                    ab(d, ys[li][:m], acts[li], dz)
                    bg(dz, gbs[li], scratches[li])
                    d = dz
                else:
                    bg(d, gbs[li], scratches[li])
                gemm(fn, ys[li - 1][:m] if li else x, True, d, False, gWs[li])
                if li:
                    dx = dxs[li][:m]
                    gemm(fn, d, False, Ws[li], True, dx)
                    d = dx
            # the solver
            l2 = alpha / m
            for si in range(2):
                decay = dt(l2) if si == 0 else dt(0.0)
                if use_adam:
                    ad(
                        segs[si], gsegs[si], s1[si], s2[si], dt(rates[step]), dt(1.0), dt(eps), dt(beta1),
                        dt(beta2), dt(1.0 - beta1), dt(1.0 - beta2), decay, dt(1.0),
                    )  # fmt: skip
                else:
                    sg(segs[si], gsegs[si], s1[si], dt(rates[step]), dt(momentum), decay, nesterov)
            step += 1
            total += loss * m
        return total

    name = f"mlp_epoch_{OUTPUTS[out_kind]}_{'adam' if use_adam else 'sgd'}"
    run.__name__ = run.__qualname__ = name  # its own cache file
    return jit(run)
