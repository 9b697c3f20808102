"""Constructor-parameter checks, run at ``fit`` time as scikit-learn does.

Each error names the parameter, what was expected and what was given.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _validate as v

_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
_SOLVERS = ("sgd", "adam")
_SCHEDULES = ("constant", "invscaling", "adaptive")


def _real(value, name, lo, hi=math.inf, *, lo_open=False, hi_open=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok or math.isnan(value):
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"{name}: expected a number in {lb}{lo}, {hi}{rb}, got {value!r}")


def _int(value, name, lo):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int >= {lo}, got {type(value).__name__} {value!r}")
    if value < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {value!r}")


def _bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")


def hidden_sizes(value) -> list[int]:
    """``hidden_layer_sizes`` as a list of positive ints (an int means one hidden layer)."""
    sizes = [value] if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    try:
        sizes = list(sizes)
    except TypeError:
        raise TypeError("hidden_layer_sizes: expected an int or a sequence of ints, "
                        f"got {type(value).__name__} {value!r}") from None
    for s in sizes:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral) or s < 1:
            raise ValueError(f"hidden_layer_sizes: expected positive ints, got {value!r}")
    return [int(s) for s in sizes]


def resolve_dtype(value):
    """``dtype`` as a numpy float dtype, or None to follow the input (float32 stays float32)."""
    if value is None:
        return None
    try:
        dt = np.dtype(value)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype: expected None, 'float32' or 'float64', got {value!r}")
    return dt


def check(est) -> None:
    """Check every constructor parameter of a fastbp MLP estimator."""
    hidden_sizes(est.hidden_layer_sizes)
    v.choice(est.activation, "activation", _ACTIVATIONS)
    if est.solver == "lbfgs":
        raise ValueError("solver: 'lbfgs' is not supported by fastbp, which implements the stochastic solvers "
                         "'sgd' and 'adam'; use scikit-learn's own MLP for L-BFGS")
    v.choice(est.solver, "solver", _SOLVERS)
    _real(est.alpha, "alpha", 0.0)
    if not (isinstance(est.batch_size, str) and est.batch_size == "auto"):
        if isinstance(est.batch_size, str):
            raise ValueError(f"batch_size: expected 'auto' or an int >= 1, got {est.batch_size!r}")
        v.positive_int(est.batch_size, "batch_size")
    v.choice(est.learning_rate, "learning_rate", _SCHEDULES)
    _real(est.learning_rate_init, "learning_rate_init", 0.0, lo_open=True)
    _real(est.power_t, "power_t", 0.0)
    v.positive_int(est.max_iter, "max_iter")
    _bool(est.shuffle, "shuffle")
    if not (est.random_state is None or est.random_state is np.random
            or isinstance(est.random_state, np.random.RandomState)):
        _int(est.random_state, "random_state", lo=0)
    _real(est.tol, "tol", 0.0)
    if isinstance(est.verbose, str) or not isinstance(est.verbose, (numbers.Integral, bool, np.bool_)):
        raise TypeError(f"verbose: expected a bool or an int, got {type(est.verbose).__name__}")
    _bool(est.warm_start, "warm_start")
    _real(est.momentum, "momentum", 0.0, 1.0)
    _bool(est.nesterovs_momentum, "nesterovs_momentum")
    _bool(est.early_stopping, "early_stopping")
    _real(est.validation_fraction, "validation_fraction", 0.0, 1.0, hi_open=True)
    _real(est.beta_1, "beta_1", 0.0, 1.0, hi_open=True)
    _real(est.beta_2, "beta_2", 0.0, 1.0, hi_open=True)
    _real(est.epsilon, "epsilon", 0.0, lo_open=True)
    if not (isinstance(est.n_iter_no_change, float) and est.n_iter_no_change == math.inf):
        v.positive_int(est.n_iter_no_change, "n_iter_no_change")
    v.positive_int(est.max_fun, "max_fun")  # L-BFGS only: accepted for compatibility, no effect (as in scikit-learn)
    resolve_dtype(est.dtype)
    if est.n_threads is not None:
        v.positive_int(est.n_threads, "n_threads")
