"""One MLP training step three ways: fastbp, the same algorithm in plain numpy, and the BLAS floor.

All three start from the same weights and data. The numpy baseline is written
the idiomatic way (expressions with temporaries), as a numpy user would.
"""

from __future__ import annotations

import numpy as np

from ..layers import Linear
from ..loop import backward_update, forward_loss
from ..losses import SoftmaxCrossEntropy
from ..model import Sequential
from ..optim import SGD, Adam


def make_problem(sizes=(784, 512, 256, 10), batch=256, dtype=np.float32, seed=0):
    """(model, x, y): a ReLU MLP with ``sizes`` and one batch of random data."""
    rng = np.random.default_rng(seed)
    layers = [
        Linear(a, b, activation="relu" if i < len(sizes) - 2 else None, dtype=dtype, seed=seed + i)
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
    ]
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], batch)
    return Sequential(*layers), x, y


def _optimizer(name, params, lr, backend="numba"):
    if name == "sgd":
        return SGD(params, lr=lr, backend=backend)
    if name == "adam":
        return Adam(params, lr=lr, backend=backend)
    raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {name!r}")


class FastbpStep:
    """``step()``: forward, fused softmax-cross-entropy, backward (no input gradient), fused update."""

    def __init__(self, model, x, y, optimizer="sgd", lr=1e-3):
        self.model, self.x, self.y = model, x, y
        self.loss = SoftmaxCrossEntropy()
        self.params = model.parameters()
        self.opt = _optimizer(optimizer, self.params, lr)

    def step(self):
        # The very step fastbp.fit runs, so the benchmark measures what training does.
        _, loss = forward_loss(self.model, self.loss, self.x, self.y)
        backward_update(self.model, self.loss, self.opt, self.params, None)
        return loss


class NumpyMLP:
    """The same step in plain numpy, written with ordinary expressions."""

    def __init__(self, model, x, y, optimizer="sgd", lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.Ws = [layer.W.data.copy() for layer in model.layers]
        self.bs = [layer.b.data.copy() for layer in model.layers]
        self.x, self.y, self.lr, self.opt = x, y, lr, optimizer
        self.betas, self.eps, self.t = betas, eps, 0
        self.m = [np.zeros_like(p) for p in self.Ws + self.bs]
        self.v = [np.zeros_like(p) for p in self.Ws + self.bs]

    def step(self):
        x, y = self.x, self.y
        n = x.shape[0]
        acts = [x]
        for i, (W, b) in enumerate(zip(self.Ws, self.bs)):
            z = acts[-1] @ W + b
            acts.append(np.maximum(z, 0) if i < len(self.Ws) - 1 else z)
        z = acts[-1]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        loss = -np.log(p[np.arange(n), y]).mean()
        d = p
        d[np.arange(n), y] -= 1
        d /= n
        grads_W, grads_b = [None] * len(self.Ws), [None] * len(self.Ws)
        for i in reversed(range(len(self.Ws))):
            grads_W[i] = acts[i].T @ d
            grads_b[i] = d.sum(axis=0)
            if i:
                d = (d @ self.Ws[i].T) * (acts[i] > 0)
        self._update(self.Ws + self.bs, grads_W + grads_b)
        return loss

    def _update(self, params, grads):
        if self.opt == "sgd":
            for p, g in zip(params, grads):
                p -= self.lr * g
            return
        self.t += 1
        b1, b2 = self.betas
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m[...] = b1 * m + (1 - b1) * g
            v[...] = b2 * v + (1 - b2) * g * g
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class BlasFloor:
    """Only the matmuls of a training step (forward, dW, dx except the input's), into preallocated buffers."""

    def __init__(self, model, x):
        self.x = x
        self.Ws = [layer.W.data for layer in model.layers]
        n = x.shape[0]
        self.h = [np.empty((n, W.shape[1]), x.dtype) for W in self.Ws]
        self.dx = [np.empty((n, W.shape[0]), x.dtype) for W in self.Ws]
        self.gW = [np.empty_like(W) for W in self.Ws]

    def step(self):
        h = self.x
        for W, out in zip(self.Ws, self.h):
            np.matmul(h, W, out=out)
            h = out
        d = self.h[-1]
        for i in reversed(range(len(self.Ws))):
            np.matmul(self.x.T if i == 0 else self.h[i - 1].T, d, out=self.gW[i])
            if i:
                np.matmul(d, self.Ws[i].T, out=self.dx[i])
                d = self.h[i - 1]  # same shape as dx[i]; the values do not matter for timing
