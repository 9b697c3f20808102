"""An estimator's ``coefs_`` and ``intercepts_`` as fastbp layers over one flat buffer."""

from __future__ import annotations

import numpy as np

from ..layers import Linear
from ..model import Sequential

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
        n_weights = sum(sizes[:len(coefs)])
        views, grads, start = [], [], 0
        for a, size in zip([*coefs, *intercepts], sizes):
            view = self.data[start:start + size].reshape(a.shape)
            np.copyto(view, a, casting="same_kind")
            views.append(view)
            grads.append(self.grad[start:start + size].reshape(a.shape))
            start += size
        n = len(coefs)
        self.coefs, self.intercepts = views[:n], views[n:]
        last = n - 1
        self.layers = []
        for i in range(n):
            layer = Linear.from_weights(self.coefs[i], self.intercepts[i],
                                        activation=HIDDEN[activation] if i < last else None)
            layer.W.grad, layer.b.grad = grads[i], grads[n + i]  # gradients land in the flat buffer
            self.layers.append(layer)
        self.model = Sequential(*self.layers)  # for its thread-safe, checked predict
        self.activation = activation
        # (weights, grads, gets the L2 term) per segment of the flat buffers
        self.segments = [(self.data[:n_weights], self.grad[:n_weights], True),
                         (self.data[n_weights:], self.grad[n_weights:], False)]
        self.weights = self.data[:n_weights]

    def wraps(self, coefs, intercepts, activation: str) -> bool:
        """Whether ``coefs``/``intercepts`` are still this network's views (the user may have replaced them)."""
        return (activation == self.activation and len(coefs) == len(self.coefs)
                and len(intercepts) == len(self.intercepts)
                and all(a is b for a, b in zip([*coefs, *intercepts], [*self.coefs, *self.intercepts])))

    def forward(self, x):
        """Scores of the last layer for a checked batch ``x`` (a reused buffer)."""
        for layer in self.layers:
            x = layer._forward(x)
        return x

    def backward(self, delta):
        """Fill the flat gradient from ``delta`` = dloss/dscores (the input's gradient is skipped)."""
        for i in range(len(self.layers) - 1, -1, -1):
            delta = self.layers[i]._backward(delta, i > 0)
