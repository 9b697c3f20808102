"""Full MLP training step: fastbp, the same algorithm in plain numpy, and the BLAS-only floor.

pytest benchmarks --benchmark-group-by=param:batch,param:optimizer
Ratios for claims come from benchmarks/threading_report.py (interleaved, one process).
"""

import pytest

from fastbp.bench import BlasFloor, FastbpStep, NumpyMLP, make_problem

BATCHES = [32, 256, 1024]


CASES = [("fastbp", "sgd"), ("numpy", "sgd"), ("fastbp", "adam"), ("numpy", "adam"), ("blas_floor", "none")]


@pytest.mark.parametrize("batch", BATCHES, ids=[f"batch{b}" for b in BATCHES])
@pytest.mark.parametrize("impl,optimizer", CASES, ids=[f"{i}-{o}" for i, o in CASES])
def test_mlp_step(benchmark, impl, optimizer, batch):
    model, x, y = make_problem(batch=batch)
    if impl == "fastbp":
        step = FastbpStep(model, x, y, optimizer).step
    elif impl == "numpy":
        step = NumpyMLP(model, x, y, optimizer).step
    else:
        step = BlasFloor(model, x).step  # the matmuls alone: no optimizer
    step()  # warm-up: numba compilation happens here, not in the timed body
    benchmark(step)
