"""Datasets: scikit-learn's bundled digits, deterministic synthetic data, file loaders, splits.

Nothing here downloads anything.
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np

from . import _validate as v


def digits(dtype=np.float32):
    """scikit-learn's bundled 8x8 digits: X (1797, 64) scaled to [0, 1], y (1797,) int64 labels 0-9.

    Needs scikit-learn (``pip install "fastbp[sklearn]"``); the data ships with it.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "digits() needs scikit-learn, which ships the data: pip install 'fastbp[sklearn]' "
            "(or use fastbp.datasets.make_classification for synthetic data)"
        ) from None
    d = load_digits()
    return (d.data / 16.0).astype(v.as_dtype(dtype)), d.target.astype(np.int64)


def make_classification(n_samples=1000, n_features=20, n_classes=3, *, noise=1.0, seed=0, dtype=np.float32):
    """Deterministic synthetic classification data of any size.

    Each class is a Gaussian blob around a random centre, seen through a fixed
    random tanh layer so that the classes are not linearly separable.

    Returns
    -------
    X : (n_samples, n_features) array of ``dtype``; y : (n_samples,) int64 labels
    """
    n_samples = v.positive_int(n_samples, "n_samples")
    n_features = v.positive_int(n_features, "n_features")
    n_classes = v.positive_int(n_classes, "n_classes")
    if n_classes < 2:
        raise ValueError(f"n_classes: expected at least 2, got {n_classes}")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, n_features)) * 2.0
    y = np.arange(n_samples) % n_classes
    rng.shuffle(y)
    latent = centres[y] + noise * rng.standard_normal((n_samples, n_features))
    mix = rng.standard_normal((n_features, n_features)) / np.sqrt(n_features)
    X = np.tanh(latent @ mix) + 0.1 * latent
    return X.astype(v.as_dtype(dtype)), y.astype(np.int64)


def make_regression(n_samples=1000, n_features=20, n_targets=1, *, noise=0.1, seed=0, dtype=np.float32):
    """Deterministic synthetic regression data: a smooth nonlinear function plus noise.

    Returns
    -------
    X : (n_samples, n_features); y : (n_samples, n_targets), both of ``dtype``
    """
    n_samples = v.positive_int(n_samples, "n_samples")
    n_features = v.positive_int(n_features, "n_features")
    n_targets = v.positive_int(n_targets, "n_targets")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    W1 = rng.standard_normal((n_features, 16)) / np.sqrt(n_features)
    W2 = rng.standard_normal((16, n_targets)) / 4
    y = np.tanh(X @ W1) @ W2 + noise * rng.standard_normal((n_samples, n_targets))
    dt = v.as_dtype(dtype)
    return X.astype(dt), y.astype(dt)


def load_npz(path, *, x_key="X", y_key="y"):
    """``(X, y)`` from a ``.npz`` file (no pickle); ``y`` is None when the file has no ``y_key``."""
    with np.load(os.fspath(path), allow_pickle=False) as data:
        if x_key not in data.files:
            raise ValueError(f"{path}: no array {x_key!r} (found {sorted(data.files)})")
        X = data[x_key]
        y = data[y_key] if y_key in data.files else None
    return X, y


# Cells read as missing: empty, or a spelling of "not available" that spreadsheets and pandas write.
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "-"})


def load_csv(path, *, target=None, delimiter=",", dtype=np.float32):
    """``(X, y, feature_names)`` from a CSV file with a header row.

    Parameters
    ----------
    path : str or PathLike
    target : name of the target column, or None for no target (``y`` is None)
    delimiter : the cell separator
    dtype : float dtype of ``X`` (and of a non-integral numeric ``y``)

    Returns
    -------
    X : (n, d) array of ``dtype``; y : (n,) array or None; feature_names : list of d str

    Every feature must be numeric. The target may be numeric (whole numbers
    give int64 labels, others floats of ``dtype``) or text (a str array).
    A missing cell (empty, ``NA``, ``NaN``, ``?`` ...) or a short row is an
    error naming its row (counted from 1 at the header, as a spreadsheet shows
    it) and column.
    """
    dt = v.as_dtype(dtype)
    path = os.fspath(path)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter))
    if not rows:
        raise ValueError(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    body = [(i + 2, r) for i, r in enumerate(rows[1:]) if any(c.strip() for c in r)]
    if target is not None and target not in header:
        raise ValueError(f"target: no column {target!r} in {path} (columns: {header})")
    if not body:
        raise ValueError(f"{path}: no data rows")
    for line, r in body:
        if len(r) != len(header):
            raise ValueError(f"{path}: row {line} has {len(r)} cells, the header has {len(header)}")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise ValueError(f"{path}: duplicate column name(s) {dup} in the header")
    cells = {name: [r[j].strip() for _, r in body] for j, name in enumerate(header)}
    features = [h for h in header if h != target]
    cols = [_numeric(path, name, cells[name], body) for name in features]
    X = np.column_stack(cols).astype(dt) if cols else np.empty((len(body), 0), dt)
    y = None
    if target is not None:
        t = cells[target]
        _check_missing(path, target, t, body)
        if all(_is_float(c) for c in t):
            num = np.array([float(c) for c in t])
            y = num.astype(np.int64) if np.all(num == np.round(num)) else num.astype(dt)
        else:
            y = np.array(t)
    return X, y, features


def _numeric(path, name, cells, body):
    """The column as float64; the first missing or non-numeric cell is an error naming its row."""
    try:
        col = np.array(cells, dtype=np.float64)  # numpy parses the strings: the fast path
        if np.isfinite(col).all():
            return col
    except ValueError:
        pass
    _check_missing(path, name, cells, body)
    bad = next(i for i, c in enumerate(cells) if not _is_float(c))
    raise ValueError(
        f"{path}: column {name!r} is not numeric (row {body[bad][0]}: {cells[bad]!r} is not a finite number); "
        "features must be numbers: encode text columns first, or make this column the target"
    )


def _check_missing(path, name, cells, body):
    i = next((i for i, c in enumerate(cells) if c.lower() in MISSING), None)
    if i is not None:
        raise ValueError(
            f"{path}: missing value at row {body[i][0]}, column {name!r} (cell {cells[i]!r}); "
            "fill in or drop such rows first"
        )


def _is_float(s):
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def train_test_split(X, y, *, test_size=0.2, seed=None):
    """Shuffle with ``seed`` and split into ``(X_train, X_test, y_train, y_test)``."""
    X, y = np.asarray(X), np.asarray(y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"y: expected {X.shape[0]} rows to match X, got {y.shape[0]}")
    test_size = v.fraction(test_size, "test_size", lo=0.0, hi=1.0)
    n_test = int(round(X.shape[0] * test_size))
    if not 0 < n_test < X.shape[0]:
        raise ValueError(f"test_size: {test_size} leaves no training or no test rows of {X.shape[0]}")
    perm = np.random.default_rng(seed).permutation(X.shape[0])
    test, train = perm[:n_test], perm[n_test:]
    return X[train], X[test], y[train], y[test]
