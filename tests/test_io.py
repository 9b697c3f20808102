"""Model files: bit-exact round trip, optimizer resume, atomic save, clear errors."""

import json
import os

import numpy as np
import pytest

import fastbp
from fastbp import datasets, io


def model_and_opt(seed=0, dtype=np.float32):
    m = fastbp.Sequential(
        fastbp.Linear(6, 9, activation="tanh", dtype=dtype, seed=seed),
        fastbp.ReLU(dtype=dtype),
        fastbp.Linear(9, 4, bias=False, dtype=dtype, seed=seed + 1),
        fastbp.Softmax(dtype=dtype),
    )
    return m, fastbp.Adam(m.parameters(), lr=3e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_bit_exact(tmp_path, dtype):
    model, _ = model_and_opt(dtype=dtype)
    model.metadata = {"classes": ["a", "b", "c", "d"]}
    path = tmp_path / "m.npz"
    fastbp.save(model, path)
    loaded = fastbp.load(path)
    assert [type(a) for a in loaded.layers] == [type(b) for b in model.layers]
    assert loaded.dtype == dtype and loaded.metadata == {"classes": ["a", "b", "c", "d"]}
    for k, a in model.state_dict().items():
        b = loaded.state_dict()[k]
        assert a.dtype == b.dtype and np.array_equal(a, b)
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(dtype)
    np.testing.assert_array_equal(model.predict(x), loaded.predict(x))
    with np.load(path, allow_pickle=False) as z:  # no pickled objects anywhere: reading one would raise here
        assert {"__fastbp_format__", "__meta__"} <= set(z.files)
        assert all(z[k].dtype != object for k in z.files)


def test_resume_training_with_optimizer_state(tmp_path):
    X, y = datasets.make_classification(200, 6, 4, seed=0)

    def train(model, opt, epochs, seed):
        fastbp.fit(
            model,
            X,
            y,
            loss=fastbp.CrossEntropy(),
            optimizer=opt,
            epochs=epochs,
            batch_size=20,
            seed=seed,
            progress=False,
        )

    straight, sopt = model_and_opt()
    train(straight, sopt, 2, 0)
    train(straight, sopt, 2, 1)
    first, fopt = model_and_opt()
    train(first, fopt, 2, 0)
    fastbp.save(first, tmp_path / "ckpt.npz", optimizer=fopt)
    resumed, ropt = fastbp.load(tmp_path / "ckpt.npz", with_optimizer=True)
    assert isinstance(ropt, fastbp.Adam) and ropt.t == fopt.t and ropt.lr == 3e-3
    train(resumed, ropt, 2, 1)
    for k, a in straight.state_dict().items():
        np.testing.assert_array_equal(a, resumed.state_dict()[k])


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    model, _ = model_and_opt(seed=0)
    path = tmp_path / "m.npz"
    fastbp.save(model, path)
    before = path.read_bytes()
    other, _ = model_and_opt(seed=5)

    def failing_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half of an archive")
        raise OSError("disk full")  # the write dies midway

    monkeypatch.setattr(io.np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        fastbp.save(other, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]  # no temporary file left behind
    monkeypatch.undo()
    np.testing.assert_array_equal(fastbp.load(path).state_dict()["0.W"], model.state_dict()["0.W"])


def test_save_honours_umask(tmp_path):
    model, _ = model_and_opt()
    old = os.umask(0o022)
    try:
        fastbp.save(model, tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "m.npz").stat().st_mode & 0o777 == 0o644


def test_bad_files_give_clear_errors(tmp_path):
    model, opt = model_and_opt()
    good = tmp_path / "good.npz"
    fastbp.save(model, good)
    data = good.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="trunc.npz: not a readable fastbp model file"):
        fastbp.load(tmp_path / "trunc.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not an .npz archive"):
        fastbp.load(tmp_path / "text.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="empty file"):
        fastbp.load(tmp_path / "empty.npz")
    np.savez(tmp_path / "foreign.npz", X=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastbp model file"):
        fastbp.load(tmp_path / "foreign.npz")
    with pytest.raises(FileNotFoundError):
        fastbp.load(tmp_path / "missing.npz")
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    newer = dict(arrays, __fastbp_format__=np.array(io.FORMAT + 1))
    np.savez(tmp_path / "newer.npz", **newer)
    with pytest.raises(ValueError, match="newer fastbp .*Upgrade"):
        fastbp.load(tmp_path / "newer.npz")
    broken = dict(arrays)
    del broken["param/0.W"]
    np.savez(tmp_path / "broken.npz", **broken)
    with pytest.raises(ValueError, match="do not match its architecture"):
        fastbp.load(tmp_path / "broken.npz")
    meta = json.loads(str(arrays["__meta__"]))
    meta["layers"][0]["type"] = "Conv2d"
    np.savez(tmp_path / "unknown.npz", **dict(arrays, __meta__=np.array(json.dumps(meta))))
    with pytest.raises(ValueError, match="unknown layer type 'Conv2d'"):
        fastbp.load(tmp_path / "unknown.npz")
    with pytest.raises(ValueError, match="no optimizer state was saved"):
        fastbp.load(good, with_optimizer=True)


_unpickled = []


def _record_unpickling(tag):
    _unpickled.append(tag)
    return tag


class _Payload:
    """Unpickling this calls _record_unpickling: a stand-in for arbitrary code in a hostile file."""

    def __reduce__(self):
        return _record_unpickling, ("payload ran",)


@pytest.mark.parametrize("where", ["extra entry", "parameter"])
def test_pickled_object_arrays_are_refused(tmp_path, where):
    _unpickled.clear()
    model, _ = model_and_opt()
    good = tmp_path / "good.npz"
    fastbp.save(model, good)
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    hostile = np.array([_Payload()], dtype=object)
    if where == "extra entry":
        arrays["param/extra"] = hostile
    else:
        arrays["param/0.W"] = hostile
    path = tmp_path / "pickled.npz"
    np.savez(path, **arrays)  # np.savez pickles object arrays
    with np.load(path, allow_pickle=True) as z:  # the file really holds a pickle that runs code when read
        z["param/extra" if where == "extra entry" else "param/0.W"]
    assert _unpickled == ["payload ran"]
    _unpickled.clear()
    # An entry the architecture does not name is refused by its name alone; a pickled array in a
    # parameter's place, once its header is read.
    message = (
        r"pickled\.npz: unexpected entries \['param/extra'\]"
        if where == "extra entry"
        else r"pickled\.npz: holds a pickled object array.*refused without unpickling"
    )
    with pytest.raises(ValueError, match=message):
        fastbp.load(path)
    assert _unpickled == []  # refused without unpickling anything


def test_save_argument_checks(tmp_path):
    model, opt = model_and_opt()
    other, other_opt = model_and_opt()
    with pytest.raises(ValueError, match="optimizer: expected an optimizer over parameters of this model"):
        fastbp.save(model, tmp_path / "m.npz", optimizer=other_opt)
    with pytest.raises(TypeError, match="metadata: expected JSON-serialisable"):
        fastbp.save(model, tmp_path / "m.npz", metadata={"x": object()})
    with pytest.raises(TypeError, match="model: expected a fastbp Sequential"):
        fastbp.save(model.layers[0], tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
