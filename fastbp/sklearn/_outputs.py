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

    def __call__(self, z, target, weights):
        """Batch loss (float) and the delta on ``z`` (a reused buffer).

        Parameters
        ----------
        z : (n, k) scores of the last layer
        target : (n,) int labels for softmax, else (n, k) floats
        weights : (n,) sample weights, or None; the caller ensures a positive sum
        """
        n, k = z.shape
        dt = z.dtype
        scale = 1.0 / n if weights is None else 1.0  # weighted: rescaled per row below
        grad = self._bufs.get("grad", z.shape, dt)
        t = dt.type
        if self.out == "softmax":
            rows = self._bufs.get("rows", (n,), dt)
            kernels.softmax_xent_labels(z, target, _NO_CLASS_WEIGHTS[dt], t(0.0), t(scale), grad, rows)
            losses = self._clip(rows)
        elif self.out == "logistic":
            elems = self._bufs.get("elems", z.shape, dt)
            kernels.bce_logits(z, target, t(scale), grad, elems)
            losses = self._clip(elems).sum(axis=1)
        elif self.out == "identity":
            elems = self._bufs.get("elems", z.shape, dt)
            kernels.mse(z, target, t(0.5 / k), t(scale), grad, elems)
            losses = elems.sum(axis=1)
        else:  # exp: half Poisson deviance with a log link
            pred = np.exp(z)
            np.multiply(pred - target, t(scale), out=grad)
            losses = (xlogy(target, target / pred) - target + pred).sum(axis=1)
        if weights is None:
            return float(losses.sum(dtype=np.float64)) / n, grad
        total = float(weights.sum(dtype=np.float64))
        grad *= (weights / total).astype(dt, copy=False)[:, None]
        return float(np.dot(losses.astype(np.float64, copy=False), weights)) / total, grad

    def _clip(self, losses):
        return np.clip(losses, self._lo, self._hi, out=losses)
