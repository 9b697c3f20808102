"""Learning-rate schedules. Each sets the learning rate of every parameter group when
its ``step()`` is called (once per epoch by :func:`fastbp.fit`), from that group's
rate when the schedule was made, as PyTorch's schedulers do; ``step()`` returns the
first group's rate.

``state_dict()`` / ``load_state_dict()`` save and restore where a schedule is (for
checkpoints, docs/checkpoints.md); the rates themselves live in the optimizer's groups
and are restored with the optimizer's state."""

from __future__ import annotations

import math
import numbers

from . import _validate as v
from ._validate import Interval, check, positive_int
from .optim import Optimizer


class _Schedule:
    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected a fastbp optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.epoch = 0

    @property
    def base_lr(self) -> float:
        """The first group's rate when the schedule was made."""
        return self.base_lrs[0]

    def _apply(self, epoch: int) -> float:
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = self.lr_at(epoch, base)
        return self.optimizer.lr

    def step(self, metric=None) -> float:
        self.epoch += 1
        return self._apply(self.epoch)

    def lr_at(self, epoch: int, base: float) -> float:  # pragma: no cover - abstract
        """The rate at ``epoch`` of a group that started at ``base``."""
        raise NotImplementedError

    # -- state -------------------------------------------------------------------
    def config(self) -> dict:
        """The constructor's settings (besides the optimizer), as JSON values."""
        return {}

    def _progress(self) -> dict:
        """What changes as the schedule steps, besides ``epoch`` (JSON values)."""
        return {}

    def _load_progress(self, state: dict) -> None:
        """Put back what :meth:`_progress` returned (already checked for its keys)."""

    def state_dict(self) -> dict:
        """Where the schedule is, as a JSON-serialisable dict.

        Returns
        -------
        dict with ``"type"`` (the class name), ``"config"`` (its settings), ``"epoch"`` (steps
        taken), ``"base_lrs"`` (each group's starting rate) and the schedule's own progress
        (``"best"`` and ``"bad"`` for :class:`ReduceLROnPlateau`).
        """
        return {
            "type": type(self).__name__,
            "config": self.config(),
            "epoch": self.epoch,
            "base_lrs": [float(b) for b in self.base_lrs],
            **self._progress(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (from :meth:`state_dict` of a schedule like this one).

        The optimizer's rates are not touched: they are part of the optimizer's state.

        Raises
        ------
        ValueError
            When ``state`` is of another schedule type or settings, or for another number of
            parameter groups, naming what differs.
        """
        if not isinstance(state, dict):
            raise TypeError(f"state: expected a dict from state_dict(), got {type(state).__name__}")
        name = type(self).__name__
        if state.get("type") != name:
            raise ValueError(f"state: expected the state of a {name}, got one of {state.get('type')!r}")
        expected = {"type", "config", "epoch", "base_lrs", *self._progress()}
        if set(state) != expected:
            raise ValueError(f"state: expected the keys {sorted(expected)}, got {sorted(state)}")
        if not isinstance(state["config"], dict):
            raise ValueError(f"state['config']: expected a dict, got {type(state['config']).__name__}")
        for key, value in self.config().items():
            if state["config"].get(key) != value:
                raise ValueError(
                    f"state: saved from a {name} with {key}={state['config'].get(key)!r}, this one has {key}={value!r}"
                )
        base_lrs = list(state["base_lrs"])
        if len(base_lrs) != len(self.base_lrs):
            raise ValueError(
                f"state: saved for {len(base_lrs)} parameter groups, this optimizer has {len(self.base_lrs)}"
            )
        self.epoch = check(state["epoch"], "state['epoch']", Interval(numbers.Integral, 0))
        self.base_lrs = [check(b, "state['base_lrs']", v.POSITIVE) for b in base_lrs]
        self._load_progress(state)


class ConstantLR(_Schedule):
    """The learning rate never changes."""

    def lr_at(self, epoch, base):
        return base


class StepLR(_Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size = positive_int(step_size, "step_size")
        self.gamma = check(gamma, "gamma", Interval(numbers.Real, 0, 1, "right"))

    def lr_at(self, epoch, base):
        return base * self.gamma ** (epoch // self.step_size)

    def config(self):
        return {"step_size": int(self.step_size), "gamma": float(self.gamma)}


class CosineLR(_Schedule):
    """Linear warm-up for ``warmup`` epochs, then cosine decay to ``min_lr`` at ``total``."""

    def __init__(self, optimizer, total, warmup=0, min_lr=0.0):
        super().__init__(optimizer)
        self.total = positive_int(total, "total")
        self.warmup = check(warmup, "warmup", Interval(numbers.Integral, 0, self.total, "left"))
        self.min_lr = check(min_lr, "min_lr", Interval(numbers.Real, 0, min(self.base_lrs), "left"))
        if self.warmup:
            self._apply(0)

    def lr_at(self, epoch, base):
        if epoch < self.warmup:
            return base * (epoch + 1) / (self.warmup + 1)
        frac = min(1.0, (epoch - self.warmup) / max(1, self.total - self.warmup))
        return max(self.min_lr + 0.5 * (base - self.min_lr) * (1 + math.cos(math.pi * frac)), 1e-12)

    def config(self):
        return {"total": int(self.total), "warmup": int(self.warmup), "min_lr": float(self.min_lr)}


class ReduceLROnPlateau(_Schedule):
    """Multiply the rate by ``factor`` when the metric passed to ``step`` stops improving.

    "Improving" means falling below ``best * (1 - threshold)``; after
    ``patience`` epochs without that, the rate drops (not below ``min_lr``).
    """

    def __init__(self, optimizer, factor=0.1, patience=5, threshold=1e-4, min_lr=0.0):
        super().__init__(optimizer)
        self.factor = check(factor, "factor", Interval(numbers.Real, 0, 1, "neither"))
        self.patience = check(patience, "patience", Interval(numbers.Integral, 0))
        self.threshold = check(threshold, "threshold", v.NON_NEGATIVE)
        self.min_lr = check(min_lr, "min_lr", v.NON_NEGATIVE)
        self.best = math.inf
        self.bad = 0

    def config(self):
        return {
            "factor": float(self.factor),
            "patience": int(self.patience),
            "threshold": float(self.threshold),
            "min_lr": float(self.min_lr),
        }

    def _progress(self):
        return {"best": float(self.best), "bad": int(self.bad)}

    def _load_progress(self, state):
        best = state["best"]
        if not isinstance(best, numbers.Real) or math.isnan(best):
            raise ValueError(f"state['best']: expected a number (inf before any step), got {best!r}")
        self.best = float(best)
        self.bad = check(state["bad"], "state['bad']", Interval(numbers.Integral, 0))

    def step(self, metric=None):
        if metric is None:
            raise ValueError("metric: ReduceLROnPlateau.step needs the monitored value (e.g. validation loss)")
        self.epoch += 1
        if metric < self.best * (1 - self.threshold):
            self.best, self.bad = metric, 0
        else:
            self.bad += 1
            if self.bad > self.patience:
                for g in self.optimizer.param_groups:
                    g["lr"] = max(g["lr"] * self.factor, self.min_lr or 1e-12)
                self.bad = 0
        return self.optimizer.lr
