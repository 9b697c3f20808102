"""``Dropout``: inverted dropout with a counter-based mask, saved and restored with the model."""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _validate as v
from ..kernels import dropout as _kernels
from ..reference import dropout as _reference
from .base import Layer

_BACKENDS = {"numba": _kernels, "numpy": _reference}

_P = v.Interval(numbers.Real, 0, 1)
_SEED = (
    v.NoneValue(),
    v.Interval(numbers.Integral, 0, 2**64 - 1),
    v.InstanceOf(np.random.Generator, "a numpy Generator"),
)


class Dropout(Layer):
    """Inverted dropout, as ``torch.nn.Dropout``: in training each element is zeroed with
    probability ``p`` and the kept ones are scaled by ``1 / (1 - p)``; in eval mode
    (:meth:`eval`) and in :meth:`infer` it is the identity.

    Parameters
    ----------
    p : float in [0, 1]
        Probability of dropping an element. ``p=0`` keeps everything (``y = x``),
        ``p=1`` drops everything (``y = x * 0``).
    seed : int in [0, 2**64), numpy Generator or None
        Seed of the mask generator; None draws one from the operating system's
        entropy (a Generator: one draw from it), once, at construction.
    dtype : None (default: the input's), float32 or float64
    backend : "numba" or "numpy"

    Notes
    -----
    The mask of element ``e`` (flat index in the batch) at step ``t`` is a hash
    of ``(seed, t, e)`` (:mod:`fastbp.kernels.dropout`), so it depends neither on
    the thread count nor on the backend. Each training :meth:`forward` advances
    ``t``; :meth:`buffers` holds ``seed`` and ``t`` (``"step"``), so a model saved
    and loaded draws the masks it would have drawn. Dropped elements are
    ``x * 0``, as in PyTorch: NaN and inf inputs give NaN there.

    Backward reuses the forward's mask, kept as a uint8 buffer (one per batch
    shape, reused every step) rather than regenerated from the counters: the
    hash, not memory, bounds the forward, and forward + backward with a backward
    that hashed again measured 1.07-1.4x slower at 256x512 and 1024x2048
    float32 over repeated runs (``python benchmarks/test_bench_dropout.py``).

    ``forward`` returns a buffer owned by the layer in training, and ``x``
    itself in eval mode (as :class:`Identity` does).

    Examples
    --------
    >>> import numpy as np, fastbp
    >>> from fastbp.layers.dropout import Dropout
    >>> drop = Dropout(0.5, seed=0)
    >>> y = drop(np.ones((2, 4), np.float32))
    >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
    True
    >>> drop.eval()(np.ones((1, 3), np.float32))
    array([[1., 1., 1.]], dtype=float32)
    """

    def __init__(self, p=0.5, *, seed=None, dtype=None, backend: str = "numba"):
        super().__init__(dtype, backend)
        self.p = p
        seed = v.check(seed, "seed", *_SEED)
        if not isinstance(seed, int):
            rng = np.random.default_rng(seed)  # None: fresh entropy from the OS
            seed = int(rng.integers(0, 2**64, dtype=np.uint64))
        self._d = _BACKENDS[backend]
        # Buffers, updated in place: what a model file saves and load_state_dict copies back.
        self._seed = np.array([seed], np.uint64)
        self._step = np.zeros(1, np.uint64)
        self._x = None  # the last forward's input (None before any)
        self._mask = None  # its mask, None when that forward was the identity

    @property
    def p(self) -> float:
        """The drop probability (settable: the mask's threshold and the scale follow)."""
        return self._p

    @p.setter
    def p(self, value) -> None:
        self._p = v.check(value, "p", _P)
        # Kept iff the 53-bit uniform (h >> 11) >= ceil(p * 2**53), i.e. u >= p exactly;
        # p * 2**53 is exact in float64 and p = 1 gives 2**53, which no element reaches.
        self._threshold = np.uint64(math.ceil(self._p * 2.0**53))
        self._scale = 0.0 if self._p == 1 else 1.0 / (1.0 - self._p)  # rounded once, to the input's dtype

    def forward(self, x):
        """``x`` (batch, m) -> ``y`` (batch, m): a reused buffer in training, ``x`` in eval mode."""
        x = v.batch(x, "x", dtype=self.dtype)
        self._x = x
        if not self.training:
            self._mask = None
            return x
        y = self._buf("y", x.shape, x.dtype)
        mask = self._buf("mask", x.shape, np.uint8)
        self._d.dropout_forward(x, y, mask, self._seed[0], self._step[0], self._threshold, x.dtype.type(self._scale))
        self._step += np.uint64(1)
        self._mask = mask
        return y

    def infer(self, x):
        return x

    def backward(self, dy=None, *, need_dx=True):
        """``dx = dy * mask / (1 - p)`` with the last forward's mask (``dy`` after an eval forward).

        None when not ``need_dx``.
        """
        dy = self._upstream(dy, self._x)
        if not need_dx:
            return None
        if self._mask is None:
            return dy
        dx = self._buf("dx", dy.shape, dy.dtype)
        self._d.dropout_backward(dy, self._mask, dy.dtype.type(self._scale), dx)
        return dx

    def buffers(self) -> dict:
        """``{"seed": uint64 (1,), "step": uint64 (1,)}``: the mask generator's state, updated in place."""
        return {"seed": self._seed, "step": self._step}

    def config(self) -> dict:
        return {"p": self.p}

    def __repr__(self):
        return f"Dropout(p={self.p})"
