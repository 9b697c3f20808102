"""Linear layer ``y = act(x @ W + b)`` with the bias add and activation fused."""

from __future__ import annotations

import numpy as np

from .. import _validate as v
from ..backend import bias_scratch, resolve_activation, zero_bias
from ..parameter import Parameter
from .base import Layer
from .slots import ParameterSlot


class Linear(Layer):
    """Fully connected layer: ``y = act(x @ W + b)``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    activation : None, "relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu", "gelu_tanh", "silu"
        or "softplus", fused into the bias pass
    activation_params : dict or None
        The activation's parameters, PyTorch's names and defaults: ``{"negative_slope": 0.01}``
        (leaky_relu), ``{"alpha": 1.0}`` (elu), ``{"approximate": "none"}`` or ``"tanh"`` (gelu),
        ``{"beta": 1.0, "threshold": 20.0}`` (softplus); missing entries take their default
    dtype : float32 (default) or float64; inputs are converted to it
    init : "he" (normal, std ``sqrt(2/in)``) or "glorot" (uniform, limit ``sqrt(6/(in+out))``)
    seed : int, numpy Generator or None

    Attributes
    ----------
    W : Parameter, (in_features, out_features)
    b : Parameter, (out_features,), or None
    act : :class:`fastbp.backend.Activation`, the resolved activation
    act_code : int, the activation's code for the kernels (:mod:`fastbp.jit`)
    activation_params : dict, every parameter of the activation with its value (empty if it has none)
    scratch : (CHUNKS, out_features) workspace of the bias-gradient kernel, or None without bias

    Notes
    -----
    ``backward(dy)`` overwrites ``W.grad`` and ``b.grad`` (no accumulation):
    ``dW = x.T @ dz``, ``db = dz.sum(axis=0)``, ``dx = dz @ W.T`` with
    ``dz = dy * act'`` computed from the output, or for GELU, SiLU and Softplus from the
    pre-activation ``x @ W + b`` that forward keeps in a reused buffer
    (docs/derivations.md, "Linear layer, row-major" and the activation's section).

    Examples
    --------
    >>> import numpy as np, fastbp
    >>> layer = fastbp.Linear(3, 2, activation="relu", seed=0)
    >>> layer(np.ones((4, 3), np.float32)).shape
    (4, 2)
    """

    # Reassigning either takes a Parameter of the same shape and dtype (and None stays None).
    W = ParameterSlot()
    b = ParameterSlot()

    def __init__(
        self,
        in_features,
        out_features,
        *,
        bias=True,
        activation=None,
        activation_params=None,
        dtype=np.float32,
        init="he",
        seed=None,
        backend="numba",
    ):
        super().__init__(dtype, backend)
        in_features = v.positive_int(in_features, "in_features")
        out_features = v.positive_int(out_features, "out_features")
        init = v.choice(init, "init", ("he", "glorot"))
        act = resolve_activation(activation, activation_params)  # check before drawing weights
        rng = np.random.default_rng(seed)
        shape = (in_features, out_features)
        if init == "he":
            w = rng.standard_normal(shape) * np.sqrt(2.0 / in_features)
        else:
            lim = np.sqrt(6.0 / (in_features + out_features))
            w = rng.uniform(-lim, lim, shape)
        self._wrap(w.astype(self.dtype), np.zeros(out_features, self.dtype) if bias else None, act, init)

    def _wrap(self, W, b, act, init):
        self.in_features, self.out_features = W.shape
        self.act = act
        self.act_code = act.code
        self.activation = act.name  # None and "identity" mean the same
        self.activation_params = dict(act.params)
        self.init = init
        self.W = Parameter(W, "W")
        self.b = Parameter(b, "b") if b is not None else None
        self.scratch = bias_scratch(self.out_features, self.dtype) if b is not None else None
        self._x = None
        self._y = None
        self._z = None

    @classmethod
    def from_weights(cls, W, b=None, *, activation=None, activation_params=None, backend="numba"):
        """A layer around existing arrays, sharing their memory (no copy, no random init).

        Parameters
        ----------
        W : (in_features, out_features) C-contiguous float32 or float64 array
        b : (out_features,) array of W's dtype, or None for no bias
        activation, activation_params : as in the constructor

        Training updates ``W`` and ``b`` in place, so the caller's arrays follow
        the layer (``fastbp.sklearn`` keeps its ``coefs_`` this way).
        """
        act = resolve_activation(activation, activation_params)
        W = v.float_array(W, "W", ndim=2, contiguous=False)
        if not W.flags.c_contiguous or not W.flags.writeable:
            raise ValueError("W: expected a writeable C-contiguous array (it is updated in place)")
        if W.shape[0] == 0 or W.shape[1] == 0:
            raise ValueError(f"W: expected a non-empty (in_features, out_features) array, got shape {W.shape}")
        if b is not None:
            b = v.float_array(b, "b", ndim=1, contiguous=False)
            v.same_dtype("W", W, "b", b)
            if b.shape != (W.shape[1],):
                raise ValueError(f"b: expected shape ({W.shape[1]},) to match W, got {b.shape}")
            if not b.flags.c_contiguous or not b.flags.writeable:
                raise ValueError("b: expected a writeable contiguous array (it is updated in place)")
        layer = cls.__new__(cls)
        Layer.__init__(layer, W.dtype, backend)
        layer._wrap(W, b, act, "glorot")  # init is only recorded in model files
        return layer

    def _bias(self):
        return self.b.data if self.b is not None else zero_bias(self.out_features, self.dtype)

    def forward(self, x):
        """``x`` (batch, in_features) -> ``y`` (batch, out_features), a reused buffer."""
        x = self._keep(v.batch(x, "x", dtype=self.dtype, width=self.in_features, contiguous=False))
        y = self._buf("y", (x.shape[0], self.out_features))
        np.matmul(x, self.W.data, out=y)
        # GELU, SiLU, Softplus (and LeakyReLU, ELU with a negative parameter) cannot be differentiated
        # from y: the bias pass also writes the pre-activation x @ W + b into a buffer reused every step.
        z = self._buf("z", y.shape) if self.act.reads_input else None
        self.act.forward(self._k, y, self._bias(), z)
        self._x, self._y, self._z = x, y, z
        return y

    def infer(self, x):
        y = np.matmul(x, self.W.data)
        act = self.act
        if act.original:  # relu, sigmoid, tanh, identity: the kernel directly (a call less per layer)
            self._k.bias_act(y, self._bias(), act.code)
        else:
            act.forward(self._k, y, self._bias())
        return y

    def backward(self, dy=None, *, need_dx=True):
        """Fill ``W.grad``, ``b.grad``; return ``dx`` (batch, in_features), or None if not ``need_dx``."""
        y = self._y
        dy = self._upstream(dy, y)
        if self.act_code:
            dz = self._buf("dz", y.shape)
            self.act.backward(self._k, dy, y, self._z, dz)
        else:
            dz = dy
        np.matmul(self._x.T, dz, out=self.W.grad)
        if self.b is not None:
            self._k.bias_grad(dz, self.b.grad, self.scratch)
        if not need_dx:
            return None
        dx = self._buf("dx", self._x.shape)
        np.matmul(dz, self.W.data.T, out=dx)
        return dx

    def parameters(self):
        return [self.W] if self.b is None else [self.W, self.b]

    def config(self):
        config = {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.b is not None,
            "activation": self.activation,
            "init": self.init,
        }
        if self.activation_params:  # only activations with parameters: older model files stay as they were
            config["activation_params"] = dict(self.activation_params)
        return config

    def __repr__(self):
        act = f", activation={self.activation!r}" if self.activation else ""
        if self.activation_params:
            act += f", activation_params={self.activation_params!r}"
        return f"Linear({self.in_features}, {self.out_features}{act}, bias={self.b is not None}, dtype={self.dtype})"
