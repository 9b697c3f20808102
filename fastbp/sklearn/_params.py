"""Constructor-parameter constraints of the estimators, checked at ``fit`` time as scikit-learn does.

:data:`CONSTRAINTS` declares every parameter once, with :mod:`fastbp._validate`'s
constraint objects; :func:`check` enforces them. Each error names the
parameter, what was expected and what was given.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _validate as v
from .._validate import POSITIVE_INT, Boolean, InstanceOf, Interval, NoneValue, Options

_REAL_NON_NEG = Interval(numbers.Real, 0)
_UNIT = Interval(numbers.Real, 0, 1, "left")  # [0, 1)

CONSTRAINTS: dict[str, list] = {
    "activation": [Options("identity", "logistic", "tanh", "relu")],
    "solver": [Options("sgd", "adam")],
    "alpha": [_REAL_NON_NEG],
    "batch_size": [Options("auto"), POSITIVE_INT],
    "learning_rate": [Options("constant", "invscaling", "adaptive")],
    "learning_rate_init": [Interval(numbers.Real, 0, closed="neither")],
    "power_t": [_REAL_NON_NEG],
    "max_iter": [POSITIVE_INT],
    "shuffle": [Boolean()],
    "random_state": [
        NoneValue(),
        Interval(numbers.Integral, 0),
        InstanceOf(np.random.RandomState, "a RandomState"),
        Options(np.random, what="numpy.random"),
    ],
    "tol": [_REAL_NON_NEG],
    "verbose": [Boolean(), Interval(numbers.Integral)],
    "warm_start": [Boolean()],
    "momentum": [Interval(numbers.Real, 0, 1)],
    "nesterovs_momentum": [Boolean()],
    "early_stopping": [Boolean()],
    "validation_fraction": [_UNIT],
    "beta_1": [_UNIT],
    "beta_2": [_UNIT],
    "epsilon": [Interval(numbers.Real, 0, closed="neither")],
    "n_iter_no_change": [POSITIVE_INT, Options(math.inf)],
    "max_fun": [POSITIVE_INT],  # L-BFGS only: accepted for compatibility, no effect (as in scikit-learn)
    "dtype": [NoneValue(), Options("float32", "float64"), InstanceOf((type, np.dtype), "a numpy float dtype")],
    "n_threads": [NoneValue(), POSITIVE_INT],
    "batch_norm": [Boolean()],
}

# The classifier's own parameter.
CLASS_WEIGHT = [NoneValue(), Options("balanced"), InstanceOf(dict, "a dict {class: weight}")]


def hidden_sizes(value) -> list[int]:
    """``hidden_layer_sizes`` as a list of positive ints (an int means one hidden layer)."""
    sizes = [value] if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    try:
        sizes = list(sizes)
    except TypeError:
        raise TypeError(
            f"hidden_layer_sizes: expected an int or a sequence of ints, got {type(value).__name__} {value!r}"
        ) from None
    if isinstance(value, str) or not all(POSITIVE_INT.accepts(s) for s in sizes):
        raise ValueError(f"hidden_layer_sizes: expected positive ints, got {value!r}")
    return [int(s) for s in sizes]


def dropout_rates(value, n_hidden: int) -> list[float]:
    """``dropout`` as one rate in [0, 1) per hidden layer (a number applies to every hidden layer)."""
    if _UNIT.takes_type(value):
        return [v.check(value, "dropout", _UNIT)] * n_hidden
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):
        raise TypeError(
            "dropout: expected a number in [0, 1) or a sequence of them (one per hidden layer), "
            f"got {type(value).__name__} {value!r}"
        )
    rates = list(value)
    if len(rates) != n_hidden:
        raise ValueError(
            f"dropout: expected one rate per hidden layer ({n_hidden}, from hidden_layer_sizes), "
            f"got {len(rates)}: {value!r}"
        )
    return [v.check(r, f"dropout[{i}]", _UNIT) for i, r in enumerate(rates)]


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
    if est.solver == "lbfgs":
        raise ValueError(
            "solver: 'lbfgs' is not supported by fastbp, which implements the stochastic solvers "
            "'sgd' and 'adam'; use scikit-learn's own MLP for L-BFGS"
        )
    dropout_rates(est.dropout, len(hidden_sizes(est.hidden_layer_sizes)))
    v.check_params({name: getattr(est, name) for name in CONSTRAINTS}, CONSTRAINTS)
    resolve_dtype(est.dtype)  # the constraint takes types and dtypes; this checks they are float32 or float64
