"""Layers: ``forward(x) -> y`` and ``backward(dy=None) -> dx``.

``base.py`` holds the base class, ``linear.py`` :class:`Linear`, and ``activations.py``
the parameter-free activation layers and Softmax, ``scaling.py``
:class:`Standardize`."""

from .activations import Identity, ReLU, Sigmoid, Softmax, Tanh
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
]
