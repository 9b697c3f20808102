"""Reusable arrays: one per key and shape, so a training step allocates nothing after warm-up."""

from __future__ import annotations

import numpy as np


class BufferPool:
    """Arrays kept by ``(key, shape, dtype)``.

    Training alternates full batches with the last partial one; keeping one
    array per shape means neither reallocates. Bounded: past ``max_entries``
    the pool starts over (arrays still in use elsewhere stay valid).
    """

    def __init__(self, max_entries: int = 32):
        self._arrays: dict[tuple, np.ndarray] = {}
        self._ids: set[int] = set()  # id() of each array: the pool keeps them alive, so ids are not reused
        self._max = max_entries

    def get(self, key, shape: tuple, dtype) -> np.ndarray:
        k = (key, tuple(shape), np.dtype(dtype))
        a = self._arrays.get(k)
        if a is None:
            if len(self._arrays) >= self._max:
                self._arrays.clear()
                self._ids.clear()
            a = self._arrays[k] = np.empty(shape, dtype)
            self._ids.add(id(a))
        return a

    def __getstate__(self):
        return {"_arrays": self._arrays, "_max": self._max}

    def __setstate__(self, state):
        # A copy (pickle, copy.deepcopy) has new arrays: their ids, not the original's.
        self.__dict__.update(state)
        self._ids = {id(a) for a in self._arrays.values()}

    def holds(self, x: np.ndarray) -> bool:
        """Whether ``x`` is one of these arrays or a view of one (what a forward may overwrite)."""
        owner = x if x.base is None else x.base  # numpy points a view of a view at the owner
        return id(owner) in self._ids
