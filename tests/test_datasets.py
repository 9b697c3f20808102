"""Datasets: digits, synthetic generators, file loaders, splits."""

import sys

import numpy as np
import pytest

from fastbp import datasets


def test_digits():
    pytest.importorskip("sklearn")
    X, y = datasets.digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and 0 <= X.min() and X.max() <= 1
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))


def test_digits_without_sklearn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'fastbp\[sklearn\]'"):
        datasets.digits()


def test_synthetic_is_deterministic_and_sized():
    a = datasets.make_classification(500, 7, 4, seed=3)
    b = datasets.make_classification(500, 7, 4, seed=3)
    c = datasets.make_classification(500, 7, 4, seed=4)
    assert a[0].shape == (500, 7) and a[0].dtype == np.float32 and np.bincount(a[1]).tolist() == [125] * 4
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and not np.array_equal(a[0], c[0])
    X, Y = datasets.make_regression(300, 5, 2, seed=0, dtype=np.float64)
    assert X.shape == (300, 5) and Y.shape == (300, 2) and Y.dtype == np.float64
    with pytest.raises(ValueError, match="n_classes: expected at least 2"):
        datasets.make_classification(10, 2, 1)


def test_csv_loader(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label\n1,2,0\n3,4.5,1\n5,6,1\n")
    X, y, names = datasets.load_csv(p, target="label")
    assert names == ["a", "b"] and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(X, [[1, 2], [3, 4.5], [5, 6]])
    np.testing.assert_array_equal(y, [0, 1, 1])
    p.write_text("a,b,t\n1,2,0.5\n3,4,1.5\n")
    assert datasets.load_csv(p, target="t")[1].dtype == np.float32
    with pytest.raises(ValueError, match="target: no column 'nope'"):
        datasets.load_csv(p, target="nope")
    p.write_text("a,b\n1,x\n")
    with pytest.raises(ValueError, match="column 'b' is not numeric \\(row 2: 'x'"):
        datasets.load_csv(p)


def test_npz_loader_and_split(tmp_path):
    X = np.arange(20.0).reshape(10, 2)
    y = np.arange(10)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    X2, y2 = datasets.load_npz(tmp_path / "d.npz")
    np.testing.assert_array_equal(X2, X)
    with pytest.raises(ValueError, match="no array 'Z'"):
        datasets.load_npz(tmp_path / "d.npz", x_key="Z")
    Xa, Xb, ya, yb = datasets.train_test_split(X, y, test_size=0.3, seed=1)
    assert len(Xb) == 3 and len(Xa) == 7 and sorted(np.concatenate([ya, yb])) == list(range(10))
    np.testing.assert_array_equal(Xa[:, 0] / 2, ya)  # rows stay paired
    assert np.array_equal(datasets.train_test_split(X, y, seed=1)[0], datasets.train_test_split(X, y, seed=1)[0])
