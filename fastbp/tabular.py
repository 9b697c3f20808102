"""Tabular targets: whether a column is a classification or a regression target, and class labels.

Used by ``fastbp train`` to read a user's CSV the way a person would.
"""

from __future__ import annotations

import numpy as np

TASKS = ("classification", "regression")


def max_classes(n_rows: int) -> int:
    """The most distinct whole numbers a target may have and still be read as class labels.

    At most 50, and at most one class per 10 rows (but always 2): scikit-learn's
    diabetes target (442 rows, 214 distinct whole numbers) is a regression
    target; wine (178 rows, 3 classes) and digits (1797 rows, 10) are labels.
    """
    return max(2, min(50, n_rows // 10))


def choose_task(y: np.ndarray, requested: str | None = None) -> tuple[str, str]:
    """``(task, reason)`` for a target column ``y`` (n,).

    Text or boolean labels, or whole numbers with few distinct values
    (:func:`max_classes`), are classification; other numbers are regression.
    ``requested`` ("classification" or "regression") overrides the guess,
    except that text labels cannot be a regression target.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        kind = "regression"
        reason = f"{y.shape[1]} target columns"
        return (requested or kind), reason
    n_distinct = len(np.unique(y))
    if y.dtype.kind in "USOb":
        if requested == "regression":
            raise ValueError("task: regression needs a numeric target, got text labels")
        return "classification", f"text labels, {n_distinct} distinct"
    whole = bool(np.all(np.isfinite(y)) and np.all(y == np.round(y)))
    limit = max_classes(len(y))
    if whole and n_distinct <= limit:
        guess, reason = "classification", f"whole numbers with {n_distinct} distinct values (<= {limit})"
    elif whole:
        guess, reason = "regression", f"{n_distinct} distinct whole numbers in {len(y)} rows (> {limit} for labels)"
    else:
        guess, reason = "regression", "numbers with fractions"
    if requested is not None:
        return requested, f"--task {requested}; the data alone suggests {guess}: {reason}"
    return guess, reason


def encode_labels(y: np.ndarray) -> tuple[list, np.ndarray]:
    """``(classes, codes)``: the sorted distinct labels as plain Python values, and int64 codes (n,)."""
    classes, codes = np.unique(np.asarray(y), return_inverse=True)
    if classes.dtype.kind == "f" and np.all(classes == np.round(classes)):
        classes = classes.astype(np.int64)  # labels read as 1.0, 2.0 are shown as 1, 2
    return classes.tolist(), codes.astype(np.int64)
