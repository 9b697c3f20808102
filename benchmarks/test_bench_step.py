"""Full MLP training step: fastbp, the same algorithm in plain numpy, and the BLAS-only floor.

pytest benchmarks --benchmark-group-by=param:batch,param:optimizer
Ratios for claims come from benchmarks/threading_report.py (interleaved, one process).
"""

import pytest

from fastbp.bench import BlasFloor, FastbpStep, NumpyMLP, make_problem

BATCHES = [32, 256, 1024]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("batch", BATCHES, ids=[f"batch{b}" for b in BATCHES])
@pytest.mark.parametrize("impl", ["fastbp", "numpy", "blas_floor"])
def test_mlp_step(benchmark, impl, batch, optimizer):
    model, x, y = make_problem(batch=batch)
    if impl == "fastbp":
        step = FastbpStep(model, x, y, optimizer).step
    elif impl == "numpy":
        step = NumpyMLP(model, x, y, optimizer).step
    else:
        if optimizer == "adam":
            pytest.skip("the BLAS floor has no optimizer")  # one floor row per batch is enough
        step = BlasFloor(model, x).step
    step()  # warm-up: numba compilation happens here, not in the timed body
    benchmark(step)
