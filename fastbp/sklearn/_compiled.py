"""The estimators' minibatch epoch in compiled calls, for the plain MLP (:mod:`fastbp.kernels.mlp_epoch`).

:class:`~fastbp.sklearn._base._Epoch` runs it instead of its Python loop when
:func:`compiled_epoch` finds the case covered: a plain :class:`._network.Network`
(no dropout, no batch norm), dense ``X`` (converted to the network's dtype and C order
when that copy is at most :data:`COPY_BYTES`), no sample
weights, a softmax, logistic or identity output, scikit-learn's SGD or Adam, and numpy's
BLAS one whose ``gemm`` the kernel can call (:func:`fastbp.kernels.blas.gemm_addresses`).
Otherwise the Python loop runs, whose step is the same arithmetic (tests/test_sklearn_compiled.py
compares the two).

A call covers as many batches as make about :data:`CHUNK_FLOPS` of matmul work
(the whole epoch on digits, one batch on 784-512-256-10), so a Ctrl-C still stops
training within milliseconds, after a whole batch, as the Python loop does.
"""

from __future__ import annotations

import math

import numpy as np

from ..data import Rows
from ..kernels import mlp_epoch
from ..kernels.blas import gemm_addresses
from ..threads import use_parallel
from ._network import Network
from ._solvers import SGD, Adam

# Data in another dtype or layout is converted whole for the compiled loop up to this size (the
# Python loop converts a batch at a time, so a large memory-mapped X is never copied).
COPY_BYTES = 8 << 20
# Matmul FLOPs per compiled call: ~2 ms at the 100 GFLOP/s of the development machine.
CHUNK_FLOPS = 2e8


class CompiledEpoch:
    """:meth:`run` does what ``_Epoch.run`` does, batches in compiled calls. Build with :func:`compiled_epoch`."""

    def __init__(self, net: Network, solver, out_loss, X: Rows, T: np.ndarray, batch_size: int, alpha: float):
        self.net, self.solver, self.T = net, solver, T
        self.index, self.n = X.index, X.shape[0]
        self.X = np.asarray(X.array)  # a memmap's plain view
        if self.X.dtype != X.dtype or not self.X.flags.c_contiguous:  # small enough to convert whole
            self.X = np.ascontiguousarray(self.X, dtype=X.dtype)
        self.batch_size, self.alpha = batch_size, alpha
        self.kernel = mlp_epoch.epoch_kernel(out_loss.out, "adam" if isinstance(solver, Adam) else "sgd")
        self.gemm = gemm_addresses()[0 if X.dtype == np.float32 else 1]  # type: ignore[index]
        dt, bsz = X.dtype, batch_size
        # The Python step's own plan: parameters, gradients and the buffers of a full batch.
        plan, _ = net._plan(bsz)
        W, b, gW, gb, act, scratch, y, dz, dx = zip(*(entry[:9] for entry in plan))
        self.layers = (W, b, gW, gb, tuple(int(a) for a in act), y, dz, dx, scratch)
        k = net.layers[-1].out_features
        self.xb = np.empty((bsz, self.X.shape[1]), dt)
        self.tb = np.empty((bsz, *T.shape[1:]), T.dtype)
        self.grad, self.rows, self.elems = np.empty((bsz, k), dt), np.empty(bsz, dt), np.empty((bsz, k), dt)
        self.no_class_weights = np.empty(0, dt)
        self.lo, self.hi = float(out_loss._lo), float(out_loss._hi)  # OutputLoss's clip of the per-row losses
        self.segs = tuple(w for w, _, _ in net.segments)
        self.gsegs = tuple(g for _, g, _ in net.segments)
        flops = 6.0 * bsz * sum(layer.W.data.size for layer in net.layers)
        self.chunk = max(1, int(CHUNK_FLOPS // flops))
        self._rates = np.empty(self.chunk)  # the learning rate of each step of a call
        self._arange = np.arange(self.n, dtype=np.int64)
        self._xorder = np.empty(self.n, np.int64) if self.index is not None else None

    def _solver_args(self, steps: int):
        """(s1, s2, rates, momentum, nesterov, beta1, beta2, eps) for the next ``steps`` steps."""
        s, rates = self.solver, self._rates[:steps]
        if isinstance(s, Adam):
            b1, b2 = s.beta_1, s.beta_2
            # Adam.step's float arithmetic, in Python: numba's integer powers round differently.
            for i, t in enumerate(range(s.t + 1, s.t + steps + 1)):
                rates[i] = s.learning_rate_init * math.sqrt(1 - b2**t) / (1 - b1**t)
            return tuple(s.ms), tuple(s.vs), rates, 0.0, False, b1, b2, s.epsilon
        empty = self.segs[0][:0]
        bufs = tuple(s.buffers) if s.buffers is not None else (empty, empty)
        rates.fill(s.learning_rate)
        return bufs, bufs, rates, s.momentum, s.nesterov, 0.0, 0.0, 0.0

    def run(self, order, interrupted):
        """As ``_Epoch.run``: the sum of batch loss x batch rows, or None after a Ctrl-C."""
        n = self.n
        order = self._arange if order is None else np.ascontiguousarray(order, dtype=np.int64)
        xorder = order if self._xorder is None else np.take(self.index, order, out=self._xorder)
        n_batches = -(-n // self.batch_size)
        total = 0.0
        s = self.solver
        for first in range(0, n_batches, self.chunk):
            last = min(first + self.chunk, n_batches)
            s1, s2, rates, mu, nesterov, b1, b2, eps = self._solver_args(last - first)
            total += self.kernel(
                self.gemm, self.X, self.T, order, xorder, first, last, self.batch_size, *self.layers,
                self.xb, self.tb, self.grad, self.rows, self.elems, self.no_class_weights,
                self.segs, self.gsegs, s1, s2, self.alpha, self.lo, self.hi,
                rates, mu, nesterov, b1, b2, eps,
            )  # fmt: skip
            if isinstance(s, Adam):
                s.t += last - first
                s.learning_rate = float(rates[-1])
            if interrupted():
                return None
        return total


def compiled_epoch(net, solver, out_loss, gather, batch_size: int, alpha: float) -> CompiledEpoch | None:
    """A :class:`CompiledEpoch` for this fit, or None where the Python loop must run (see the module docstring)."""
    X, T, out = gather.X, gather.T, out_loss.out
    if type(net) is not Network or gather.sw is not None or out not in mlp_epoch.OUTPUTS:
        return None
    if type(solver) not in (SGD, Adam) or not isinstance(X, Rows):  # sparse X: densified per batch
        return None
    dt = net.data.dtype
    if gemm_addresses() is None or dt not in (np.float32, np.float64):  # numpy's BLAS is not one fastbp can call
        return None
    a = X.array
    if not isinstance(a, np.ndarray) or X.dtype != dt or not T.flags.c_contiguous:
        return None
    if (a.dtype != dt or not a.flags.c_contiguous) and a.shape[0] * a.shape[1] * dt.itemsize > COPY_BYTES:
        return None  # a converted copy would be large: the Python loop converts batch by batch
    # Its kernels are the serial builds: where the Python step would launch a parallel one (a
    # wide layer on a large batch, millions of parameters), the Python step runs instead.
    widths = [layer.out_features for layer in net.layers] + [net.layers[0].in_features]
    if use_parallel(max(batch_size * max(widths), net.data.size)):
        return None
    if out == "softmax" and (T.ndim != 1 or T.dtype != np.int64):
        return None
    if out != "softmax" and (T.dtype != dt or T.ndim != 2):
        return None
    return CompiledEpoch(net, solver, out_loss, X, T, batch_size, alpha)
