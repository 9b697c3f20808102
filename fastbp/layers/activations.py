"""Activation layers; each backward uses only the forward output.

For speed, prefer ``Linear(..., activation=...)``, which fuses the activation
into the bias pass; these layers exist for models built op by op.
"""

from __future__ import annotations

import numpy as np

from .. import _validate as v
from ..backend import zero_bias
from ..jit import IDENTITY, RELU, SIGMOID, TANH
from .base import Layer


class _FromOutput(Layer):
    """A layer ``y = f(x)`` whose backward needs only ``y``: subclasses give the two kernels."""

    def __init__(self, dtype=None, backend="numba"):
        super().__init__(dtype, backend)
        self._y = None

    def _forward(self, x, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def _backward(self, dy, y, dx):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x):
        """``x`` (batch, m) -> ``y`` (batch, m), a reused buffer."""
        x = v.batch(x, "x", dtype=self.dtype)
        y = self._buf("y", x.shape, x.dtype)
        self._forward(x, y)
        self._y = y
        return y

    def infer(self, x):
        x = np.ascontiguousarray(x, dtype=self.dtype or x.dtype)
        y = np.empty(x.shape, x.dtype)
        self._forward(x, y)
        return y

    def backward(self, dy=None, *, need_dx=True):
        """``dx`` (batch, m) from ``dy`` and the saved output."""
        dy = self._upstream(dy, self._y)
        if not need_dx:
            return None
        dx = self._buf("dx", dy.shape, dy.dtype)
        self._backward(dy, self._y, dx)
        return dx

    def __repr__(self):
        return f"{type(self).__name__}()"


class _Elementwise(_FromOutput):
    _code = IDENTITY

    def _forward(self, x, y):
        np.copyto(y, x)
        self._k.bias_act(y, zero_bias(x.shape[1], x.dtype), self._code)

    def _backward(self, dy, y, dx):
        self._k.act_backward(dy, y, self._code, dx)


class ReLU(_Elementwise):
    """``max(x, 0)``; backward ``dy * (y > 0)`` (derivative 0 at exactly 0)."""

    _code = RELU


class Sigmoid(_Elementwise):
    """``1 / (1 + exp(-x))``, finite for any ``x``; backward ``dy * y * (1 - y)`` (docs/derivations.md, "Sigmoid")."""

    _code = SIGMOID


class Tanh(_Elementwise):
    """``tanh(x)``; backward ``dy * (1 - y**2)``."""

    _code = TANH


class Softmax(_FromOutput):
    """Row-wise softmax; backward is the Jacobian-vector product ``y * (dy - sum(dy * y))``.

    Derivation: docs/derivations.md, "Softmax Jacobian".

    To train a classifier, prefer raw logits with :class:`~fastbp.SoftmaxCrossEntropy`:
    the fused gradient is cheaper and more accurate than Softmax + CrossEntropy.
    """

    def _forward(self, x, y):
        self._k.softmax_forward(x, y)

    def _backward(self, dy, y, dx):
        self._k.softmax_backward(dy, y, dx)


class Identity(Layer):
    """``y = x``; backward passes ``dy`` through."""

    def __init__(self, dtype=None, backend="numba"):
        super().__init__(dtype, backend)
        self._y = None

    def forward(self, x):
        self._y = v.batch(x, "x", dtype=self.dtype)
        return self._y

    def infer(self, x):
        return x

    def backward(self, dy=None, *, need_dx=True):
        dy = self._upstream(dy, self._y)
        return dy if need_dx else None

    def __repr__(self):
        return "Identity()"
