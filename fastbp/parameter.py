"""A trainable array and its gradient."""

import operator
from typing import TYPE_CHECKING

import numpy as np


class Parameter:
    """A trainable array: ``data`` and a ``grad`` of the same shape and dtype.

    Layers overwrite ``grad`` in ``backward`` (they do not accumulate);
    optimizers read ``grad`` and update ``data`` in place.

    ``data`` and ``grad`` may be rebound (``p.data = a``, ``p.grad = g``, as in
    PyTorch), but only to what the kernels can use: a writeable, C-contiguous
    ndarray of the parameter's shape and dtype, which then is the array trained.
    Anything else is refused here, because numba does not bounds-check and a
    converted copy would silently take the updates in the user's place. To
    change values without rebinding, assign into the array: ``p.data[...] = a``.
    """

    __slots__ = ("_data", "_grad", "name", "_shape", "_dtype")

    def __init__(self, data: np.ndarray, name: str = ""):
        self._data = np.ascontiguousarray(data)
        self._shape, self._dtype = self._data.shape, self._data.dtype
        self._grad = np.zeros_like(self._data)
        self.name = name

    def _checked(self, a, what: str) -> np.ndarray:
        name = f"{self.name or 'parameter'}.{what}"
        expected = f"a writeable C-contiguous {self._dtype} ndarray of shape {self._shape}"
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name}: expected {expected}, got {type(a).__name__}")
        if a.shape != self._shape or a.dtype != self._dtype:
            raise ValueError(f"{name}: expected {expected}, got {a.dtype} of shape {a.shape}")
        if not a.flags.c_contiguous or not a.flags.writeable:
            why = "not C-contiguous" if not a.flags.c_contiguous else "read-only"
            raise ValueError(
                f"{name}: expected {expected}, got one that is {why} (use np.ascontiguousarray, "
                f"or assign the values in place: {name}[...] = a)"
            )
        return a

    def _set_data(self, a) -> None:
        self._data = self._checked(a, "data")

    def _set_grad(self, g) -> None:
        self._grad = self._checked(g, "grad")

    # Read through C (attrgetter), set through the checks: a training step reads these about
    # forty times, and each Python-level getter call costs there (docs/normalization.md,
    # "Fusion in Sequential", on what a Python operation costs right after a matmul).
    if TYPE_CHECKING:  # the same attributes, typed

        @property
        def data(self) -> np.ndarray: ...
        @data.setter
        def data(self, a) -> None: ...
        @property
        def grad(self) -> np.ndarray: ...
        @grad.setter
        def grad(self, g) -> None: ...

    else:
        data = property(operator.attrgetter("_data"), _set_data, doc="The array trained (rebinding is checked).")
        grad = property(operator.attrgetter("_grad"), _set_grad, doc="Its gradient, overwritten by backward.")

    @property
    def shape(self):
        return self._shape

    @property
    def dtype(self):
        return self._dtype

    def zero_grad(self) -> None:
        self._grad.fill(0)

    def __repr__(self) -> str:
        return f"Parameter({self.name or '?'}, shape={self._shape}, dtype={self._dtype})"
