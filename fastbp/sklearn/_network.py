"""An estimator's ``coefs_`` and ``intercepts_`` as fastbp layers over one flat buffer."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..layers import Linear
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
