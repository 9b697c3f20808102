"""Learning-rate schedules. Each sets the learning rate of every parameter group when
its ``step()`` is called (once per epoch by :func:`fastbp.fit`), from that group's
rate when the schedule was made, as PyTorch's schedulers do; ``step()`` returns the
first group's rate."""

from __future__ import annotations

import math
import numbers

from . import _validate as v
from ._validate import Interval, check, positive_int


class _Schedule:
    def __init__(self, optimizer):
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
