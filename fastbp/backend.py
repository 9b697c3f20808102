"""Backend selection: ``"numba"`` runs :mod:`fastbp.kernels`, ``"numpy"`` their twins."""

import functools

import numpy as np

from . import kernels, reference
from ._validate import choice

BACKENDS = {"numba": kernels, "numpy": reference}

ACTIVATIONS = {
    None: kernels.IDENTITY,
    "identity": kernels.IDENTITY,
    "relu": kernels.RELU,
    "sigmoid": kernels.SIGMOID,
    "tanh": kernels.TANH,
}


def get(backend: str):
    """The kernel module for ``backend`` (``"numba"`` or ``"numpy"``)."""
    return BACKENDS[choice(backend, "backend", tuple(BACKENDS))]


@functools.lru_cache(maxsize=64)
def zero_bias(width: int, dtype) -> np.ndarray:
    """A shared zeros vector: the bias of a layer without one (kernels only read it)."""
    return np.zeros(width, dtype)


def bias_scratch(width: int, dtype) -> np.ndarray:
    """Workspace for :func:`fastbp.kernels.bias_grad`: (CHUNKS, width)."""
    return np.empty((kernels.linear.CHUNKS, width), dtype)


def activation_code(name) -> int:
    if name not in ACTIVATIONS:
        opts = ", ".join(repr(k) for k in ACTIVATIONS)
        raise ValueError(f"activation: expected one of {opts}, got {name!r}")
    return ACTIVATIONS[name]
