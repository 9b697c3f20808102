"""Layer and model behaviour: dtypes, buffer reuse, layouts, state dicts, predict."""

import numpy as np
import pytest
from _helpers import DTYPES, tol
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastbp
from fastbp import ops


def mlp(dtype=np.float32, backend="numba"):
    return fastbp.Sequential(
        fastbp.Linear(10, 16, activation="relu", dtype=dtype, seed=0, backend=backend),
        fastbp.Linear(16, 8, activation="sigmoid", dtype=dtype, seed=1, backend=backend),
        fastbp.Linear(8, 3, dtype=dtype, seed=2, backend=backend),
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_preserved_everywhere(rng, dtype):
    model = mlp(dtype)
    x = rng.standard_normal((5, 10)).astype(dtype)
    y = model(x)
    loss_fn = fastbp.SoftmaxCrossEntropy()
    loss_fn(y, rng.integers(0, 3, 5))
    dx = model.backward(loss_fn.backward(), input_grad=True)
    assert y.dtype == dx.dtype == dtype
    assert all(p.data.dtype == p.grad.dtype == dtype for p in model.parameters())
    assert model.predict(x).dtype == dtype


def test_input_dtype_follows_layer(rng):
    layer = fastbp.Linear(4, 2, seed=0)
    x64 = rng.standard_normal((3, 4))
    y = layer.forward(x64)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x64.astype(np.float32) @ layer.W.data + layer.b.data, rtol=1e-6)
    assert layer.forward([[1.0, 2.0, 3.0, 4.0]]).shape == (1, 2)  # array-likes accepted


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_layouts_accepted(rng, layout):
    layer = fastbp.Linear(6, 3, activation="tanh", seed=0)
    base = rng.standard_normal((4, 12)).astype(np.float32)
    x = {"C": np.ascontiguousarray(base[:, :6]), "F": np.asfortranarray(base[:, :6]), "strided": base[:, ::2]}[layout]
    expected = np.tanh(np.ascontiguousarray(x) @ layer.W.data + layer.b.data)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-5, atol=1e-6)
    dy = np.asfortranarray(rng.standard_normal((4, 3)).astype(np.float32))
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, (dy * (1 - expected**2)) @ layer.W.data.T, rtol=1e-5, atol=1e-6)
    relu = fastbp.ReLU()
    np.testing.assert_array_equal(relu.forward(x), np.maximum(x, 0))


def test_buffers_are_reused_between_steps(rng):
    model = mlp()
    loss_fn = fastbp.SoftmaxCrossEntropy()
    x, t = rng.standard_normal((7, 10)).astype(np.float32), rng.integers(0, 3, 7)
    y1 = model(x)
    loss_fn(y1, t)
    dx1 = model.backward(loss_fn.backward(), input_grad=True)
    g1 = loss_fn.backward()
    grads1 = [p.grad for p in model.parameters()]
    y2 = model(x * 2)
    loss_fn(y2, t)
    dx2 = model.backward(loss_fn.backward(), input_grad=True)
    assert y2 is y1 and dx2 is dx1 and loss_fn.backward() is g1
    assert all(a is p.grad for a, p in zip(grads1, model.parameters()))
    y3 = model(x[:3])  # another batch size gets its own buffer
    assert y3.shape == (3, 3) and y3 is not y1


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_backward_overwrites_grads(rng, backend):
    layer = fastbp.Linear(3, 2, seed=0, backend=backend)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    dy = rng.standard_normal((4, 2)).astype(np.float32)
    layer.forward(x)
    layer.backward(dy)
    first = layer.W.grad.copy()
    layer.forward(x)
    layer.backward(dy)
    np.testing.assert_array_equal(layer.W.grad, first)  # not 2 * first


def test_backward_none_means_ones(rng):
    layer = fastbp.Linear(3, 2, seed=0)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    layer.forward(x)
    dx = layer.backward().copy()
    np.testing.assert_allclose(dx, np.ones((4, 2), np.float32) @ layer.W.data.T, rtol=1e-6)
    np.testing.assert_allclose(layer.b.grad, [4, 4])


def test_input_grad_false_skips_dx_but_fills_grads(rng):
    a, b = mlp(), mlp()
    x = rng.standard_normal((6, 10)).astype(np.float32)
    a(x)
    b(x)
    assert a.backward(None, input_grad=False) is None
    b.backward(None)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_and_numpy_backends_agree_on_a_step(rng, dtype):
    a, b = mlp(dtype, "numba"), mlp(dtype, "numpy")
    x, t = rng.standard_normal((9, 10)).astype(dtype), rng.integers(0, 3, 9)
    la, lb = fastbp.SoftmaxCrossEntropy(backend="numba"), fastbp.SoftmaxCrossEntropy(backend="numpy")
    np.testing.assert_allclose(la(a(x), t), lb(b(x), t), rtol=1e-6)
    a.backward(la.backward())
    b.backward(lb.backward())
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-7)


def test_predict_matches_forward_in_batches(rng):
    model = mlp()
    x = rng.standard_normal((103, 10)).astype(np.float32)
    full = model(x).copy()
    np.testing.assert_allclose(model.predict(x, batch_size=10), full, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.predict(x), full, rtol=1e-6, atol=1e-7)
    y_before = model(x[:5]).copy()
    model.predict(x[5:20])  # predict leaves the training buffers alone
    np.testing.assert_array_equal(model.layers[-1]._y, y_before)


def test_state_dict_round_trip(rng):
    a, b = (
        mlp(),
        fastbp.Sequential(
            *[
                fastbp.Linear(10, 16, activation="relu", seed=5),
                fastbp.Linear(16, 8, activation="sigmoid", seed=6),
                fastbp.Linear(8, 3, seed=7),
            ]
        ),
    )
    ref = b.parameters()[0].data
    b.load_state_dict(a.state_dict())
    assert b.parameters()[0].data is ref  # in place: an optimizer's references stay valid
    x = rng.standard_normal((4, 10)).astype(np.float32)
    np.testing.assert_array_equal(a(x), b(x))
    sd = a.state_dict()
    sd["0.W"][...] = 0  # a copy: editing it leaves the model alone
    assert a.parameters()[0].data.any()


def test_zero_grad_and_parameters():
    model = mlp()
    model(np.ones((2, 10), np.float32))
    model.backward()
    assert any(p.grad.any() for p in model.parameters())
    model.zero_grad()
    assert not any(p.grad.any() for p in model.parameters())
    assert len(model.parameters()) == 6 and [p.name for p in model.parameters()[:2]] == ["W", "b"]


def test_init_schemes():
    he = fastbp.Linear(1000, 200, seed=0, init="he").W.data
    gl = fastbp.Linear(1000, 200, seed=0, init="glorot").W.data
    np.testing.assert_allclose(he.std(), np.sqrt(2 / 1000), rtol=0.02)
    lim = np.sqrt(6 / 1200)
    assert np.abs(gl).max() <= lim and np.abs(gl).max() > 0.99 * lim
    np.testing.assert_array_equal(fastbp.Linear(5, 3, seed=4).W.data, fastbp.Linear(5, 3, seed=4).W.data)


finite = st.floats(-50, 50, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40), elements=finite),
    act=st.sampled_from(["relu", "sigmoid", "tanh", "identity"]),
)
def test_property_activation_kernels_match_twins(x, act):
    y = ops.activation(x, act)
    np.testing.assert_allclose(y, ops.activation(x, act, backend="numpy"), rtol=1e-6, atol=1e-7)
    dy = np.ones_like(x)
    np.testing.assert_allclose(
        ops.activation_backward(dy, y, act), ops.activation_backward(dy, y, act, backend="numpy"), rtol=1e-6, atol=1e-7
    )


@settings(max_examples=60, deadline=None)
@given(
    z=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=30),
        elements=st.floats(-1e4, 1e4, allow_nan=False),
    ),
    data=st.data(),
)
def test_property_softmax_cross_entropy(z, data):
    n, k = z.shape
    t = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), np.int64)
    loss, g = ops.softmax_cross_entropy(z, t)
    loss_np, g_np = ops.softmax_cross_entropy(z, t, backend="numpy")
    assert np.isfinite(loss) and loss >= 0
    np.testing.assert_allclose(loss, loss_np, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(g, g_np, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g.sum(axis=1), 0, atol=1e-12)  # each gradient row sums to zero
    p = ops.softmax(z)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-12)


# -- Linear.from_weights --------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_from_weights_shares_memory_and_trains_in_place(rng, dtype):
    W = rng.standard_normal((5, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    layer = fastbp.Linear.from_weights(W, b, activation="tanh")
    x = rng.standard_normal((4, 5)).astype(dtype)
    np.testing.assert_allclose(layer(x), np.tanh(x @ W + b), **tol(dtype))
    assert layer.W.data is W and layer.b.data is b and layer.dtype == dtype
    layer.backward(np.ones((4, 3), dtype))
    before = W.copy()
    fastbp.SGD(layer.parameters(), lr=0.1).step()
    assert not np.array_equal(W, before)  # the caller's array moved


def test_from_weights_rejects_what_it_cannot_update_in_place(rng):
    W = rng.standard_normal((5, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="W: expected a writeable C-contiguous"):
        fastbp.Linear.from_weights(np.asfortranarray(W))
    with pytest.raises(TypeError, match="W: expected a floating-point"):
        fastbp.Linear.from_weights(W.astype(int))
    with pytest.raises(ValueError, match=r"b: expected shape \(3,\)"):
        fastbp.Linear.from_weights(W, np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="b: expected dtype float32"):
        fastbp.Linear.from_weights(W, np.zeros(3, np.float64))
    with pytest.raises(ValueError, match="activation"):
        fastbp.Linear.from_weights(W, activation="swish")
