"""Central finite differences in float64 on every layer, every loss and a whole MLP.

Tolerance: with step h = 1e-6 the central difference has truncation error
O(h^2) ~ 1e-12 and rounding error ~ eps/h ~ 1e-10 relative to the function
value, so analytic and numeric gradients must agree to rtol 1e-6, atol 1e-8.
"""

import numpy as np
import pytest

import fastbp
from fastbp import ops

H = 1e-6
RTOL, ATOL = 1e-6, 1e-8
BACKENDS = ["numba", "numpy"]


def numeric_grad(f, x):
    """d f / d x by central differences; ``f`` reads ``x`` (mutated in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + H
        fp = f()
        flat[i] = old - H
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * H)
    return g


def check(analytic, numeric):
    np.testing.assert_allclose(analytic, numeric, rtol=RTOL, atol=ATOL)


LAYERS = {
    "linear": lambda b: fastbp.Linear(5, 4, dtype=np.float64, seed=0, backend=b),
    "linear_relu": lambda b: fastbp.Linear(5, 4, activation="relu", dtype=np.float64, seed=1, backend=b),
    "linear_sigmoid": lambda b: fastbp.Linear(5, 4, activation="sigmoid", dtype=np.float64, seed=2, backend=b),
    "linear_tanh": lambda b: fastbp.Linear(5, 4, activation="tanh", dtype=np.float64, seed=3, backend=b),
    "linear_nobias": lambda b: fastbp.Linear(5, 4, bias=False, dtype=np.float64, seed=4, backend=b),
    "relu": lambda b: fastbp.ReLU(dtype=np.float64, backend=b),
    "sigmoid": lambda b: fastbp.Sigmoid(dtype=np.float64, backend=b),
    "tanh": lambda b: fastbp.Tanh(dtype=np.float64, backend=b),
    "softmax": lambda b: fastbp.Softmax(dtype=np.float64, backend=b),
    "identity": lambda b: fastbp.Identity(dtype=np.float64, backend=b),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", LAYERS)
def test_layer_gradients(rng, name, backend):
    layer = LAYERS[name](backend)
    width = getattr(layer, "in_features", 5)
    x = rng.standard_normal((3, width))
    x[np.abs(x) < 1e-3] = 0.5  # keep ReLU away from its kink
    y0 = layer.forward(x)
    R = rng.standard_normal(y0.shape)  # L = sum(y * R), so dL/dy = R

    def loss():
        return float((layer.forward(x) * R).sum())

    layer.forward(x)
    dx = layer.backward(R).copy()
    grads = [p.grad.copy() for p in layer.parameters()]
    check(dx, numeric_grad(loss, x))
    for p, g in zip(layer.parameters(), grads):
        check(g, numeric_grad(loss, p.data))


def _targets(rng, kind, n, k):
    if kind == "labels":
        return rng.integers(0, k, n)
    q = rng.random((n, k))
    return q / q.sum(axis=1, keepdims=True)


LOSSES = {
    "softmax_xent": lambda: fastbp.SoftmaxCrossEntropy(),
    "softmax_xent_sum": lambda: fastbp.SoftmaxCrossEntropy(reduction="sum"),
    "softmax_xent_weighted_smoothed": lambda: fastbp.SoftmaxCrossEntropy(
        weight=[0.5, 1.0, 2.0, 0.1], label_smoothing=0.15
    ),
    "cross_entropy": lambda: fastbp.CrossEntropy(),
    "mse": lambda: fastbp.MSELoss(),
    "mse_half_sum": lambda: fastbp.MSELoss(reduction="sum", half=True),
    "bce_logits": lambda: fastbp.BCEWithLogits(),
}


CLASSIFICATION = ["softmax_xent", "softmax_xent_sum", "softmax_xent_weighted_smoothed", "cross_entropy"]
REGRESSION = ["mse", "mse_half_sum", "bce_logits"]
CASES = [(n, kind) for n in CLASSIFICATION for kind in ("labels", "probs")] + [(n, "float") for n in REGRESSION]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,kind", CASES)
def test_loss_gradients(rng, name, kind, backend):
    loss_fn = LOSSES[name]()
    loss_fn.backend = backend
    n, k = 5, 4
    if kind == "float":
        pred, target = rng.standard_normal((n, k)), rng.random((n, k))
    else:
        target = _targets(rng, kind, n, k)
        pred = rng.standard_normal((n, k)) * 2
        if name == "cross_entropy":
            pred = rng.random((n, k)) * 0.9 + 0.05  # probabilities, away from the eps clamp
    loss_fn.forward(pred, target)
    g = loss_fn.backward().copy()
    check(g, numeric_grad(lambda: loss_fn.forward(pred, target), pred))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_gradient_packed(rng, backend):
    """Whole 3-layer network: the gradient over the packed parameter vector (as scikit-learn's test_gradient)."""
    model = fastbp.Sequential(
        fastbp.Linear(6, 7, activation="tanh", dtype=np.float64, seed=0, backend=backend),
        fastbp.Linear(7, 5, activation="relu", dtype=np.float64, seed=1, backend=backend),
        fastbp.Linear(5, 3, dtype=np.float64, seed=2, backend=backend),
    )
    loss_fn = fastbp.SoftmaxCrossEntropy(backend=backend)
    x = rng.standard_normal((8, 6))
    y = rng.integers(0, 3, 8)
    params = model.parameters()
    packed = np.concatenate([p.data.ravel() for p in params])

    def unpack(vec):
        i = 0
        for p in params:
            p.data[...] = vec[i : i + p.data.size].reshape(p.data.shape)
            i += p.data.size

    def loss():
        unpack(packed)
        return loss_fn.forward(model.forward(x), y)

    loss()
    dx = model.backward(loss_fn.backward(), input_grad=True).copy()
    analytic = np.concatenate([p.grad.ravel() for p in params])
    numeric = numeric_grad(loss, packed)
    check(analytic, numeric)
    unpack(packed)  # the numeric loop restored ``packed``, not the model
    # and the input gradient of the whole network
    check(dx, numeric_grad(lambda: loss_fn.forward(model.forward(x), y), x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_matmul_backward_numeric(rng, backend):
    A, B, G = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal((3, 2))
    dA, dB = ops.matmul_backward(A, B, G, backend=backend)
    check(dA, numeric_grad(lambda: float(((A @ B) * G).sum()), A))
    check(dB, numeric_grad(lambda: float(((A @ B) * G).sum()), B))
    dA, dB = ops.matmul_backward(A, B, None, backend=backend)  # upstream of ones: y = sum(A @ B)
    check(dA, numeric_grad(lambda: float((A @ B).sum()), A))
    check(dB, numeric_grad(lambda: float((A @ B).sum()), B))


@pytest.mark.parametrize("backend", BACKENDS)
def test_column_major_linear_numeric(rng, backend):
    W, g, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(3)
    R = rng.standard_normal((3, 5))

    def loss():
        return float((ops.linear_forward_cm(W, g, b, activation="sigmoid", backend=backend) * R).sum())

    f = ops.linear_forward_cm(W, g, b, activation="sigmoid", backend=backend)
    df = ops.sigmoid_backward(np.ascontiguousarray(R), np.ascontiguousarray(f), backend=backend)
    dg, dW, db = ops.linear_backward_cm(df, W, g, backend=backend)
    check(dg, numeric_grad(loss, g))
    check(dW, numeric_grad(loss, W))
    check(db, numeric_grad(loss, b))
