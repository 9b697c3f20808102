"""Damaged, hostile and odd model files, and saves that are killed.

``load`` either returns exactly the saved model or raises ValueError naming the
path and what is wrong, and it allocates or inflates nothing before the
archive's directory and the array headers match what the metadata describes.
``save`` keeps permissions and symbolic links, and the temporary files of a save
killed with SIGKILL are removed by the next save (never a live writer's).

Files are built by hand (:func:`zip_bytes`) where a test needs an archive to
declare what numpy's writer never would.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import zipfile
import zlib
from io import BytesIO

import numpy as np
import pytest

import fastbp
from fastbp import _atomic, io
from fastbp.cli import main

# -- models and files ----------------------------------------------------------------------------


def rich_model():
    """Every kind of entry: Standardize, Linear with and without bias, BatchNorm1d buffers, Dropout state, LayerNorm.

    On the numpy twins: nothing to compile.
    """
    kw = {"dtype": np.float32, "backend": "numpy"}
    return fastbp.Sequential(
        fastbp.Standardize([0.5, -1.0, 2.0, 0.0, 1.0, 3.0], [1.0, 2.0, 0.5, 1.0, 1.0, 4.0], **kw),
        fastbp.Linear(6, 8, activation="tanh", seed=0, **kw),
        fastbp.BatchNorm1d(8, momentum=None, **kw),
        fastbp.ReLU(backend="numpy"),
        fastbp.Dropout(0.25, seed=3, backend="numpy"),
        fastbp.Linear(8, 8, activation="gelu", activation_params={"approximate": "tanh"}, init="glorot", seed=1, **kw),
        fastbp.LayerNorm(8, **kw),
        fastbp.LeakyReLU(0.1, backend="numpy"),
        fastbp.Linear(8, 3, bias=False, seed=2, **kw),
    )


def sgd_model():
    kw = {"dtype": np.float64, "backend": "numpy"}
    return fastbp.Sequential(
        fastbp.Linear(4, 5, seed=4, **kw),
        fastbp.ELU(0.5, backend="numpy"),
        fastbp.Linear(5, 2, seed=5, **kw),
        fastbp.Softmax(backend="numpy"),
    )


def step(model, opt, seed=0):
    """One training step (numpy twins: nothing to compile), so every state array moves off its initial value."""
    width = model.layers[0].in_features
    x = np.random.default_rng(seed).standard_normal((5, width)).astype(model.dtype)
    model.train()
    model.forward(x)
    model.backward()
    opt.step()


def first_step_works(model, opt=None):
    """What the issue calls failing at the first step: predict, then one training step."""
    x = np.random.default_rng(1).standard_normal((4, model.layers[0].in_features))
    model.predict(x)
    if opt is not None:
        step(model, opt, seed=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``{name: path}`` of valid files: "rich" (AdamW in two groups, metadata) and "sgd" (float64, Nesterov)."""
    folder = tmp_path_factory.mktemp("good")
    rich = rich_model()
    adamw = fastbp.AdamW(fastbp.optim.decay_groups(rich.parameters(), 0.01), lr=1e-3, backend="numpy")
    step(rich, adamw)
    rich.metadata = {"task": "classification", "classes": ["a", "b", "c"], "nested": {"x": [1, 2.5, None]}}
    fastbp.save(rich, folder / "rich.npz", optimizer=adamw)
    small = sgd_model()
    sgd = fastbp.SGD(small.parameters(), lr=0.1, momentum=0.9, nesterov=True, backend="numpy")
    step(small, sgd)
    fastbp.save(small, folder / "sgd.npz", optimizer=sgd)
    return {"rich": folder / "rich.npz", "sgd": folder / "sgd.npz"}


def assert_same_model(a, b):
    assert [type(x) for x in a.layers] == [type(y) for y in b.layers]
    assert [x.config() for x in a.layers] == [y.config() for y in b.layers]
    assert [x.dtype for x in a.layers] == [y.dtype for y in b.layers] and a.metadata == b.metadata
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k


def assert_same_optimizer(a, b):
    assert type(a) is type(b) and a.t == b.t
    assert [{k: x for k, x in g.items() if k != "params"} for g in a.param_groups] == [
        {k: x for k, x in g.items() if k != "params"} for g in b.param_groups
    ]
    assert [len(g["params"]) for g in a.param_groups] == [len(g["params"]) for g in b.param_groups]
    for name in a.state:
        assert all(np.array_equal(x, y) for x, y in zip(a.state[name], b.state[name])), name


def entries(path) -> dict:
    """``{entry name without .npy: raw .npy bytes}`` of an archive, in order."""
    with zipfile.ZipFile(path) as zf:
        return {i.filename[:-4]: zf.read(i) for i in zf.infolist()}


def npy(arr, **kw) -> bytes:
    buf = BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=True, **kw)
    return buf.getvalue()


def meta_of(ents: dict) -> dict:
    return json.loads(str(np.lib.format.read_array(BytesIO(ents["__meta__"]))))


def with_meta(ents: dict, meta) -> dict:
    return {**ents, "__meta__": npy(np.array(json.dumps(meta)))}


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def zip_bytes(items) -> bytes:
    """A zip archive of ``(name, data, method, declared size or None, crc or None, flags)`` entries, by hand.

    ``name`` gets no suffix; the declared size and CRC default to the true ones.
    """
    out, central = bytearray(), bytearray()
    for name, data, method, size, crc, flags in items:
        raw = deflate(data) if method == zipfile.ZIP_DEFLATED else data
        size = len(data) if size is None else size
        crc = zlib.crc32(data) if crc is None else crc
        offset, fname = len(out), name.encode()
        out += struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, flags, method, 0, 0x21, crc, len(raw), size, len(fname), 0)
        out += fname + raw
        # name, extra and comment lengths, disk, internal and external attributes, where its local header is
        tail = (len(fname), 0, 0, 0, 0, 0, offset)
        central += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, flags, method, 0, 0x21, crc, len(raw), size, *tail)
        central += fname
    n = len(items)
    return bytes(out + central + struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, n, n, len(central), len(out), 0))


def archive(ents: dict, **special) -> bytes:
    """``ents`` as a stored archive; ``special[name]`` replaces an entry's ``(data, method, size, crc, flags)``."""
    items = []
    for key, data in ents.items():
        data, method, size, crc, flags = special.get(key, (data, zipfile.ZIP_STORED, None, None, 0))
        items.append((f"{key}.npy", data, method, size, crc, flags))
    return zip_bytes(items)


def refused(path, *fragments, **kw) -> str:
    """Load ``path``: a ValueError starting with the path and containing every fragment."""
    with pytest.raises(ValueError) as info:
        fastbp.load(path, **kw)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def peak_bytes(fn):
    """The peak of traced allocations (numpy's included) while ``fn()`` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- valid files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rich", "sgd"])
def test_every_kind_of_entry_round_trips_with_its_optimizer(files, name, tmp_path):
    model, opt = fastbp.load(files[name], with_optimizer=True, backend="numpy")
    fastbp.save(model, tmp_path / "again.npz", optimizer=opt)
    again, again_opt = fastbp.load(tmp_path / "again.npz", with_optimizer=True, backend="numpy")
    assert_same_model(model, again)
    assert_same_optimizer(opt, again_opt)
    assert entries(files[name]).keys() == entries(tmp_path / "again.npz").keys()
    first_step_works(again, again_opt)


def test_config_schema_matches_the_layer_constructors():
    """Every key a layer's config() writes is in io's schema, and every schema key is a constructor argument."""
    assert set(io._CONFIG) == set(io._LAYERS)
    samples = {
        "Linear": fastbp.Linear(2, 3, activation="elu", activation_params={"alpha": 0.5}),
        "BatchNorm1d": fastbp.BatchNorm1d(2),
        "LayerNorm": fastbp.LayerNorm(2),
        "Standardize": fastbp.Standardize([0.0], [1.0]),
        "Dropout": fastbp.Dropout(0.5),
    }
    for name, cls in io._LAYERS.items():
        layer = samples.get(name) or cls()
        arguments = set(inspect.signature(cls.__init__).parameters) - {"self"}
        assert set(layer.config()) <= set(io._CONFIG[name]) <= arguments, name
        for key, value in layer.config().items():
            assert type(value) in io._CONFIG[name][key], (name, key)


@pytest.mark.parametrize("old", ["no layer dtypes", "no optimizer groups", "no optional keys", "linear defaults"])
def test_files_of_earlier_formats_still_load(files, tmp_path, old):
    path = files["sgd"]
    ents = entries(path)
    meta = meta_of(ents)
    if old == "no layer dtypes":  # before per-layer dtypes: the model's dtype for every layer
        for spec in meta["layers"]:
            del spec["dtype"]
    elif old == "no optimizer groups":  # before parameter groups: one optimizer over model.parameters()
        del meta["optimizer"]["groups"]
    elif old == "no optional keys":
        for key in ("fastbp_version", "format", "metadata"):
            del meta[key]
    else:
        for spec in meta["layers"]:
            if spec["type"] == "Linear":
                del spec["config"]["init"], spec["config"]["bias"]
    (tmp_path / "old.npz").write_bytes(archive(with_meta(ents, meta)))
    model, opt = fastbp.load(tmp_path / "old.npz", with_optimizer=True, backend="numpy")
    want, want_opt = fastbp.load(path, with_optimizer=True, backend="numpy")
    assert_same_model(model, want)
    assert_same_optimizer(opt, want_opt)


def test_fortran_order_arrays_load_as_c_order_arrays(files, tmp_path):
    ents = entries(files["rich"])
    w = np.lib.format.read_array(BytesIO(ents["param/1.W"]))
    (tmp_path / "f.npz").write_bytes(archive({**ents, "param/1.W": npy(np.asfortranarray(w))}))
    model = fastbp.load(tmp_path / "f.npz", backend="numpy")
    assert model.layers[1].W.data.flags.c_contiguous and np.array_equal(model.layers[1].W.data, w)
    assert_same_model(model, fastbp.load(files["rich"], backend="numpy"))


# -- the examples: nothing allocated or inflated before the checks ---------------------------


def huge_linear_file(tmp_path, files, variant: str):
    """A small file whose metadata or directory declares a 20000 x 20000 Linear (1.6 GB of float32)."""
    ents = {k: data for k, data in entries(files["sgd"]).items() if not k.startswith("opt/")}
    meta = {**meta_of(ents), "optimizer": None}
    w = np.lib.format.read_array(BytesIO(ents["param/0.W"]))
    special = {}
    if variant == "metadata":
        meta["layers"][0]["config"].update(in_features=20000, out_features=20000)
        meta["layers"][2]["config"]["in_features"] = 20000
    elif variant == "npy header":  # the header claims the big shape; the entry has its true small size
        header = BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (20000, 20000)})
        ents = {**ents, "param/0.W": header.getvalue() + w.tobytes()}
    elif variant == "stored size":  # the directory declares the full size of a stored entry
        special["param/0.W"] = (ents["param/0.W"], zipfile.ZIP_STORED, 20000 * 20000 * 8 + 128, None, 0)
    else:  # a deflated entry declaring 1.6 GB from a few hundred bytes
        special["param/0.W"] = (ents["param/0.W"], zipfile.ZIP_DEFLATED, 20000 * 20000 * 8 + 128, None, 0)
    path = tmp_path / f"huge-{variant.replace(' ', '-')}.npz"
    path.write_bytes(archive(with_meta(ents, meta), **special))
    assert path.stat().st_size < 5000  # most of it the metadata, as UTF-32
    return path


@pytest.mark.parametrize("variant", ["metadata", "npy header", "stored size", "deflated size"])
def test_a_small_file_declaring_a_huge_layer_is_refused_before_allocating(files, tmp_path, variant):
    path = huge_linear_file(tmp_path, files, variant)
    fragment = {
        "metadata": "entry 'param/0.W' holds",
        "npy header": "expected float64 (4, 5), got float64 (20000, 20000)",
        "stored size": "stored uncompressed, yet declares",
        "deflated size": "more than deflate makes",
    }[variant]
    assert peak_bytes(lambda: refused(path, fragment)) < 4 << 20


def test_an_extra_entry_is_refused_unread_however_large(files, tmp_path):
    ents = entries(files["sgd"])
    zeros = bytes(64 << 20)  # 64 MB that deflate to 65 kB; never inflated
    path = tmp_path / "extra.npz"
    path.write_bytes(archive({**ents, "extra": b""}, extra=(zeros, zipfile.ZIP_DEFLATED, None, None, 0)))
    assert path.stat().st_size < 1 << 20
    assert peak_bytes(lambda: refused(path, "unexpected entries ['extra']")) < 4 << 20
    (tmp_path / "small.npz").write_bytes(archive({**ents, "param/9.W": npy(np.zeros(3))}))
    refused(tmp_path / "small.npz", "unexpected entries ['param/9.W']")


@pytest.mark.parametrize("crc", ["of the declared part", "of all the data"])
def test_deflated_data_beyond_the_declared_size_is_never_inflated(files, tmp_path, crc):
    ents = entries(files["sgd"])
    w = ents["param/0.W"]
    data = w + bytes(64 << 20)  # a bomb: 64 MB more than the entry declares
    path = tmp_path / "bomb.npz"
    special = (data, zipfile.ZIP_DEFLATED, len(w), zlib.crc32(w) if crc == "of the declared part" else None, 0)
    path.write_bytes(archive(ents, **{"param/0.W": special}))
    if crc == "of the declared part":  # the declared part is the whole entry: exactly the saved model
        got = []
        assert peak_bytes(lambda: got.append(fastbp.load(path, backend="numpy"))) < 4 << 20
        assert_same_model(got[0], fastbp.load(files["sgd"], backend="numpy"))
    else:
        assert peak_bytes(lambda: refused(path, "param/0.W", "CRC")) < 4 << 20


@pytest.mark.parametrize("depth", [99, 100_000])
def test_deeply_nested_json_is_refused_without_recursing(files, tmp_path, depth):
    ents = entries(files["sgd"])
    meta = meta_of(ents)
    meta["metadata"] = {"x": "deep"}
    text = json.dumps(meta).replace('"deep"', "[" * depth + "]" * depth)  # json.dumps itself would recurse
    (tmp_path / "deep.npz").write_bytes(archive({**ents, "__meta__": npy(np.array(text))}))
    # the file's object, the metadata object, then the arrays
    refused(tmp_path / "deep.npz", f"metadata nests {depth + 2} levels deep (at most 100)")


def nested(depth: int) -> list:
    out: list = []
    for _ in range(depth - 1):
        out = [out]
    return out


def test_nesting_save_accepts_is_nesting_load_accepts(tmp_path):
    model = sgd_model()
    fastbp.save(model, tmp_path / "m.npz", metadata={"x": nested(98)})  # 100 levels in the file
    assert fastbp.load(tmp_path / "m.npz").metadata == {"x": nested(98)}
    with pytest.raises(ValueError, match=r"model: cannot be saved in a form load\(\) reads back: metadata nests 101"):
        fastbp.save(model, tmp_path / "n.npz", metadata={"x": nested(99)})
    assert not (tmp_path / "n.npz").exists()


# -- metadata of the wrong types, values or structure ---------------------------------------------------


def _set(path, value):
    def edit(meta):
        *parents, last = path
        target = meta
        for key in parents:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
        return meta

    return edit


_DELETE = object()
L1 = ("layers", 1)  # the first Linear of the rich model
CONF1 = (*L1, "config")

META_FAULTS = {
    "not an object": (lambda m: [m], "__meta__: expected an object, got an array"),
    "layers not an array": (_set(("layers",), {}), "__meta__['layers']: expected an array, got an object"),
    "no layers": (_set(("layers",), []), "the model has no layers"),
    "layers missing": (_set(("layers",), _DELETE), "__meta__: missing key(s) ['layers']"),
    "unknown top key": (_set(("weights",), 1), "__meta__: unknown key(s) ['weights']"),
    "model dtype": (
        _set(("dtype",), "float16"),
        "__meta__['dtype']: expected 'float32', 'float64' or null, got 'float16'",
    ),
    "model dtype differs": (_set(("dtype",), "float64"), "the model's dtype is 'float64', its layers' 'float32'"),
    "spec not an object": (_set(L1, "Linear"), "layers[1]: expected an object, got a string 'Linear'"),
    "unknown layer type": (_set((*L1, "type"), "Conv2d"), "layers[1]: unknown layer type 'Conv2d'"),
    "type not a string": (_set((*L1, "type"), 7), "layers[1]['type']: expected a string, got an integer 7"),
    "width a string": (_set((*CONF1, "in_features"), "6"), "config['in_features']: expected an integer, got a string"),
    "width a float": (_set((*CONF1, "in_features"), 6.0), "config['in_features']: expected an integer, got a number"),
    "width a bool": (_set((*CONF1, "in_features"), True), "config['in_features']: expected an integer, got true"),
    "width zero": (_set((*CONF1, "in_features"), 0), "layers[1] (Linear): in_features must be >= 1, got 0"),
    "width negative": (_set((*CONF1, "out_features"), -3), "layers[1] (Linear): out_features must be >= 1, got -3"),
    "width missing": (_set((*CONF1, "out_features"), _DELETE), "config: missing key(s) ['out_features']"),
    "widths disagree": (_set(("layers", 5, "config", "in_features"), 9), "takes 9 features, but layers[2]"),
    "unknown config key": (_set((*CONF1, "seed"), 1), "layers[1] (Linear) config: unknown key(s) ['seed']"),
    "config not an object": (_set(CONF1, [6, 8]), "layers[1]['config']: expected an object, got an array [6, 8]"),
    "unknown activation": (_set((*CONF1, "activation"), "swish"), "layers[1] (Linear): activation: expected one of"),
    "activation parameter": (
        _set(("layers", 5, "config", "activation_params"), {"approximate": 3}),
        "layers[5] (Linear): activation_params['approximate']",
    ),
    "init": (_set((*CONF1, "init"), "zeros"), "layers[1] (Linear): init: expected one of 'he', 'glorot'"),
    "eps negative": (_set(("layers", 2, "config", "eps"), -1.0), "layers[2] (BatchNorm1d): eps: expected"),
    "momentum a string": (
        _set(("layers", 2, "config", "momentum"), "0.1"),
        "momentum']: expected a number or null, got a string",
    ),
    "dropout p": (_set(("layers", 4, "config", "p"), 2), "layers[4] (Dropout): p: expected a number in [0, 1]"),
    "mean of strings": (_set(("layers", 0, "config", "mean"), ["a"] * 6), "mean must be an array of numbers"),
    "std zero": (_set(("layers", 0, "config", "std"), [0.0] * 6), "layers[0] (Standardize): std: expected positive"),
    "standardize width": (
        _set(("layers", 0, "config"), {"mean": [0.0] * 5, "std": [1.0] * 5}),
        "layers[1] (Linear) takes 6 features, but layers[0] (Standardize) before it gives 5",
    ),
    "mixed dtypes": (_set((*L1, "dtype"), "float64"), "layers: expected one dtype for all layers"),
    "no dtype for Linear": (_set((*L1, "dtype"), None), "expected 'float32' or 'float64' for a layer with parameters"),
    "metadata an array": (_set(("metadata",), [1]), "__meta__['metadata']: expected an object or null"),
    "format disagrees": (_set(("format",), 2), "file format 2, but the file's marker says 1"),
    "optimizer not an object": (_set(("optimizer",), []), "__meta__['optimizer']: expected an object or null"),
    "optimizer empty": (_set(("optimizer",), {}), "optimizer: missing key(s) ['type', 't', 'hyper']"),
    "unknown optimizer": (_set(("optimizer", "type"), "RMSprop"), "optimizer: unknown optimizer type 'RMSprop'"),
    "step negative": (_set(("optimizer", "t"), -1), "optimizer['t']: expected a step count"),
    "step a float": (_set(("optimizer", "t"), 1.5), "optimizer['t']: expected an integer, got a number 1.5"),
    "lr a string": (_set(("optimizer", "hyper", "lr"), "x"), "optimizer hyper['lr']: expected a number, got a string"),
    "lr negative": (_set(("optimizer", "hyper", "lr"), -1), "optimizer entries do not match the model: lr: expected"),
    "betas short": (_set(("optimizer", "hyper", "betas"), [0.9]), "betas: expected a pair"),
    "hyper of SGD": (_set(("optimizer", "hyper", "momentum"), 0.9), "optimizer hyper: unknown key(s) ['momentum']"),
    "group index": (_set(("optimizer", "groups", 0, "params"), [999]), "expected indices of the model's 9 param"),
    "group twice": (
        _set(("optimizer", "groups", 1, "params"), [0, 2, 3]),
        "optimizer groups: a parameter appears twice",
    ),
}


@pytest.mark.parametrize("fault", META_FAULTS)
def test_metadata_faults_are_named(files, tmp_path, fault):
    edit, fragment = META_FAULTS[fault]
    ents = entries(files["rich"])
    path = tmp_path / "edited.npz"
    path.write_bytes(archive(with_meta(ents, edit(meta_of(ents)))))
    refused(path, fragment, with_optimizer=fault.startswith(("lr", "betas")))


def test_a_width_no_array_vouches_for_is_bounded(tmp_path):
    norm = fastbp.Sequential(fastbp.LayerNorm(64, elementwise_affine=False))
    fastbp.save(norm, tmp_path / "norm.npz")
    assert fastbp.load(tmp_path / "norm.npz").layers[0].num_features == 64
    ents = entries(tmp_path / "norm.npz")
    meta = meta_of(ents)
    meta["layers"][0]["config"]["num_features"] = 10**9  # would allocate 160 GB of workspace
    (tmp_path / "wide.npz").write_bytes(archive(with_meta(ents, meta)))
    assert peak_bytes(lambda: refused(tmp_path / "wide.npz", "declares 1000000000 features and no array")) < 1 << 20


def test_save_refuses_a_model_load_would_refuse(tmp_path):
    broken = fastbp.Sequential(fastbp.Linear(6, 9), fastbp.Linear(5, 4))  # fails at its first step
    with pytest.raises(ValueError, match=r"model: .* layers\[1\] \(Linear\) takes 5 features, but layers\[0\]"):
        fastbp.save(broken, tmp_path / "m.npz")
    with pytest.raises(TypeError, match="metadata: expected a dict, got list"):
        fastbp.save(sgd_model(), tmp_path / "m.npz", metadata=[1])
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(ValueError, match="metadata: expected a JSON-serialisable dict"):
        fastbp.save(sgd_model(), tmp_path / "m.npz", metadata=circular)
    assert os.listdir(tmp_path) == []


def test_a_bad_backend_is_an_argument_error(files):
    with pytest.raises(ValueError, match="^backend: expected one of 'numba', 'numpy', got 'cuda'"):
        fastbp.load(files["sgd"], backend="cuda")


# -- entries that do not match the metadata ------------------------------------------------------------


def _replace(key, arr):
    return lambda ents: archive({**ents, key: npy(arr)})


def _drop(key):
    return lambda ents: archive({k: b for k, b in ents.items() if k != key})


def _array(key, ents):
    return np.lib.format.read_array(BytesIO(ents[key]))


def _changed(key, change):
    def make(ents):
        arr = _array(key, ents).copy()
        change(arr)
        return archive({**ents, key: npy(arr)})

    return make


def _flip(key, offset, *, in_place=False):
    """One byte of an entry inverted: in the entry (its CRC follows) or in the archive (its CRC no longer matches)."""

    def make(ents):
        data = bytearray(archive(ents) if in_place else ents[key])
        at = (bytes(data).index(ents[key]) + offset % len(ents[key])) if in_place else offset
        data[at] ^= 0xFF
        return bytes(data) if in_place else archive({**ents, key: bytes(data)})

    return make


def _declared(key, method=zipfile.ZIP_STORED, size=None, crc=None, flags=0):
    return lambda ents: archive(ents, **{key: (ents[key], method, size, crc, flags)})


def _with_file(name, data):
    def make(ents):
        items = [(f"{k}.npy", d, zipfile.ZIP_STORED, None, None, 0) for k, d in ents.items()]
        return zip_bytes([*items, (name, data, zipfile.ZIP_STORED, None, None, 0)])

    return make


def _bad_unicode(ents):
    return archive({**ents, "__meta__": npy(np.array("ab"))[:-4] + (0x110000).to_bytes(4, "little")})


W1 = "param/1.W"  # float32 (6, 8)
ENTRY_FAULTS = {
    "missing parameter": (_drop(W1), "model entries do not match its architecture: missing param/1.W"),
    "missing optimizer state": (_drop("opt/exp_avg/0"), "optimizer state is incomplete: missing opt/exp_avg/0"),
    "missing marker": (_drop("__fastbp_format__"), "not a fastbp model file (no '__fastbp_format__' entry)"),
    "wrong shape": (
        _replace(W1, np.zeros((6, 7), np.float32)),
        "entry 'param/1.W' (layers[1] (Linear)): expected float32 (6, 8), got float32 (6, 7)",
    ),
    "far too small": (_replace(W1, np.zeros(1, np.float32)), "entry 'param/1.W' holds 132 bytes, but layers[1]"),
    "wrong dtype": (_replace(W1, np.zeros((6, 4), np.float64)), "expected float32 (6, 8), got float64 (6, 4)"),
    "big-endian": (_replace(W1, np.zeros((6, 8), ">f4")), "expected float32 (6, 8), got >f4 (6, 8)"),
    "pickled object": (_replace(W1, np.array([None] * 12, dtype=object)), "holds a pickled object array"),
    "NaN weight": (
        _changed(W1, lambda a: a.__setitem__((2, 3), np.nan)),
        "param/1.W' (layers[1] (Linear): W) holds NaN",
    ),
    "inf state": (_changed("opt/exp_avg/3", lambda a: a.__setitem__(0, np.inf)), "optimizer state exp_avg[3]"),
    "negative variance": (_changed("param/2.running_var", lambda a: a.__setitem__(1, -1)), "holds negative values"),
    "negative count": (_changed("param/2.num_batches_tracked", lambda a: a.__setitem__(0, -1)), "negative values"),
    "negative exp_avg_sq": (_changed("opt/exp_avg_sq/0", lambda a: a.__setitem__((0, 0), -1)), "negative values"),
    "marker a string": (_replace("__fastbp_format__", np.array("1")), "expected a single integer, got <U1 ()"),
    "marker an array": (_replace("__fastbp_format__", np.array([1])), "expected a single integer, got int64 (1,)"),
    "marker zero": (_replace("__fastbp_format__", np.array(0)), "file format 0 (expected 1 to 1)"),
    "metadata an integer": (_replace("__meta__", np.array(3)), "entry '__meta__': expected a single string"),
    "metadata not JSON": (_replace("__meta__", np.array("{'layers': []}")), "corrupted metadata: Expecting property"),
    "metadata not Unicode": (_bad_unicode, "corrupted metadata: 'utf-32-le' codec can't decode"),
    "npy magic": (_flip(W1, 0), "entry 'param/1.W': not a readable .npy array"),
    "npy version 3": (
        lambda e: archive({**e, W1: npy(_array(W1, e), version=(3, 0))}),
        "entry 'param/1.W': .npy format (3, 0)",
    ),
    "npy header": (_flip(W1, 20), "entry 'param/1.W': not a readable .npy array"),
    "data damaged in place": (_flip(W1, -1, in_place=True), "Bad CRC-32 for file 'param/1.W.npy'"),
    "crc": (_declared(W1, crc=0), "Bad CRC-32"),
    "encrypted": (_declared(W1, flags=1), "entry 'param/1.W' is encrypted"),
    "bzip2": (_declared(W1, method=zipfile.ZIP_BZIP2), "entry 'param/1.W': compression method 12"),
    "stored sizes disagree": (_declared(W1, size=100), "stored uncompressed, yet declares 100 bytes in 320"),
    "not .npy": (_with_file("notes.txt", b"hi"), "unexpected entry 'notes.txt'"),
}


@pytest.mark.parametrize("fault", ENTRY_FAULTS)
def test_entry_faults_are_named(files, tmp_path, fault):
    make, fragment = ENTRY_FAULTS[fault]
    path = tmp_path / "edited.npz"
    path.write_bytes(make(entries(files["rich"])))
    refused(path, fragment, with_optimizer=True)


def test_duplicate_and_overlapping_entries_are_refused(files, tmp_path):
    ents = entries(files["sgd"])
    items = [(f"{k}.npy", d, zipfile.ZIP_STORED, None, None, 0) for k, d in ents.items()]
    (tmp_path / "twice.npz").write_bytes(zip_bytes([*items, items[0]]))
    refused(tmp_path / "twice.npz", f"entry {items[0][0][:-4]!r} appears twice")
    raw = bytearray(zip_bytes(items))
    central = raw.rindex(b"PK\x01\x02")  # the last entry's directory record: declare it 10 times larger
    size = struct.unpack_from("<I", raw, central + 20)[0]
    struct.pack_into("<II", raw, central + 20, size * 10, size * 10)
    (tmp_path / "overlap.npz").write_bytes(bytes(raw))
    refused(tmp_path / "overlap.npz", "bytes in a", "truncated, or entries overlap")


# -- fuzzing: any damage is a ValueError naming the path, or the saved model itself ----------------------

JSON_VALUES = [None, True, 0, -1, 1.5, 10**12, 2**70, "x", "float32", [], [1, 2], {}, {"a": 1}, float("nan")]


def _json_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, val in obj.items():
            yield from _json_paths(val, (*prefix, k))
    elif isinstance(obj, list):
        for i, val in enumerate(obj[:8]):
            yield from _json_paths(val, (*prefix, i))


def _mutate_meta(meta, rng):
    paths = [p for p in _json_paths(meta) if p and p[0] != "metadata"]  # the user's metadata is free-form
    path = paths[rng.integers(len(paths))]
    *parents, last = path
    target = meta
    for key in parents:
        target = target[key]
    action = rng.integers(3)
    if action == 0:
        del target[last]
    elif action == 1 or not isinstance(target, dict):
        target[last] = JSON_VALUES[rng.integers(len(JSON_VALUES))]
    else:
        target["unknown"] = 1
    return meta


def _mutate(data: bytes, ents: dict, rng) -> tuple[bytes, bool]:
    """A damaged copy of a file, and whether the damage may leave a valid but different model (edited metadata)."""
    kind = rng.integers(7)
    if kind == 0:  # truncated anywhere
        return data[: rng.integers(len(data))], False
    if kind == 1:  # bytes changed anywhere
        raw = bytearray(data)
        for at in rng.integers(0, len(raw), rng.integers(1, 9)):
            raw[at] = rng.integers(256)
        return bytes(raw), False
    if kind == 2:  # one JSON value of the wrong type, a key gone, or an unknown key
        return archive(with_meta(ents, _mutate_meta(meta_of(ents), rng))), True
    keys = list(ents) if kind == 5 else [k for k in ents if k != "__meta__"]
    key = keys[rng.integers(len(keys))]
    if kind == 3:  # an entry gone, or one more
        if rng.integers(2):
            return archive({**ents, f"{key}x": ents[key]}), False
        return archive({k: d for k, d in ents.items() if k != key}), False
    if kind == 4:  # an entry's array of another shape or dtype
        arr = np.lib.format.read_array(BytesIO(ents[key]))
        other = [arr.astype(np.float16), arr.reshape(-1)[:-1] if arr.size > 1 else np.zeros(2), np.zeros((3, 3))]
        return archive({**ents, key: npy(other[rng.integers(len(other))])}), False
    if kind == 5:  # bytes of an .npy header changed, its CRC following: numpy's header parser sees garbage
        raw = bytearray(ents[key])
        for at in rng.integers(0, min(len(raw), 128), rng.integers(1, 5)):
            raw[at] = rng.integers(256)
        return archive({**ents, key: bytes(raw)}), False
    # the directory declaring other sizes, compression or CRC for one entry
    size = len(ents[key]) + int(rng.choice([-9, -1, 1, 1000, 2**31]))
    method = zipfile.ZIP_DEFLATED if rng.integers(2) else zipfile.ZIP_STORED
    crc = None if rng.integers(2) else int(rng.integers(2**32))
    return archive(ents, **{key: (ents[key], method, max(size, 0), crc, 0)}), False


@pytest.mark.parametrize("name", ["rich", "sgd"])
def test_fuzzed_files_load_as_saved_or_raise_a_value_error_naming_the_path(files, tmp_path, name):
    data = files[name].read_bytes()
    ents = entries(files[name])
    want, want_opt = fastbp.load(files[name], with_optimizer=True, backend="numpy")
    rng = np.random.default_rng(2024)
    path = tmp_path / "fuzzed.npz"
    outcomes = {"refused": 0, "same": 0, "valid edit": 0}
    for case in range(400):
        damaged, may_differ = _mutate(data, ents, rng)
        path.write_bytes(damaged)
        try:
            model, opt = fastbp.load(path, with_optimizer=True, backend="numpy")
        except ValueError as e:
            assert str(e).startswith(f"{path}: "), f"case {case}: {e}"
            outcomes["refused"] += 1
            continue
        except Exception as e:  # the point of the test: no other exception type, ever
            raise AssertionError(f"case {case}: {type(e).__name__}: {e}") from e
        try:
            assert_same_model(model, want)
            assert_same_optimizer(opt, want_opt)
            outcomes["same"] += 1
        except AssertionError:
            assert may_differ, f"case {case}: a damaged file loaded as another model"
            with np.errstate(all="ignore"):  # an lr of 1e12 overflows: a working model, if a poor one
                first_step_works(model, opt)  # an edit load accepts is a model that works
            outcomes["valid edit"] += 1
    assert outcomes["refused"] > 250 and outcomes["same"] > 0, outcomes


# -- save: permissions, symbolic links, devices ------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_save_keeps_the_targets_permission_bits(tmp_path, mode):
    path = tmp_path / "m.npz"
    fastbp.save(sgd_model(), path)
    path.chmod(mode)
    old = os.umask(0o022)  # a new file would get 0o644: the bits must come from the old file
    try:
        fastbp.save(rich_model(), path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert [type(x) for x in fastbp.load(path).layers] == [type(x) for x in rich_model().layers]


@pytest.mark.parametrize("link", ["absolute", "relative", "dangling"])
def test_save_through_a_symlink_writes_its_target_and_keeps_the_link(tmp_path, link):
    store, work = tmp_path / "store", tmp_path / "work"
    store.mkdir()
    work.mkdir()
    target = store / "real.npz"
    if link != "dangling":
        fastbp.save(sgd_model(), target)
        target.chmod(0o640)
    (work / "m.npz").symlink_to(os.path.relpath(target, work) if link == "relative" else target)
    fastbp.save(rich_model(), work / "m.npz")
    assert (work / "m.npz").is_symlink() and (work / "m.npz").resolve() == target.resolve()
    assert os.listdir(work) == ["m.npz"] and os.listdir(store) == ["real.npz"]  # no temporary file anywhere
    assert_same_model(fastbp.load(work / "m.npz", backend="numpy"), rich_model())
    if link != "dangling":
        assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_fifo_is_written_into_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)  # never blocks the exit
    reader.start()
    io.write_atomically(fifo, lambda fh: fh.write(b"through the pipe"))
    reader.join(10)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(fifo.lstat().st_mode)


# -- save: temporary files of killed saves ------------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_the_same_target_are_removed_and_no_others(tmp_path):
    tag, dead, me = _atomic._writer_tag(), _dead_pid(), os.getpid()
    other = "0" * 8 if tag != "0" * 8 else "1" * 8
    hour_ago = time.time() - 2 * 3600
    names = {  # name: (removed?, age it gets)
        f".m.npz.{tag}-{dead}-0123456789ab.tmp": (True, None),  # this machine, writer gone
        f".m.npz.{tag}-{me}-0123456789ab.tmp": (False, hour_ago),  # a live writer, however old
        f".m.npz.{other}-{dead}-0123456789ab.tmp": (False, None),  # another machine's, recent
        f".m.npz.{other}-{dead}-ba9876543210.tmp": (True, hour_ago),  # ... and two hours old
        ".m.npz.0123456789ab.tmp": (False, None),  # an older fastbp's, recent
        ".m.npz.ba9876543210.tmp": (True, hour_ago),  # ... and two hours old
        f".n.npz.{tag}-{dead}-0123456789ab.tmp": (False, hour_ago),  # another target's
        ".m.npz.notes.tmp": (False, hour_ago),  # not a name fastbp makes
        "m.npz.0123456789ab.tmp": (False, hour_ago),
    }
    for name, (_, age) in names.items():
        (tmp_path / name).write_bytes(b"half a model")
        if age:
            os.utime(tmp_path / name, (age, age))
    (tmp_path / f".m.npz.{tag}-{dead}-aaaaaaaaaaaa.tmp").mkdir()  # not a regular file: left alone
    (tmp_path / f".m.npz.{tag}-{dead}-bbbbbbbbbbbb.tmp").symlink_to(tmp_path / "m.npz")
    fastbp.save(sgd_model(), tmp_path / "m.npz")
    kept = {n for n, (removed, _) in names.items() if not removed}
    links = {f".m.npz.{tag}-{dead}-aaaaaaaaaaaa.tmp", f".m.npz.{tag}-{dead}-bbbbbbbbbbbb.tmp"}
    assert set(os.listdir(tmp_path)) == kept | links | {"m.npz"}


SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    import fastbp

    path, seed = sys.argv[1], int(sys.argv[2])
    models = [fastbp.Sequential(fastbp.Linear(1024, 2048, dtype=np.float64, seed=seed + k, backend="numpy"))
              for k in (0, 1)]
    print("ready", flush=True)
    i = 0
    while True:  # saves of 16 MB, one after the other, until killed
        fastbp.save(models[i % 2], path)
        i += 1
""")


def _saver(path, seed):
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(seed)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _first_weights(path):
    return fastbp.load(path, backend="numpy").layers[0].W.data[0, :4].tolist()


def _temporaries(folder):
    return [n for n in os.listdir(folder) if n.endswith(".tmp")]


def test_saves_killed_at_random_moments_leave_the_old_or_new_file_and_no_temporary(tmp_path):
    path = tmp_path / "m.npz"
    fastbp.save(sgd_model(), path)
    rng = np.random.default_rng(7)
    left_behind = 0
    for run in range(6):
        seed = 10 * (run + 1)
        before = fastbp.load(path, backend="numpy").layers[0].W.data[0, :4].tolist()
        child_w = [fastbp.Linear(1024, 2048, dtype=np.float64, seed=seed + k).W.data[0, :4].tolist() for k in (0, 1)]
        proc = _saver(path, seed)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.kill()
        proc.wait()  # reaped: a zombie's pid still answers os.kill(pid, 0)
        got = _first_weights(path)
        assert got in [before, *child_w], f"run {run}: {got} is neither the old file {before} nor a new one {child_w}"
        left = _temporaries(tmp_path)
        left_behind += len(left)
        fastbp.save(sgd_model(), path)
        assert os.listdir(tmp_path) == ["m.npz"], f"run {run}: child {proc.pid} left {left}"
    assert left_behind > 0, "no kill landed inside a save: the cleanup was not exercised"


def test_a_live_writers_temporary_is_never_removed(tmp_path):
    path = tmp_path / "m.npz"
    proc = _saver(path, 0)
    try:
        for _ in range(40):  # stop the writer inside a save (it is saving nearly all the time)
            time.sleep(0.05)
            proc.send_signal(signal.SIGSTOP)
            mine = [n for n in _temporaries(tmp_path) if f"-{proc.pid}-" in n]
            if mine:
                break
            proc.send_signal(signal.SIGCONT)
        assert mine, "never caught the writer inside a save"
        fastbp.save(sgd_model(), tmp_path / "m.npz")  # the writer is stopped, not dead: its file stays
        assert (tmp_path / mine[0]).exists()
        proc.send_signal(signal.SIGCONT)
    finally:
        proc.kill()
        proc.wait()
    fastbp.save(sgd_model(), tmp_path / "m.npz")  # now it is dead
    assert os.listdir(tmp_path) == ["m.npz"]


# -- fastbp predict ----------------------------------------------------------------------------------------


@pytest.fixture
def predict_data(tmp_path):
    rows = "\n".join(",".join(str(v) for v in r) for r in np.random.default_rng(0).standard_normal((5, 4)))
    (tmp_path / "x.csv").write_text("a,b,c,d\n" + rows + "\n")
    return tmp_path / "x.csv"


def _bad_model(tmp_path, files, kind):
    path = tmp_path / f"{kind.replace(' ', '-')}.npz"
    ents = entries(files["sgd"])
    meta = meta_of(ents)
    if kind == "truncated":
        path.write_bytes(files["sgd"].read_bytes()[:700])
    elif kind == "huge layer":
        return huge_linear_file(tmp_path, files, "metadata")
    elif kind == "wrong type":
        meta["layers"][0]["config"]["in_features"] = "4"
        path.write_bytes(archive(with_meta(ents, meta)))
    elif kind == "extra entry":
        path.write_bytes(archive({**ents, "extra": npy(np.zeros(3))}))
    elif kind == "text":
        path.write_text("not a model\n")
    else:  # a loadable file whose metadata predict cannot use: 3 class labels for 2 outputs
        meta["metadata"] = {"task": "classification", "classes": ["a", "b", "c"]}
        path.write_bytes(archive(with_meta(ents, meta)))
    return path


@pytest.mark.parametrize("kind", ["truncated", "huge layer", "wrong type", "extra entry", "text", "bad classes"])
def test_predict_with_a_malformed_model_prints_one_line(files, tmp_path, predict_data, capsys, kind):
    model = _bad_model(tmp_path, files, kind)
    status = main(["predict", "--model", str(model), "--data", str(predict_data), "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert status == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"fastbp predict: error: --model: {model}: ") and "Traceback" not in err
    assert not (tmp_path / "p.csv").exists()


def test_predict_with_a_malformed_model_in_a_real_process(files, tmp_path, predict_data):
    model = _bad_model(tmp_path, files, "huge layer")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastbp",
            "predict",
            "--model",
            model,
            "--data",
            predict_data,
            "--out",
            tmp_path / "p.csv",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.splitlines() == [r.stderr.strip()] and r.stderr.startswith(
        f"fastbp predict: error: --model: {model}"
    )
