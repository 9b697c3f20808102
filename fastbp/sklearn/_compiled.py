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
from ..kernels import linear as _linear
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

    def __init__(self, net: Network, solver, out: str, X: Rows, T: np.ndarray, batch_size: int, alpha: float):
        self.net, self.solver, self.T = net, solver, T
        self.index, self.n = X.index, X.shape[0]
        self.X = np.asarray(X.array)  # a memmap's plain view
        if self.X.dtype != X.dtype or not self.X.flags.c_contiguous:  # small enough to convert whole
            self.X = np.ascontiguousarray(self.X, dtype=X.dtype)
        self.batch_size, self.alpha = batch_size, alpha
        self.kernel = mlp_epoch.epoch_kernel(out, "adam" if isinstance(solver, Adam) else "sgd")
        self.gemm = gemm_addresses()[0 if X.dtype == np.float32 else 1]  # type: ignore[index]
        dt, bsz, layers = X.dtype, batch_size, net.layers
        self.layers = (
            tuple(layer.W.data for layer in layers),
            tuple(layer.b.data for layer in layers),
            tuple(layer.W.grad for layer in layers),
            tuple(layer.b.grad for layer in layers),
            tuple(int(layer.act_code) for layer in layers),
            tuple(np.empty((bsz, layer.out_features), dt) for layer in layers),  # outputs
            tuple(np.empty((bsz, layer.out_features), dt) for layer in layers),  # activation gradients
            tuple(np.empty((bsz, layer.in_features), dt) for layer in layers),  # input gradients
            tuple(np.empty((_linear.CHUNKS, layer.out_features), dt) for layer in layers),
        )
        k = layers[-1].out_features
        self.xb = np.empty((bsz, self.X.shape[1]), dt)
        self.tb = np.empty((bsz, *T.shape[1:]), T.dtype)
        self.grad, self.rows, self.elems = np.empty((bsz, k), dt), np.empty(bsz, dt), np.empty((bsz, k), dt)
        self.no_class_weights = np.empty(0, dt)
        eps = np.finfo(dt).eps  # OutputLoss's clip of the per-row losses
        self.lo, self.hi = float(-np.log1p(-eps)), float(-np.log(eps))
        self.segs = tuple(w for w, _, _ in net.segments)
        self.gsegs = tuple(g for _, g, _ in net.segments)
        flops = 6.0 * bsz * sum(layer.W.data.size for layer in layers)
        self.chunk = max(1, int(CHUNK_FLOPS // flops))
        self._arange: np.ndarray | None = None

    def _solver_args(self, steps: int):
        """(s1, s2, rates, momentum, nesterov, beta1, beta2, eps) for the next ``steps`` steps."""
        s = self.solver
        if isinstance(s, Adam):
            b1, b2 = s.beta_1, s.beta_2
            # Adam.step's float arithmetic, in Python: numba's integer powers round differently.
            rates = np.array(
                [s.learning_rate_init * math.sqrt(1 - b2**t) / (1 - b1**t) for t in range(s.t + 1, s.t + steps + 1)]
            )
            return tuple(s.ms), tuple(s.vs), rates, 0.0, False, b1, b2, s.epsilon
        empty = self.segs[0][:0]
        bufs = tuple(s.buffers) if s.buffers is not None else (empty, empty)
        return bufs, bufs, np.full(steps, s.learning_rate), s.momentum, s.nesterov, 0.0, 0.0, 0.0

    def run(self, order, interrupted):
        """As ``_Epoch.run``: the sum of batch loss x batch rows, or None after a Ctrl-C."""
        n = self.n
        if order is None:
            if self._arange is None:
                self._arange = np.arange(n, dtype=np.int64)
            order = self._arange
        order = np.ascontiguousarray(order, dtype=np.int64)
        xorder = order if self.index is None else np.ascontiguousarray(self.index[order], dtype=np.int64)
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
                rates, 0, mu, nesterov, b1, b2, eps,
            )  # fmt: skip
            if isinstance(s, Adam):
                s.t += last - first
                s.learning_rate = float(rates[-1])
            if interrupted():
                return None
        return total


def compiled_epoch(net, solver, out: str, gather, batch_size: int, alpha: float) -> CompiledEpoch | None:
    """A :class:`CompiledEpoch` for this fit, or None where the Python loop must run (see the module docstring)."""
    X, T = gather.X, gather.T
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
    return CompiledEpoch(net, solver, out, X, T, batch_size, alpha)
