"""Losses: each computes its value and its gradient in one kernel pass.

Functional forms return ``(loss, grad)``; the classes keep the gradient for
``backward()`` and reuse its buffer between calls of the same shape.

Reductions follow PyTorch: ``"mean"`` divides by the batch size (by the sum
of the targets' class weights for weighted integer labels; by the element
count for :class:`MSELoss` and :class:`BCEWithLogits`), ``"sum"`` adds, and
``"none"`` returns per-row (cross-entropies) or per-element losses.
"""

from __future__ import annotations

import copy

import numpy as np

from . import _validate as v
from ._buffers import BufferPool
from .backend import get

REDUCTIONS = ("mean", "sum", "none")
_NO_WEIGHTS = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0, np.float64)}
_NO_ELEMS = {np.dtype(np.float32): np.empty((0, 0), np.float32), np.dtype(np.float64): np.empty((0, 0), np.float64)}


class _Buffers(BufferPool):
    """A loss's gradient and per-row (or per-element) loss buffers, reused across calls."""

    def pair(self, shape, dtype, rows_shape):
        return self.get("grad", shape, dtype), self.get("rows", rows_shape, dtype)


def _targets(target, n, k, dtype, name="target"):
    """(labels, None) for integer labels, (None, rows) for probability/one-hot rows."""
    arr = np.asarray(target)
    if arr.ndim == 1:
        return v.labels(arr, name, n, k), None
    if arr.ndim == 2:
        return None, v.prob_rows(arr, name, (n, k), dtype)
    raise ValueError(
        f"{name}: expected integer labels (batch,) or probability rows (batch, {k}), got shape {arr.shape}"
    )


def _outputs(bufs, shape, dtype, rows_shape, *inputs):
    """The gradient and loss buffers: the loss's reused pair, or new arrays when an input shares their memory.

    Feeding a loss its own last gradient (``loss(loss.backward(), y)``) is legitimate, but the
    kernels overwrite a gradient row while still reading that row of the input; so such a call
    gets new arrays. The functional forms (``bufs`` None) always allocate, and skip the check.
    """
    if bufs is None:
        return np.empty(shape, dtype), np.empty(rows_shape, dtype)
    grad, rows = bufs.pair(shape, dtype, rows_shape)
    for a in inputs:
        if a is not None and (np.may_share_memory(a, grad) or np.may_share_memory(a, rows)):
            return np.empty(shape, dtype), np.empty(rows_shape, dtype)
    return grad, rows


def _finish(total, rows, scale, reduction):
    if reduction == "none":
        return rows.copy()
    return float(total * scale) if reduction == "mean" else float(total)


def softmax_cross_entropy(
    logits, target, *, weight=None, label_smoothing=0.0, reduction="mean", backend="numba", _bufs=None
):
    """Fused softmax + cross-entropy on logits.

    The gradient is ``(softmax(z) - onehot) / N`` with mean reduction: the
    softmax Jacobian times the cross-entropy gradient ``-1/p_t``
    collapses to ``p - onehot`` when the softmax feeds the cross-entropy
    directly, which is the pairing this function fuses (docs/derivations.md,
    "Fused softmax cross-entropy").

    Parameters
    ----------
    logits : (batch, k) float array
    target : (batch,) integer labels, or (batch, k) probability / one-hot rows
    weight : (k,) class weights or None
    label_smoothing : float in [0, 1)
    reduction : "mean", "sum" or "none"

    Returns
    -------
    loss : float, or (batch,) array with ``reduction="none"``
    grad : (batch, k) ``dloss/dlogits``, logits' dtype
    """
    mod = get(backend)
    v.choice(reduction, "reduction", REDUCTIONS)
    smoothing = v.fraction(label_smoothing, "label_smoothing")
    z = v.batch(logits, "logits")
    n, k = z.shape
    labels, q = _targets(target, n, k, z.dtype)
    w = _NO_WEIGHTS[z.dtype] if weight is None else v.weights(weight, "weight", k, z.dtype)
    scale = 1.0
    if reduction == "mean":
        norm = float(w[labels].sum(dtype=np.float64)) if (labels is not None and w.size) else float(n)
        if norm <= 0:
            raise ValueError("weight: the targets' class weights sum to 0, so the mean is undefined")
        scale = 1.0 / norm
    grad, rows = _outputs(_bufs, z.shape, z.dtype, (n,), z, q, w, labels)
    t = z.dtype.type
    if labels is not None:
        total = mod.softmax_xent_labels(z, labels, w, t(smoothing), t(scale), grad, rows)
    else:
        total = mod.softmax_xent_probs(z, q, w, t(smoothing), t(scale), grad, rows)
    return _finish(total, rows, scale, reduction), grad


def cross_entropy(probs, target, *, eps=None, reduction="mean", backend="numba", _bufs=None):
    """Cross-entropy on probabilities: ``-sum log(p_t) / N``.

    Derived in docs/derivations.md, "Cross-entropy on probabilities". The
    gradient is ``-1 / (p_t N)`` at the target and 0 elsewhere.
    Probabilities are clamped from below at ``eps`` (1e-7 for float32, 1e-12
    for float64) in both the loss and the gradient, so a zero probability
    gives a large finite loss instead of inf.

    Parameters
    ----------
    probs : (batch, k) probabilities (for example a :class:`~fastbp.Softmax` output)
    target : (batch,) integer labels or (batch, k) probability rows

    Returns
    -------
    loss : float, or (batch,) array with ``reduction="none"``
    grad : (batch, k) ``dloss/dprobs``
    """
    mod = get(backend)
    v.choice(reduction, "reduction", REDUCTIONS)
    x = v.batch(probs, "probs")
    n, k = x.shape
    if eps is None:
        eps = 1e-7 if x.dtype == np.float32 else 1e-12
    eps = v.fraction(eps, "eps", lo=0.0, hi=1.0)
    labels, q = _targets(target, n, k, x.dtype)
    scale = 1.0 / n if reduction == "mean" else 1.0
    grad, rows = _outputs(_bufs, x.shape, x.dtype, (n,), x, q, labels)
    t = x.dtype.type
    if labels is not None:
        total = mod.xent_labels(x, labels, t(eps), t(scale), grad, rows)
    else:
        total = mod.xent_probs(x, q, t(eps), t(scale), grad, rows)
    return _finish(total, rows, scale, reduction), grad


def _pair(pred, target, name_p, name_t):
    p = v.batch(pred, name_p)
    t = v.float_array(target, name_t, ndim=None, dtype=p.dtype)
    if t.shape != p.shape:
        raise ValueError(f"{name_t}: expected shape {p.shape} to match {name_p}, got {t.shape}")
    return p, t


def mse_loss(pred, target, *, reduction="mean", half=False, backend="numba", _bufs=None):
    """Squared error ``c * sum (pred - target)**2`` with gradient ``2c (pred - target)``.

    ``c`` is ``1/numel`` for ``"mean"`` (PyTorch's ``MSELoss``), 1 for
    ``"sum"``, and is halved by ``half=True``. The gradient ``h - y`` of
    docs/derivations.md, "Squared error" is ``reduction="sum", half=True``.

    Parameters
    ----------
    pred, target : (batch, m) float arrays

    Returns
    -------
    loss : float, or (batch, m) array with ``reduction="none"``
    grad : (batch, m) ``dloss/dpred``
    """
    mod = get(backend)
    v.choice(reduction, "reduction", REDUCTIONS)
    p, t = _pair(pred, target, "pred", "target")
    c = (0.5 if half else 1.0) / (p.size if reduction == "mean" else 1)
    grad, elems = _outputs(_bufs, p.shape, p.dtype, p.shape if reduction == "none" else (0, 0), p, t)
    total = mod.mse(p, t, p.dtype.type(c), p.dtype.type(2 * c), grad, elems)
    return (elems.copy() if reduction == "none" else float(total)), grad


def bce_with_logits(logits, target, *, reduction="mean", backend="numba", _bufs=None):
    """Binary cross-entropy on logits, stable for any logit.

    ``loss = max(z, 0) - z y + log(1 + exp(-|z|))``; gradient ``sigmoid(z) - y``
    (divided by the element count for ``"mean"``).

    Parameters
    ----------
    logits : (batch, m) float array
    target : (batch, m) values in [0, 1]

    Returns
    -------
    loss : float, or (batch, m) array with ``reduction="none"``
    grad : (batch, m) ``dloss/dlogits``
    """
    mod = get(backend)
    v.choice(reduction, "reduction", REDUCTIONS)
    z, y = _pair(logits, target, "logits", "target")
    if not np.isfinite(y).all() or (y < 0).any() or (y > 1).any():
        raise ValueError("target: expected values in [0, 1]")
    scale = 1.0 / z.size if reduction == "mean" else 1.0
    grad, elems = _outputs(_bufs, z.shape, z.dtype, z.shape if reduction == "none" else (0, 0), z, y)
    total = mod.bce_logits(z, y, z.dtype.type(scale), grad, elems)
    if reduction == "none":
        return elems.copy(), grad
    return float(total * scale), grad


class Loss:
    """Base class: ``forward(pred, target) -> loss``, then ``backward() -> dpred``.

    ``backward`` returns a buffer owned by the loss and overwritten by the next
    ``forward`` of the same shape; copy it to keep it.
    """

    def __init__(self, reduction="mean", backend="numba"):
        self.reduction = v.choice(reduction, "reduction", REDUCTIONS)
        get(backend)
        self.backend = backend
        self._bufs = _Buffers()
        self._grad = None

    def _compute(self, pred, target):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, pred, target):
        loss, self._grad = self._compute(pred, target)
        return loss

    __call__ = forward

    def backward(self):
        """``dloss/dpred`` for the last ``forward``, shape and dtype of ``pred``."""
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        return self._grad

    def clone(self, **changes) -> Loss:
        """A copy with its own buffers, and the attributes in ``changes`` set (e.g. ``reduction="sum"``)."""
        twin = copy.copy(self)
        for name, value in changes.items():
            if not hasattr(self, name):
                raise TypeError(f"{name}: not an attribute of {type(self).__name__}")
            setattr(twin, name, value)
        if "reduction" in changes:
            v.choice(twin.reduction, "reduction", REDUCTIONS)
        twin._bufs, twin._grad = _Buffers(), None
        return twin

    def __repr__(self):
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class SoftmaxCrossEntropy(Loss):
    """Softmax + cross-entropy on logits; see :func:`softmax_cross_entropy`.

    Use it on the raw scores of the last :class:`~fastbp.Linear` (no Softmax
    layer in the model): the fused gradient is ``(p - onehot) / N``.
    """

    def __init__(self, weight=None, label_smoothing=0.0, reduction="mean", backend="numba"):
        super().__init__(reduction, backend)
        self.weight = None if weight is None else np.asarray(weight)
        self.label_smoothing = v.fraction(label_smoothing, "label_smoothing")

    def _compute(self, pred, target):
        return softmax_cross_entropy(
            pred,
            target,
            weight=self.weight,
            label_smoothing=self.label_smoothing,
            reduction=self.reduction,
            backend=self.backend,
            _bufs=self._bufs,
        )


class CrossEntropy(Loss):
    """Cross-entropy on probabilities; see :func:`cross_entropy`."""

    def __init__(self, eps=None, reduction="mean", backend="numba"):
        super().__init__(reduction, backend)
        self.eps = eps

    def _compute(self, pred, target):
        return cross_entropy(
            pred, target, eps=self.eps, reduction=self.reduction, backend=self.backend, _bufs=self._bufs
        )


class MSELoss(Loss):
    """Squared error; see :func:`mse_loss`.

    ``half=True, reduction="sum"`` gives ``h - y``: docs/derivations.md, "Squared error".
    """

    def __init__(self, reduction="mean", half=False, backend="numba"):
        super().__init__(reduction, backend)
        self.half = bool(half)

    def _compute(self, pred, target):
        return mse_loss(pred, target, reduction=self.reduction, half=self.half, backend=self.backend, _bufs=self._bufs)


class BCEWithLogits(Loss):
    """Binary cross-entropy on logits; see :func:`bce_with_logits`."""

    def _compute(self, pred, target):
        return bce_with_logits(pred, target, reduction=self.reduction, backend=self.backend, _bufs=self._bufs)
