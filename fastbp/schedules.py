"""Learning-rate schedules. Each sets ``optimizer.lr`` when its ``step()`` is called
(once per epoch by :func:`fastbp.fit`)."""

from __future__ import annotations

import math
import numbers

from . import _validate as v
from ._validate import Interval, check, positive_int


class _Schedule:
    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.epoch = 0

    def step(self, metric=None) -> float:
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)
        return self.optimizer.lr

    def lr_at(self, epoch: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


class ConstantLR(_Schedule):
    """The learning rate never changes."""

    def lr_at(self, epoch):
        return self.base_lr


class StepLR(_Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size = positive_int(step_size, "step_size")
        self.gamma = check(gamma, "gamma", Interval(numbers.Real, 0, 1, "right"))

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineLR(_Schedule):
    """Linear warm-up for ``warmup`` epochs, then cosine decay to ``min_lr`` at ``total``."""

    def __init__(self, optimizer, total, warmup=0, min_lr=0.0):
        super().__init__(optimizer)
        self.total = positive_int(total, "total")
        self.warmup = check(warmup, "warmup", Interval(numbers.Integral, 0, self.total, "left"))
        self.min_lr = check(min_lr, "min_lr", Interval(numbers.Real, 0, self.base_lr, "left"))
        if self.warmup:
            optimizer.lr = self.lr_at(0)

    def lr_at(self, epoch):
        if epoch < self.warmup:
            return self.base_lr * (epoch + 1) / (self.warmup + 1)
        frac = min(1.0, (epoch - self.warmup) / max(1, self.total - self.warmup))
        return max(self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * frac)), 1e-12)


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
                self.optimizer.lr = max(self.optimizer.lr * self.factor, self.min_lr or 1e-12)
                self.bad = 0
        return self.optimizer.lr
