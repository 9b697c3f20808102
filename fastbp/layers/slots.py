"""Layer attributes that kernels read: reassigning one is checked, because numba does not bounds-check.

The first assignment (in the layer's constructor) fixes what the attribute is:
a :class:`~fastbp.Parameter` or an array of some shape and dtype, or None. Later
assignments (``layer.W = Parameter(...)``, ``bn.running_var = a``) must match
it, so the next kernel call never sees an array it was not built for.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..parameter import Parameter

_UNSET = object()


class _Slot:
    kind = ""

    def __set_name__(self, owner, name):
        self.name, self.attr = name, "_slot_" + name
        # The class gets a property that reads through C (attrgetter) and sets through the
        # checks below: a training step reads these attributes dozens of times, and there each
        # Python-level getter call costs (docs/normalization.md, "Fusion in Sequential").
        setattr(owner, name, property(operator.attrgetter(self.attr), self.__set__, doc=self.__doc__))

    if TYPE_CHECKING:  # what the property set up above returns, for type checkers

        def __get__(self, obj, objtype=None) -> Any: ...

    def __set__(self, obj, value):
        old = getattr(obj, self.attr, _UNSET)
        # ``is``: an in-place update (``drop._step += 1``) assigns the same array on every step.
        if old is not _UNSET and old is not value:
            self._check(old, value)
        setattr(obj, self.attr, value)

    def _check(self, old, new):
        if old is None or new is None:
            if old is not new:
                was = "None" if old is None else f"a {self._describe(old)}"
                raise ValueError(f"{self.name}: this layer was built with {was}; it cannot become {new!r:.60}")
            return
        if not isinstance(new, Parameter if self.kind == "parameter" else np.ndarray):
            raise TypeError(f"{self.name}: expected a {self._describe(old)}, got {type(new).__name__}")
        if new.shape != old.shape or new.dtype != old.dtype:
            raise ValueError(
                f"{self.name}: expected a {self._describe(old)}, got {new.dtype} of shape {tuple(new.shape)}"
            )
        if self.kind == "array" and (not new.flags.c_contiguous or not new.flags.writeable):
            raise ValueError(f"{self.name}: expected a {self._describe(old)}, got a read-only or non-contiguous array")

    def _describe(self, old) -> str:
        if self.kind == "parameter":
            return f"Parameter of shape {tuple(old.shape)} and dtype {old.dtype}"
        return f"writeable C-contiguous {old.dtype} array of shape {tuple(old.shape)}"


class ParameterSlot(_Slot):
    """An attribute holding a Parameter (or None): later ones must have the same shape and dtype."""

    kind = "parameter"


class ArraySlot(_Slot):
    """An attribute holding a state array (or None) that kernels update: later ones must match it."""

    kind = "array"
