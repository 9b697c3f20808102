"""Layers: ``forward(x) -> y`` and ``backward(dy=None) -> dx``.

``linear.py`` holds :class:`Linear`; ``activations.py`` the parameter-free activation layers and Softmax; ``base.py`` the base class."""

from .activations import Identity, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer
from .linear import Linear

__all__ = ["Layer", "Linear", "Identity", "ReLU", "Sigmoid", "Tanh", "Softmax"]
