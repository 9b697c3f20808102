"""Constructor-parameter checks of the estimators, run at ``fit`` time as scikit-learn runs them.

The parameters the estimators share with scikit-learn's MLPs are validated by
scikit-learn's own machinery (``_parameter_constraints``, taken from the
installed scikit-learn's classes, enforced by ``sklearn.base._fit_context``), so
a bad value raises the same ``InvalidParameterError`` with the same message.
fastbp's own parameters (``dtype``, ``n_threads``, ``dropout``, ``batch_norm``,
``class_weight``) are declared here with :mod:`fastbp._validate`'s constraint
objects and checked by :func:`check`; each of those errors names the
parameter, what was expected and what was given.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np
from sklearn import neural_network as _sk

from .. import _validate as v
from .._validate import POSITIVE_INT, Boolean, InstanceOf, Interval, NoneValue, Options

_UNIT = Interval(numbers.Real, 0, 1, "left")  # [0, 1)

# fastbp's own parameters (scikit-learn's are validated by scikit-learn: see SKLEARN_CONSTRAINTS).
CONSTRAINTS: dict[str, list] = {
    "dtype": [NoneValue(), Options("float32", "float64"), InstanceOf((type, np.dtype), "a numpy float dtype")],
    "n_threads": [NoneValue(), POSITIVE_INT],
    "batch_norm": [Boolean()],
    "checkpoint_every": [POSITIVE_INT],
}

# The classifier's own parameter.
CLASS_WEIGHT = [NoneValue(), Options("balanced"), InstanceOf(dict, "a dict {class: weight}")]

_FASTBP_ONLY: dict = {
    name: "no_validation" for name in ("dtype", "n_threads", "dropout", "batch_norm", "checkpoint", "checkpoint_every")
}

# ``_parameter_constraints`` of the estimators: the installed scikit-learn's, so that its
# validation (and messages) are exactly scikit-learn's, plus fastbp's own parameters, marked
# "no_validation" there because :func:`check` checks them.
SKLEARN_CONSTRAINTS = {
    "classifier": {**_sk.MLPClassifier._parameter_constraints, **_FASTBP_ONLY, "class_weight": "no_validation"},
    "regressor": {**_sk.MLPRegressor._parameter_constraints, **_FASTBP_ONLY},
}

STOCHASTIC_SOLVERS = ("sgd", "adam")


def hidden_sizes(value) -> list[int]:
    """``hidden_layer_sizes`` as a list of ints, checked as scikit-learn checks it.

    scikit-learn's test and message for sizes <= 0 are copied; a size that is
    not an integer makes scikit-learn fail later with numpy's TypeError, which
    :func:`operator.index` raises here with the same text, before any work.
    """
    sizes = value
    if not hasattr(sizes, "__iter__"):
        sizes = [sizes]
    sizes = list(sizes)
    if np.any(np.array(sizes) <= 0):
        raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
    return [operator.index(s) for s in sizes]


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


def check(est) -> list[int]:
    """Check fastbp's own constructor parameters of an MLP estimator; returns the hidden layer sizes.

    scikit-learn's parameters have been validated before (``_fit_context``);
    ``hidden_layer_sizes`` gets scikit-learn's further check here.
    """
    v.check_params({name: getattr(est, name) for name in CONSTRAINTS}, CONSTRAINTS)
    resolve_dtype(est.dtype)  # the constraint takes types and dtypes; this checks they are float32 or float64
    hidden = hidden_sizes(est.hidden_layer_sizes)
    rates = dropout_rates(est.dropout, len(hidden))
    if est.solver not in STOCHASTIC_SOLVERS:
        # L-BFGS minimises one deterministic full-data objective: dropout would make it random
        # (and its line search fail), and batch statistics over row blocks would not be the
        # statistics of the data.
        if any(rates):
            raise ValueError(
                f"dropout: solver='lbfgs' needs dropout=0 (L-BFGS minimises a deterministic objective), "
                f"got dropout={est.dropout!r}; use solver='adam' or 'sgd' with dropout"
            )
        if est.batch_norm:
            raise ValueError(
                "batch_norm: solver='lbfgs' needs batch_norm=False (batch statistics belong to "
                f"minibatch training), got batch_norm={est.batch_norm!r}; use solver='adam' or 'sgd' with batch_norm"
            )
    return hidden
