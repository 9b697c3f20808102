"""Optimizers: each ``step()`` is one fused in-place kernel per parameter.

Formulas are PyTorch's (``torch.optim.SGD`` with dampening 0, ``Adam``,
``AdamW``), so the same hyperparameters give the same trajectory.
"""

from __future__ import annotations

import math

import numpy as np

from . import _validate as v
from .backend import get
from .parameter import Parameter


class Optimizer:
    """Base class: holds parameters, their flat views and per-parameter state.

    Parameters
    ----------
    params : iterable of Parameter (for example ``model.parameters()``)
    lr : float > 0
    backend : "numba" or "numpy"
    """

    _state_names: tuple = ()

    def __init__(self, params, lr, backend="numba"):
        params = list(params)
        if not params:
            raise ValueError("params: expected at least one Parameter, got none")
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(f"params[{i}]: expected a fastbp Parameter, got {type(p).__name__}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("params: a Parameter appears twice")
        self.params = params
        self.lr = lr
        self._k = get(backend)
        self.backend = backend
        self.t = 0  # steps taken
        self.state = {name: [np.zeros_like(p.data) for p in params] for name in self._state_names}
        self._views()

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = v.check(value, "lr", v.POSITIVE)

    def _views(self):
        # Flat views, made once: kernels walk 1-D arrays and a step allocates nothing.
        self._src = [p.data for p in self.params]
        self._flat = [(p.data.reshape(-1), p.grad.reshape(-1)) for p in self.params]
        self._flat_state = {n: [a.reshape(-1) for a in arrs] for n, arrs in self.state.items()}

    def _check_views(self):
        for p, src in zip(self.params, self._src):
            if p.data is not src:  # someone rebound p.data: follow it rather than update a stale array
                self._views()
                return

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad.fill(0)

    def step(self) -> None:
        """Update every parameter from its ``.grad``, in place."""
        self._check_views()
        self.t += 1
        self._step()

    def _step(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        return {"lr": self.lr}

    def state_dict(self) -> dict:
        """Hyperparameters, step count and state arrays (copies)."""
        return {
            "type": type(self).__name__,
            "t": self.t,
            "hyper": self.hyperparameters(),
            "state": {n: [a.copy() for a in arrs] for n, arrs in self.state.items()},
        }

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("type") != type(self).__name__:
            raise ValueError(f"state: expected a {type(self).__name__} state, got {sd.get('type')!r}")
        state = sd["state"]
        if set(state) != set(self.state):
            raise ValueError(f"state: expected entries {sorted(self.state)}, got {sorted(state)}")
        for n, arrs in self.state.items():
            if len(state[n]) != len(arrs):
                raise ValueError(f"state[{n!r}]: expected {len(arrs)} arrays, got {len(state[n])}")
            for i, (a, b) in enumerate(zip(arrs, state[n])):
                b = np.asarray(b)
                if b.shape != a.shape or b.dtype != a.dtype:
                    raise ValueError(f"state[{n!r}][{i}]: expected {a.dtype} {a.shape}, got {b.dtype} {b.shape}")
        for n, arrs in self.state.items():
            for a, b in zip(arrs, state[n]):
                np.copyto(a, b)
        for k, val in sd.get("hyper", {}).items():
            setattr(self, k, val)
        self.t = int(sd["t"])

    def __repr__(self):
        hp = ", ".join(f"{k}={val!r}" for k, val in self.hyperparameters().items())
        return f"{type(self).__name__}({hp})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov and L2 weight decay.

    ``g += weight_decay * w``; with momentum ``buf = momentum * buf + g`` and
    the step uses ``buf`` (or ``g + momentum * buf`` with ``nesterov``);
    ``w -= lr * step``. Same as ``torch.optim.SGD`` with ``dampening=0``.
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, backend="numba"):
        self.momentum = v.check(momentum, "momentum", v.NON_NEGATIVE)
        self.weight_decay = v.check(weight_decay, "weight_decay", v.NON_NEGATIVE)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: requires momentum > 0")
        self._state_names = ("momentum_buffer",) if self.momentum else ()
        super().__init__(params, lr, backend)

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov, "weight_decay": self.weight_decay}

    def _step(self):
        bufs = self._flat_state.get("momentum_buffer")
        for i, (w, g) in enumerate(self._flat):
            t = w.dtype.type
            buf = bufs[i] if bufs else w[:0]
            self._k.sgd(w, g, buf, t(self.lr), t(self.momentum), t(self.weight_decay), self.nesterov)


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``): L2 ``weight_decay`` is added to the gradient.

    ``m = b1 m + (1-b1) g``; ``v = b2 v + (1-b2) g^2``;
    ``w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.
    """

    _state_names = ("exp_avg", "exp_avg_sq")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, backend="numba"):
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (v.fraction(b1, "betas[0]"), v.fraction(b2, "betas[1]"))
        self.eps = v.check(eps, "eps", v.NON_NEGATIVE)
        self.weight_decay = v.check(weight_decay, "weight_decay", v.NON_NEGATIVE)
        super().__init__(params, lr, backend)

    def hyperparameters(self):
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay}

    def _step(self):
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1**self.t)
        inv_sqrt_bc2 = 1 / math.sqrt(1 - b2**self.t)
        decay = 1 - self.lr * self.weight_decay if self._decoupled else 1.0
        l2 = 0.0 if self._decoupled else self.weight_decay
        ms, vs = self._flat_state["exp_avg"], self._flat_state["exp_avg_sq"]
        for i, (w, g) in enumerate(self._flat):
            t = w.dtype.type
            # Every constant is formed in float64 and rounded once to the array's dtype (PyTorch's rule).
            self._k.adam(
                w,
                g,
                ms[i],
                vs[i],
                t(step_size),
                t(inv_sqrt_bc2),
                t(self.eps),
                t(b1),
                t(b2),
                t(1 - b1),
                t(1 - b2),
                t(l2),
                t(decay),
            )


class AdamW(Adam):
    """AdamW (``torch.optim.AdamW``): decoupled decay ``w *= 1 - lr * weight_decay`` before the Adam step."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, backend="numba"):
        super().__init__(params, lr, betas, eps, weight_decay, backend)


def clip_grad_norm(params, max_norm, *, backend="numba") -> float:
    """Scale all gradients so that their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping (as ``torch.nn.utils.clip_grad_norm_``;
    the scale is ``max_norm / (norm + 1e-6)``). A non-finite norm is returned
    without scaling, for the caller to act on.
    """
    k = get(backend)
    max_norm = v.check(max_norm, "max_norm", v.NON_NEGATIVE)
    params = list(params)
    total = math.sqrt(sum(k.sum_squares(p.grad.reshape(-1)) for p in params))
    if math.isfinite(total) and total > max_norm:
        factor = max_norm / (total + 1e-6)
        for p in params:
            k.scale_(p.grad.reshape(-1), p.grad.dtype.type(factor))
    return total
