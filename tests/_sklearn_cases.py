"""Data and targets of every output kind, shared by the scikit-learn comparison tests."""

import numpy as np

KINDS = ["multiclass", "binary", "multilabel", "regression", "regression1", "poisson"]


def digits_rows():
    """The first 450 digits, features scaled to [0, 1]: ``(X, y)``."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X[:450] / 16.0, y[:450]


def targets(kind, X, y):
    """A target of output ``kind`` built from the digits ``X`` and labels ``y``."""
    if kind == "multiclass":
        return y
    if kind == "binary":
        return np.where(y % 2 == 0, "even", "odd")
    if kind == "multilabel":
        return np.stack([y % 2 == 0, y < 5, y % 3 == 0], axis=1).astype(int)
    if kind == "regression":
        return np.stack([X[:, :10].sum(1), X[:, 20:40].mean(1)], axis=1)
    if kind == "regression1":
        return X[:, :10].sum(1)
    if kind == "poisson":
        return np.floor(X[:, :8].sum(1))
    raise AssertionError(kind)
