"""Full training step: fastbp, the same algorithm in plain numpy, PyTorch CPU, and the BLAS-only floor.

pytest benchmarks/test_bench_step.py --benchmark-group-by=param:mlp,param:dtype,param:optimizer,param:batch

``test_regularized_step``: MLP 784-512-256-10 with each hidden Linear followed by
BatchNorm1d, ReLU and Dropout(0.2) as separate layers, SGD with momentum 0.9 or
Adam, float32 (``--benchmark-group-by=param:optimizer,param:batch``).

Ratios for claims come from ``fastbp bench`` (each side in its own process, taking
turns): here PyTorch runs in the same process, where its spinning OpenMP workers
can slow the benchmarks that follow it.
"""

import numpy as np
import pytest

from fastbp.bench import BlasFloor, FastbpStep, NumpyMLP, TorchMLP, make_problem
from fastbp.bench.mlp import SGD_MOMENTUM, NumpyRegularizedMLP, make_regularized_problem
from fastbp.bench.torch_mlp import TorchRegularizedMLP

MLPS = {"784-512-256-10": (784, 512, 256, 10), "1024-2048-2048-10": (1024, 2048, 2048, 10)}
BATCHES = [16, 32, 64, 128, 256, 512, 1024]
CASES = [(i, o) for o in ("sgd", "adam") for i in ("fastbp", "numpy", "torch")] + [("blas_floor", "none")]


@pytest.mark.parametrize("batch", BATCHES, ids=[f"batch{b}" for b in BATCHES])
@pytest.mark.parametrize("impl,optimizer", CASES, ids=[f"{i}-{o}" for i, o in CASES])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mlp", list(MLPS))
def test_mlp_step(benchmark, mlp, dtype, impl, optimizer, batch):
    if impl == "torch":
        pytest.importorskip("torch")
    model, x, y = make_problem(MLPS[mlp], batch, np.dtype(dtype))
    if impl == "fastbp":
        step = FastbpStep(model, x, y, optimizer).step
    elif impl == "numpy":
        step = NumpyMLP(model, x, y, optimizer).step
    elif impl == "torch":
        step = TorchMLP(model, x, y, optimizer).step
    else:
        step = BlasFloor(model, x).step  # the matmuls alone: no optimizer
    step()  # warm-up: numba compilation happens here, not in the timed body
    benchmark(step)


REG_BATCHES = [32, 256, 1024]


@pytest.mark.parametrize("batch", REG_BATCHES, ids=[f"batch{b}" for b in REG_BATCHES])
@pytest.mark.parametrize("impl,optimizer", CASES, ids=[f"{i}-{o}" for i, o in CASES])
def test_regularized_step(benchmark, impl, optimizer, batch):
    if impl == "torch":
        pytest.importorskip("torch")
    model, x, y = make_regularized_problem((784, 512, 256, 10), batch, np.float32)
    momentum = SGD_MOMENTUM if optimizer == "sgd" else 0.0
    if impl == "fastbp":
        step = FastbpStep(model, x, y, optimizer, momentum=momentum).step
    elif impl == "numpy":
        step = NumpyRegularizedMLP(model, x, y, optimizer, momentum=momentum).step
    elif impl == "torch":
        step = TorchRegularizedMLP(model, x, y, optimizer, momentum=momentum).step
    else:
        step = BlasFloor(model, x).step  # the three Linear layers' matmuls alone
    step()  # warm-up: numba compilation happens here, not in the timed body
    benchmark(step)
