"""Activation layers.

ReLU, Sigmoid, Tanh and Softmax differentiate from their output alone; LeakyReLU,
ELU, GELU, SiLU and Softplus (PyTorch's names, parameters and defaults) read the
forward input where the output does not determine the derivative.

For speed, prefer ``Linear(..., activation=...)``, which fuses the activation
into the bias pass; these layers exist for models built op by op.
"""

from __future__ import annotations

import numpy as np

from .. import _validate as v
from ..backend import identity_bias, resolve_activation, zero_bias
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


class _Parametrised(Layer):
    """A layer ``y = f(x)`` for one of the activations of :func:`fastbp.backend.resolve_activation`.

    Subclasses set ``_name`` and pass their constructor's parameters; :meth:`config`
    returns them, so that model files rebuild the layer.
    """

    _name = ""

    def __init__(self, params: dict, dtype=None, backend="numba"):
        super().__init__(dtype, backend)
        self.act = resolve_activation(self._name, params, argument=None)
        self._x = None
        self._y = None

    def forward(self, x):
        """``x`` (batch, m) -> ``y`` (batch, m), a reused buffer."""
        x = v.batch(x, "x", dtype=self.dtype)
        # GELU, SiLU and Softplus (and LeakyReLU, ELU with a negative parameter): the output does not
        # determine the derivative, so backward reads x. x is the pre-activation itself, kept by
        # reference as Linear keeps its input: no copy, no buffer (unless x is this layer's own output).
        self._x = self._keep(x) if self.act.reads_input else None
        y = self._buf("y", x.shape, x.dtype)
        np.copyto(y, x)
        self.act.forward(self._k, y, identity_bias(x.shape[1], x.dtype))
        self._y = y
        return y

    def infer(self, x):
        y = np.array(x, dtype=self.dtype or x.dtype, order="C")  # a copy, computed in place
        self.act.forward(self._k, y, identity_bias(y.shape[1], y.dtype))
        return y

    def backward(self, dy=None, *, need_dx=True):
        """``dx`` (batch, m) from ``dy`` and what the last forward kept (its output, or its input)."""
        dy = self._upstream(dy, self._y)
        if not need_dx:
            return None
        dx = self._buf("dx", dy.shape, dy.dtype)
        self.act.backward(self._k, dy, self._y, self._x, dx)
        return dx

    def config(self):
        return dict(self.act.params)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={p!r}' for k, p in self.act.params.items())})"


class LeakyReLU(_Parametrised):
    """``x`` for ``x > 0``, else ``negative_slope * x`` (PyTorch's ``nn.LeakyReLU``).

    Backward reads the output (``y > 0`` is ``x > 0``) unless ``negative_slope < 0``,
    when it reads the input. docs/derivations.md, "LeakyReLU".

    Examples
    --------
    >>> import numpy as np, fastbp.layers.activations as A
    >>> A.LeakyReLU(0.1)(np.array([[-2.0, 3.0]]))
    array([[-0.2,  3. ]])
    """

    _name = "leaky_relu"

    def __init__(self, negative_slope=0.01, *, dtype=None, backend="numba"):
        super().__init__({"negative_slope": negative_slope}, dtype, backend)


class ELU(_Parametrised):
    """``x`` for ``x > 0``, else ``alpha * (exp(x) - 1)`` (PyTorch's ``nn.ELU``).

    Backward reads the output (``dy * (y + alpha)`` for ``y <= 0``) unless
    ``alpha < 0``, when it reads the input. docs/derivations.md, "ELU".
    """

    _name = "elu"

    def __init__(self, alpha=1.0, *, dtype=None, backend="numba"):
        super().__init__({"alpha": alpha}, dtype, backend)


class GELU(_Parametrised):
    """``x * Phi(x)``, Phi the standard normal CDF; ``approximate="tanh"`` is
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (PyTorch's ``nn.GELU``).

    Backward reads the input (GELU is not monotonic). float32 accuracy:
    docs/derivations.md, "GELU".
    """

    _name = "gelu"

    def __init__(self, approximate="none", *, dtype=None, backend="numba"):
        super().__init__({"approximate": approximate}, dtype, backend)


class SiLU(_Parametrised):
    """``x * sigmoid(x)`` (PyTorch's ``nn.SiLU``, also called swish).

    Backward reads the input (SiLU is not monotonic). docs/derivations.md, "SiLU".
    """

    _name = "silu"

    def __init__(self, dtype=None, backend="numba"):
        super().__init__({}, dtype, backend)


class Softplus(_Parametrised):
    """``log(1 + exp(beta * x)) / beta``, and ``x`` where ``beta * x > threshold`` (PyTorch's ``nn.Softplus``).

    Never overflows. Backward reads the input: at the threshold softplus jumps by
    ``log1p(exp(-threshold)) / beta``, so outputs just above it come from two inputs
    with different slopes. docs/derivations.md, "Softplus".
    """

    _name = "softplus"

    def __init__(self, beta=1.0, threshold=20.0, *, dtype=None, backend="numba"):
        super().__init__({"beta": beta, "threshold": threshold}, dtype, backend)


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
