"""The latency benchmark's runtimes compute the same outputs (so their times compare like for like)."""

import numpy as np
import pytest

from fastbp.bench import latency
from fastbp.bench.mlp import make_problem
from fastbp.bench.runner import family

NEEDS = {"torch": ["torch"], "onnxruntime": ["onnx", "onnxruntime"]}


@pytest.mark.parametrize("impl", ["numpy", "torch", "onnxruntime"])
@pytest.mark.parametrize("sizes,batch", [((64, 100, 10), 1), ((30, 20, 7), 8)])
def test_runtimes_agree_with_fastbp(impl, sizes, batch):
    for module in NEEDS.get(impl, []):
        pytest.importorskip(module)
    model, x, _ = make_problem(sizes, batch, np.float32, seed=0)
    expected = model.predict(x)
    got = latency.build(impl, sizes, batch, "float32")()
    got = np.asarray(got[0] if isinstance(got, list) else got)
    # Same float32 weights and rows; different BLAS kernels and summation orders.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_floor_is_the_matmuls_alone():
    model, x, _ = make_problem((30, 20, 7), 5, np.float32, seed=0)
    h = x
    for layer in model.layers:
        h = h @ layer.W.data
    np.testing.assert_allclose(latency.build("floor", (30, 20, 7), 5, "float32")(), h, rtol=1e-6)


def test_every_runtime_gets_its_own_process():
    cfg = {"task": "predict"}
    assert len({family(cfg, i) for i in latency.PREDICT_IMPLS}) == len(latency.PREDICT_IMPLS)
    assert family({}, "numpy") == family({}, "fastbp")  # training steps share one, as before


def test_unknown_impl_is_named():
    with pytest.raises(ValueError, match="impl: expected one of .* got 'tensorflow'"):
        latency.build("tensorflow", (4, 3), 1, "float32")


def test_latency_table_runs_every_runtime_in_its_own_process(capsys):
    impls = latency.available_impls()
    table = latency.latency_table([[8, 16, 4]], [1, 3], rounds=1, impls=impls)
    assert [(r["mlp"], r["batch"]) for r in table] == [("8-16-4", 1), ("8-16-4", 3)]
    for r in table:
        assert list(r["us"]) == impls and all(t > 0 for t in r["us"].values())
        assert set(r["ratios"]) == set(impls) - {"fastbp"}
        for k, ratio in r["ratios"].items():  # left out only where a side stayed unstable
            assert (ratio is None) == bool({"fastbp", k} & set(r["unstable"]))
    latency.format_latency(table)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "8-16-4 float32 batch   1" in lines[1]
