"""One MLP training step three ways: fastbp, the same algorithm in plain numpy, and the BLAS floor.

Two models: the ReLU MLP of :func:`make_problem` (``Linear(..., activation="relu")``
layers) and the regularized MLP of :func:`make_regularized_problem`, where each
hidden ``Linear`` is followed by ``BatchNorm1d``, ``ReLU`` and ``Dropout``, as
separate layers (the composition a PyTorch user writes). All sides start from the
same weights and data. The numpy baselines (:class:`NumpyMLP`,
:class:`NumpyRegularizedMLP`) are written the idiomatic way (expressions with
temporaries), as a numpy user would.
"""

from __future__ import annotations

import numpy as np

from ..layers import Dropout, Linear, ReLU
from ..layers.norm import BatchNorm1d
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


# The regularized MLP's settings: dropout probability, and the momentum of its SGD.
DROPOUT_P = 0.2
SGD_MOMENTUM = 0.9
REGULARIZED = "bn+drop"  # its name in the step table: "784-512-256-10 bn+drop"


def make_regularized_problem(sizes=(784, 512, 256, 10), batch=256, dtype=np.float32, seed=0, p=DROPOUT_P):
    """(model, x, y): each hidden ``Linear`` followed by ``BatchNorm1d``, ``ReLU``, ``Dropout(p)``; one batch.

    ``Sequential(Linear(784, 512), BatchNorm1d(512), ReLU(), Dropout(0.2), Linear(512, 256), ...,
    Linear(256, 10))`` for the default sizes. The ``Linear`` weights and the data are
    those of :func:`make_problem` with the same arguments.
    """
    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b, dtype=dtype, seed=seed + i))
        if i < len(sizes) - 2:
            layers += [BatchNorm1d(b, dtype=dtype), ReLU(), Dropout(p, seed=seed + i)]
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], batch)
    return Sequential(*layers), x, y


def _optimizer(name, params, lr, backend="numba", momentum=0.0):
    if name == "sgd":
        return SGD(params, lr=lr, momentum=momentum, backend=backend)
    if name == "adam":
        return Adam(params, lr=lr, backend=backend)
    raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {name!r}")


class FastbpStep:
    """``step()``: forward, fused softmax-cross-entropy, backward (no input gradient), fused update.

    ``momentum``: of SGD (ignored by Adam).
    """

    def __init__(self, model, x, y, optimizer="sgd", lr=1e-3, momentum=0.0):
        self.model, self.x, self.y = model, x, y
        self.loss = SoftmaxCrossEntropy()
        self.params = model.parameters()
        self.opt = _optimizer(optimizer, self.params, lr, momentum=momentum)

    def step(self):
        # The very step fastbp.fit runs, so the benchmark measures what training does.
        _, loss = forward_loss(self.model, self.loss, self.x, self.y)
        backward_update(self.model, self.loss, self.opt, self.params, None)
        return loss


class _NumpyUpdate:
    """The optimizers' math in plain numpy: SGD (with PyTorch's momentum, dampening 0) and Adam."""

    def _init_update(self, params, optimizer, lr, momentum, betas, eps):
        self.opt, self.lr, self.momentum = optimizer, lr, momentum
        self.betas, self.eps, self.t = betas, eps, 0
        self.m = [np.zeros_like(p) for p in params]  # SGD's momentum buffers, or Adam's first moments
        self.v = [np.zeros_like(p) for p in params] if optimizer == "adam" else []

    def _update(self, params, grads):
        if self.opt == "sgd":
            if not self.momentum:
                for p, g in zip(params, grads):
                    p -= self.lr * g
                return
            for p, g, buf in zip(params, grads, self.m):
                buf[...] = self.momentum * buf + g
                p -= self.lr * buf
            return
        self.t += 1
        b1, b2 = self.betas
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m[...] = b1 * m + (1 - b1) * g
            v[...] = b2 * v + (1 - b2) * g * g
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def _softmax_xent(z, y):
    """Mean cross-entropy of logits ``z`` against labels ``y``, and its gradient, the numpy way."""
    n = z.shape[0]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(n), y]).mean()
    d = p
    d[np.arange(n), y] -= 1
    d /= n
    return loss, d


class NumpyMLP(_NumpyUpdate):
    """The same step in plain numpy, written with ordinary expressions."""

    def __init__(self, model, x, y, optimizer="sgd", lr=1e-3, betas=(0.9, 0.999), eps=1e-8, momentum=0.0):
        self.Ws = [layer.W.data.copy() for layer in model.layers]
        self.bs = [layer.b.data.copy() for layer in model.layers]
        self.x, self.y = x, y
        self._init_update(self.Ws + self.bs, optimizer, lr, momentum, betas, eps)

    def step(self):
        x, y = self.x, self.y
        acts = [x]
        for i, (W, b) in enumerate(zip(self.Ws, self.bs)):
            z = acts[-1] @ W + b
            acts.append(np.maximum(z, 0) if i < len(self.Ws) - 1 else z)
        loss, d = _softmax_xent(acts[-1], y)
        grads_W, grads_b = [None] * len(self.Ws), [None] * len(self.Ws)
        for i in reversed(range(len(self.Ws))):
            grads_W[i] = acts[i].T @ d
            grads_b[i] = d.sum(axis=0)
            if i:
                d = (d @ self.Ws[i].T) * (acts[i] > 0)
        self._update(self.Ws + self.bs, grads_W + grads_b)
        return loss


class NumpyRegularizedMLP(_NumpyUpdate):
    """The step of :func:`make_regularized_problem`'s model in plain numpy, written with ordinary expressions.

    Linear, then batch norm (batch statistics, running statistics updated as
    PyTorch does), ReLU and inverted dropout with the mask
    ``Generator.random(shape, dtype) >= p`` drawn every step; the backward the
    textbook way. Its masks are not fastbp's (another generator), so with
    ``p > 0`` the two train differently but do the same work; with ``p = 0``
    they compute the same thing.
    """

    def __init__(self, model, x, y, optimizer="sgd", lr=1e-3, betas=(0.9, 0.999), eps=1e-8, momentum=0.0, seed=0):
        linears = [layer for layer in model.layers if isinstance(layer, Linear)]
        norms = [layer for layer in model.layers if isinstance(layer, BatchNorm1d)]
        drops = [layer for layer in model.layers if isinstance(layer, Dropout)]
        self.Ws = [layer.W.data.copy() for layer in linears]
        self.bs = [layer.b.data.copy() for layer in linears]
        self.gammas = [layer.weight.data.copy() for layer in norms]
        self.betas_bn = [layer.bias.data.copy() for layer in norms]
        self.running_mean = [layer.running_mean.copy() for layer in norms]
        self.running_var = [layer.running_var.copy() for layer in norms]
        self.bn_eps, self.bn_momentum = norms[0].eps, norms[0].momentum
        self.p = drops[0].p
        self.rng = np.random.default_rng(seed)
        self.x, self.y = x, y
        # fastbp's parameter order: W, b of a Linear, then weight, bias of its BatchNorm1d.
        self.params = []
        for i in range(len(self.Ws)):
            self.params += [self.Ws[i], self.bs[i]] + ([self.gammas[i], self.betas_bn[i]] if i < len(norms) else [])
        self._init_update(self.params, optimizer, lr, momentum, betas, eps)

    def step(self):
        x, y, p = self.x, self.y, self.p
        n = x.shape[0]
        last = len(self.Ws) - 1
        h = x
        saved = []
        for i in range(last):
            z = h @ self.Ws[i] + self.bs[i]
            mean = z.mean(axis=0)
            var = z.var(axis=0)
            inv_std = 1 / np.sqrt(var + self.bn_eps)
            x_hat = (z - mean) * inv_std
            a = self.gammas[i] * x_hat + self.betas_bn[i]
            mom = self.bn_momentum
            self.running_mean[i][...] = (1 - mom) * self.running_mean[i] + mom * mean
            self.running_var[i][...] = (1 - mom) * self.running_var[i] + mom * var * (n / (n - 1))
            r = np.maximum(a, 0)
            keep = self.rng.random(r.shape, dtype=r.dtype) >= p
            saved.append((h, x_hat, inv_std, a, keep))
            h = r * keep / (1 - p)
        z = h @ self.Ws[last] + self.bs[last]
        loss, d = _softmax_xent(z, y)
        grads = [h.T @ d, d.sum(axis=0)]  # the last Linear's; earlier layers' go in front
        for i in reversed(range(last)):
            h_in, x_hat, inv_std, a, keep = saved[i]
            d = d @ self.Ws[i + 1].T
            d = d * keep / (1 - p)
            d = d * (a > 0)
            dgamma = (d * x_hat).sum(axis=0)
            dbeta = d.sum(axis=0)
            dx_hat = d * self.gammas[i]
            d = inv_std * (dx_hat - dx_hat.mean(axis=0) - x_hat * (dx_hat * x_hat).mean(axis=0))
            grads[:0] = [h_in.T @ d, d.sum(axis=0), dgamma, dbeta]
        self._update(self.params, grads)
        return loss


class BlasFloor:
    """Only the matmuls of a training step (forward, dW, dx except the input's), into preallocated buffers."""

    def __init__(self, model, x):
        self.x = x
        self.Ws = [layer.W.data for layer in model.layers if isinstance(layer, Linear)]
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
