"""``Standardize``: a fixed affine map ``(x - mean) / std`` (or its inverse), saved with the model.

It puts a model's preprocessing inside the model, so that a loaded model file
predicts from raw features (and, inverted at the end, in the target's units).
"""

from __future__ import annotations

import numpy as np

from .. import _validate as v
from .base import Layer


class Standardize(Layer):
    """``y = (x - mean) / std``, or ``y = x * std + mean`` with ``inverse=True``; no trainable parameters.

    The backward pass is ``dx = dy / std`` (or ``dy * std``).

    Parameters
    ----------
    mean, std : (m,) sequences of numbers; ``std`` must be positive and finite
    inverse : undo a standardization instead (for a model's outputs)
    dtype : float32 (default) or float64

    Attributes
    ----------
    in_features : int, m

    Examples
    --------
    >>> import numpy as np, fastbp
    >>> X = np.array([[1.0, 10.0], [3.0, 30.0]], np.float32)
    >>> scale = fastbp.Standardize.from_data(X)
    >>> scale(X)
    array([[-1., -1.],
           [ 1.,  1.]], dtype=float32)
    """

    def __init__(self, mean, std, *, inverse: bool = False, dtype=np.float32, backend: str = "numba"):
        super().__init__(dtype, backend)
        mean = np.asarray(mean, dtype=np.float64)
        std = np.asarray(std, dtype=np.float64)
        if mean.ndim != 1 or mean.shape[0] < 1:
            raise ValueError(f"mean: expected a non-empty 1-d sequence, got shape {mean.shape}")
        if std.shape != mean.shape:
            raise ValueError(f"std: expected shape {mean.shape} like mean, got {std.shape}")
        if not np.isfinite(mean).all():
            raise ValueError("mean: expected finite values, got NaN or inf")
        if not (np.isfinite(std).all() and (std > 0).all()):
            raise ValueError(f"std: expected positive finite values, got min {std.min()}")
        self.inverse = v.check(inverse, "inverse", v.Boolean())
        self.in_features = int(mean.shape[0])
        self.mean = mean.astype(self.dtype)
        self.std = std.astype(self.dtype)
        # (x - mean) * (1/std) rather than x * scale + shift: with a large offset
        # (1e4 + noise of 1e-3) the product x * scale would cancel against the
        # shift and lose digits that the subtraction keeps. Derived from the stored
        # (rounded) mean and std, so a model rebuilt from its file computes the same.
        self._scale = (self.std.astype(np.float64) if inverse else 1.0 / self.std.astype(np.float64)).astype(self.dtype)
        self._seen = None

    @classmethod
    def from_data(cls, X, *, dtype=None, backend: str = "numba") -> Standardize:
        """A layer standardizing each column of ``X`` (n, m) to mean 0 and std 1.

        Constant columns get std 1 (they become 0), as scikit-learn's StandardScaler does.
        """
        X = v.float_array(X, "X", ndim=2)
        if X.shape[0] < 1:
            raise ValueError("X: expected at least one row, got 0")
        X64 = X.astype(np.float64)
        mean = X64.mean(axis=0)
        std = X64.std(axis=0)
        std[~(std > np.finfo(X.dtype).eps * np.maximum(np.abs(mean), 1.0))] = 1.0
        return cls(mean, std, dtype=X.dtype if dtype is None else dtype, backend=backend)

    def _apply(self, x, y):
        # Two numpy passes over the input: it is the model's first (or last) layer,
        # and next to the matmul it feeds these are noise.
        if self.inverse:
            np.multiply(x, self._scale, out=y)
            y += self.mean
        else:
            np.subtract(x, self.mean, out=y)
            y *= self._scale
        return y

    def forward(self, x):
        """``x`` (batch, m) -> ``y`` (batch, m), a reused buffer."""
        x = v.batch(x, "x", dtype=self.dtype, width=self.in_features)
        self._seen = x
        return self._apply(x, self._buf("y", x.shape))

    def infer(self, x):
        return self._apply(x, np.empty(x.shape, self.dtype))

    def backward(self, dy=None, *, need_dx=True):
        """``dx = dy * scale``; None when ``need_dx`` is False."""
        dy = self._upstream(dy, self._seen)
        if not need_dx:
            return None
        return np.multiply(dy, self._scale, out=self._buf("dx", dy.shape))

    def config(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "inverse": self.inverse}

    def __repr__(self):
        return f"Standardize(in_features={self.in_features}{', inverse=True' if self.inverse else ''})"
