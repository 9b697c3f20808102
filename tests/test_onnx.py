"""ONNX export (fastbp.onnx.export, ``fastbp export``): every file passes onnx.checker and, run in
onnxruntime, gives what fastbp.predict (or the estimator's predict_proba / predict) gives.

Tolerances: float32 ``rtol=1e-5``, float64 ``rtol=1e-12``, and an absolute ``16 eps`` times the
output's largest magnitude, for the values near 0: there the different summation order of
onnxruntime's matmul, and its own Sigmoid/Tanh/Erf, move the result by a few ulps of the
output's scale, which no relative tolerance can take.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastbp
import fastbp.onnx as fonnx
from fastbp import layers as L
from fastbp.cli import main

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

DTYPES = [np.float32, np.float64]
OPSETS = list(range(fonnx.MIN_OPSET, min(fonnx.MAX_OPSET, onnx.defs.onnx_opset_version()) + 1))
DOCS = Path(__file__).resolve().parents[1] / "docs" / "onnx.md"

ACTIVATIONS = [
    (None, None),
    ("identity", None),
    ("relu", None),
    ("sigmoid", None),
    ("tanh", None),
    ("leaky_relu", {"negative_slope": 0.2}),
    ("leaky_relu", {"negative_slope": -0.3}),
    ("elu", {"alpha": 0.7}),
    ("elu", {"alpha": -0.5}),
    ("gelu", None),
    ("gelu", {"approximate": "tanh"}),
    ("gelu_tanh", None),
    ("silu", None),
    ("softplus", None),
    ("softplus", {"beta": 2.0, "threshold": 1.5}),
    ("softplus", {"beta": -1.5, "threshold": 2.0}),
]


def assert_close(got, ref):
    ref = np.asarray(ref)
    assert got.dtype == ref.dtype and got.shape == ref.shape, (got.dtype, got.shape, ref.dtype, ref.shape)
    finite = ref[np.isfinite(ref)]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    eps = float(np.finfo(ref.dtype).eps)
    rtol = 1e-5 if ref.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=16 * eps * scale)


def export_and_run(model, path, x, **kw):
    """Export, check the file with onnx.checker, run it in onnxruntime on ``x``: (output, loaded proto)."""
    fonnx.export(model, path, **kw)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {kw.get("input_name", "input"): x})[0], proto


def inputs(rng, n, m, dtype, scale=3.0):
    return (rng.standard_normal((n, m)) * scale).astype(dtype)


def linear(m_in, m_out, dtype, rng, **kw):
    layer = L.Linear(m_in, m_out, dtype=dtype, seed=int(rng.integers(1 << 30)), **kw)
    if layer.b is not None:
        layer.b.data[:] = rng.standard_normal(m_out)  # a zero bias would hide a missing Add
    return layer


# -- every activation, fused and as a layer ----------------------------------------------
@pytest.mark.parametrize("opset", [13, 17, 20])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,params", ACTIVATIONS, ids=lambda a: str(a))
def test_every_fused_activation(tmp_path, rng, name, params, dtype, opset):
    model = fastbp.Sequential(linear(5, 9, dtype, rng, activation=name, activation_params=params))
    for n in (1, 7):  # the batch dimension is dynamic
        x = inputs(rng, n, 5, dtype)
        got, _ = export_and_run(model, tmp_path / "m.onnx", x, opset=opset)
        assert_close(got, fastbp.predict(model, x))


def _bn(m, dtype, rng, **kw):
    bn = L.BatchNorm1d(m, dtype=dtype, **kw)
    if bn.weight is not None:
        bn.weight.data[:] = rng.uniform(0.5, 2.0, m)
        bn.bias.data[:] = rng.standard_normal(m)
    if bn.track_running_stats:  # nontrivial running statistics
        bn.running_mean[:] = rng.standard_normal(m)
        bn.running_var[:] = rng.uniform(0.2, 3.0, m)
    return bn


def _ln(m, dtype, rng, **kw):
    ln = L.LayerNorm(m, dtype=dtype, **kw)
    if ln.weight is not None:
        ln.weight.data[:] = rng.uniform(0.5, 2.0, m)
        ln.bias.data[:] = rng.standard_normal(m)
    return ln


LAYERS = {
    "ReLU": lambda m, dt, rng: L.ReLU(),
    "Sigmoid": lambda m, dt, rng: L.Sigmoid(),
    "Tanh": lambda m, dt, rng: L.Tanh(),
    "Softmax": lambda m, dt, rng: L.Softmax(),
    "Identity": lambda m, dt, rng: L.Identity(),
    "Dropout": lambda m, dt, rng: L.Dropout(0.4, seed=0),
    "Standardize": lambda m, dt, rng: L.Standardize(rng.standard_normal(m), rng.uniform(0.1, 4, m), dtype=dt),
    "Standardize_inverse": lambda m, dt, rng: L.Standardize(
        rng.standard_normal(m) * 100, rng.uniform(0.1, 40, m), inverse=True, dtype=dt
    ),
    "BatchNorm1d": lambda m, dt, rng: _bn(m, dt, rng),
    "BatchNorm1d_no_affine": lambda m, dt, rng: _bn(m, dt, rng, affine=False, eps=1e-3),
    "BatchNorm1d_batch_stats": lambda m, dt, rng: _bn(m, dt, rng, track_running_stats=False),
    "LayerNorm": lambda m, dt, rng: _ln(m, dt, rng),
    "LayerNorm_no_affine": lambda m, dt, rng: _ln(m, dt, rng, elementwise_affine=False, eps=1e-2),
    "LeakyReLU": lambda m, dt, rng: L.LeakyReLU(0.1),
    "LeakyReLU_negative": lambda m, dt, rng: L.LeakyReLU(-0.5),
    "ELU": lambda m, dt, rng: L.ELU(1.3),
    "GELU": lambda m, dt, rng: L.GELU(),
    "GELU_tanh": lambda m, dt, rng: L.GELU("tanh"),
    "SiLU": lambda m, dt, rng: L.SiLU(),
    "Softplus": lambda m, dt, rng: L.Softplus(),
    "Softplus_beta_threshold": lambda m, dt, rng: L.Softplus(beta=0.5, threshold=1.0),
}


@pytest.mark.parametrize("opset", [13, 16, 17, 20])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_every_layer(tmp_path, rng, kind, dtype, opset):
    model = fastbp.Sequential(linear(4, 6, dtype, rng), LAYERS[kind](6, dtype, rng))
    model.train()  # export is eval mode whatever the model's mode, as predict is
    for n in (1, 7):
        if n == 1 and kind == "BatchNorm1d_batch_stats":
            continue  # fastbp refuses batch statistics of one row (test_batch_norm_without_running_stats)
        x = inputs(rng, n, 4, dtype)
        got, _ = export_and_run(model, tmp_path / "m.onnx", x, opset=opset)
        assert_close(got, fastbp.predict(model, x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_parameter_free_models_take_the_dtype_argument(tmp_path, rng, dtype):
    model = fastbp.Sequential(L.GELU(), L.Softmax())
    x = inputs(rng, 5, 3, dtype)
    got, proto = export_and_run(model, tmp_path / "m.onnx", x, dtype=dtype)
    assert_close(got, fastbp.predict(model, x))
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "features"]
    got, _ = export_and_run(fastbp.Sequential(L.Dropout(0.5)), tmp_path / "d.onnx", x, dtype=dtype)
    assert_close(got, x)  # nothing but an identity still has an output node


# -- numerics at the edges ---------------------------------------------------------------
@pytest.mark.parametrize("opset", [13, 17, 20])
@pytest.mark.parametrize("dtype", DTYPES)
def test_limits_zeros_and_nan(tmp_path, dtype, opset):
    """±inf give fastbp's limits (not -inf * 0 = NaN) where the activation is composed; NaN propagates."""
    x = np.array([[-np.inf, np.inf, np.nan, -0.0, 0.0, -40.0, 40.0, 1e-30]], dtype)
    for layer in (L.GELU(), L.GELU("tanh"), L.SiLU(), L.ELU(), L.LeakyReLU(), L.Softplus(), L.Sigmoid(), L.Tanh()):
        native_gelu = isinstance(layer, L.GELU) and dtype == np.float32 and opset >= 20
        model = fastbp.Sequential(layer)
        got, _ = export_and_run(model, tmp_path / "m.onnx", x, dtype=dtype, opset=opset)
        ref = fastbp.predict(model, x)
        if native_gelu:  # onnxruntime's Gelu op gives NaN at -inf, as PyTorch does
            got, ref = got[:, 1:], ref[:, 1:]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=repr(layer))
        assert_close(np.nan_to_num(got, nan=0.0), np.nan_to_num(ref, nan=0.0))


def test_float64_gelu_tail_is_accurate(tmp_path):
    """The composed erfc (onnxruntime has no double Erf) against math.erfc, out to where GELU underflows."""
    x = np.linspace(-38.0, 8.0, 20001).reshape(1, -1)
    model = fastbp.Sequential(L.GELU())
    got, _ = export_and_run(model, tmp_path / "m.onnx", x, dtype=np.float64)
    exact = np.array([v * 0.5 * math.erfc(-v * 0.7071067811865476) for v in x[0]]).reshape(1, -1)
    normal = np.abs(exact) > 1e-300  # relative all the way down the tail, to the subnormals
    np.testing.assert_allclose(got[normal], exact[normal], rtol=2e-13, atol=0)
    assert_close(got, fastbp.predict(model, x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softplus_threshold_is_fastbps(tmp_path, dtype):
    """Softplus switches to x where beta * x > threshold, where it jumps (ONNX's Softplus has no threshold)."""
    layer = L.Softplus(beta=2.0, threshold=1.0)
    x = np.array([[0.4999, 0.5, np.nextafter(dtype(0.5), dtype(1)), 0.6, -3.0, 50.0]], dtype)
    got, _ = export_and_run(fastbp.Sequential(layer), tmp_path / "m.onnx", x, dtype=dtype)
    ref = fastbp.predict(fastbp.Sequential(layer), x)
    assert ref[0, 3] == x[0, 3] and ref[0, 1] > x[0, 1]  # the jump is there ...
    assert_close(got, ref)  # ... and in the ONNX model too
    big = L.Softplus(threshold=np.inf)  # no threshold at all: log1p(exp(t)) must not overflow
    x = np.array([[100.0, 1000.0, -100.0]], dtype)
    got, _ = export_and_run(fastbp.Sequential(big), tmp_path / "m.onnx", x, dtype=dtype)
    assert_close(got, fastbp.predict(fastbp.Sequential(big), x))


# -- normalization -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_after_training_uses_its_running_statistics(tmp_path, rng, dtype):
    X = (rng.standard_normal((256, 6)) * 3 + 5).astype(dtype)
    y = rng.integers(0, 3, 256)
    model = fastbp.Sequential(
        linear(6, 16, dtype, rng),
        L.BatchNorm1d(16, dtype=dtype),
        L.ReLU(),
        L.Dropout(0.3, seed=1),
        linear(16, 3, dtype, rng),
    )
    opt = fastbp.Adam(model.parameters(), lr=1e-2)
    fastbp.fit(model, X, y, loss=fastbp.SoftmaxCrossEntropy(), optimizer=opt, epochs=2, batch_size=32, progress=False)
    bn = model.layers[1]
    assert bn.num_batches_tracked[0] == 16 and np.abs(bn.running_mean).max() > 0.5  # statistics moved
    assert model.layers[0].training  # still in train mode: export is eval mode all the same
    for n in (1, 7):
        got, _ = export_and_run(model, tmp_path / "m.onnx", X[:n], opset=17)
        assert_close(got, fastbp.predict(model, X[:n]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_without_running_stats_normalizes_each_batch(tmp_path, rng, dtype):
    """As fastbp.predict in one batch: the batch's own mean and biased variance, in eval mode too."""
    model = fastbp.Sequential(linear(3, 5, dtype, rng), _bn(5, dtype, rng, track_running_stats=False))
    x = inputs(rng, 9, 3, dtype) + 100  # offset features: the statistics must not cancel
    got, _ = export_and_run(model, tmp_path / "m.onnx", x, opset=18)
    assert_close(got, fastbp.predict(model, x))
    other, _ = export_and_run(model, tmp_path / "m.onnx", x[:4], opset=18)
    assert_close(other, fastbp.predict(model, x[:4]))
    assert not np.allclose(other, got[:4])  # a different batch, different statistics


# -- random architectures ------------------------------------------------------------------
def _random_model(rng):
    dtype = DTYPES[rng.integers(2)]
    width = int(rng.integers(1, 12))
    layers = []
    if rng.random() < 0.4:
        layers.append(L.Standardize(rng.standard_normal(width) * 10, rng.uniform(0.5, 5, width), dtype=dtype))
    batch_stats = False
    for _ in range(int(rng.integers(1, 5))):
        out = int(rng.integers(1, 12))
        name, params = ACTIVATIONS[rng.integers(len(ACTIVATIONS))]
        layers.append(
            linear(width, out, dtype, rng, activation=name, activation_params=params, bias=rng.random() < 0.8)
        )
        width = out
        extra = rng.integers(6)
        if extra == 1:
            track = rng.random() < 0.8
            batch_stats |= not track
            layers.append(_bn(width, dtype, rng, affine=rng.random() < 0.7, track_running_stats=track))
        elif extra == 2:
            layers.append(_ln(width, dtype, rng, elementwise_affine=rng.random() < 0.7))
        elif extra == 3:
            layers.append(L.Dropout(float(rng.uniform(0, 0.9))))
        elif extra == 4:
            layers.append(LAYERS[sorted(LAYERS)[rng.integers(len(LAYERS))]](width, dtype, rng))
    if rng.random() < 0.3:
        layers.append(L.Softmax())
    return fastbp.Sequential(*layers), dtype, batch_stats


def test_random_architectures(tmp_path):
    rng = np.random.default_rng(2024)
    for trial in range(20):
        model, dtype, batch_stats = _random_model(rng)
        opset = int(rng.choice(OPSETS))
        width = model.layers[0].in_features
        for n in (7,) if batch_stats else (1, 7):
            x = inputs(rng, n, width, dtype, scale=float(rng.uniform(0.5, 4)))
            try:
                got, _ = export_and_run(model, tmp_path / "m.onnx", x, opset=opset)
                assert_close(got, fastbp.predict(model, x))
            except AssertionError as e:
                raise AssertionError(f"trial {trial}, opset {opset}, batch {n}:\n{model!r}\n{e}") from None


def test_every_opset_in_the_range(tmp_path, rng):
    """One model with every layer type at each supported opset (op versions, LayerNormalization, Gelu, ReduceMean)."""
    for dtype in DTYPES:
        layers = [linear(4, 6, dtype, rng, activation="softplus")]
        for kind in sorted(LAYERS):
            layers += [LAYERS[kind](6, dtype, rng), linear(6, 6, dtype, rng, activation="gelu")]
        model = fastbp.Sequential(*layers)
        x = inputs(rng, 7, 4, dtype, scale=1.0)
        ref = fastbp.predict(model, x)
        for opset in OPSETS:
            got, proto = export_and_run(model, tmp_path / "m.onnx", x, opset=opset)
            assert proto.opset_import[0].version == opset
            assert_close(got, ref)


# -- the file: names, dtype, metadata, errors ------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_names_dtype_and_dynamic_batch_in_the_file(tmp_path, rng, dtype):
    model = fastbp.Sequential(linear(3, 4, dtype, rng, activation="relu"), linear(4, 2, dtype, rng))
    x = inputs(rng, 5, 3, dtype)
    got, proto = export_and_run(model, tmp_path / "m.onnx", x, input_name="features", output_name="logits")
    assert_close(got, fastbp.predict(model, x))
    elem = onnx.TensorProto.FLOAT if dtype == np.float32 else onnx.TensorProto.DOUBLE
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("features", "logits")
    for value, width in ((inp, 3), (out, 2)):
        t = value.type.tensor_type
        assert t.elem_type == elem
        assert [(d.dim_param, d.dim_value) for d in t.shape.dim] == [("batch", 0), ("", width)]
    assert all(init.data_type == elem for init in proto.graph.initializer)
    assert proto.producer_name == "fastbp" and proto.producer_version == fastbp.__version__


def test_metadata_round_trip(tmp_path, rng):
    model = fastbp.Sequential(linear(2, 3, np.float32, rng))
    model.metadata = {"classes": ["cat", "dog", 3], "feature_names": ["h", "w"], "task": "classification"}
    path = tmp_path / "m.onnx"
    fonnx.export(model, path, metadata={"extra": {"nested": [1.5, None, True]}})
    stored = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert stored == {**model.metadata, "extra": {"nested": [1.5, None, True]}}
    custom = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert json.loads(custom["classes"]) == ["cat", "dog", 3]
    saved = tmp_path / "m.npz"  # what fastbp.save stores is what export stores, after a load
    fastbp.save(model, saved)
    fonnx.export(fastbp.load(saved), path)
    assert {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props} == model.metadata


class Doubler(L.Layer):
    def __init__(self):
        super().__init__(None)

    def infer(self, x):
        return 2 * x


class MyLinear(L.Linear):
    pass


def test_a_layer_that_cannot_be_exported_is_named(tmp_path, rng):
    path = tmp_path / "m.onnx"
    with pytest.raises(
        TypeError, match=r"model\.layers\[1\]: Doubler cannot be exported to ONNX \(exportable layers: Linear"
    ):
        fonnx.export(fastbp.Sequential(linear(2, 2, np.float32, rng), Doubler()), path)
    with pytest.raises(TypeError, match=r"model\.layers\[0\]: MyLinear cannot be exported"):
        fonnx.export(fastbp.Sequential(MyLinear(2, 2)), path)  # a subclass may compute something else
    assert not path.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"opset": 12}, ValueError, "opset: expected an int in [13, 28], got 12"),
        ({"opset": 29}, ValueError, "opset: expected an int in [13, 28], got 29"),
        ({"opset": "17"}, TypeError, "opset: expected an int in [13, 28], got str '17'"),
        ({"opset": 17.0}, TypeError, "opset: expected an int in [13, 28], got float 17.0"),
        ({"input_name": ""}, TypeError, "input_name: expected a non-empty str, got str ''"),
        ({"output_name": "input"}, ValueError, "output_name: expected a name other than input_name"),
        (
            {"dtype": np.float64},
            ValueError,
            "dtype: expected None or float32 (the model's parameters' dtype), got float64",
        ),
        ({"dtype": np.int32}, TypeError, "dtype: expected float32 or float64, got int32"),
        ({"metadata": [1]}, TypeError, "metadata: expected a dict or None, got list"),
        ({"metadata": {"x": object()}}, TypeError, "metadata['x']: expected a JSON-serialisable value"),
        ({"metadata": {1: "x"}}, TypeError, "metadata: expected str keys, got int 1"),
    ],
)
def test_bad_arguments_are_named(tmp_path, rng, kwargs, error, message):
    model = fastbp.Sequential(linear(2, 2, np.float32, rng))
    with pytest.raises(error) as info:
        fonnx.export(model, tmp_path / "m.onnx", **kwargs)
    assert message in str(info.value)
    assert os.listdir(tmp_path) == []


def test_bad_models_and_paths_are_named(tmp_path, rng):
    model = fastbp.Sequential(linear(2, 2, np.float32, rng))
    with pytest.raises(TypeError, match="model: expected a fastbp Sequential or a fitted fastbp.sklearn .*, got list"):
        fonnx.export([model], tmp_path / "m.onnx")
    missing = tmp_path / "no" / "m.onnx"
    with pytest.raises(
        FileNotFoundError, match=f"path: expected a file in an existing folder, got {re.escape(repr(str(missing)))}"
    ):
        fonnx.export(model, missing)
    with pytest.raises(IsADirectoryError, match="path: expected a file name, got the folder"):
        fonnx.export(model, tmp_path)
    with pytest.raises(TypeError, match="path: expected a str or PathLike file name, got int 3"):
        fonnx.export(model, 3)
    mismatched = fastbp.Sequential(L.Linear(2, 3), L.LayerNorm(4))
    with pytest.raises(
        ValueError, match=r"model\.layers\[1\]: LayerNorm takes 4 features, the layers before it give 3"
    ):
        fonnx.export(mismatched, tmp_path / "m.onnx")


def test_the_file_is_written_atomically(tmp_path, rng, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    model = fastbp.Sequential(linear(2, 2, np.float32, rng))
    proto = fonnx.export(model, path)
    assert path.read_bytes() == proto.SerializeToString() and os.listdir(tmp_path) == ["m.onnx"]
    calls = []
    monkeypatch.setattr(fonnx, "write_atomically", lambda p, write: calls.append(p))
    fonnx.export(model, path)
    assert calls == [str(path)]  # the write goes through fastbp.io.write_atomically


def test_without_onnx_the_error_says_how_to_install(tmp_path, rng, monkeypatch, capsys):
    model = fastbp.Sequential(linear(2, 2, np.float32, rng))
    fastbp.save(model, tmp_path / "m.npz")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    with pytest.raises(ImportError, match=r'pip install "fastbp\[onnx\]"'):
        fonnx.export(model, tmp_path / "m.onnx")
    assert main(["export", "--model", str(tmp_path / "m.npz"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastbp export: error: ONNX export needs the onnx package") and len(err.splitlines()) == 1
    assert 'pip install "fastbp[onnx]"' in err and not (tmp_path / "m.onnx").exists()


def test_importing_fastbp_never_imports_onnx():
    code = (
        "import sys, fastbp, fastbp.onnx, fastbp.onnx._graph, fastbp.cli; fastbp.cli.parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the command line -----------------------------------------------------------------------
def test_cli_exports_a_saved_model(tmp_path, rng, capsys):
    dtype = np.float64
    model = fastbp.Sequential(
        L.Standardize([1.0, -2.0, 3.0], [2.0, 0.5, 1.0], dtype=dtype),
        linear(3, 8, dtype, rng, activation="gelu"),
        _bn(8, dtype, rng),
        linear(8, 2, dtype, rng),
        L.Standardize([10.0, 20.0], [3.0, 4.0], inverse=True, dtype=dtype),
    )
    model.metadata = {"task": "regression", "feature_names": ["a", "b", "c"]}
    fastbp.save(model, tmp_path / "m.npz")
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(tmp_path / "m.npz"), "--onnx", str(out), "--opset", "20"]) == 0
    assert capsys.readouterr().out == f"wrote {out}: ONNX opset 20, input (batch, 3) -> output (batch, 2)\n"
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 20
    assert json.loads({p.key: p.value for p in proto.metadata_props}["feature_names"]) == ["a", "b", "c"]
    x = inputs(rng, 7, 3, dtype)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert_close(got, fastbp.predict(model, x))
    assert main(["export", "--model", str(tmp_path / "m.npz"), "--onnx", str(out)]) == 0
    assert onnx.load(str(out)).opset_import[0].version == fonnx.DEFAULT_OPSET


@pytest.mark.parametrize(
    "args,message",
    [
        (["--opset", "12"], "argument --opset: expected an integer from 13 to 28, got '12'"),
        (["--opset", "x"], "argument --opset: expected an integer from 13 to 28, got 'x'"),
        (["--onnx", "{tmp}/m.txt"], "argument --onnx: expected a file name ending in .onnx (the format)"),
        (["--onnx", "{tmp}/no/m.onnx"], "argument --onnx: folder {tmp}/no does not exist"),
        (["--model", "{tmp}/none.npz"], "argument --model: no such file: {tmp}/none.npz"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(tmp_path, rng, capsys, args, message):
    fastbp.save(fastbp.Sequential(linear(2, 2, np.float32, rng)), tmp_path / "m.npz")
    argv = {"--model": str(tmp_path / "m.npz"), "--onnx": str(tmp_path / "m.onnx")}
    argv.update(dict(zip(args[::2], [a.format(tmp=tmp_path) for a in args[1::2]])))
    with pytest.raises(SystemExit) as info:
        main(["export", *[s for kv in argv.items() for s in kv]])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert message.format(tmp=tmp_path) in err
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_cli_error_from_the_model_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_text("not a model")
    assert main(["export", "--model", str(bad), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err == f"fastbp export: error: {bad}: not a fastbp model file (not an .npz archive)\n"


# -- scikit-learn estimators ----------------------------------------------------------------
def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a few iterations are enough here
        return est.fit(X, y)


def _run_estimator(est, X, tmp_path, **kw):
    got, proto = export_and_run(est, tmp_path / "e.onnx", X.astype(est.coefs_[0].dtype), **kw)
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    return got, meta


CLASSIFIERS = {
    "default": {},
    "float32": {"dtype": np.float32},
    "tanh_dropout": {"activation": "tanh", "dropout": 0.3},
    "logistic_batch_norm": {"activation": "logistic", "batch_norm": True},
    "identity_both": {"activation": "identity", "batch_norm": True, "dropout": 0.2, "dtype": np.float32},
}


@pytest.mark.parametrize("target", ["multiclass", "binary", "multilabel"])
@pytest.mark.parametrize("config", sorted(CLASSIFIERS))
def test_classifier_exports_predict_proba(tmp_path, rng, target, config):
    pytest.importorskip("sklearn")
    from fastbp.sklearn import MLPClassifier

    X = rng.standard_normal((120, 5))
    if target == "multiclass":
        y = np.array(["setosa", "versicolor", "virginica"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)]
    elif target == "binary":
        y = X[:, 0] + X[:, 2] > 0
    else:
        y = (X[:, :3] > 0).astype(int)
    est = _fit(MLPClassifier((8, 6), max_iter=30, random_state=0, **CLASSIFIERS[config]), X, y)
    got, meta = _run_estimator(est, X, tmp_path)
    ref = est.predict_proba(X)
    assert_close(got, ref)
    assert got.shape == (120, 2 if target == "binary" else 3)
    assert meta["classes"] == est.classes_.tolist() and meta["output"] == "predict_proba"
    assert meta["task"] == "classification" and meta["estimator"] == "MLPClassifier"
    labels = np.asarray(meta["classes"])[got.argmax(axis=1)]  # what a server does with the metadata
    if target != "multilabel":
        assert (labels == est.predict(X)).mean() > 0.99


@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("config", ["default", "float32", "relu_batch_norm_dropout", "poisson"])
def test_regressor_exports_predict(tmp_path, rng, outputs, config):
    pytest.importorskip("sklearn")
    from fastbp.sklearn import MLPRegressor

    params = {
        "default": {},
        "float32": {"dtype": np.float32, "activation": "tanh"},
        "relu_batch_norm_dropout": {"batch_norm": True, "dropout": 0.25},
        "poisson": {"loss": "poisson"},
    }[config]
    X = rng.standard_normal((100, 4))
    Y = np.abs(X[:, :outputs] * 2 + X[:, 1:2]) if outputs > 1 else np.abs(X[:, 0] + X[:, 1])
    est = _fit(MLPRegressor(hidden_layer_sizes=(7,), max_iter=40, random_state=0, **params), X, Y)
    got, meta = _run_estimator(est, X, tmp_path)
    assert_close(got, est.predict(X))  # (n,) for one output, as predict
    assert meta["output"] == "predict" and meta["out_activation"] == est.out_activation_
    assert "classes" not in meta and meta["n_features"] == 4


def test_estimator_metadata_feature_names_and_errors(tmp_path, rng):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("sklearn")
    from fastbp.sklearn import MLPClassifier

    X = pd.DataFrame(rng.standard_normal((60, 3)), columns=["height", "weight", "age"])
    y = np.where(X["height"] > 0, "tall", "short")
    with pytest.raises(ValueError, match="not fitted"):
        fonnx.export(MLPClassifier(), tmp_path / "e.onnx")
    est = _fit(MLPClassifier((4,), max_iter=5, random_state=0), X, y)
    got, meta = _run_estimator(est, X.to_numpy(), tmp_path, metadata={"version": 2})
    assert meta["feature_names"] == ["height", "weight", "age"] and meta["classes"] == ["short", "tall"]
    assert meta["version"] == 2 and meta["n_features"] == 3
    assert_close(got, est.predict_proba(X))
    with pytest.raises(ValueError, match="dtype: expected None or float64"):
        fonnx.export(est, tmp_path / "e.onnx", dtype=np.float32)


# -- the docs ------------------------------------------------------------------------------
def test_docs_example_runs(tmp_path, monkeypatch):
    block = re.search(r"<!-- onnx-example -->\n```python\n(.*?)```", DOCS.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "docs/onnx.md", "exec"), ns)
    assert_close(ns["output"], fastbp.predict(ns["model"], ns["X"]))
