"""An estimator's ``coefs_`` and ``intercepts_`` as fastbp layers over one flat buffer."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..layers import BatchNorm1d, Dropout, Identity, Linear, ReLU, Sigmoid, Tanh
from ..model import Sequential
from ..threads import use_parallel

# scikit-learn's activation names -> fastbp's
HIDDEN = {"identity": None, "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}


class Network:
    """The layers of an MLP whose parameters live in one flat array, and their gradients in another.

    The flat layout is ``[W_0, ..., W_L, b_0, ..., b_L]``, so the optimizer
    update is two fused kernel calls per step (weights with the L2 term, then
    intercepts without) and the L2 norm one more, whatever the depth: on small
    networks the per-call overhead is what separates fastbp from scikit-learn.

    ``coefs`` and ``intercepts`` are copied in; :attr:`coefs` and
    :attr:`intercepts` are the views the estimator publishes as ``coefs_`` and
    ``intercepts_``, which training updates in place. The last layer has no
    activation: the output activation belongs to the loss.
    """

    def __init__(self, coefs, intercepts, activation: str):
        dtype = coefs[0].dtype
        sizes = [c.size for c in coefs] + [b.size for b in intercepts]
        self.data = np.empty(sum(sizes), dtype)
        self.grad = np.zeros_like(self.data)
        n_weights = sum(sizes[: len(coefs)])
        views, grads, start = [], [], 0
        for a, size in zip([*coefs, *intercepts], sizes):
            view = self.data[start : start + size].reshape(a.shape)
            np.copyto(view, a, casting="same_kind")
            views.append(view)
            grads.append(self.grad[start : start + size].reshape(a.shape))
            start += size
        n = len(coefs)
        self.coefs, self.intercepts = views[:n], views[n:]
        last = n - 1
        self.layers = []
        for i in range(n):
            layer = Linear.from_weights(
                self.coefs[i], self.intercepts[i], activation=HIDDEN[activation] if i < last else None
            )
            layer.W.grad, layer.b.grad = grads[i], grads[n + i]  # gradients land in the flat buffer
            self.layers.append(layer)
        self.model = Sequential(*self.layers)  # for its thread-safe, checked predict
        self.activation = activation
        # (weights, grads, gets the L2 term) per segment of the flat buffers
        self.segments = [
            (self.data[:n_weights], self.grad[:n_weights], True),
            (self.data[n_weights:], self.grad[n_weights:], False),
        ]
        self.weights = self.data[:n_weights]
        self._plans: dict[int, tuple] = {}

    def wraps(self, coefs, intercepts, activation: str) -> bool:
        """Whether ``coefs``/``intercepts`` are still this network's views (the user may have replaced them)."""
        return (
            activation == self.activation
            and len(coefs) == len(self.coefs)
            and len(intercepts) == len(self.intercepts)
            and all(a is b for a, b in zip([*coefs, *intercepts], [*self.coefs, *self.intercepts]))
        )

    # -- the training step --------------------------------------------------------
    # A step's arithmetic is Linear's (matmul, fused bias+activation; fused
    # activation backward, matmuls, bias reduction), but run from a plan made
    # once per batch size: buffers allocated, each kernel's serial or parallel
    # version chosen. Right after a large matmul has flushed the caches, every
    # Python-level lookup costs several times its warm price (measured: a
    # 20-35 us loss call took 80-230 us there: benchmarks/cold_cache_overhead.py),
    # so the step keeps them few.

    def reset(self):
        """Forget the plans (at the start of a fit: the thread settings may have changed)."""
        self._plans: dict[int, tuple] = {}

    def _plan(self, m):
        plan = self._plans.get(m)
        if plan is None:

            def pick(kern, work):
                return kern.parallel if use_parallel(work) else kern.serial

            plan = []
            for layer in self.layers:
                out = (m, layer.out_features)
                plan.append(
                    (
                        layer.W.data,
                        layer.b.data,
                        layer.W.grad,
                        layer.b.grad,
                        layer.act_code,
                        layer.scratch,
                        np.empty(out, layer.dtype),
                        np.empty(out, layer.dtype),
                        np.empty((m, layer.in_features), layer.dtype),
                        pick(kernels.bias_act, out[0] * out[1]),
                        pick(kernels.act_backward, out[0] * out[1]),
                        pick(kernels.bias_grad, out[0] * out[1]),
                    )
                )
            plan = self._plans[m] = (plan, [])
        return plan

    def forward(self, x):
        """Scores of the last layer for a checked batch ``x`` (a reused buffer)."""
        plan, inputs = self._plan(x.shape[0])
        inputs.clear()
        for W, b, _, _, act, _, y, _, _, bias_act, _, _ in plan:
            inputs.append(x)
            np.matmul(x, W, out=y)
            bias_act(y, b, act)
            x = y
        return x

    def backward(self, delta):
        """Fill the flat gradient from ``delta`` = dloss/dscores (the input's gradient is skipped)."""
        plan, inputs = self._plan(delta.shape[0])
        for i in range(len(plan) - 1, -1, -1):
            W, _, gW, gb, act, scratch, y, dz, dx, _, act_backward, bias_grad = plan[i]
            if act:
                act_backward(delta, y, act, dz)
                delta = dz
            np.matmul(inputs[i].T, delta, out=gW)
            bias_grad(delta, gb, scratch)
            if i:
                np.matmul(delta, W.T, out=dx)
                delta = dx


# -- dropout and batch normalization ---------------------------------------------------
# The fastbp-only parameters build the network from fastbp layers instead of the planned
# kernels above: per hidden layer Linear [-> BatchNorm1d -> activation] [-> Dropout], the
# output Linear last. The flat buffers keep Network's layout and append the batch-norm
# weights and biases after the intercepts, in the segment without the L2 term, so the
# solvers are the same.

_ACTIVATION_LAYERS = {None: Identity, "sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU}
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_GOLDEN = 0x9E3779B97F4A7C15  # spreads the per-layer dropout seeds over 64 bits


def new_batch_norm_state(hidden: list[int], dtype) -> list[dict]:
    """PyTorch's initial batch-norm state, one dict per hidden layer (see :data:`BN_KEYS`)."""
    return [
        {
            "weight": np.ones(m, dtype),
            "bias": np.zeros(m, dtype),
            "running_mean": np.zeros(m, dtype),
            "running_var": np.ones(m, dtype),
            "num_batches_tracked": np.zeros(1, np.int64),
        }
        for m in hidden
    ]


def _bind_batch_norm(bn: BatchNorm1d, weight, bias, dweight, dbias, state) -> None:
    """Point ``bn``'s parameters, gradients and running statistics at the given arrays (no copies).

    BatchNorm1d has no ``from_weights``; its kernels read and write the arrays of its
    ``weight`` and ``bias`` parameters as they are at each call, so binding those is enough.
    """
    for param, data, grad in ((bn.weight, weight, dweight), (bn.bias, bias, dbias)):
        assert param is not None  # affine
        param.data, param.grad = data, grad
    bn.running_mean, bn.running_var = state["running_mean"], state["running_var"]
    bn.num_batches_tracked = state["num_batches_tracked"]


class RegularizedNetwork:
    """:class:`Network`'s interface (flat ``data``/``grad``, ``segments``, ``weights``,
    ``forward``/``backward``, ``model`` for prediction) with dropout after the hidden
    activations and/or batch normalization before them, built from fastbp layers.

    ``dropout``: one rate per hidden layer (0 = none). ``batch_norm``: None, or one
    dict per hidden layer (:func:`new_batch_norm_state`), copied in; :attr:`batch_norm`
    is the same structure over this network's arrays, which training updates in place.
    ``seed`` and ``step``: the dropout masks' generator state (layer ``i`` draws from
    ``seed + i * golden`` at the shared step count).
    """

    def __init__(self, coefs, intercepts, activation: str, dropout, batch_norm, seed: int, step: int):
        dtype = coefs[0].dtype
        n = len(coefs)
        hidden = [c.shape[1] for c in coefs[:-1]]
        arrays = [*coefs, *intercepts]
        if batch_norm is not None:
            arrays += [a for s in batch_norm for a in (s["weight"], s["bias"])]
        sizes = [a.size for a in arrays]
        self.data = np.empty(sum(sizes), dtype)
        self.grad = np.zeros_like(self.data)
        views, grads, start = [], [], 0
        for a, size in zip(arrays, sizes):
            view = self.data[start : start + size].reshape(a.shape)
            np.copyto(view, a, casting="same_kind")
            views.append(view)
            grads.append(self.grad[start : start + size].reshape(a.shape))
            start += size
        n_weights = sum(sizes[:n])
        self.coefs, self.intercepts = views[:n], views[n : 2 * n]
        self.batch_norm: list[dict] | None = None
        if batch_norm is not None:
            self.batch_norm = []
            for i, s in enumerate(batch_norm):
                state = {"weight": views[2 * n + 2 * i], "bias": views[2 * n + 2 * i + 1]}
                for key in ("running_mean", "running_var"):
                    state[key] = np.array(s[key], dtype, copy=True)
                state["num_batches_tracked"] = np.array(s["num_batches_tracked"], np.int64, copy=True).reshape(1)
                self.batch_norm.append(state)
        self.dropout = tuple(float(p) for p in dropout)
        act = HIDDEN[activation]
        layers: list = []
        self.dropouts: list[Dropout] = []
        for i in range(n):
            hidden_layer = i < n - 1
            fused = act if hidden_layer and batch_norm is None else None
            linear = Linear.from_weights(self.coefs[i], self.intercepts[i], activation=fused)
            linear.W.grad, linear.b.grad = grads[i], grads[n + i]  # gradients land in the flat buffer
            layers.append(linear)
            if not hidden_layer:
                break
            if self.batch_norm is not None:
                bn = BatchNorm1d(hidden[i], dtype=dtype)  # PyTorch's defaults: eps 1e-5, momentum 0.1
                j = 2 * n + 2 * i
                _bind_batch_norm(bn, views[j], views[j + 1], grads[j], grads[j + 1], self.batch_norm[i])
                layers += [bn, _ACTIVATION_LAYERS[act]()]
            if self.dropout[i] > 0:
                drop = Dropout(self.dropout[i], seed=(seed + i * _GOLDEN) % 2**64)
                drop.buffers()["step"][0] = step
                self.dropouts.append(drop)
                layers.append(drop)
        self.model = Sequential(*layers)
        self.activation = activation
        self.segments = [
            (self.data[:n_weights], self.grad[:n_weights], True),
            (self.data[n_weights:], self.grad[n_weights:], False),
        ]
        self.weights = self.data[:n_weights]

    @property
    def step(self) -> int:
        """Training batches the dropout masks have been drawn for."""
        return int(self.dropouts[0].buffers()["step"][0]) if self.dropouts else 0

    def wraps(self, coefs, intercepts, activation: str, batch_norm=None, dropout=None) -> bool:
        """As :meth:`Network.wraps`, also for the batch-norm arrays (and the dropout rates, unless None)."""
        if dropout is not None and tuple(dropout) != self.dropout:
            return False
        if (batch_norm is None) != (self.batch_norm is None):
            return False
        mine, theirs = [*self.coefs, *self.intercepts], [*coefs, *intercepts]
        if batch_norm is not None and self.batch_norm is not None:
            if len(batch_norm) != len(self.batch_norm):
                return False
            mine += [s[k] for s in self.batch_norm for k in BN_KEYS]
            theirs += [s.get(k) for s in batch_norm for k in BN_KEYS]
        return activation == self.activation and len(mine) == len(theirs) and all(a is b for a, b in zip(mine, theirs))

    def reset(self):
        pass

    def train(self, mode: bool = True):
        for layer in self.model.layers:
            layer.train(mode)

    def forward(self, x):
        return self.model.forward(x)

    def backward(self, delta):
        self.model.backward(delta)
