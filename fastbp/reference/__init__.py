"""Plain-numpy twins of every kernel in :mod:`fastbp.kernels`.

Same names, same signatures, same semantics, written the idiomatic numpy way.
They are the test oracle for the kernels and the baseline in the benchmarks.
"""

from .activations import (
    act_backward,
    act_backward_param,
    bias_act,
    bias_act_param,
    softmax_backward,
    softmax_forward,
)
from .linear import bias_grad
from .losses import bce_logits, count_hits, mse, softmax_xent_labels, softmax_xent_probs, xent_labels, xent_probs
from .optim import adam, scale_, sgd, sum_squares

__all__ = [
    "sgd",
    "adam",
    "sum_squares",
    "scale_",
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
