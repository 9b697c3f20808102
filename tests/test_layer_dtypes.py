"""Layers without parameters take the dtype of their input; models save and load their buffers."""

import numpy as np
import pytest

import fastbp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", [fastbp.ReLU, fastbp.Sigmoid, fastbp.Tanh, fastbp.Softmax, fastbp.Identity])
def test_parameter_free_layers_follow_their_input(layer, dtype, rng):
    x = rng.standard_normal((3, 4)).astype(dtype)
    lay = layer()
    y = lay.forward(x)
    assert y.dtype == dtype and lay.backward(np.ones_like(y)).dtype == dtype and lay.infer(x).dtype == dtype
    twin = layer(backend="numpy")
    np.testing.assert_allclose(y, twin.forward(x), rtol=4 * np.finfo(dtype).eps)


def test_a_float64_model_stays_float64_end_to_end(rng, tmp_path):
    model = fastbp.Sequential(
        fastbp.Linear(8, 4, dtype=np.float64), fastbp.ReLU(), fastbp.Linear(4, 2, dtype=np.float64)
    )
    assert model.dtype == np.float64
    x = rng.standard_normal((5, 8))
    out = model(x)
    assert out.dtype == np.float64 and model.backward(np.ones_like(out), input_grad=True).dtype == np.float64
    fastbp.save(model, tmp_path / "m.npz")
    again = fastbp.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    assert again.predict(x).dtype == np.float64


def test_mixed_parameter_dtypes_are_refused():
    with pytest.raises(TypeError, match="layers: expected one dtype"):
        fastbp.Sequential(fastbp.Linear(2, 2, dtype=np.float64), fastbp.ReLU(), fastbp.Linear(2, 2))


def test_state_dict_holds_buffers(rng):
    class Counting(fastbp.Identity):
        def __init__(self):
            super().__init__()
            self.seen = np.zeros(1)

        def buffers(self):
            return {"seen": self.seen}

    model = fastbp.Sequential(fastbp.Linear(2, 2, seed=0), Counting())
    state = model.state_dict()
    assert sorted(state) == ["0.W", "0.b", "1.seen"]
    state["1.seen"][0] = 7.0
    model.load_state_dict(state)
    assert model[1].seen[0] == 7.0 and model.buffers()["1.seen"] is model[1].seen
