"""``Standardize``: the preprocessing a model carries in its file."""

import numpy as np
import pytest

import fastbp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_the_formula_and_its_inverse_undoes_it(rng, dtype):
    X = (rng.standard_normal((50, 4)) * [1, 10, 1e-3, 5] + [3, -7, 1e4, 0]).astype(dtype)
    s = fastbp.Standardize.from_data(X)
    Z = s(X)
    assert Z.dtype == dtype
    eps = np.finfo(dtype).eps
    mean, std = X.mean(0, dtype=np.float64), X.std(0, dtype=np.float64)
    # rounding the mean to dtype, and x - mean and the product: a few ulps of |x| + |mean| in units of std
    atol = 4 * eps * (np.abs(X).max(0) + np.abs(mean)) / std
    assert np.all(np.abs(Z - (X - mean) / std) <= atol)
    back = fastbp.Standardize(s.mean, s.std, inverse=True, dtype=dtype)
    assert np.all(np.abs(back(Z) - X) <= 4 * eps * (np.abs(X) + np.abs(mean)))


def test_constant_columns_get_std_one():
    X = np.array([[1.0, 5.0], [3.0, 5.0]], np.float32)
    s = fastbp.Standardize.from_data(X)
    assert s.std.tolist() == [1.0, 1.0] and s(X)[:, 1].tolist() == [0.0, 0.0]


def test_gradient_is_the_scale_in_float64_finite_differences(rng):
    X = rng.standard_normal((6, 3))
    s = fastbp.Standardize.from_data(X * [1, 4, 0.5])
    dy = rng.standard_normal((6, 3))
    s.forward(X)
    dx = s.backward(dy).copy()
    h = 1e-6
    fd = np.zeros_like(X)
    for i in np.ndindex(X.shape):
        e = np.zeros_like(X)
        e[i] = h
        fd[i] = ((s.infer(X + e) - s.infer(X - e)) * dy).sum() / (2 * h)
    np.testing.assert_allclose(dx, fd, rtol=1e-8)


def test_saved_and_loaded_models_compute_exactly_the_same(tmp_path, rng):
    X = (rng.standard_normal((40, 5)) * 3 + 1).astype(np.float32)
    model = fastbp.Sequential(fastbp.Standardize.from_data(X), fastbp.Linear(5, 2, seed=0))
    fastbp.save(model, tmp_path / "m.npz")
    again = fastbp.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(fastbp.predict(again, X), fastbp.predict(model, X))


def test_training_skips_the_gradient_nobody_uses(rng):
    """Behind a parameter-free first layer, the first Linear's dx matmul is not computed."""
    X = rng.standard_normal((8, 5)).astype(np.float32)
    model = fastbp.Sequential(fastbp.Standardize.from_data(X), fastbp.Linear(5, 3, seed=0), fastbp.Linear(3, 2, seed=1))
    calls = []
    first = model[1]
    original = first.backward
    first.backward = lambda dy, need_dx=True: calls.append(need_dx) or original(dy, need_dx=need_dx)
    model.forward(X)
    assert model.backward(input_grad=False) is None and calls == [False]
    model.forward(X)
    dx = model.backward(input_grad=True)
    assert calls == [False, True] and dx.shape == X.shape


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(mean=[0.0, 1.0], std=[1.0]), "std: expected shape"),
        (dict(mean=[0.0], std=[0.0]), "std: expected positive finite values"),
        (dict(mean=[np.nan], std=[1.0]), "mean: expected finite values"),
        (dict(mean=[], std=[]), "mean: expected a non-empty 1-d sequence"),
    ],
)
def test_bad_statistics_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        fastbp.Standardize(**kw)
