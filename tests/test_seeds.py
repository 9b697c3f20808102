"""The worked examples of docs/derivations.md, with values checked by hand.

Test names keep the numbers 000-004 of the five hand derivations; the contents
table of docs/derivations.md maps each number to its sections:
000, 004: "Linear layer, row-major" (004 also "Bias gradient summed over the batch").
001: "Linear layer, column-major", "Sigmoid", "Squared error", "Sigmoid network with squared error".
002: "Matmul gradients and the upstream of ones".
003: "Linear layer, column-major", "Batch-averaged gradients", "Softmax Jacobian",
     "Cross-entropy on probabilities", "Fused softmax cross-entropy", "ReLU".
"""

import math

import numpy as np
import pytest

import fastbp
from fastbp import ops

BACKENDS = ["numba", "numpy"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_000_row_major_2x3_times_3x2(backend):
    h = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    W = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
    b = np.array([0.5, -0.5], np.float32)
    G = np.array([[1, 2], [3, -1]], np.float32)  # DL/Dlogit
    # Logit11 = h11 w11 + h12 w21 + h13 w31 + b1 = 1 + 6 + 15 + 0.5 = 22.5 (Eq. 1), and so on.
    np.testing.assert_array_equal(ops.linear_forward(h, W, b, backend=backend), [[22.5, 27.5], [49.5, 63.5]])
    dh, dW, db = ops.linear_backward(G, h, W, backend=backend)
    # DL/Dh11 = G11 w11 + G12 w12 = 1*1 + 2*2 = 5; DL/Dh12 = G11 w21 + G12 w22 = 3 + 8 = 11; ...
    np.testing.assert_array_equal(dh, [[5, 11, 17], [1, 5, 9]])
    # DL/DW11 = G11 h11 + G21 h21 = 1 + 12 = 13; DL/DW12 = G12 h11 + G22 h21 = 2 - 4 = -2; ...
    np.testing.assert_array_equal(dW, [[13, -2], [17, -1], [21, 0]])
    np.testing.assert_array_equal(db, [4, 1])
    assert dh.dtype == dW.dtype == db.dtype == np.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_004_row_major_2_inputs_3_outputs(backend):
    x = np.array([[1, 2], [3, -1]], np.float64)  # two samples
    W = np.array([[1, 2, 3], [4, 5, 6]], np.float64)  # w_ij: input i -> output j
    b = np.array([1, 0, -1], np.float64)
    # y0 = w00 x0 + w10 x1 + b0 = 1 + 8 + 1 = 10 ...
    np.testing.assert_array_equal(ops.linear_forward(x, W, b, backend=backend), [[10, 12, 14], [0, 1, 2]])
    G = np.array([[1, 0, -1], [2, 1, 0]], np.float64)
    dx, dW, db = ops.linear_backward(G, x, W, backend=backend)
    # dL/dX0 = dL/dY0 w00 + dL/dY1 w01 + dL/dY2 w02 = 1 + 0 - 3 = -2 (first sample)
    np.testing.assert_array_equal(dx, [[-2, -2], [4, 13]])
    # dL/dw00 = x0 dL/dy0 summed over the samples = 1*1 + 3*2 = 7
    np.testing.assert_array_equal(dW, [[7, 3, -1], [0, -1, -2]])
    # dL/db: "sum over all samples"
    np.testing.assert_array_equal(db, [3, 1, -1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_002_matmul_gradients_none_means_ones(backend):
    a = np.array([[1, 2], [3, 4]], np.float32)
    bm = np.array([[5, 6], [7, 8]], np.float32)
    dA, dB = ops.matmul_backward(a, bm, None, backend=backend)
    # dZ/da11 = dZ11/da11 + dZ12/da11 = b11 + b12 = 11; dZ/da12 = b21 + b22 = 15
    np.testing.assert_array_equal(dA, [[11, 15], [11, 15]])
    # dZ/db = a.T @ ones: dZ/db11 = a11 + a21 = 4, dZ/db21 = a12 + a22 = 6
    np.testing.assert_array_equal(dB, [[4, 4], [6, 6]])
    # with explicit gradients G: dA = G @ b.T, dB = a.T @ G
    G = np.array([[1, 0], [0, 2]], np.float32)
    dA, dB = ops.matmul_backward(a, bm, G, backend=backend)
    np.testing.assert_array_equal(dA, [[5, 7], [12, 16]])
    np.testing.assert_array_equal(dB, [[1, 6], [2, 8]])


def _sig(t):
    return 1 / (1 + math.exp(-t))


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_001_sigmoid_network_column_major(backend):
    # f = W @ g + b, h = sigmoid(f), LOSS = 1/2 sum (h - y)^2, one sample (g is a column).
    W = np.array([[0.1, -0.2], [0.3, 0.4]])
    g = np.array([[0.5], [-1.0]])
    b = np.array([0.05, -0.1])
    y = np.array([[1.0], [0.0]])
    f1 = 0.1 * 0.5 + -0.2 * -1.0 + 0.05  # 0.3
    f2 = 0.3 * 0.5 + 0.4 * -1.0 - 0.1  # -0.35
    h1, h2 = _sig(f1), _sig(f2)
    h = ops.linear_forward_cm(W, g, b, activation="sigmoid", backend=backend)
    np.testing.assert_allclose(h.ravel(), [h1, h2], rtol=1e-15)
    loss, dh = ops.mse_loss(h, y, reduction="sum", half=True, backend=backend)
    np.testing.assert_allclose(loss, 0.5 * ((h1 - 1) ** 2 + h2**2), rtol=1e-15)
    np.testing.assert_allclose(dh.ravel(), [h1 - 1, h2], rtol=1e-15)  # dLOSS/dh = h - y
    df = ops.sigmoid_backward(dh, np.ascontiguousarray(h), backend=backend)  # * h (1 - h)
    d1, d2 = (h1 - 1) * h1 * (1 - h1), h2 * h2 * (1 - h2)
    np.testing.assert_allclose(df.ravel(), [d1, d2], rtol=1e-14)
    dg, dW, db = ops.linear_backward_cm(df, W, g, backend=backend)
    np.testing.assert_allclose(dW, [[d1 * 0.5, d1 * -1.0], [d2 * 0.5, d2 * -1.0]], rtol=1e-14)  # df @ g.T
    np.testing.assert_allclose(db, [d1, d2], rtol=1e-14)  # dLOSS/db = dLOSS/df
    np.testing.assert_allclose(dg.ravel(), [0.1 * d1 + 0.3 * d2, -0.2 * d1 + 0.4 * d2], rtol=1e-14)  # W.T @ df


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_003_column_major_batch_averaged_linear(backend):
    # W (out=2, in=3), input (in=3, batch=2); grad W = dv_output @ input.T / batch_size with dv_output per sample.
    W = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]])
    x = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]])
    dv = np.array([[1.0, -1.0], [0.5, 2.0]])  # per-sample dLoss_i/doutput
    batch = 2
    # A mean-reduced loss hands each layer dv / batch; fastbp then needs no extra division.
    dg, dW, db = ops.linear_backward_cm(dv / batch, W, x, backend=backend)
    # dv @ x.T = [[1*1 + -1*2, 0 + 1, 3 - 1], [0.5 + 4, 0 - 2, 1.5 + 2]] = [[-1, 1, 2], [4.5, -2, 3.5]]
    np.testing.assert_allclose(dW, np.array([[-1, 1, 2], [4.5, -2, 3.5]]) / batch, rtol=1e-15)
    np.testing.assert_allclose(db, np.array([0, 2.5]) / batch, rtol=1e-15)  # sum(dv_output, 2) / batch
    # dv_input = W.T @ dv_output
    np.testing.assert_allclose(dg, np.array([[2, 3], [0.5, 2], [-1, 1]]) / batch, rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_003_softmax_jacobian(backend):
    x = np.array([[0.2, -1.0, 3.0, 0.5]])
    e = np.exp(x[0])
    y = e / e.sum()
    # dy_k/dx_i = y_k (delta_ik - y_i): -e^{x_i+x_k}/P^2 off the diagonal, e^{x_i}/P - e^{2x_i}/P^2 on it.
    J = np.array([[y[k] * ((i == k) - y[i]) for i in range(4)] for k in range(4)])
    dy = np.array([[1.0, -2.0, 0.5, 0.25]])
    np.testing.assert_allclose(ops.softmax(x, backend=backend)[0], y, rtol=1e-15)
    np.testing.assert_allclose(ops.softmax_backward(dy, y[None], backend=backend)[0], J.T @ dy[0], rtol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_003_cross_entropy_on_probabilities(backend):
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.25, 0.5, 0.25]])
    t = np.array([0, 2, 1])
    loss, g = ops.cross_entropy(p, t, backend=backend)
    N = 3
    np.testing.assert_allclose(loss, -(math.log(0.7) + math.log(0.8) + math.log(0.5)) / N, rtol=1e-15)
    expected = np.zeros_like(p)
    expected[[0, 1, 2], t] = [-1 / (0.7 * N), -1 / (0.8 * N), -1 / (0.5 * N)]  # -1 / (x_t N)
    np.testing.assert_allclose(g, expected, rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_003_softmax_then_cross_entropy_equals_fused(backend):
    """Softmax Jacobian times -1/(x_t N) is exactly the fused (p - onehot) / N."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((4, 5))
    t = np.array([0, 4, 2, 2])
    p = ops.softmax(z, backend=backend)
    _, dp = ops.cross_entropy(p, t, backend=backend)
    chained = ops.softmax_backward(dp, p, backend=backend)
    _, fused = ops.softmax_cross_entropy(z, t, backend=backend)
    onehot = np.eye(5)[t]
    np.testing.assert_allclose(fused, (p - onehot) / 4, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(chained, fused, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_003_relu(backend):
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    dy = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    layer = fastbp.ReLU(dtype=np.float64, backend=backend)
    y = layer.forward(x)
    dx = layer.backward(dy)
    # The hand derivation (docs/derivations.md, "ReLU"): dL/dx = dL/dy * 1(x >= 0). Away from 0 both agree:
    away = x[0] != 0
    np.testing.assert_array_equal(dx[0][away], (dy * (x >= 0))[0][away])
    # At exactly 0 fastbp takes the derivative as 0 (PyTorch's choice): the backward
    # only has the output y = max(x, 0), and y > 0 is what it can test.
    assert dx[0, 2] == 0.0
    np.testing.assert_array_equal(y, [[0, 0, 0, 0.5, 3.0]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_004_bias_gradient_summed_over_batch_by_layer(backend):
    layer = fastbp.Linear(2, 3, dtype=np.float64, seed=0, backend=backend)
    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    layer.forward(x)
    G = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]])
    layer.backward(G)
    np.testing.assert_array_equal(layer.b.grad, [3, 1, -1])
    np.testing.assert_array_equal(layer.W.grad, [[7, 3, -1], [0, -1, -2]])
