"""Sequential.predict: the fast path for request-sized arrays gives what the checked path gives."""

import numpy as np
import pytest

import fastbp


@pytest.fixture
def model():
    return fastbp.Sequential(fastbp.Linear(6, 5, activation="relu", seed=0), fastbp.Linear(5, 3, seed=1))


def test_fast_and_checked_paths_agree(model, rng):
    x = rng.standard_normal((9, 6)).astype(np.float32)
    fast = model.predict(x)  # one block: the fast path
    blocks = model.predict(x, batch_size=4)  # three blocks: the checked path
    np.testing.assert_array_equal(fast, blocks)
    np.testing.assert_array_equal(model.predict(x.tolist()), fast)  # a list takes the checked path
    np.testing.assert_array_equal(model.predict(np.asfortranarray(x)), fast)
    np.testing.assert_array_equal(model.predict(x.astype(">f4")), fast)  # byte-swapped: converted
    np.testing.assert_allclose(model.predict(x.astype(np.float64)), fast, rtol=1e-6)  # converted to float32
    assert model.predict(x.astype(np.float64)).dtype == np.float32


@pytest.mark.parametrize(
    "x,kwargs,err,match",
    [
        (np.zeros((2, 7), np.float32), {}, ValueError, r"x: expected shape \(batch, 6\), got \(2, 7\)"),
        (np.zeros((0, 6), np.float32), {}, ValueError, "x: expected at least one row"),
        (np.zeros(6, np.float32), {}, ValueError, "x: expected a 2-D array"),
        (np.zeros((2, 6), np.int64), {}, TypeError, "x: expected a floating-point array"),
        (np.zeros((2, 6), np.float32), {"batch_size": 0}, ValueError, "batch_size: expected"),
        (np.zeros((2, 6), np.float32), {"batch_size": "8"}, TypeError, "batch_size: expected"),
        (np.zeros((2, 6), np.float32), {"batch_size": True}, TypeError, "batch_size: expected"),
    ],
)
def test_bad_input_is_refused_by_name(model, x, kwargs, err, match):
    with pytest.raises(err, match=match):
        model.predict(x, **kwargs)


def test_model_without_parameters_follows_its_input(rng):
    model = fastbp.Sequential(fastbp.ReLU(), fastbp.Softmax())
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((3, 4)).astype(dtype)
        out = model.predict(x)
        assert out.dtype == dtype
        e = np.exp(np.maximum(x, 0) - np.maximum(x, 0).max(axis=1, keepdims=True))
        np.testing.assert_allclose(out, e / e.sum(axis=1, keepdims=True), rtol=10 * np.finfo(dtype).eps)
    with pytest.raises(TypeError, match="x: expected float32 or float64, got float16"):
        model.predict(np.zeros((2, 4), np.float16))
