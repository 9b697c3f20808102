"""Datasets: scikit-learn's bundled digits, deterministic synthetic data, file loaders, splits.

Nothing here downloads anything.
"""

from __future__ import annotations

import csv
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


def load_csv(path, *, target=None, delimiter=",", dtype=np.float32):
    """``(X, y, feature_names)`` from a CSV file with a header row.

    Parameters
    ----------
    target : name of the target column, or None for no target (``y`` is None)

    Integral target values give int64 labels, others floats of ``dtype``.
    Every other column must be numeric.
    """
    dt = v.as_dtype(dtype)
    with open(os.fspath(path), newline="") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter))
    if not rows:
        raise ValueError(f"{path}: empty file")
    header, body = [h.strip() for h in rows[0]], [r for r in rows[1:] if r]
    if target is not None and target not in header:
        raise ValueError(f"target: no column {target!r} in {path} (columns: {header})")
    if not body:
        raise ValueError(f"{path}: no data rows")
    cols = {}
    for j, name in enumerate(header):
        try:
            cols[name] = np.array([float(r[j]) for r in body])
        except (ValueError, IndexError):
            bad = next((i for i, r in enumerate(body) if j >= len(r) or not _is_float(r[j])), 0)
            raise ValueError(f"{path}: column {name!r} is not numeric (row {bad + 2})") from None
    features = [h for h in header if h != target]
    X = np.column_stack([cols[h] for h in features]).astype(dt) if features else np.empty((len(body), 0), dt)
    y = None
    if target is not None:
        t = cols[target]
        y = t.astype(np.int64) if np.all(t == np.round(t)) else t.astype(dt)
    return X, y, features


def _is_float(s):
    try:
        float(s)
        return True
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
