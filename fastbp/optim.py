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


def _group_property(name: str, doc: str):
    """An attribute that reads the first group's value and sets every group's (checked)."""

    def get(self):
        return self.param_groups[0][name]

    def set(self, value):
        value = self._check_hyper({name: value}, "")[name]
        for g in self.param_groups:
            g[name] = value

    return property(get, set, doc=doc)


class Optimizer:
    """Base class: holds parameter groups, flat views of the parameters and per-parameter state.

    Parameters
    ----------
    params : iterable of Parameter (for example ``model.parameters()``), or of
        dicts ``{"params": [...], "lr": ..., "weight_decay": ...}`` (parameter
        groups, as in PyTorch): a group's entries override the optimizer's
        keyword arguments for its parameters
    lr : float > 0
    backend : "numba" or "numpy"

    Attributes
    ----------
    param_groups : list of dicts, each with ``"params"`` and every hyperparameter
    params : all parameters, group by group
    lr (and the other hyperparameters) : the first group's value; setting it sets every group's
    """

    _state_names: tuple = ()

    def __init__(self, params, defaults: dict, backend="numba"):
        defaults = self._check_hyper(defaults, "")
        self.param_groups = [self._group(i, g, defaults) for i, g in enumerate(_as_groups(params))]
        self.params = [p for g in self.param_groups for p in g["params"]]
        if not self.params:
            raise ValueError("params: expected at least one Parameter, got none")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("params: a Parameter appears twice")
        self._k = get(backend)
        self.backend = backend
        self.t = 0  # steps taken
        self.state = {name: [np.zeros_like(p.data) for p in self.params] for name in self._state_names}
        self._views()

    lr = _group_property("lr", "Learning rate (of the first group; setting it sets every group's).")

    # -- hyperparameters ---------------------------------------------------
    _HYPER: dict = {"lr": v.POSITIVE}

    def _check_hyper(self, values: dict, where: str) -> dict:
        """``values`` checked, each error naming ``where`` + the key (``"lr"``, ``"params[1]['lr']"``)."""
        out = {}
        for k, val in values.items():
            name = f"{where}[{k!r}]" if where else k
            out[k] = self._check_one(k, val, name)
        return out

    def _check_one(self, key, value, name):
        return v.check(value, name, self._HYPER[key])

    def _group(self, i, group, defaults):
        group = dict(group)
        where = "" if group.pop(_IMPLICIT, False) else f"params[{i}]"
        unknown = sorted(set(group) - {"params"} - set(defaults))
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {unknown} (known: {sorted(defaults)})")
        full = {**defaults, **self._check_hyper({k: val for k, val in group.items() if k != "params"}, where)}
        self._check_group(full, where)
        ps = list(group["params"])
        for j, p in enumerate(ps):
            if not isinstance(p, Parameter):
                at = f"{where}['params'][{j}]" if where else f"params[{j}]"
                raise TypeError(f"{at}: expected a fastbp Parameter, got {type(p).__name__}")
        return {"params": ps, **full}

    def _check_group(self, group: dict, where: str) -> None:
        """Checks across one group's values (e.g. Nesterov needs momentum)."""

    def hyperparameters(self) -> dict:
        """The first group's hyperparameters (every group's: :attr:`param_groups`)."""
        return {k: val for k, val in self.param_groups[0].items() if k != "params"}

    # -- flat views ----------------------------------------------------------
    def _views(self):
        # Flat views, made once: kernels walk 1-D arrays and a step allocates nothing.
        self._src = [(p.data, p.grad) for p in self.params]
        self._flat = [(p.data.reshape(-1), p.grad.reshape(-1)) for p in self.params]
        self._flat_state = {n: [a.reshape(-1) for a in arrs] for n, arrs in self.state.items()}

    def _check_views(self):
        for p, (data, grad) in zip(self.params, self._src):
            # Someone rebound p.data or p.grad (Parameter checked the new array): follow it
            # rather than update, or read, a stale one.
            if p.data is not data or p.grad is not grad:
                self._views()
                return

    def _indexed_groups(self):
        """``(group, index of its first parameter in self.params)`` for every group."""
        start = 0
        for g in self.param_groups:
            yield g, start
            start += len(g["params"])

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad.fill(0)

    def step(self) -> None:
        """Update every parameter from its ``.grad``, in place."""
        self._check_views()
        self.t += 1
        for g, start in self._indexed_groups():
            self._step_group(g, range(start, start + len(g["params"])))

    def _step_group(self, group: dict, indices: range):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- state ---------------------------------------------------------------
    def state_dict(self) -> dict:
        """Hyperparameters (per group), step count and state arrays (copies)."""
        groups = [
            {"n_params": len(g["params"]), **{k: val for k, val in g.items() if k != "params"}}
            for g in self.param_groups
        ]
        return {
            "type": type(self).__name__,
            "t": self.t,
            "hyper": self.hyperparameters(),
            "groups": groups,
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
        # States written before parameter groups hold one "hyper" for all.
        groups = sd.get("groups") or [{"n_params": len(g["params"]), **sd.get("hyper", {})} for g in self.param_groups]
        sizes = [len(g["params"]) for g in self.param_groups]
        if [g.get("n_params") for g in groups] != sizes:
            raise ValueError(
                f"state: expected {len(sizes)} groups of {sizes} parameters, got {[g.get('n_params') for g in groups]}"
            )
        checked = [self._check_hyper({k: val for k, val in g.items() if k != "n_params"}, "state") for g in groups]
        for n, arrs in self.state.items():
            for a, b in zip(arrs, state[n]):
                np.copyto(a, b)
        for g, hyper in zip(self.param_groups, checked):
            g.update(hyper)
        self.t = int(sd["t"])

    def __repr__(self):
        hp = ", ".join(f"{k}={val!r}" for k, val in self.hyperparameters().items())
        more = f", {len(self.param_groups)} groups" if len(self.param_groups) > 1 else ""
        return f"{type(self).__name__}({hp}{more})"


def _as_groups(params) -> list[dict]:
    """``params`` as a list of group dicts (a plain iterable of Parameters is one group)."""
    if isinstance(params, Parameter):
        raise TypeError("params: expected an iterable of Parameters or of dicts, got one Parameter")
    try:
        items = list(params)
    except TypeError:
        raise TypeError(
            f"params: expected an iterable of Parameters or of dicts, got {type(params).__name__}"
        ) from None
    if items and all(isinstance(g, dict) for g in items):
        for i, g in enumerate(items):
            if "params" not in g:
                raise ValueError(f"params[{i}]: a parameter group needs a 'params' entry")
            if isinstance(g["params"], Parameter):
                g = {**g, "params": [g["params"]]}
                items[i] = g
        return items
    if any(isinstance(g, dict) for g in items):
        raise TypeError("params: expected all Parameters or all dicts (parameter groups), got a mix")
    return [{"params": items, _IMPLICIT: True}]


_IMPLICIT = "_one_group"  # marks the group made from a plain list: its errors name no group


def decay_groups(params, weight_decay: float) -> list[dict]:
    """Two parameter groups: matrices with ``weight_decay``, the rest (biases, norm scales and shifts) without.

    The usual rule for AdamW (and PyTorch's recipes): only weights that
    multiply inputs are decayed. ``AdamW(fastbp.optim.decay_groups(model.parameters(), 0.01), lr=1e-3)``.
    """
    params = list(params)
    return [
        {"params": [p for p in params if p.data.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.data.ndim < 2], "weight_decay": 0.0},
    ]


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov and L2 weight decay.

    ``g += weight_decay * w``; with momentum ``buf = momentum * buf + g`` and
    the step uses ``buf`` (or ``g + momentum * buf`` with ``nesterov``);
    ``w -= lr * step``. Same as ``torch.optim.SGD`` with ``dampening=0``.
    """

    _HYPER = {"lr": v.POSITIVE, "momentum": v.NON_NEGATIVE, "weight_decay": v.NON_NEGATIVE, "nesterov": None}
    momentum = _group_property("momentum", "Momentum factor (first group's; setting sets all).")
    nesterov = _group_property("nesterov", "Nesterov momentum (first group's; setting sets all).")
    weight_decay = _group_property("weight_decay", "L2 penalty (first group's; setting sets all).")

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, backend="numba"):
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay}
        groups = _as_groups(params)
        # One momentum buffer per parameter when any group uses momentum.
        any_momentum = bool(momentum) or any(g.get("momentum") for g in groups)
        self._state_names = ("momentum_buffer",) if any_momentum else ()
        super().__init__(groups, defaults, backend)

    def _check_one(self, key, value, name):
        if key == "nesterov":
            return bool(value)
        return super()._check_one(key, value, name)

    def _check_group(self, group, where):
        if group["nesterov"] and group["momentum"] == 0:
            raise ValueError(f"{where + ': ' if where else ''}nesterov: requires momentum > 0")

    def _step_group(self, group, indices):
        lr, momentum, wd, nesterov = group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]
        if momentum and "momentum_buffer" not in self.state:
            # Momentum set after construction (opt.momentum = 0.9): the buffers start now, at
            # zeros, as PyTorch's do at their first step; the kernel must never get an empty one.
            self._state_names = ("momentum_buffer",)
            self.state["momentum_buffer"] = [np.zeros_like(p.data) for p in self.params]
            self._flat_state["momentum_buffer"] = [a.reshape(-1) for a in self.state["momentum_buffer"]]
        bufs = self._flat_state.get("momentum_buffer") if momentum else None
        consts: dict = {}  # the constants in each dtype, rounded once per step
        sgd = self._k.sgd
        for i in indices:
            w, g = self._flat[i]
            c = consts.get(w.dtype)
            if c is None:
                t = w.dtype.type
                c = consts[w.dtype] = (t(lr), t(momentum), t(wd), nesterov)
            sgd(w, g, bufs[i] if bufs else w[:0], *c)


def _betas(value, name):
    try:
        b1, b2 = value
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a pair (beta1, beta2), got {value!r}") from None
    return (v.fraction(b1, f"{name}[0]"), v.fraction(b2, f"{name}[1]"))


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``): L2 ``weight_decay`` is added to the gradient.

    ``m = b1 m + (1-b1) g``; ``v = b2 v + (1-b2) g^2``;
    ``w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.
    """

    _state_names = ("exp_avg", "exp_avg_sq")
    _decoupled = False
    _HYPER = {"lr": v.POSITIVE, "betas": None, "eps": v.NON_NEGATIVE, "weight_decay": v.NON_NEGATIVE}
    betas = _group_property("betas", "(beta1, beta2) (first group's; setting sets all).")
    eps = _group_property("eps", "Denominator term (first group's; setting sets all).")
    weight_decay = _group_property("weight_decay", "Weight decay (first group's; setting sets all).")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, backend="numba"):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}, backend)

    def _check_one(self, key, value, name):
        if key == "betas":
            return _betas(value, name)
        return super()._check_one(key, value, name)

    def _step_group(self, group, indices):
        b1, b2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        step_size = lr / (1 - b1**self.t)
        inv_sqrt_bc2 = 1 / math.sqrt(1 - b2**self.t)
        decay = 1 - lr * wd if self._decoupled else 1.0
        l2 = 0.0 if self._decoupled else wd
        ms, vs = self._flat_state["exp_avg"], self._flat_state["exp_avg_sq"]
        # Every constant is formed in float64 and rounded once to the array's dtype (PyTorch's rule),
        # once per dtype and step rather than once per parameter.
        eps = group["eps"]
        consts: dict = {}
        adam = self._k.adam
        for i in indices:
            w, g = self._flat[i]
            c = consts.get(w.dtype)
            if c is None:
                t = w.dtype.type
                c = (t(step_size), t(inv_sqrt_bc2), t(eps), t(b1), t(b2), t(1 - b1), t(1 - b2), t(l2), t(decay))
                consts[w.dtype] = c
            adam(w, g, ms[i], vs[i], *c)


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
