"""Runs of layers that :class:`fastbp.Sequential` executes as one fused kernel pair in training.

``BatchNorm1d -> activation -> Dropout``, ``BatchNorm1d -> activation`` and
``BatchNorm1d -> Dropout`` (the activation one of ReLU, LeakyReLU with a slope >= 0,
Sigmoid, Tanh) go through :mod:`fastbp.kernels.fused_norm`, which gives the bits of the
layers run one by one with fewer passes over memory. The layers stay the objects the
user holds: the fused step reads their parameters and settings at every call and
leaves their state (running statistics, ``num_batches_tracked``, the Dropout step
counter and mask, the saved BatchNorm input) as their own ``forward`` would.
A run is fused only when all its layers are in training mode and share a backend;
otherwise the layers run one by one. docs/normalization.md, "Fusion in Sequential".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _validate as v
from ..kernels import fused_norm as _kernels
from ..reference import fused_norm as _reference
from .activations import LeakyReLU, ReLU, Sigmoid, Tanh
from .base import Layer
from .dropout import Dropout
from .norm import BatchNorm1d, _batch_of_one

_BACKENDS = {"numba": _kernels, "numpy": _reference}


def _act_code(layer) -> int | None:
    """The fused kernels' activation code for ``layer``, or None if it is not one they apply."""
    if type(layer) in (ReLU, Sigmoid, Tanh):
        return layer._code
    if type(layer) is LeakyReLU and not layer.act.reads_input:  # slope >= 0: the output-based rule
        return layer.act.code
    return None


class FusedNorm:
    """``layers[start:stop]``: a BatchNorm1d, then an optional activation, then an optional Dropout.

    Built by :func:`find_runs`; :meth:`active` says whether :meth:`forward` applies now.
    """

    def __init__(self, start: int, bn: BatchNorm1d, act: Layer | None, drop: Dropout | None):
        self.start = start
        self.layers = [layer for layer in (bn, act, drop) if layer is not None]
        self.stop = start + len(self.layers)
        self.bn, self.drop = bn, drop
        self.act: Any = act  # ReLU, LeakyReLU, Sigmoid or Tanh (their _y is set here)
        self._y: np.ndarray | None = None  # the last fused forward's output
        self.code = _act_code(act) if act is not None else _kernels.IDENTITY
        self.p1 = act.act.p1 if type(act) is LeakyReLU else 0.0
        self.reads = self.code in _kernels.STORES_OUTPUT
        self._no_mask = np.empty((0, bn.num_features), np.uint8)  # the kernels' mask without dropout (never read)
        self._no_step = np.zeros(1, np.uint64)  # the kernels' step counter without dropout (not advanced)
        self._no_tracked = np.zeros(1, np.int64)  # num_batches_tracked without running statistics (untouched)
        self._no_running = (np.empty(0, bn.dtype), np.empty(0, bn.dtype), 0.0)  # (0,) arrays: not tracked
        self._bufs: dict = {}  # batch shape -> (y, a, mask); see _buffers
        self.fused_last = False  # whether the last forward ran fused (backward follows it)

    def active(self) -> bool:
        """All layers in training mode, on one backend: the fused kernels apply."""
        backend = self.bn.backend
        return all(layer.training and layer.backend == backend for layer in self.layers)

    def forward(self, x):
        """The run's output for ``x`` (batch, num_features), a buffer of its last layer."""
        bn, drop = self.bn, self.drop
        x = bn._keep(v.batch(x, "x", dtype=bn.dtype, width=bn.num_features))
        if x.shape[0] == 1:
            raise _batch_of_one(x.shape)
        y, a, mask = self._buffers(x.shape)
        dt = bn.dtype.type
        if drop is not None:
            seed, steps, threshold, dscale = drop._seed[0], drop._step, drop._threshold, dt(drop._scale)
        else:
            seed, steps, threshold, dscale = np.uint64(0), self._no_step, np.uint64(0), dt(1.0)
        if bn.track_running_stats:
            running = bn.running_mean, bn.running_var, -1.0 if bn.momentum is None else float(bn.momentum)
            tracked = bn.num_batches_tracked
        else:
            running, tracked = self._no_running, self._no_tracked
        # The kernel also updates the running statistics, num_batches_tracked and the Dropout's step.
        _BACKENDS[bn.backend].bn_act_drop_forward(
            x, bn._gamma, bn._beta, bn.eps, self.code, dt(self.p1), drop is not None,
            seed, steps, threshold, dscale, y, a, mask, bn._stats, bn._save, bn._acc, *running, tracked,
        )  # fmt: skip
        self._leave_state(x, y, a, mask)
        return y

    def _leave_state(self, x, y, a, mask):
        """The rest of the state each layer's own forward leaves (the kernel did the counters)."""
        bn, act, drop = self.bn, self.act, self.drop
        bn._x, bn._batch_stats = x, True
        if act is not None:
            # Sigmoid, Tanh: their output, so their own backward works; ReLU's is never written
            # (the fused backward recomputes it), so its own backward must not read a stale one.
            act._y = (a if drop is not None else y) if self.reads else None
            if hasattr(act, "_x"):
                act._x = None
        if drop is not None:
            drop._x, drop._mask = y, mask  # _x: only its shape is read (the upstream check)
        self._y = y
        self.fused_last = True

    def _buffers(self, shape):
        """``(y, a, mask)`` for a batch of ``shape``: the layers' own buffers, looked up once per shape.

        A layer's buffer lookup is cheap on its own but not in a training step: right after
        a matmul each Python operation runs with cold caches (a 1 us kernel call measured
        11-21 us there), so the fused path does as few as it can.
        """
        bufs = self._bufs.get(shape)
        if bufs is None:
            bn, act, drop = self.bn, self.act, self.drop
            dt = bn.dtype
            y = self.layers[-1]._buf("y", shape, dt)
            if drop is not None:
                mask = drop._buf("mask", shape, np.uint8)
                a = act._buf("y", shape, dt) if self.reads else bn._no_dx
            else:
                mask, a = self._no_mask, bn._no_dx
            if len(self._bufs) >= 8:  # bounded, as the layers' pools are
                self._bufs.clear()
            bufs = self._bufs[shape] = (y, a, mask)
        return bufs

    def backward(self, dy, need_dx: bool):
        """Fill the BatchNorm's ``weight.grad`` and ``bias.grad``; return ``dx`` or None (not ``need_dx``)."""
        bn = self.bn
        x: Any = bn._x  # set by the fused forward, which Sequential ran before this
        dy = self.layers[-1]._upstream(dy, self._y)
        dt = dy.dtype
        if bn.weight is None and not need_dx:
            return None
        drop = self.drop
        o = self.act._y if self.reads else bn._no_dx
        mask = drop._mask if drop is not None else self._no_mask
        dscale = dt.type(drop._scale) if drop is not None else dt.type(1.0)
        dx = bn._dx_out(x.shape, need_dx)
        _BACKENDS[bn.backend].bn_act_drop_backward(
            dy, x, bn._save, o, mask, self.code, dt.type(self.p1), drop is not None, dscale,
            need_dx, dx, bn._dgamma, bn._dbeta, bn._acc, bn._work,
        )  # fmt: skip
        return dx if need_dx else None


def find_runs(layers) -> list[FusedNorm]:
    """The fusable runs in ``layers``, in order and not overlapping."""
    runs = []
    i, n = 0, len(layers)
    while i < n:
        bn = layers[i]
        if type(bn) is not BatchNorm1d:
            i += 1
            continue
        j = i + 1
        act = layers[j] if j < n and _act_code(layers[j]) is not None else None
        if act is not None:
            j += 1
        drop = layers[j] if j < n and type(layers[j]) is Dropout else None
        if act is not None or drop is not None:
            runs.append(FusedNorm(i, bn, act, drop))
        i = j + (drop is not None)
    return runs
