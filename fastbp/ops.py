"""Checked functional API over the kernels.

Every function validates its inputs (shapes, dtypes, label ranges), allocates
what it returns, and runs the numba kernel (``backend="numba"``, the default)
or its numpy twin (``backend="numpy"``). Matmuls are BLAS calls through
``numpy.matmul``. Arrays keep their dtype: float32 in, float32 out (float16 and
longdouble are refused: there are no kernels for them).

An ``out=`` array must be writeable, C-contiguous, of the result's shape and
dtype, and either an input itself (in place) or share no memory with any input.

Row-major layout is the default (``y = x @ W + b``, ``x`` (batch, in), ``W``
(in, out)); the ``*_cm`` functions give the column-major form (``f = W @ g + b``,
``W`` (out, in), ``g`` (in, batch)); both are derived in docs/derivations.md,
"Linear layer, row-major" and "Linear layer, column-major".
"""

from __future__ import annotations

import numpy as np

from . import _validate as v
from .backend import activation_code, bias_scratch, get, zero_bias
from .losses import bce_with_logits, cross_entropy, mse_loss, softmax_cross_entropy

__all__ = [
    "linear_forward",
    "linear_backward",
    "bias_grad",
    "activation",
    "activation_backward",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "tanh",
    "tanh_backward",
    "softmax",
    "softmax_backward",
    "softmax_cross_entropy",
    "cross_entropy",
    "mse_loss",
    "bce_with_logits",
    "matmul_backward",
    "linear_forward_cm",
    "linear_backward_cm",
]


def _out(out, name, shape, dtype, *inputs):
    """``out`` checked (or a new array when None); ``inputs`` are the (name, array) pairs the kernel reads.

    ``out`` may be one of the inputs exactly (in place, e.g. ``out=dy``): the elementwise and
    row-wise kernels read what they need of an input row before writing that row of ``out``, and
    ``numpy.matmul`` copies when its output is an operand. Any other sharing of memory with an
    input (a shifted or reshaped view of it) is refused rather than computed through a temporary:
    a kernel writing row ``i`` would clobber input rows it has not read yet, a hidden copy would
    make ``out=`` allocate (what it exists to avoid), and such a call is almost always a bug.
    """
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"{name}: expected a C-contiguous {dtype} array of shape {shape}, got {got}")
    if not out.flags.writeable:
        raise ValueError(f"{name}: expected a writeable array, got a read-only one")
    for in_name, a in inputs:
        # ``out is a`` is the usual in-place call; may_share_memory compares address ranges (cheap);
        # shares_memory is exact, and runs only when those ranges meet.
        if out is not a and np.may_share_memory(out, a) and not _same_view(out, a) and np.shares_memory(out, a):
            raise ValueError(
                f"{name}: overlaps {in_name} without being {in_name}; pass a separate array or {in_name} itself"
            )
    return out


def _same_view(a, b):
    """Whether ``a`` and ``b`` are the same elements in the same layout (``b`` itself, or ``b[...]``)."""
    return a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype and a.ctypes.data == b.ctypes.data


def _weights_and_bias(W, b, in_features, dtype):
    W = v.float_array(W, "W", ndim=2, contiguous=False)
    if dtype is not None:
        v.same_dtype("x", np.empty(0, dtype), "W", W)
    if W.shape[0] != in_features:
        raise ValueError(f"W: expected shape ({in_features}, out) to match x's {in_features} features, got {W.shape}")
    if b is None:
        return W, zero_bias(W.shape[1], W.dtype)
    b = v.float_array(b, "b", ndim=1)
    v.same_dtype("W", W, "b", b)
    if b.shape != (W.shape[1],):
        raise ValueError(f"b: expected shape ({W.shape[1]},) to match W, got {b.shape}")
    return W, b


def linear_forward(x, W, b=None, *, activation=None, out=None, backend="numba"):
    """``y = act(x @ W + b)``, the bias add and activation fused in one pass (zeros stand in for a missing bias).

    Parameters
    ----------
    x : (batch, in) float array
    W : (in, out) float array, same dtype as ``x``
    b : (out,) float array or None
    activation : None, "identity", "relu", "sigmoid" or "tanh"
    out : (batch, out) array to write into, optional

    Returns
    -------
    y : (batch, out) array of ``x``'s dtype
    """
    mod = get(backend)
    x = v.batch(x, "x", contiguous=False)
    W, b = _weights_and_bias(W, b, x.shape[1], x.dtype)
    code = activation_code(activation)
    y = _out(out, "out", (x.shape[0], W.shape[1]), x.dtype, ("x", x), ("W", W), ("b", b))
    np.matmul(x, W, out=y)
    mod.bias_act(y, b, code)
    return y


def bias_grad(dy, *, out=None, backend="numba"):
    """Batch bias reduction ``db = dy.sum(axis=0)``: ``dy`` (batch, out) -> (out,)."""
    mod = get(backend)
    dy = v.batch(dy, "dy")
    db = _out(out, "out", (dy.shape[1],), dy.dtype, ("dy", dy))
    mod.bias_grad(dy, db, bias_scratch(dy.shape[1], dy.dtype))
    return db


def linear_backward(dy, x, W, *, bias=True, backend="numba"):
    """Gradients of ``y = x @ W + b`` given ``dy = dL/dy`` (docs/derivations.md, "Linear layer, row-major").

    Parameters
    ----------
    dy : (batch, out) upstream gradient (after any activation backward)
    x : (batch, in) the forward input
    W : (in, out) weights

    Returns
    -------
    dx : (batch, in) ``dy @ W.T``
    dW : (in, out) ``x.T @ dy``
    db : (out,) ``dy.sum(axis=0)``, or None when ``bias`` is False
    """
    mod = get(backend)
    x = v.batch(x, "x", contiguous=False)
    W, _ = _weights_and_bias(W, None, x.shape[1], x.dtype)
    dy = v.batch(dy, "dy")
    v.same_dtype("x", x, "dy", dy)
    if dy.shape != (x.shape[0], W.shape[1]):
        raise ValueError(f"dy: expected shape {(x.shape[0], W.shape[1])} (batch, out), got {dy.shape}")
    dx = np.matmul(dy, W.T)
    dW = np.matmul(x.T, dy)
    db = None
    if bias:
        db = np.empty(dy.shape[1], dy.dtype)
        mod.bias_grad(dy, db, bias_scratch(dy.shape[1], dy.dtype))
    return dx, dW, db


def activation(x, name, *, out=None, backend="numba"):
    """Elementwise activation (``"identity"``, ``"relu"``, ``"sigmoid"``, ``"tanh"``) of (batch, m) ``x``."""
    mod = get(backend)
    code = activation_code(name)
    x = v.batch(x, "x")
    y = _out(out, "out", x.shape, x.dtype, ("x", x))
    if y is not x:
        np.copyto(y, x)
    mod.bias_act(y, zero_bias(x.shape[1], x.dtype), code)
    return y


def _upstream_and_output(dy, y):
    y = v.batch(y, "y")
    dy = v.batch(dy, "dy")
    v.same_dtype("y", y, "dy", dy)
    v.same_shape("y", y, "dy", dy)
    return dy, y


def activation_backward(dy, y, name, *, out=None, backend="numba"):
    """``dx`` from the upstream ``dy`` and the forward output ``y``, both (batch, m).

    relu: ``dy * (y > 0)``; sigmoid: ``dy * y * (1 - y)``; tanh:
    ``dy * (1 - y**2)``; identity: ``dy``. ``out`` may be ``dy`` for in place.
    Derivations: docs/derivations.md, "ReLU", "Sigmoid", "Tanh".
    """
    mod = get(backend)
    code = activation_code(name)
    dy, y = _upstream_and_output(dy, y)
    dx = _out(out, "out", y.shape, y.dtype, ("dy", dy), ("y", y))
    mod.act_backward(dy, y, code, dx)
    return dx


def relu(x, **kw):
    """``max(x, 0)``; NaN passes through. See :func:`activation`."""
    return activation(x, "relu", **kw)


def sigmoid(x, **kw):
    """``1 / (1 + exp(-x))`` without overflow for any ``x``. See :func:`activation`."""
    return activation(x, "sigmoid", **kw)


def tanh(x, **kw):
    """``tanh(x)``. See :func:`activation`."""
    return activation(x, "tanh", **kw)


def relu_backward(dy, y, **kw):
    """``dy * (y > 0)``: the derivative at exactly 0 is taken as 0 (docs/derivations.md, "ReLU").

    Examples
    --------
    >>> import numpy as np
    >>> from fastbp import ops
    >>> y = ops.relu(np.array([[-2.0, 0.0, 0.5, 3.0]]))
    >>> ops.relu_backward(np.array([[1.0, 2.0, 3.0, 4.0]]), y)
    array([[0., 0., 3., 4.]])
    """
    return activation_backward(dy, y, "relu", **kw)


def sigmoid_backward(dy, y, **kw):
    """``dy * y * (1 - y)`` (docs/derivations.md, "Sigmoid")."""
    return activation_backward(dy, y, "sigmoid", **kw)


def tanh_backward(dy, y, **kw):
    """``dy * (1 - y * y)``."""
    return activation_backward(dy, y, "tanh", **kw)


def softmax(x, *, out=None, backend="numba"):
    """Row-wise softmax of (batch, m) ``x``; the row max is subtracted before ``exp``."""
    mod = get(backend)
    x = v.batch(x, "x")
    y = _out(out, "out", x.shape, x.dtype, ("x", x))
    mod.softmax_forward(x, y)
    return y


def softmax_backward(dy, y, *, out=None, backend="numba"):
    """Softmax Jacobian-vector product per row: ``dx = y * (dy - sum(dy * y))``.

    Derivation: docs/derivations.md, "Softmax Jacobian".
    """
    mod = get(backend)
    dy, y = _upstream_and_output(dy, y)
    dx = _out(out, "out", y.shape, y.dtype, ("dy", dy), ("y", y))
    mod.softmax_backward(dy, y, dx)
    return dx


def matmul_backward(A, B, G=None, *, backend="numba"):
    """Gradients of ``Z = A @ B``: ``dA = G @ B.T``, ``dB = A.T @ G``.

    ``G=None`` means an upstream of ones (``Z`` is the final output, ``y = sum Z``):
    then every row of ``dA`` is ``B.sum(axis=1)`` and every column of ``dB`` is
    ``A.sum(axis=0)``, which the numba backend computes without the matmuls.
    Derivation: docs/derivations.md, "Matmul gradients and the upstream of ones".

    Parameters
    ----------
    A : (m, k), B : (k, n), G : (m, n) or None

    Returns
    -------
    dA : (m, k), dB : (k, n)

    Examples
    --------
    The worked example of the derivation, with ``G=None``:

    >>> import numpy as np
    >>> from fastbp import ops
    >>> A = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> B = np.array([[5.0, 6.0], [7.0, 8.0]])
    >>> dA, dB = ops.matmul_backward(A, B)
    >>> dA
    array([[11., 15.],
           [11., 15.]])
    >>> dB
    array([[4., 4.],
           [6., 6.]])
    """
    mod = get(backend)
    A = v.batch(A, "A", contiguous=False)
    B = v.batch(B, "B", contiguous=False)
    v.same_dtype("A", A, "B", B)
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"B: expected shape ({A.shape[1]}, n) to match A {A.shape}, got {B.shape}")
    m, n = A.shape[0], B.shape[1]
    if G is not None:
        G = v.batch(G, "G", contiguous=False)
        v.same_dtype("A", A, "G", G)
        if G.shape != (m, n):
            raise ValueError(f"G: expected shape {(m, n)} (the shape of A @ B), got {G.shape}")
        return np.matmul(G, B.T), np.matmul(A.T, G)
    if backend == "numpy":
        ones = np.ones((m, n), A.dtype)
        return np.matmul(ones, B.T), np.matmul(A.T, ones)
    row = np.empty(B.shape[0], A.dtype)
    mod.bias_grad(np.ascontiguousarray(B.T), row, bias_scratch(B.shape[0], A.dtype))  # B.sum(axis=1)
    col = np.empty(A.shape[1], A.dtype)
    mod.bias_grad(np.ascontiguousarray(A), col, bias_scratch(A.shape[1], A.dtype))  # A.sum(axis=0)
    return np.broadcast_to(row, (m, B.shape[0])).copy(), np.broadcast_to(col[:, None], (A.shape[1], n)).copy()


def linear_forward_cm(W, g, b=None, *, activation=None, backend="numba"):
    """Column-major Linear: ``f = act(W @ g + b)`` (docs/derivations.md, "Linear layer, column-major").

    Parameters
    ----------
    W : (out, in), g : (in, batch), b : (out,) or None

    Returns
    -------
    f : (out, batch)
    """
    W = v.batch(W, "W", contiguous=False)
    g = v.batch(g, "g", contiguous=False)
    v.same_dtype("W", W, "g", g)
    if g.shape[0] != W.shape[1]:
        raise ValueError(f"g: expected shape ({W.shape[1]}, batch) to match W {W.shape}, got {g.shape}")
    # The transpose of the row-major form: f.T = g.T @ W.T + b, no copies.
    y = linear_forward(g.T, W.T, b, activation=activation, backend=backend)
    return y.T


def linear_backward_cm(df, W, g, *, bias=True, backend="numba"):
    """Gradients of ``f = W @ g + b`` given ``df`` (out, batch) (docs/derivations.md, "Linear layer, column-major").

    Returns
    -------
    dg : (in, batch) ``W.T @ df``
    dW : (out, in) ``df @ g.T``
    db : (out,) ``df.sum(axis=1)``, or None when ``bias`` is False
    """
    W = v.batch(W, "W", contiguous=False)
    g = v.batch(g, "g", contiguous=False)
    df = v.batch(df, "df", contiguous=False)
    if df.shape != (W.shape[0], g.shape[1]):
        raise ValueError(f"df: expected shape {(W.shape[0], g.shape[1])} (out, batch), got {df.shape}")
    dx, dWt, db = linear_backward(df.T, g.T, W.T, bias=bias, backend=backend)
    return dx.T, dWt.T, db
