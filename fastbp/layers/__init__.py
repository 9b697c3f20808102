"""Layers: ``forward(x) -> y`` and ``backward(dy=None) -> dx``.

``base.py`` holds the base class, ``linear.py`` :class:`Linear`, and ``activations.py``
the parameter-free activation layers and Softmax, ``scaling.py``
:class:`Standardize`."""

from .activations import ELU, GELU, Identity, LeakyReLU, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from .base import Layer
from .dropout import Dropout
from .linear import Linear
from .norm import BatchNorm1d, LayerNorm
from .scaling import Standardize

__all__ = [
    "Layer",
    "Linear",
    "Identity",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "Standardize",
    "Dropout",
    "BatchNorm1d",
    "LayerNorm",
    "LeakyReLU",
    "ELU",
    "GELU",
    "SiLU",
    "Softplus",
]
