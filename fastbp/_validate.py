"""Input checks for the public API: numba does not bounds-check, so every
array is checked here before a kernel sees it. Errors name the argument, what
was expected and what was given."""

from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_dtype(dtype, name: str = "dtype") -> np.dtype:
    """``dtype`` as a numpy dtype, float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name}: expected float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float32 or float64, got {dt}")
    return dt


def float_array(a, name: str, *, ndim: int | None = 2, dtype=None, contiguous: bool = True) -> np.ndarray:
    """A floating array from an array-like, converted to ``dtype`` when given.

    Integer, boolean, complex and object arrays are refused rather than
    silently converted; C-contiguity is ensured (copying only when needed)
    when ``contiguous``.
    """
    arr = np.asarray(a)
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name}: expected a floating-point array, got dtype {arr.dtype}"
            + (" (convert with .astype(np.float32))" if arr.dtype.kind in "iub" else "")
        )
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got {arr.ndim}-D with shape {arr.shape}")
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    if contiguous and not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr


def batch(a, name: str, *, dtype=None, width: int | None = None, contiguous: bool = True) -> np.ndarray:
    """A non-empty 2-D (batch, width) float array."""
    arr = float_array(a, name, ndim=2, dtype=dtype, contiguous=contiguous)
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one row, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one column, got shape {arr.shape}")
    if width is not None and arr.shape[1] != width:
        raise ValueError(f"{name}: expected shape (batch, {width}), got {arr.shape}")
    return arr


def same_dtype(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.dtype != b.dtype:
        raise TypeError(f"{name_b}: expected dtype {a.dtype} to match {name_a}, got {b.dtype}")


def same_shape(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_b}: expected shape {a.shape} to match {name_a}, got {b.shape}")


def labels(y, name: str, n: int, n_classes: int) -> np.ndarray:
    """Integer class labels in [0, n_classes), shape (n,), as int64."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of {n} labels, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels, got dtype {arr.dtype}")
    if arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels (one per row), got {arr.shape[0]}")
    if n and (arr.min() < 0 or arr.max() >= n_classes):
        bad = arr[(arr < 0) | (arr >= n_classes)][0]
        raise ValueError(f"{name}: expected labels in [0, {n_classes}), got {int(bad)}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def prob_rows(q, name: str, shape: tuple, dtype, *, atol: float | None = None) -> np.ndarray:
    """Target probability rows: finite, non-negative, each row summing to 1."""
    arr = float_array(q, name, ndim=2, dtype=dtype)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{name}: expected finite non-negative probabilities")
    sums = arr.sum(axis=1, dtype=np.float64)
    tol = atol if atol is not None else (1e-4 if arr.dtype == np.float32 else 1e-8) * shape[1]
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > tol:
        raise ValueError(f"{name}: expected rows summing to 1, row {worst} sums to {sums[worst]:.6g}")
    return arr


def weights(w, name: str, n_classes: int, dtype) -> np.ndarray:
    """Class weights: shape (n_classes,), finite and non-negative."""
    arr = float_array(w, name, ndim=1, dtype=dtype)
    if arr.shape != (n_classes,):
        raise ValueError(f"{name}: expected shape ({n_classes},), got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{name}: expected finite non-negative weights")
    return arr


def positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected a positive int, got {type(v).__name__}")
    if v < 1:
        raise ValueError(f"{name}: expected a positive int, got {v}")
    return int(v)


def choice(v, name: str, options) -> str:
    if v not in options:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, options))}, got {v!r}")
    return v


def fraction(v, name: str, *, lo: float = 0.0, hi: float = 1.0, hi_open: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__}")
    v = float(v)
    if not (lo <= v and (v < hi if hi_open else v <= hi)):
        raise ValueError(f"{name}: expected a value in [{lo}, {hi}{')' if hi_open else ']'}, got {v}")
    return v
