"""Reading a user's data for ``fastbp train`` and ``fastbp predict``."""

from __future__ import annotations

import numpy as np

from .. import datasets


def load(path: str, target: str | None, dtype):
    """``(X, y, feature_names, columns)`` from a .csv (with a header) or a .npz (arrays X and y).

    ``y`` is None when there is no target; ``feature_names`` is None for .npz.
    ``columns`` lists every CSV column (for messages), or the .npz's arrays.
    """
    if path.lower().endswith(".csv"):
        X, y, names = datasets.load_csv(path, target=target, dtype=dtype)
        return X, y, names, names + ([target] if target else [])
    with np.load(path, allow_pickle=False) as data:
        arrays = sorted(data.files)
    X, y = datasets.load_npz(path, x_key="X", y_key=target or "y")
    if not np.issubdtype(X.dtype, np.number) or X.ndim != 2:
        raise ValueError(f"{path}: array X must be a 2-d numeric array, got {X.dtype} of shape {X.shape}")
    X = X.astype(dtype)
    if not np.isfinite(X).all():
        i, j = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"{path}: missing value (NaN or inf) in X at row {i}, column {j}")
    return X, y, None, arrays


def default(dtype, seed):
    """``(description, X, y)``: scikit-learn's digits, or synthetic data without scikit-learn."""
    try:
        X, y = datasets.digits(dtype=dtype)
        return "digits (scikit-learn's bundled 8x8 digits, 1797 x 64)", X, y
    except ImportError:
        X, y = datasets.make_classification(5000, 20, 4, seed=seed, dtype=dtype)
        return "synthetic classification (5000 x 20, 4 classes; install scikit-learn for digits)", X, y


def select_features(X, names, model_meta, path, target):
    """``X``'s columns in the order the model was trained on, matched by CSV header name.

    Refuses a file that lacks one of the model's features, or has a column the
    model does not know (the target, most often: then it says to pass --target).
    """
    wanted = model_meta.get("feature_names")
    if not wanted or names is None:
        return X
    missing = [f for f in wanted if f not in names]
    if missing:
        raise ValueError(f"{path}: the model's feature(s) {missing} are not columns of the file")
    extra = [c for c in names if c not in wanted]
    if extra:
        trained_target = model_meta.get("target")
        if target is None and trained_target in extra:
            raise ValueError(
                f"{path}: column {trained_target!r} is the model's target, not a feature; "
                f"pass --target {trained_target} to leave it out"
            )
        raise ValueError(
            f"{path}: column(s) {extra} are not features of this model; "
            "pass --target NAME to leave the target column out"
        )
    order = [names.index(f) for f in wanted]
    return X[:, order]
