"""Output activations and scikit-learn's MLP losses, on the last layer's raw scores ``z``.

scikit-learn pairs each output activation with its canonical loss, so the
delta on ``z`` is always ``(prediction - y)``, times ``w_i / sum(w)`` with
sample weights (``1 / n`` without):

========== ======================== ==================================================
output     loss (batch value)        computed by
========== ======================== ==================================================
softmax    log_loss                  fused :func:`~fastbp.kernels.softmax_xent_labels`
logistic   binary log_loss           fused :func:`~fastbp.kernels.bce_logits`
identity   squared_error / 2         fused :func:`~fastbp.kernels.mse`
exp        half Poisson deviance     numpy (the output is only n_outputs wide)
========== ======================== ==================================================

scikit-learn clips probabilities to ``[eps, 1 - eps]`` (``eps`` the dtype's
machine epsilon) before taking logs, which caps a sample's log-loss at
``-log(eps)``; the per-row losses are clipped the same way here so the
reported ``loss_curve_`` agrees. The gradients are unclipped in both.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_expit, logsumexp, xlogy

from .. import kernels
from .._buffers import BufferPool

_NO_CLASS_WEIGHTS = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0, np.float64)}


def activate(name: str, z: np.ndarray) -> np.ndarray:
    """The output activation applied to scores ``z`` (n, k), in place."""
    if name == "softmax":
        kernels.softmax_forward(z, z)
    elif name == "logistic":
        expit(z, out=z)
    elif name == "exp":
        np.exp(z, out=z)
    return z


def log_activate(name: str, z: np.ndarray) -> np.ndarray:
    """``log`` of the output activation, computed stably from the scores (no log of 0)."""
    if name == "softmax":
        return z - logsumexp(z, axis=1, keepdims=True)
    return log_expit(z)


class OutputLoss:
    """Loss and delta for one output activation; buffers reused across batches."""

    def __init__(self, out_activation: str, dtype):
        self.out = out_activation
        self._bufs = BufferPool()
        # -log(clip(p, eps, 1 - eps)) == clip(-log(p), -log(1 - eps), -log(eps))
        eps = np.finfo(dtype).eps
        self._lo, self._hi = -np.log1p(-eps), -np.log(eps)

    def __call__(self, z, target, weights, norm=None):
        """Loss (float) and the delta on ``z`` (a reused buffer).

        Parameters
        ----------
        z : (n, k) scores of the last layer
        target : (n,) int labels for softmax, else (n, k) floats
        weights : (n,) sample weights, or None
        norm : float or None
            None: the batch's own mean, the loss divided by ``n`` (or ``sum(weights)``)
            and the delta too. A number (L-BFGS: the whole data's ``n`` or
            ``sum(weights)``): the loss is divided by it, so that row blocks add
            up to scikit-learn's full-batch value, and the delta is left unscaled,
            ``w_i (prediction_i - y_i)``, for the caller to divide the gradient by
            ``norm`` after the backward pass, in scikit-learn's order of operations.
            The caller ensures it is positive.

        Returns
        -------
        loss : float
            ``sum_i w_i loss_i / norm`` (``w_i = 1`` without weights).
        delta : ndarray (n, k)
            ``w_i (prediction_i - y_i) / norm``; with ``norm`` given, not divided by it.
        """
        n, k = z.shape
        dt = z.dtype
        full = norm is not None
        if norm is None:
            norm = n if weights is None else float(weights.sum(dtype=np.float64))
        # the delta's factor: 1/n for a batch mean; weighted or full-data, rescaled below or by the caller
        scale = 1.0 / norm if weights is None and not full else 1.0
        bufs = self._bufs
        grad = bufs.get("grad", z.shape, dt)
        rows = bufs.get("rows", (n,), dt)
        t = dt.type
        if self.out == "softmax":
            kernels.softmax_xent_labels(z, target, _NO_CLASS_WEIGHTS[dt], t(0.0), t(scale), grad, rows)
            losses = self._clip(rows)
        elif self.out == "logistic":
            elems = bufs.get("elems", z.shape, dt)
            kernels.bce_logits(z, target, t(scale), grad, elems)
            losses = np.sum(self._clip(elems), axis=1, out=rows)
        elif self.out == "identity":
            elems = bufs.get("elems", z.shape, dt)
            kernels.mse(z, target, t(0.5 / k), t(scale), grad, elems)
            losses = np.sum(elems, axis=1, out=rows)
        else:  # exp: half Poisson deviance with a log link
            pred = bufs.get("pred", z.shape, dt)
            elems = bufs.get("elems", z.shape, dt)
            np.exp(z, out=pred)
            np.subtract(pred, target, out=grad)
            grad *= t(scale)
            np.divide(target, pred, out=elems)
            xlogy(target, elems, out=elems)
            elems -= target
            elems += pred
            losses = np.sum(elems, axis=1, out=rows)
        if weights is None:
            return float(losses.sum(dtype=np.float64)) / norm, grad
        w = bufs.get("w", (n,), dt)
        if full:
            np.copyto(w, weights, casting="same_kind")
        else:
            np.divide(weights, norm, out=w, casting="same_kind")
        grad *= w[:, None]
        if dt != np.float64:
            losses64 = bufs.get("losses64", (n,), np.float64)
            np.copyto(losses64, losses)
            losses = losses64
        return float(np.dot(losses, weights)) / norm, grad

    def _clip(self, losses):
        return np.clip(losses, self._lo, self._hi, out=losses)
