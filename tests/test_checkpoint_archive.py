"""Checkpoint files (fit's and the estimators') are read with model files' checks: an unexpected
entry is refused before it is inflated, and an entry's size must be its array's."""

import tracemalloc
import zipfile

import numpy as np
import pytest

import fastbp
from fastbp import checkpoint as ck
from fastbp.io import Archive, ArchiveError


def fit_checkpoint(path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 5)).astype(np.float32), rng.integers(0, 3, 40)
    model = fastbp.Sequential(fastbp.Linear(5, 4, activation="relu", seed=0), fastbp.Linear(4, 3, seed=1))
    fastbp.fit(
        model, X, y, loss=fastbp.SoftmaxCrossEntropy(), optimizer=fastbp.SGD(model.parameters(), lr=0.1),
        epochs=2, checkpoint=path, progress=False,
    )  # fmt: skip


def sklearn_checkpoint(path):
    sk = pytest.importorskip("fastbp.sklearn")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 5)), rng.integers(0, 3, 40)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.MLPClassifier((4,), max_iter=2, random_state=0, checkpoint=path).fit(X, y)
    from fastbp.sklearn import _checkpoint

    return _checkpoint.read


@pytest.mark.parametrize("kind", ["fit", "sklearn"])
def test_an_extra_entry_is_refused_without_being_inflated(tmp_path, kind):
    path = tmp_path / "c.npz"
    if kind == "fit":
        fit_checkpoint(path)
        read = ck.read
    else:
        read = sklearn_checkpoint(path)
    read(path)  # whole: reads
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("extra.npy", "w") as f:  # 64 MB of zeros in about 64 KB
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (8 << 20,)})
            chunk = bytes(1 << 20)
            for _ in range(64):
                f.write(chunk)
    assert path.stat().st_size < 2 << 20
    tracemalloc.start()
    with pytest.raises(ValueError, match="c.npz.*unexpected.*extra"):
        read(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20  # the 64 MB entry was never inflated


def test_an_entry_whose_size_is_not_its_arrays_is_refused(tmp_path):
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("x.npy", "w") as f:  # the header declares 1e9 floats; the entry holds 80 bytes
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)})
            f.write(bytes(80))
    with Archive(path) as archive:
        assert archive.files == ["x"]
        with pytest.raises(
            ArchiveError, match=r"a.npz: entry 'x': declares .* bytes, its float64 \(1000000000,\) array"
        ):
            archive["x"]


def test_pickles_and_non_archives_are_refused(tmp_path):
    np.savez(tmp_path / "p.npz", a=np.array([{"x": 1}], dtype=object))
    with Archive(tmp_path / "p.npz") as archive, pytest.raises(ArchiveError, match="pickled object array"):
        archive["a"]
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ArchiveError, match="one.npy: not an .npz archive"):
        Archive(tmp_path / "one.npy")
