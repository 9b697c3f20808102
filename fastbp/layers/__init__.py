"""Layers: ``forward(x) -> y`` and ``backward(dy=None) -> dx``, one per file."""

from .activations import Identity, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer
from .linear import Linear

__all__ = ["Layer", "Linear", "Identity", "ReLU", "Sigmoid", "Tanh", "Softmax"]
