"""numba kernels: trust their inputs, write into the buffers they are given.

Every kernel here has a plain-numpy twin of the same name and signature in
:mod:`fastbp.reference`. Validation happens in :mod:`fastbp.ops` before a kernel
runs: numba does not bounds-check.
"""

from ..jit import ELU, GELU, GELU_TANH, IDENTITY, LEAKY_RELU, RELU, SIGMOID, SILU, SOFTPLUS, TANH
from .activations import (
    act_backward,
    act_backward_param,
    bias_act,
    bias_act_param,
    softmax_backward,
    softmax_forward,
)
from .linear import bias_grad
from .losses import (
    bce_logits,
    count_hits,
    mse,
    softmax_xent_labels,
    softmax_xent_probs,
    xent_labels,
    xent_probs,
)
from .optim import adam, scale_, sgd, sum_squares

__all__ = [
    "sgd",
    "adam",
    "sum_squares",
    "scale_",
    "IDENTITY",
    "RELU",
    "SIGMOID",
    "TANH",
    "LEAKY_RELU",
    "ELU",
    "GELU",
    "GELU_TANH",
    "SILU",
    "SOFTPLUS",
    "bias_act",
    "act_backward",
    "bias_act_param",
    "act_backward_param",
    "softmax_forward",
    "softmax_backward",
    "bias_grad",
    "softmax_xent_labels",
    "softmax_xent_probs",
    "xent_labels",
    "xent_probs",
    "mse",
    "bce_logits",
    "count_hits",
]
