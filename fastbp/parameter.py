"""A trainable array and its gradient."""

import numpy as np


class Parameter:
    """A trainable array: ``data`` and a ``grad`` of the same shape and dtype.

    Layers overwrite ``grad`` in ``backward`` (they do not accumulate);
    optimizers read ``grad`` and update ``data`` in place.
    """

    __slots__ = ("data", "grad", "name")

    def __init__(self, data: np.ndarray, name: str = ""):
        self.data = np.ascontiguousarray(data)
        self.grad = np.zeros_like(self.data)
        self.name = name

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def zero_grad(self) -> None:
        self.grad.fill(0)

    def __repr__(self) -> str:
        return f"Parameter({self.name or '?'}, shape={self.data.shape}, dtype={self.data.dtype})"
