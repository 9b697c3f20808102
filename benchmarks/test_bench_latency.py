"""Inference latency: one predict call at batch 1, 8, 64, fastbp against numpy, PyTorch and ONNX Runtime.

pytest benchmarks/test_bench_latency.py --benchmark-group-by=param:mlp,param:batch

Here every runtime shares one process; the ratios quoted in docs/performance.md
come from ``python benchmarks/inference_latency.py`` (or ``fastbp bench``), which
runs each runtime in its own process, turns interleaved.
"""

import pytest

from fastbp.bench.latency import build

MLPS = {"784-512-256-10": (784, 512, 256, 10), "64-100-10": (64, 100, 10)}
BATCHES = [1, 8, 64]
IMPLS = ["fastbp", "numpy", "floor", "torch", "onnxruntime"]
NEEDS = {"torch": ["torch"], "onnxruntime": ["onnx", "onnxruntime"]}


@pytest.mark.parametrize("batch", BATCHES, ids=[f"batch{b}" for b in BATCHES])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mlp", list(MLPS))
def test_predict_latency(benchmark, mlp, impl, batch):
    for module in NEEDS.get(impl, []):
        pytest.importorskip(module)
    call = build(impl, MLPS[mlp], batch, "float32")
    call()  # warm-up: numba compilation, ONNX Runtime's first run
    benchmark(call)
