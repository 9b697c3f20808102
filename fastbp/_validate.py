"""Input checks for the public API: numba does not bounds-check, so every
array is checked here before a kernel sees it. Errors name the argument, what
was expected and what was given."""

from __future__ import annotations

import math
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


def float_array(
    a, name: str, *, ndim: int | None = 2, dtype=None, contiguous: bool = True, convert: bool = True
) -> np.ndarray:
    """A float32 or float64 array from an array-like, converted to ``dtype`` when given.

    The dtype rule, the same for both backends: fastbp computes in float32 or
    float64 only (its kernels exist for those two). Without ``dtype`` the array's
    own dtype decides the computation, so any other float (float16, longdouble)
    is a TypeError rather than a failure deep in a kernel or a silent float16
    computation in numpy. With ``dtype`` (a layer's dtype, or the dtype of the
    array this one is paired with, as targets follow their logits) any float
    array is converted to it: float16 input to a float32 layer is fine.
    Integer, boolean, complex and object arrays are refused rather than
    silently converted, either way. C-contiguity is ensured (copying only when
    needed) when ``contiguous``. With ``convert=False`` the same checks run on the
    metadata alone and the array comes back as it is (neither converted nor made
    contiguous): for data read a batch at a time (:class:`fastbp.data.Rows`).
    """
    arr = np.asarray(a)
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name}: expected a floating-point array, got dtype {arr.dtype}"
            + (" (convert with .astype(np.float32))" if arr.dtype.kind in "iub" else "")
        )
    if dtype is None and arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float32 or float64, got {arr.dtype} (convert with .astype(np.float32))")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got {arr.ndim}-D with shape {arr.shape}")
    if not convert:
        return arr
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    if contiguous and not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr


def batch(
    a, name: str, *, dtype=None, width: int | None = None, contiguous: bool = True, convert: bool = True
) -> np.ndarray:
    """A non-empty 2-D (batch, width) float array (``convert=False``: checked, not converted; see float_array)."""
    # The call a training step makes (a layer's output buffer, already right) in a few attribute
    # reads: there every Python operation runs with caches a matmul has just emptied.
    if (
        type(a) is np.ndarray
        and a.ndim == 2
        and (a.dtype == dtype if dtype is not None else a.dtype in FLOAT_DTYPES)
        and (a.flags.c_contiguous or not contiguous)
        and a.shape[0]
        and a.shape[1]
        and (width is None or a.shape[1] == width)
    ):
        return a
    arr = float_array(a, name, ndim=2, dtype=dtype, contiguous=contiguous, convert=convert)
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


# Row-sum tolerance of prob_rows, fixed for any row width k. A row normalised in
# its own dtype (unit roundoff u = eps / 2) by ``q / q.sum()`` has elements
# r_j = (q_j / s)(1 + d_j) / (1 + d_s), s the exact sum: |d_j| <= u for each quotient's
# rounding (relative, so these add up to at most u * sum(q_j / s) = u) and
# |d_s| <= (127 + log2 k) u for numpy's pairwise sum (blocks of at most 128 added in a
# loop, then halved). Summed in float64 (error at most k * 2**-53, negligible),
# |sum(r) - 1| <= (128 + log2 k) u: at k = 1e6 about 148 u, i.e. 8.8e-6 for float32 and
# 1.6e-14 for float64, and typically far less. 1e-4 and 1e-8 are so generous at every
# width, yet an all-zero row or a missing 1% is refused at any k
# (tests/test_numerics_inputs.py checks both, up to k = 1e6).
ROW_SUM_TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-8}


def prob_rows(q, name: str, shape: tuple, dtype, *, atol: float | None = None) -> np.ndarray:
    """Target probability rows: finite, non-negative, each row summing to 1.

    The sums are checked within ``atol``, by default :data:`ROW_SUM_TOL` of the
    coarser of ``dtype`` and the dtype ``q`` came in (rows normalised in float32
    and checked as float64 get float32's tolerance); it does not grow with the width.
    """
    given = np.asarray(q)
    arr = float_array(given, name, ndim=2, dtype=dtype)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{name}: expected finite non-negative probabilities")
    sums = arr.sum(axis=1, dtype=np.float64)
    if atol is None:
        # float64's only when both are float64 or finer; float16 rows (converted) get float32's.
        fine = given.dtype.itemsize >= 8 and arr.dtype == np.float64
        atol = ROW_SUM_TOL[np.dtype(np.float64 if fine else np.float32)]
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > atol:
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


# -- parameters: declared constraints, one checker ------------------------------
#
# In the spirit of scikit-learn's ``_parameter_constraints``: a parameter is
# declared with a list of constraints, any one of which may accept it, and
# :func:`check` enforces them all with one message format
# ("name: expected <what>, got <value>"). A type no constraint takes is a
# TypeError; a value of the right type out of range is a ValueError.


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


class Interval:
    """Numbers of ``kind`` (``numbers.Integral`` or ``numbers.Real``) between ``lo`` and ``hi``.

    ``closed`` says which ends belong: "both", "left", "right" or "neither";
    None for an end means unbounded. NaN never passes; with ``finite`` infinities
    do not pass either. Accepted values come back as ``int`` or ``float``.
    """

    def __init__(self, kind, lo=None, hi=None, closed: str = "both", *, finite: bool = False):
        if kind not in (numbers.Integral, numbers.Real):
            raise TypeError(f"kind: expected numbers.Integral or numbers.Real, got {kind!r}")
        self.kind, self.lo, self.hi, self.closed, self.finite = kind, lo, hi, closed, finite

    def takes_type(self, value) -> bool:
        return isinstance(value, self.kind) and not _is_bool(value)

    def accepts(self, value) -> bool:
        # Plain int and float first: this runs on every public call, and ABC checks are slow.
        if type(value) not in (int, float) and not self.takes_type(value):
            return False
        if type(value) is float and self.kind is numbers.Integral:
            return False
        if value != value or (self.finite and not math.isfinite(value)):  # NaN; infinities when finite
            return False
        lo, hi, closed = self.lo, self.hi, self.closed
        lo_ok = lo is None or (value >= lo if closed in ("both", "left") else value > lo)
        hi_ok = hi is None or (value <= hi if closed in ("both", "right") else value < hi)
        return lo_ok and hi_ok

    def convert(self, value):
        return int(value) if self.kind is numbers.Integral else float(value)

    def __str__(self) -> str:
        what = "an int" if self.kind is numbers.Integral else ("a finite number" if self.finite else "a number")
        left_closed, right_closed = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.lo is not None and self.hi is not None:
            return f"{what} in {'[' if left_closed else '('}{self.lo}, {self.hi}{']' if right_closed else ')'}"
        if self.lo is not None:
            return f"{what} {'>=' if left_closed else '>'} {self.lo}"
        if self.hi is not None:
            return f"{what} {'<=' if right_closed else '<'} {self.hi}"
        return what


class Options:
    """One of a fixed set of values (compared with ``==``: strings, or special numbers such as ``inf``)."""

    def __init__(self, *values, what: str | None = None):
        self.values, self.what = values, what

    def takes_type(self, value) -> bool:
        return any(
            type(value) is type(o) or (isinstance(o, float) and isinstance(value, numbers.Real) and not _is_bool(value))
            for o in self.values
        )

    def accepts(self, value) -> bool:
        try:
            return any(value == o and not _is_bool(value) for o in self.values)
        except (TypeError, ValueError):  # e.g. an array compared with a string
            return False

    def convert(self, value):
        return value

    def __str__(self) -> str:
        if self.what is not None:
            return self.what
        return f"one of {', '.join(map(repr, self.values))}" if len(self.values) > 1 else repr(self.values[0])


class Boolean:
    """True or False (numpy's bool too); comes back as ``bool``."""

    def takes_type(self, value) -> bool:
        return _is_bool(value)

    accepts = takes_type

    def convert(self, value):
        return bool(value)

    def __str__(self) -> str:
        return "True or False"


class InstanceOf:
    """An instance of ``cls``, described as ``what`` in messages."""

    def __init__(self, cls, what: str):
        self.cls, self.what = cls, what

    def takes_type(self, value) -> bool:
        return isinstance(value, self.cls)

    accepts = takes_type

    def convert(self, value):
        return value

    def __str__(self) -> str:
        return self.what


class NoneValue:
    """``None``."""

    def takes_type(self, value) -> bool:
        return value is None

    accepts = takes_type

    def convert(self, value):
        return None

    def __str__(self) -> str:
        return "None"


POSITIVE_INT = Interval(numbers.Integral, 1)
NON_NEGATIVE = Interval(numbers.Real, 0, finite=True)
POSITIVE = Interval(numbers.Real, 0, closed="neither", finite=True)


def check(value, name: str, *constraints):
    """``value`` (converted: ints as int, reals as float) if any constraint accepts it; else a clear error.

    Raises
    ------
    TypeError
        When no constraint takes a value of this type.
    ValueError
        When the type is right but the value is not (out of range, not an option).
    """
    for c in constraints:
        if c.accepts(value):
            return c.convert(value)
    expected = " or ".join(str(c) for c in constraints)
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    if any(c.takes_type(value) for c in constraints):
        raise ValueError(f"{name}: expected {expected}, got {shown}")
    raise TypeError(f"{name}: expected {expected}, got {type(value).__name__} {shown}")


def check_params(values: dict, constraints: dict) -> dict:
    """:func:`check` every entry of ``values`` against ``constraints[name]`` (a list); returns the converted values."""
    return {name: check(values[name], name, *constraints[name]) for name in constraints}


def positive_int(value, name: str) -> int:
    """Shorthand: :func:`check` with :data:`POSITIVE_INT`."""
    return check(value, name, POSITIVE_INT)


def choice(value, name: str, options):
    """Shorthand: :func:`check` with :class:`Options`."""
    return check(value, name, Options(*options))


def fraction(value, name: str, *, lo: float = 0.0, hi: float = 1.0, hi_open: bool = True) -> float:
    """Shorthand: :func:`check` with a real :class:`Interval` from ``lo`` (closed) to ``hi``."""
    return check(value, name, Interval(numbers.Real, lo, hi, "left" if hi_open else "both"))
