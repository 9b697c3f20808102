"""Benchmark building blocks: problems, the numpy baseline, the BLAS floor, interleaved timing."""

from .mlp import BlasFloor, FastbpStep, NumpyMLP, make_problem
from .timing import interleaved
from .torch_mlp import TorchMLP, step_flops

__all__ = ["make_problem", "FastbpStep", "NumpyMLP", "BlasFloor", "TorchMLP", "step_flops", "interleaved"]
