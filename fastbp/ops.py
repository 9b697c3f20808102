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
from .backend import bias_scratch, get, identity_bias, resolve_activation, zero_bias
from .jit import ELU, LEAKY_RELU
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
    "leaky_relu",
    "leaky_relu_backward",
    "elu",
    "elu_backward",
    "gelu",
    "gelu_backward",
    "silu",
    "silu_backward",
    "softplus",
    "softplus_backward",
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


def linear_forward(x, W, b=None, *, activation=None, activation_params=None, out=None, backend="numba"):
    """``y = act(x @ W + b)``, the bias add and activation fused in one pass (zeros stand in for a missing bias).

    Parameters
    ----------
    x : (batch, in) float array
    W : (in, out) float array, same dtype as ``x``
    b : (out,) float array or None
    activation : None, "identity", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu",
        "gelu_tanh", "silu" or "softplus"
    activation_params : dict or None, the activation's parameters (see :class:`fastbp.Linear`)
    out : (batch, out) array to write into, optional

    Returns
    -------
    y : (batch, out) array of ``x``'s dtype
    """
    mod = get(backend)
    x = v.batch(x, "x", contiguous=False)
    W, b = _weights_and_bias(W, b, x.shape[1], x.dtype)
    act = resolve_activation(activation, activation_params)
    y = _out(out, "out", (x.shape[0], W.shape[1]), x.dtype, ("x", x), ("W", W), ("b", b))
    np.matmul(x, W, out=y)
    act.forward(mod, y, b)
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


def activation(x, name, *, params=None, out=None, backend="numba"):
    """Elementwise activation of (batch, m) ``x``.

    ``name``: "identity", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu",
    "gelu_tanh", "silu" or "softplus"; ``params`` the activation's parameters as a
    dict (PyTorch's names, see :class:`fastbp.Linear`). ``out`` may be ``x`` for in place.
    """
    mod = get(backend)
    act = resolve_activation(name, params, argument="params")
    x = v.batch(x, "x")
    y = _out(out, "out", x.shape, x.dtype, ("x", x))
    if y is not x:
        np.copyto(y, x)
    # The newer activations add -0.0, which leaves -0.0 alone (gelu(-0.0) is -0.0, as in PyTorch);
    # identity, relu, sigmoid and tanh keep their zeros bias (-0.0 in, +0.0 out, as they always were).
    bias = zero_bias if act.original else identity_bias
    act.forward(mod, y, bias(x.shape[1], x.dtype))
    return y


def _upstream_and_output(dy, y):
    y = v.batch(y, "y")
    dy = v.batch(dy, "dy")
    v.same_dtype("y", y, "dy", dy)
    v.same_shape("y", y, "dy", dy)
    return dy, y


def activation_backward(dy, y, name, *, x=None, params=None, out=None, backend="numba"):
    """``dx`` from the upstream ``dy`` and the forward output ``y`` or input ``x``, all (batch, m).

    relu: ``dy * (y > 0)``; sigmoid: ``dy * y * (1 - y)``; tanh:
    ``dy * (1 - y**2)``; identity: ``dy``; leaky_relu: ``dy`` where ``y > 0``, else
    ``negative_slope * dy``; elu: ``dy * (y + alpha)`` where ``y <= 0``, else ``dy``.
    gelu, gelu_tanh, silu and softplus need ``x`` (their derivative is not a function of
    ``y``: pass ``y=None``), and so do leaky_relu and elu with a negative parameter; when
    ``x`` is given, leaky_relu and elu read it instead of ``y``. ``out`` may be ``dy``
    for in place. Derivations: docs/derivations.md, one section per activation.
    """
    mod = get(backend)
    act = resolve_activation(name, params, argument="params")
    if y is None and (x is None or act.original):
        raise ValueError(f"y: expected the forward output for {name!r}, got None")
    if y is not None:
        dy, y = _upstream_and_output(dy, y)
    else:
        dy = v.batch(dy, "dy")
    if x is not None:
        x = v.batch(x, "x")
        v.same_dtype("dy", dy, "x", x)
        v.same_shape("dy", dy, "x", x)
    elif act.reads_input:
        when = f" when {next(iter(act.params))} < 0" if act.code in (LEAKY_RELU, ELU) else ""
        raise ValueError(
            f"x: expected the forward input for {name!r} (y does not determine the derivative{when}), got None"
        )
    inputs = [(n, a) for n, a in (("dy", dy), ("y", y), ("x", x)) if a is not None]
    dx = _out(out, "out", dy.shape, dy.dtype, *inputs)
    act.backward(mod, dy, y, x, dx)
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


def leaky_relu(x, negative_slope=0.01, **kw):
    """``x`` where ``x > 0``, else ``negative_slope * x`` (``torch.nn.functional.leaky_relu``). See :func:`activation`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbp import ops
    >>> ops.leaky_relu(np.array([[-2.0, 0.0, 3.0]]), 0.1)
    array([[-0.2,  0. ,  3. ]])
    """
    return activation(x, "leaky_relu", params={"negative_slope": negative_slope}, **kw)


def leaky_relu_backward(dy, y, negative_slope=0.01, *, x=None, **kw):
    """``dy`` where ``y > 0`` (or ``x > 0`` when ``x`` is given), else ``negative_slope * dy``.

    From the output this is exact for ``negative_slope >= 0``; a negative slope needs the
    input ``x`` (docs/derivations.md, "LeakyReLU").
    """
    return activation_backward(dy, y, "leaky_relu", x=x, params={"negative_slope": negative_slope}, **kw)


def elu(x, alpha=1.0, **kw):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)`` (``torch.nn.functional.elu``). See :func:`activation`."""
    return activation(x, "elu", params={"alpha": alpha}, **kw)


def elu_backward(dy, y, alpha=1.0, *, x=None, **kw):
    """``dy * (y + alpha)`` where ``y <= 0``, else ``dy``; from ``x`` when given: ``dy * alpha * exp(x)``.

    A negative ``alpha`` needs ``x`` (docs/derivations.md, "ELU").
    """
    return activation_backward(dy, y, "elu", x=x, params={"alpha": alpha}, **kw)


def gelu(x, approximate="none", **kw):
    """``x * Phi(x)`` (``approximate="tanh"``: the tanh form), as ``torch.nn.functional.gelu``.

    See :func:`activation`.
    """
    return activation(x, "gelu", params={"approximate": approximate}, **kw)


def gelu_backward(dy, x, approximate="none", **kw):
    """``dy * (Phi(x) + x phi(x))`` from the forward *input* ``x`` (docs/derivations.md, "GELU")."""
    return activation_backward(dy, None, "gelu", x=x, params={"approximate": approximate}, **kw)


def silu(x, **kw):
    """``x * sigmoid(x)`` (``torch.nn.functional.silu``). See :func:`activation`."""
    return activation(x, "silu", **kw)


def silu_backward(dy, x, **kw):
    """``dy * s * (1 + x (1 - s))``, ``s = sigmoid(x)``, from the forward *input* ``x``.

    docs/derivations.md, "SiLU".
    """
    return activation_backward(dy, None, "silu", x=x, **kw)


def softplus(x, beta=1.0, threshold=20.0, **kw):
    """``log1p(exp(beta x)) / beta``, ``x`` where ``beta x > threshold`` (``torch.nn.functional.softplus``).

    Never overflows. See :func:`activation`.
    """
    return activation(x, "softplus", params={"beta": beta, "threshold": threshold}, **kw)


def softplus_backward(dy, x, beta=1.0, threshold=20.0, **kw):
    """``dy * sigmoid(beta x)``, ``dy`` where ``beta x > threshold``, from the forward *input* ``x``.

    docs/derivations.md, "Softplus".
    """
    return activation_backward(dy, None, "softplus", x=x, params={"beta": beta, "threshold": threshold}, **kw)


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
