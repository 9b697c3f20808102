"""Base class of the layers: buffers reused between steps, input checks."""

from __future__ import annotations

import numpy as np

from .. import _validate as v
from .._buffers import BufferPool
from ..backend import get


class Layer:
    """A layer: ``forward(x) -> y``, ``backward(dy=None) -> dx``.

    ``dtype`` is the dtype of the layer's parameters (float32 or float64); a
    layer without parameters has ``dtype=None`` by default and computes in the
    dtype of its input.

    Arrays returned by ``forward`` and ``backward`` are buffers owned by the
    layer, reused by the next call with the same batch size: copy them to keep
    them. ``backward`` uses what the last ``forward`` saw, so a layer serves
    one training thread at a time; :meth:`fastbp.Sequential.predict` is the
    thread-safe path for inference.
    """

    def __init__(self, dtype=np.float32, backend: str = "numba"):
        # None: the layer has no parameters and takes the dtype of its input.
        self.dtype = None if dtype is None else v.as_dtype(dtype)
        self._k = get(backend)
        self.backend = backend
        self._bufs = BufferPool()
        self.training = True

    # -- buffers -----------------------------------------------------------
    def _buf(self, name: str, shape: tuple, dtype=None) -> np.ndarray:
        return self._bufs.get(name, shape, self.dtype if dtype is None else dtype)

    def _keep(self, x: np.ndarray) -> np.ndarray:
        """``x`` to keep for backward: a copy if it lies in one of this layer's own buffers.

        ``h = l.forward(x); l.forward(h)`` passes the layer its own output
        buffer, which that forward overwrites; backward would then read the
        new output as its input.
        """
        return x.copy() if self._bufs.holds(x) else x

    def _upstream(self, dy, y: np.ndarray | None) -> np.ndarray:
        """The upstream gradient, checked against ``y`` and in its dtype; None means ones.

        See docs/derivations.md, "Matmul gradients and the upstream of ones".
        """
        if (
            type(dy) is np.ndarray
            and y is not None
            and dy.dtype == y.dtype
            and dy.shape == y.shape
            and dy.flags.c_contiguous
        ):
            return dy  # what a training step passes (the next layer's dx buffer), checked in a few reads
        if y is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        if dy is None:
            return np.ones(y.shape, y.dtype)
        dy = v.float_array(dy, "dy", ndim=2, dtype=y.dtype)
        if dy.shape != y.shape:
            raise ValueError(f"dy: expected shape {y.shape} (the forward output), got {dy.shape}")
        return dy

    # -- API ---------------------------------------------------------------
    def forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy=None, *, need_dx: bool = True):  # pragma: no cover - abstract
        raise NotImplementedError

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Forward in eval mode, whatever :attr:`training` says, without touching the layer's
        buffers or caches (thread-safe).

        ``x`` must already be a checked (batch, in) array of the layer's dtype
        (of float32 or float64 for a layer without parameters).
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def __call__(self, x):
        return self.forward(x)

    def parameters(self) -> list:
        return []

    def buffers(self) -> dict:
        """Non-trainable state saved with the model (running statistics, generator counters).

        Arrays by name, owned by the layer and updated in place;
        :meth:`fastbp.Sequential.state_dict` holds them next to the parameters.
        """
        return {}

    def train(self, mode: bool = True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def config(self) -> dict:
        """Constructor arguments that rebuild this layer (for model files)."""
        return {}
