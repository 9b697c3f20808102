"""scikit-learn's MLP solvers, each step one fused fastbp kernel per parameter.

The formulas are scikit-learn's (``sklearn/neural_network/_stochastic_optimizers.py``),
so the same hyperparameters give the same trajectory:

* SGD: ``vel = momentum vel - lr g``; the update is ``momentum vel - lr g``
  with Nesterov, ``vel`` without. fastbp's :func:`~fastbp.kernels.sgd` keeps
  PyTorch's buffer ``buf`` instead; ``vel = -lr buf`` while ``lr`` is
  constant, and when a schedule changes ``lr`` the buffers are rescaled by
  ``lr_old / lr_new`` so that ``vel`` carries over exactly as in scikit-learn.
* Adam: ``w -= lr_t m / (sqrt(v) + eps)`` with
  ``lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)``, which is fastbp's
  :func:`~fastbp.kernels.adam` with ``step_size = lr_t`` and ``inv_sqrt_bc2 = 1``.

The L2 penalty enters as the kernels' ``weight_decay`` (``alpha / n`` on the
weights, 0 on the intercepts): scikit-learn's gradient ``(X.T delta + alpha W) / n``.
"""

from __future__ import annotations

import math

import numpy as np

from .. import kernels


class SGD:
    """scikit-learn's ``SGDOptimizer`` (momentum, Nesterov, constant/invscaling/adaptive rate)."""

    def __init__(self, params, learning_rate_init, schedule, momentum, nesterov, power_t):
        self.learning_rate_init = float(learning_rate_init)
        self.learning_rate = float(learning_rate_init)
        self.schedule = schedule
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.power_t = float(power_t)
        self.buffers = [np.zeros(p.size, p.dtype) for p in params] if self.momentum else None

    def step(self, segments, l2):
        """``segments``: (weights, grads, gets the L2 term ``l2``) flat arrays."""
        lr, mu = self.learning_rate, self.momentum
        for i, (w, g, decay) in enumerate(segments):
            t = w.dtype.type
            buf = self.buffers[i] if self.buffers is not None else w[:0]
            kernels.sgd(w, g, buf, t(lr), t(mu), t(l2 if decay else 0.0), self.nesterov)

    def _set_rate(self, lr):
        if self.buffers is not None and lr != self.learning_rate:
            for buf in self.buffers:  # keep vel = -lr buf unchanged across the new rate
                kernels.scale_(buf, buf.dtype.type(self.learning_rate / lr))
        self.learning_rate = lr

    def iteration_ends(self, time_step):
        """End of an epoch: ``invscaling`` sets ``lr = lr_init / (time_step + 1) ** power_t``."""
        if self.schedule == "invscaling":
            self._set_rate(self.learning_rate_init / (time_step + 1) ** self.power_t)

    def trigger_stopping(self, msg, verbose) -> bool:
        """No improvement: stop, or with ``adaptive`` divide the rate by 5 until it is <= 1e-6."""
        if self.schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._set_rate(self.learning_rate / 5.0)
        if verbose:
            print(f"{msg} Setting learning rate to {self.learning_rate:f}")
        return False


class Adam:
    """scikit-learn's ``AdamOptimizer``."""

    def __init__(self, params, learning_rate_init, beta_1, beta_2, epsilon):
        self.learning_rate_init = float(learning_rate_init)
        self.learning_rate = float(learning_rate_init)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.t = 0
        self.ms = [np.zeros(p.size, p.dtype) for p in params]
        self.vs = [np.zeros(p.size, p.dtype) for p in params]

    def step(self, segments, l2):
        self.t += 1
        b1, b2 = self.beta_1, self.beta_2
        self.learning_rate = self.learning_rate_init * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for (w, g, decay), m, v in zip(segments, self.ms, self.vs):
            t = w.dtype.type
            kernels.adam(
                w,
                g,
                m,
                v,
                t(self.learning_rate),
                t(1.0),
                t(self.epsilon),
                t(b1),
                t(b2),
                t(1 - b1),  # formed in float64, rounded once
                t(1 - b2),
                t(l2 if decay else 0.0),
                t(1.0),
            )

    def iteration_ends(self, time_step):
        pass

    def trigger_stopping(self, msg, verbose) -> bool:
        if verbose:
            print(msg + " Stopping.")
        return True
