"""Forward values and gradients of every layer and loss against PyTorch autograd."""

import numpy as np
import pytest

import fastbp

torch = pytest.importorskip("torch")

DTYPES = [np.float32, np.float64]


def T(a, grad=False):
    return torch.tensor(np.array(a), requires_grad=grad)


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", [None, "relu", "sigmoid", "tanh"])
def test_linear_matches_torch(rng, dtype, act):
    layer = fastbp.Linear(13, 7, activation=act, dtype=dtype, seed=0)
    x = rng.standard_normal((9, 13)).astype(dtype)
    dy = rng.standard_normal((9, 7)).astype(dtype)
    y = layer.forward(x)
    dx = layer.backward(dy)
    xt, Wt, bt = T(x, True), T(layer.W.data, True), T(layer.b.data, True)
    yt = xt @ Wt + bt
    yt = {None: yt, "relu": torch.relu(yt), "sigmoid": torch.sigmoid(yt), "tanh": torch.tanh(yt)}[act]
    yt.backward(T(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol(dtype))
    np.testing.assert_allclose(layer.W.grad, Wt.grad.numpy(), **tol(dtype))
    np.testing.assert_allclose(layer.b.grad, bt.grad.numpy(), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softmax"])
def test_activation_layers_match_torch(rng, dtype, name):
    layer = {"relu": fastbp.ReLU, "sigmoid": fastbp.Sigmoid, "tanh": fastbp.Tanh, "softmax": fastbp.Softmax}[name](
        dtype
    )
    x = (rng.standard_normal((6, 11)) * 3).astype(dtype)
    dy = rng.standard_normal((6, 11)).astype(dtype)
    y = layer.forward(x)
    dx = layer.backward(dy)
    xt = T(x, True)
    fn = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softmax": lambda t: torch.softmax(t, 1)}
    yt = fn[name](xt)
    yt.backward(T(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol(dtype))


CE_CASES = [
    dict(),
    dict(reduction="sum"),
    dict(label_smoothing=0.1),
    dict(weight=True),
    dict(weight=True, label_smoothing=0.2),
    dict(weight=True, reduction="sum"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CE_CASES)))
@pytest.mark.parametrize("target_kind", ["labels", "probs"])
def test_softmax_cross_entropy_matches_torch(rng, dtype, case, target_kind):
    kw = dict(CE_CASES[case])
    n, k = 10, 6
    z = (rng.standard_normal((n, k)) * 3).astype(dtype)
    if target_kind == "labels":
        target = rng.integers(0, k, n)
        tt = torch.tensor(target)
    else:
        target = rng.random((n, k)).astype(dtype)
        target /= target.sum(axis=1, keepdims=True)
        tt = T(target)
    if kw.get("weight"):
        kw["weight"] = (rng.random(k) + 0.2).astype(dtype)
    loss_fn = fastbp.SoftmaxCrossEntropy(**kw)
    loss = loss_fn(z, target)
    g = loss_fn.backward()
    zt = T(z, True)
    tkw = dict(kw)
    if "weight" in tkw:
        tkw["weight"] = T(tkw["weight"])
    lt = torch.nn.functional.cross_entropy(zt, tt, **tkw)
    lt.backward()
    np.testing.assert_allclose(loss, lt.item(), **tol(dtype))
    np.testing.assert_allclose(g, zt.grad.numpy(), **tol(dtype))
    assert g.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_none_matches_torch(rng, dtype):
    z = rng.standard_normal((5, 4)).astype(dtype)
    t = rng.integers(0, 4, 5)
    loss = fastbp.SoftmaxCrossEntropy(reduction="none")(z, t)
    lt = torch.nn.functional.cross_entropy(T(z), torch.tensor(t), reduction="none")
    np.testing.assert_allclose(loss, lt.numpy(), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_and_bce_match_torch(rng, dtype, reduction):
    p = rng.standard_normal((7, 3)).astype(dtype)
    y = rng.random((7, 3)).astype(dtype)
    for ours, theirs in (
        (fastbp.MSELoss(reduction=reduction), torch.nn.MSELoss(reduction=reduction)),
        (fastbp.BCEWithLogits(reduction=reduction), torch.nn.BCEWithLogitsLoss(reduction=reduction)),
    ):
        loss = ours(p * 4, y)
        g = ours.backward()
        pt = T(p * 4, True)
        lt = theirs(pt, T(y))
        lt.backward(torch.ones_like(lt))
        np.testing.assert_allclose(loss, lt.detach().numpy(), **tol(dtype))
        np.testing.assert_allclose(g, pt.grad.numpy(), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_on_probs_matches_torch_nll_of_log(rng, dtype):
    p = rng.random((6, 5)).astype(dtype) * 0.9 + 0.05
    t = rng.integers(0, 5, 6)
    loss_fn = fastbp.CrossEntropy()
    loss = loss_fn(p, t)
    g = loss_fn.backward()
    pt = T(p, True)
    lt = torch.nn.functional.nll_loss(torch.log(pt), torch.tensor(t))
    lt.backward()
    np.testing.assert_allclose(loss, lt.item(), **tol(dtype))
    np.testing.assert_allclose(g, pt.grad.numpy(), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_mlp_matches_torch(rng, dtype):
    model = fastbp.Sequential(
        fastbp.Linear(20, 16, activation="relu", dtype=dtype, seed=0),
        fastbp.Linear(16, 12, activation="tanh", dtype=dtype, seed=1),
        fastbp.Linear(12, 4, dtype=dtype, seed=2),
    )
    x = rng.standard_normal((32, 20)).astype(dtype)
    y = rng.integers(0, 4, 32)
    loss_fn = fastbp.SoftmaxCrossEntropy()
    loss = loss_fn(model(x), y)
    model.backward(loss_fn.backward(), input_grad=False)
    params = [T(p.data, True) for p in model.parameters()]
    h = torch.relu(T(x) @ params[0] + params[1])
    h = torch.tanh(h @ params[2] + params[3])
    lt = torch.nn.functional.cross_entropy(h @ params[4] + params[5], torch.tensor(y))
    lt.backward()
    np.testing.assert_allclose(loss, lt.item(), **tol(dtype))
    for p, pt in zip(model.parameters(), params):
        np.testing.assert_allclose(p.grad, pt.grad.numpy(), **tol(dtype))
