"""Backend selection: ``"numba"`` runs :mod:`fastbp.kernels`, ``"numpy"`` their twins."""

import functools

import numpy as np

from . import kernels, reference
from ._validate import choice
from .jit import IDENTITY, RELU, SIGMOID, TANH

BACKENDS = {"numba": kernels, "numpy": reference}

ACTIVATIONS = {
    None: IDENTITY,
    "identity": IDENTITY,
    "relu": RELU,
    "sigmoid": SIGMOID,
    "tanh": TANH,
}


def get(backend: str):
    """The kernel module for ``backend`` (``"numba"`` or ``"numpy"``)."""
    module = BACKENDS.get(backend) if isinstance(backend, str) else None  # the fast path: called every batch
    return module if module is not None else BACKENDS[choice(backend, "backend", tuple(BACKENDS))]


@functools.lru_cache(maxsize=64)
def zero_bias(width: int, dtype) -> np.ndarray:
    """A shared zeros vector: the bias of a layer without one (kernels only read it)."""
    return np.zeros(width, dtype)


def bias_scratch(width: int, dtype) -> np.ndarray:
    """Workspace for :func:`fastbp.kernels.bias_grad`: (CHUNKS, width)."""
    return np.empty((kernels.linear.CHUNKS, width), dtype)


def activation_code(name) -> int:
    """The kernels' code for an activation name (None and "identity" are the same)."""
    return ACTIVATIONS[choice(name, "activation", tuple(ACTIVATIONS))]
