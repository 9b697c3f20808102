"""Normalization layers: :class:`BatchNorm1d` (over the batch) and :class:`LayerNorm` (over the features).

PyTorch's names and semantics on (batch, features) arrays. Formulas, what is saved
for backward and the numerics: docs/normalization.md.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np

from .. import _validate as v
from ..kernels import norm as _kernels
from ..parameter import Parameter
from ..reference import norm as _reference
from .base import Layer
from .slots import ArraySlot, ParameterSlot

_BACKENDS = {"numba": _kernels, "numpy": _reference}
CHUNKS = _kernels.CHUNKS

# eps > 0: with eps = 0 a constant feature would be 0 * inf = NaN (PyTorch refuses eps = 0 in training too).
_EPS = v.Interval(numbers.Real, 0, closed="neither", finite=True)
_MOMENTUM = (v.NoneValue(), v.Interval(numbers.Real, 0, 1))
_BOOL = v.Boolean()


def _batch_of_one(shape) -> ValueError:
    return ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(shape)}")


def _affine_array(param: str, field: str, fixed: int):
    """A property: ``getattr(self.<param>, field)``, or ``self._fixed[fixed]`` without affine parameters.

    Assigning it is refused: the array to change is the parameter's.
    """

    def get(self) -> np.ndarray:
        p = getattr(self, param)
        return self._fixed[fixed] if p is None else getattr(p, field)

    def set(self, a) -> None:
        raise AttributeError(f"{param}.{field}: assign it on the parameter (layer.{param}.{field} = a)")

    return property(get, set)


class _Norm(Layer):
    """Shared parts: the affine parameters (or fixed ones and zeros), the reused workspace."""

    # Reassigning either takes a Parameter of the same shape and dtype (and None stays None).
    weight = ParameterSlot()
    bias = ParameterSlot()

    def __init__(self, num_features, affine: bool, dtype, backend: str):
        if dtype is None:  # its parameters and statistics need a dtype of their own
            raise TypeError("dtype: expected float32 or float64, got None")
        super().__init__(dtype, backend)
        self.num_features = v.positive_int(num_features, "num_features")
        self._n = _BACKENDS[backend]
        m = self.num_features
        if affine:
            self.weight = Parameter(np.ones(m, self.dtype), "weight")
            self.bias = Parameter(np.zeros(m, self.dtype), "bias")
        else:
            self.weight = self.bias = None
        # Without affine parameters the kernels read fixed ones and zeros and write unused gradients.
        dt = self.dtype
        self._fixed = (np.ones(m, dt), np.zeros(m, dt), np.empty(m, dt), np.empty(m, dt))
        self._acc = np.empty((2, CHUNKS, m), np.float64)  # column partial sums, one row per chunk
        self._no_dx = np.empty((0, m), self.dtype)  # the kernels' dx when no dx is wanted
        self._x = None  # the last forward's input (None before any)

    # What the kernels read and write, looked up at each call: the parameters' arrays as they are
    # now (Parameter checks any rebinding of .data or .grad), or the fixed arrays.
    _gamma = _affine_array("weight", "data", 0)
    _beta = _affine_array("bias", "data", 1)
    _dgamma = _affine_array("weight", "grad", 2)
    _dbeta = _affine_array("bias", "grad", 3)

    @property
    def in_features(self) -> int:
        return self.num_features

    @property
    def out_features(self) -> int:
        return self.num_features

    def parameters(self):
        return [] if self.weight is None else [self.weight, self.bias]

    def _dx_out(self, shape, need_dx: bool):
        return self._buf("dx", shape) if need_dx else self._no_dx


class BatchNorm1d(_Norm):
    """Batch normalization over the batch dimension of (batch, num_features) inputs, as ``torch.nn.BatchNorm1d``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per feature, with the batch's
    mean and biased variance in training and the running statistics in eval mode.

    Parameters
    ----------
    num_features : int
    eps : float > 0, added to the variance
    momentum : float in [0, 1] or None
        ``running = (1 - momentum) * running + momentum * batch_statistic``; None means
        the cumulative average (``momentum = 1 / num_batches_tracked``).
    affine : bool, learn ``weight`` (ones) and ``bias`` (zeros)
    track_running_stats : bool
        Keep ``running_mean`` (zeros), ``running_var`` (ones, updated with the
        unbiased batch variance) and ``num_batches_tracked``. Without them, eval mode
        normalizes with the batch's own statistics, as in training.
    dtype : float32 (default) or float64
    backend : "numba" or "numpy"

    Attributes
    ----------
    weight, bias : Parameter (num_features,), or None without ``affine``
    running_mean, running_var : (num_features,) arrays of ``dtype``, or None
    num_batches_tracked : (1,) int64 array, or None

    Notes
    -----
    ``backward(dy)`` overwrites ``weight.grad`` and ``bias.grad``. In training it is the
    gradient through the batch statistics; after an eval-mode forward it is the
    gradient of the fixed affine map ``(x - running_mean) * weight / sqrt(running_var + eps)``.
    Training on a batch of one row raises ValueError, as in PyTorch. :meth:`infer`
    computes the eval-mode output and changes nothing (without running statistics
    it normalizes each batch it is given, so predictions depend on ``batch_size``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastbp.layers.norm import BatchNorm1d
    >>> bn = BatchNorm1d(2)
    >>> bn(np.array([[1.0, 10.0], [3.0, 30.0]], np.float32)).round(3)
    array([[-1., -1.],
           [ 1.,  1.]], dtype=float32)
    >>> bn.running_mean
    array([0.2, 2. ], dtype=float32)
    """

    # Reassigning a running statistic takes an array of the same shape and dtype (None stays None).
    running_mean = ArraySlot()
    running_var = ArraySlot()
    num_batches_tracked = ArraySlot()

    def _set_momentum(self, value) -> None:
        self._momentum = v.check(value, "momentum", *_MOMENTUM)

    # Checked on every assignment, as in the constructor (the fused forward passes None as -1.0,
    # so a negative value must never get in); read through C, as the slots are.
    momentum = property(
        operator.attrgetter("_momentum"), _set_momentum, doc="float in [0, 1], or None (cumulative average)"
    )

    def __init__(
        self,
        num_features,
        *,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        dtype=np.float32,
        backend: str = "numba",
    ):
        eps = v.check(eps, "eps", _EPS)
        momentum = v.check(momentum, "momentum", *_MOMENTUM)
        affine = v.check(affine, "affine", _BOOL)
        track_running_stats = v.check(track_running_stats, "track_running_stats", _BOOL)
        super().__init__(num_features, affine, dtype, backend)
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        m = self.num_features
        if track_running_stats:
            self.running_mean = np.zeros(m, self.dtype)
            self.running_var = np.ones(m, self.dtype)
            self.num_batches_tracked = np.zeros(1, np.int64)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self._stats = np.empty((2, m), np.float64)  # batch mean and biased variance
        self._save = np.empty((5, m), self.dtype)  # what backward needs (kernels.norm.batchnorm_forward)
        self._work = np.empty((2, m), self.dtype)
        self._batch_stats = True

    def forward(self, x):
        """``x`` (batch, num_features) -> ``y`` of the same shape, a reused buffer.

        In training, also updates the running statistics (and ``num_batches_tracked``).
        """
        x = self._keep(v.batch(x, "x", dtype=self.dtype, width=self.num_features))
        k = self._n
        y = self._buf("y", x.shape)
        batch_stats = self.training or not self.track_running_stats
        if batch_stats:
            if x.shape[0] == 1:
                raise _batch_of_one(x.shape)
            k.batchnorm_forward(x, self._gamma, self._beta, self.eps, y, self._stats, self._save, self._acc)
            if self.training and self.track_running_stats:
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked[0]) if self.momentum is None else self.momentum
                k.batchnorm_running(self.running_mean, self.running_var, self._stats, factor, x.shape[0])
        else:
            k.batchnorm_eval(x, self._gamma, self._beta, self.running_mean, self.running_var, self.eps, y, self._save)
        self._x, self._batch_stats = x, batch_stats
        return y

    def infer(self, x):
        x = np.ascontiguousarray(x, dtype=self.dtype)
        m = self.num_features
        y = np.empty(x.shape, self.dtype)
        save = np.empty((5, m), self.dtype)
        if self.track_running_stats:
            self._n.batchnorm_eval(x, self._gamma, self._beta, self.running_mean, self.running_var, self.eps, y, save)
        else:
            if x.shape[0] == 1:
                raise _batch_of_one(x.shape)
            stats, acc = np.empty((2, m), np.float64), np.empty((2, CHUNKS, m), np.float64)
            self._n.batchnorm_forward(x, self._gamma, self._beta, self.eps, y, stats, save, acc)
        return y

    def backward(self, dy=None, *, need_dx=True):
        """Fill ``weight.grad`` and ``bias.grad``; return ``dx`` (batch, num_features), or None if not ``need_dx``."""
        x = self._x
        dy = self._upstream(dy, x)
        need_dx = bool(need_dx)
        if self.weight is None and not need_dx:
            return None
        dx = self._dx_out(x.shape, need_dx)
        self._n.batchnorm_backward(
            dy, x, self._save, self._batch_stats, need_dx, dx, self._dgamma, self._dbeta, self._acc, self._work
        )
        return dx if need_dx else None

    def buffers(self):
        if not self.track_running_stats:
            return {}
        return {
            "running_mean": self.running_mean,
            "running_var": self.running_var,
            "num_batches_tracked": self.num_batches_tracked,
        }

    def config(self):
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
        }

    def __repr__(self):
        return (
            f"BatchNorm1d({self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}, dtype={self.dtype})"
        )


class LayerNorm(_Norm):
    """Layer normalization over the features of each row, as ``torch.nn.LayerNorm(num_features)``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with each row's mean and
    biased variance; the same in training and eval mode (no running statistics).

    Parameters
    ----------
    num_features : int, the normalized (last) dimension
    eps : float > 0, added to the variance
    elementwise_affine : bool, learn ``weight`` (ones) and ``bias`` (zeros)
    dtype : float32 (default) or float64
    backend : "numba" or "numpy"

    Attributes
    ----------
    weight, bias : Parameter (num_features,), or None without ``elementwise_affine``

    Examples
    --------
    >>> import numpy as np
    >>> from fastbp.layers.norm import LayerNorm
    >>> LayerNorm(2)(np.array([[1.0, 3.0], [10.0, 30.0]], np.float32)).round(3)
    array([[-1.,  1.],
           [-1.,  1.]], dtype=float32)
    """

    def __init__(self, num_features, *, eps=1e-5, elementwise_affine=True, dtype=np.float32, backend: str = "numba"):
        eps = v.check(eps, "eps", _EPS)
        elementwise_affine = v.check(elementwise_affine, "elementwise_affine", _BOOL)
        super().__init__(num_features, elementwise_affine, dtype, backend)
        self.eps, self.elementwise_affine = eps, elementwise_affine

    def forward(self, x):
        """``x`` (batch, num_features) -> ``y`` of the same shape, a reused buffer."""
        x = self._keep(v.batch(x, "x", dtype=self.dtype, width=self.num_features))
        y = self._buf("y", x.shape)
        self._save = self._buf("save", (3, x.shape[0]))
        self._n.layernorm_forward(x, self._gamma, self._beta, self.eps, y, self._save)
        self._x = x
        return y

    def infer(self, x):
        x = np.ascontiguousarray(x, dtype=self.dtype)
        y = np.empty(x.shape, self.dtype)
        self._n.layernorm_forward(x, self._gamma, self._beta, self.eps, y, np.empty((3, x.shape[0]), self.dtype))
        return y

    def backward(self, dy=None, *, need_dx=True):
        """Fill ``weight.grad`` and ``bias.grad``; return ``dx`` (batch, num_features), or None if not ``need_dx``."""
        x = self._x
        dy = self._upstream(dy, x)
        need_dx = bool(need_dx)
        if self.weight is None and not need_dx:
            return None
        dx = self._dx_out(x.shape, need_dx)
        self._n.layernorm_backward(dy, x, self._gamma, self._save, need_dx, dx, self._dgamma, self._dbeta, self._acc)
        return dx if need_dx else None

    def config(self):
        return {"num_features": self.num_features, "eps": self.eps, "elementwise_affine": self.elementwise_affine}

    def __repr__(self):
        return (
            f"LayerNorm({self.num_features}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"dtype={self.dtype})"
        )
