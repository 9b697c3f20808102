"""fastbp: JIT-accelerated backpropagation for MLPs on the CPU.

numba kernels fuse everything around the BLAS matmuls (bias, activations,
softmax-cross-entropy, bias reduction); each has a plain-numpy twin in
:mod:`fastbp.reference` used as test oracle and benchmark baseline.
"""

from . import checkpoint, datasets, jit, kernels, ops, reference, schedules
from .io import load, save
from .layers import (
    ELU,
    GELU,
    BatchNorm1d,
    Dropout,
    Identity,
    Layer,
    LayerNorm,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Standardize,
    Tanh,
)
from .losses import BCEWithLogits, CrossEntropy, Loss, MSELoss, SoftmaxCrossEntropy
from .model import Sequential
from .optim import SGD, Adam, AdamW, clip_grad_norm
from .parameter import Parameter
from .threads import get_num_threads, set_num_threads, threading_info
from .training import History, NonFiniteLossError, TrainingInterrupted, evaluate, fit, predict, predict_proba
from .version import __version__

__all__ = [
    "__version__",
    "ops",
    "kernels",
    "reference",
    "datasets",
    "schedules",
    "checkpoint",
    "jit",
    "SGD",
    "Adam",
    "AdamW",
    "clip_grad_norm",
    "fit",
    "evaluate",
    "predict",
    "predict_proba",
    "History",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "save",
    "load",
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
    "Loss",
    "SoftmaxCrossEntropy",
    "CrossEntropy",
    "MSELoss",
    "BCEWithLogits",
    "Sequential",
    "Parameter",
    "set_num_threads",
    "get_num_threads",
    "threading_info",
]
