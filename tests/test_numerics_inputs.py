"""Inputs at the edges: overlapping and read-only ``out=``, float dtypes without kernels, wide probability rows.

Every property runs on the numba backend's serial and forced-parallel paths and
on the numpy backend. ``numba-parallel`` forces every kernel onto its ``prange``
version with ``threads.parallel_min_work(0)``; on a machine without a
thread-safe layer or with one thread it runs serially, and the assertions hold
either way.
"""

import contextlib
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastbp
from fastbp import ops, threads

PATHS = ["numba-serial", "numba-parallel", "numpy"]
DTYPES = [np.float32, np.float64]
# The float dtypes numpy has beyond float32/float64: float16 always, longdouble where it is wider than
# float64 (on some platforms it is float64 itself, and then it is simply accepted).
BAD_FLOATS = [d for d in (np.float16, np.longdouble) if np.dtype(d) not in (np.float32, np.float64)]
ACTIVATIONS = ["identity", "relu", "sigmoid", "tanh"]
FEW = settings(max_examples=30, deadline=None)


@contextlib.contextmanager
def on(path):
    """Run a block on ``path``; yields the backend name."""
    backend, _, version = path.partition("-")
    # A threshold no array reaches forces serial even when FASTBP_PARALLEL_MIN_WORK is set low.
    with threads.parallel_min_work(0 if version == "parallel" else 1 << 62):
        yield backend


def eps(dtype):
    return float(np.finfo(dtype).eps)


# -- out= overlapping an input ----------------------------------------------------------------
#
# Each case: the input shapes for (n, m, k), the call, the output shape, and the tolerance of the
# comparison with the same call on separate copies, in units of eps. Inputs are in [-1, 1). The two
# calls run the same code on the same values, but with inputs at other addresses a vector loop may
# take its scalar fallback or another summation order, so the bound is that of a reordered sum:
# a sum of j terms of size <= s moves by at most j * s * eps. Elementwise results (<= 2 in size)
# differ only by FMA contraction: 8 eps covers that.


def _linear(be, a, out, act):
    return ops.linear_forward(a["x"], a["W"], a["b"], activation=act, out=out, backend=be)


CASES = {
    # k-term dot products of values <= 1: sums <= k, moved by <= k * k eps.
    "linear_forward": (
        lambda n, m, k: {"x": (n, k), "W": (k, m), "b": (m,)},
        lambda n, m, k: (n, m),
        _linear,
        lambda n, m, k: k * k + 8,
    ),
    # n-row column sums: <= n * n eps.
    "bias_grad": (
        lambda n, m, k: {"dy": (n, m)},
        lambda n, m, k: (m,),
        lambda be, a, out, act: ops.bias_grad(a["dy"], out=out, backend=be),
        lambda n, m, k: n * n + 8,
    ),
    "activation": (
        lambda n, m, k: {"x": (n, m)},
        lambda n, m, k: (n, m),
        lambda be, a, out, act: ops.activation(a["x"], act, out=out, backend=be),
        lambda n, m, k: 8,
    ),
    "activation_backward": (
        lambda n, m, k: {"dy": (n, m), "y": (n, m)},
        lambda n, m, k: (n, m),
        lambda be, a, out, act: ops.activation_backward(a["dy"], a["y"], act, out=out, backend=be),
        lambda n, m, k: 8,
    ),
    # Outputs p = e / s in [0, 1]: the m-term row sum s moves by a relative m eps, p by m eps.
    "softmax": (
        lambda n, m, k: {"x": (n, m)},
        lambda n, m, k: (n, m),
        lambda be, a, out, act: ops.softmax(a["x"], out=out, backend=be),
        lambda n, m, k: m + 8,
    ),
    # dx = y (dy - s) with s an m-term sum of products <= 1: s moves by m * m eps.
    "softmax_backward": (
        lambda n, m, k: {"dy": (n, m), "y": (n, m)},
        lambda n, m, k: (n, m),
        lambda be, a, out, act: ops.softmax_backward(a["dy"], a["y"], out=out, backend=be),
        lambda n, m, k: m * m + 8,
    ),
}


def _same_view(a, b):
    return a.ctypes.data == b.ctypes.data and a.shape == b.shape and a.strides == b.strides


def _in_one_buffer(data, shapes, dtype):
    """Views of the given shapes at random offsets into one random buffer: (buffer, inputs, out, names of
    the inputs that ``out`` overlaps without being them)."""
    length = 2 * max(int(np.prod(s)) for s in shapes.values()) + 1
    buf = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).uniform(-1, 1, length).astype(dtype)
    views = {}
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        start = data.draw(st.integers(0, length - size), label=f"offset of {name}")
        views[name] = buf[start : start + size].reshape(shape)
    out = views.pop("out")
    partial = [name for name, a in views.items() if np.shares_memory(out, a) and not _same_view(out, a)]
    return buf, views, out, partial


@FEW
@given(
    data=st.data(),
    n=st.integers(1, 5),
    m=st.integers(1, 6),
    k=st.integers(1, 6),
    dtype=st.sampled_from(DTYPES),
    act=st.sampled_from(ACTIVATIONS),
)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(CASES))
def test_out_overlapping_an_input_is_refused_or_right(case, path, data, n, m, k, dtype, act):
    """Inputs and ``out`` at random offsets into one buffer: the documented error, or the separate-arrays result.

    Never a silently wrong result. The error may come only when ``out`` shares memory with an input
    without being that input; an ``out`` that is an input itself (in place) or disjoint from all
    must get the right values. (That fastbp refuses every partial overlap is the next test.)
    """
    in_shapes, out_shape, call, units = CASES[case]
    buf, views, out, partial = _in_one_buffer(data, {**in_shapes(n, m, k), "out": out_shape(n, m, k)}, dtype)
    with on(path) as be:
        expected = call(be, {name: a.copy() for name, a in views.items()}, None, act)
        before = buf.copy()
        try:
            got = call(be, views, out, act)
        except ValueError as e:
            # Only a partial overlap may be refused, with the documented message, before anything is written.
            assert partial and re.fullmatch(rf"out: overlaps ({'|'.join(partial)}) without being \1; .*", str(e)), e
            np.testing.assert_array_equal(buf, before)
        else:
            assert got is out
            tol = units(n, m, k) * eps(dtype)
            np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


@FEW
@given(
    data=st.data(),
    n=st.integers(1, 5),
    m=st.integers(1, 6),
    k=st.integers(1, 6),
    dtype=st.sampled_from(DTYPES),
    act=st.sampled_from(ACTIVATIONS),
)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(CASES))
def test_every_partial_overlap_is_refused(case, path, data, n, m, k, dtype, act):
    """fastbp's choice, the same on both backends: a partial overlap is a ValueError naming ``out`` and the input."""
    in_shapes, out_shape, call, _ = CASES[case]
    buf, views, out, partial = _in_one_buffer(data, {**in_shapes(n, m, k), "out": out_shape(n, m, k)}, dtype)
    assume(partial)
    with on(path) as be:
        with pytest.raises(ValueError, match=rf"out: overlaps ({'|'.join(partial)}) without being \1; pass a"):
            call(be, views, out, act)


@pytest.mark.parametrize("path", PATHS)
def test_the_issue_example_is_refused_and_exact_aliasing_works(path):
    buf = np.arange(8, dtype=np.float32)
    with on(path) as be:
        with pytest.raises(ValueError, match="out: overlaps x without being x; pass a separate array or x itself"):
            ops.softmax(buf[0:6].reshape(2, 3), out=buf[2:8].reshape(2, 3), backend=be)
        x = buf[0:6].reshape(2, 3)
        expected = ops.softmax(x.copy(), backend=be)
        # Exact aliasing through another view object of the same memory is in place, not an overlap.
        got = ops.softmax(x, out=buf[0:6].reshape(2, 3), backend=be)
        np.testing.assert_allclose(got, expected, rtol=8 * eps(np.float32))
        dy = np.ones((2, 3), np.float32)
        assert ops.relu_backward(dy, got, out=dy, backend=be) is dy


# -- a loss fed its own gradient ---------------------------------------------------------------

LOSSES = [fastbp.SoftmaxCrossEntropy, fastbp.CrossEntropy, fastbp.MSELoss, fastbp.BCEWithLogits]


def _target(loss_cls, rng, n, k, dtype):
    if loss_cls in (fastbp.SoftmaxCrossEntropy, fastbp.CrossEntropy):
        return rng.integers(0, k, n)
    return rng.uniform(0, 1, (n, k)).astype(dtype)


@FEW
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 6),
    k=st.integers(1, 8),
    dtype=st.sampled_from(DTYPES),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    as_target=st.booleans(),
)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("loss_cls", LOSSES)
def test_loss_fed_its_own_gradient(loss_cls, path, seed, n, k, dtype, reduction, as_target):
    """``loss(loss.backward(), t)`` reads the gradient buffer the loss is about to overwrite: same result as a copy.

    Tolerance: the two calls compute the same values in the same code at other addresses; the loss
    sums n * k terms (<= n * k eps relative if reordered), each gradient element uses a k-term row sum.
    """
    rng = np.random.default_rng(seed)
    t = _target(loss_cls, rng, n, k, dtype)
    with on(path) as be:
        loss, fresh = loss_cls(reduction=reduction, backend=be), loss_cls(reduction=reduction, backend=be)
        loss(rng.uniform(-2, 2, (n, k)).astype(dtype), t)
        g = loss.backward()
        if as_target and loss_cls is fastbp.MSELoss:  # the one loss whose target may be any real array
            args, copies = (t, g), (t.copy(), g.copy())
        else:
            args, copies = (g, t), (g.copy(), t)
        expected, expected_grad = fresh(*copies), fresh.backward()
        got = loss(*args)
        tol = (n * k + 8) * eps(dtype)
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
        np.testing.assert_allclose(loss.backward(), expected_grad, rtol=tol, atol=tol)


# -- out= that cannot be written ---------------------------------------------------------------


@FEW
@given(
    n=st.integers(1, 5),
    m=st.integers(1, 6),
    k=st.integers(1, 6),
    dtype=st.sampled_from(DTYPES),
    act=st.sampled_from(ACTIVATIONS),
    in_place=st.booleans(),
)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(CASES))
def test_read_only_or_strided_out_is_refused(case, path, n, m, k, dtype, act, in_place):
    in_shapes, out_shape, call, _ = CASES[case]
    inputs = {name: np.full(shape, 0.5, dtype) for name, shape in in_shapes(n, m, k).items()}
    shape = out_shape(n, m, k)
    first = next(iter(inputs.values()))
    # A read-only out: a separate array, or (where shapes allow) the read-only input itself.
    out = first if in_place and first.shape == shape else np.zeros(shape, dtype)
    out.flags.writeable = False
    before = out.copy()
    with on(path) as be:
        with pytest.raises(ValueError, match="out: expected a writeable array"):
            call(be, inputs, out, act)
        np.testing.assert_array_equal(out, before)
        strided = np.zeros((*shape[:-1], 2 * shape[-1]), dtype)[..., ::2]
        if not strided.flags.c_contiguous:  # one element is contiguous whatever its strides
            with pytest.raises(ValueError, match="out: expected a C-contiguous"):
                call(be, inputs, strided, act)


# -- float dtypes without kernels --------------------------------------------------------------
#
# Each entry: the function, the argument names in order, their shapes for (n, m, k). Every
# argument here sets the computation's dtype, so float16 or longdouble in any one of them is a
# TypeError naming it.


DTYPE_SETTERS = {
    "linear_forward": (lambda be, a: ops.linear_forward(a["x"], a["W"], a["b"], backend=be), "x W b"),
    "linear_backward": (lambda be, a: ops.linear_backward(a["dy"], a["x"], a["W"], backend=be), "dy x W"),
    "bias_grad": (lambda be, a: ops.bias_grad(a["dy"], backend=be), "dy"),
    "activation": (lambda be, a: ops.tanh(a["x"], backend=be), "x"),
    "activation_backward": (lambda be, a: ops.sigmoid_backward(a["dy"], a["y"], backend=be), "dy y"),
    "softmax": (lambda be, a: ops.softmax(a["x"], backend=be), "x"),
    "softmax_backward": (lambda be, a: ops.softmax_backward(a["dy"], a["y"], backend=be), "dy y"),
    "matmul_backward": (lambda be, a: ops.matmul_backward(a["A"], a["B"], a["G"], backend=be), "A B G"),
    "matmul_backward_ones": (lambda be, a: ops.matmul_backward(a["A"], a["B"], backend=be), "A B"),
    "linear_forward_cm": (lambda be, a: ops.linear_forward_cm(a["W"], a["g"], a["b"], backend=be), "W g b"),
    "linear_backward_cm": (lambda be, a: ops.linear_backward_cm(a["df"], a["W"], a["g"], backend=be), "df W g"),
    "softmax_cross_entropy": (
        lambda be, a: ops.softmax_cross_entropy(a["logits"], np.zeros(len(a["logits"]), np.int64), backend=be),
        "logits",
    ),
    "cross_entropy": (
        lambda be, a: ops.cross_entropy(a["probs"], np.zeros(len(a["probs"]), np.int64), backend=be),
        "probs",
    ),
    "mse_loss": (lambda be, a: ops.mse_loss(a["pred"], np.zeros_like(a["pred"]), backend=be), "pred"),
    "bce_with_logits": (
        lambda be, a: ops.bce_with_logits(a["logits"], np.zeros_like(a["logits"]), backend=be),
        "logits",
    ),
}


def _shapes(n, m, k):
    """Argument shapes for (n, m, k): row-major (batch n, in k, out m); the column-major ones transposed."""
    rows = {"x": (n, k), "W": (k, m), "b": (m,), "dy": (n, m), "y": (n, m), "A": (n, k), "B": (k, m), "G": (n, m)}
    return {**rows, "logits": (n, m), "probs": (n, m), "pred": (n, m)}


def _shapes_cm(n, m, k):
    return {"W": (m, k), "g": (k, n), "b": (m,), "df": (m, n)}


@FEW
@given(data=st.data(), n=st.integers(1, 4), m=st.integers(1, 5), k=st.integers(1, 5), bad=st.sampled_from(BAD_FLOATS))
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fn_name", list(DTYPE_SETTERS))
def test_float16_and_longdouble_are_refused_naming_the_argument(fn_name, path, data, n, m, k, bad):
    call, names = DTYPE_SETTERS[fn_name]
    names = names.split()
    shapes = (_shapes_cm if fn_name.endswith("_cm") else _shapes)(n, m, k)
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype of the others")
    arg = data.draw(st.sampled_from(names), label="argument given in the bad dtype")
    arrays = {name: np.full(shapes[name], 0.25, bad if name == arg else dtype) for name in names}
    with on(path) as be:
        with pytest.raises(TypeError, match=rf"^{arg}: expected float32 or float64, got {np.dtype(bad)} \(convert"):
            call(be, arrays)


@FEW
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), k=st.integers(1, 6), bad=st.sampled_from(BAD_FLOATS))
@pytest.mark.parametrize("path", PATHS)
def test_arrays_with_a_given_dtype_are_converted(path, seed, n, k, bad):
    """Where fastbp chooses the dtype (a layer's, or the logits' for targets and weights), other floats convert.

    The result must be bitwise that of the call on the arrays converted by hand (the same ``astype``),
    except the loss values, reductions compared within one rounding per term.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, k)).astype(bad)
    t = rng.uniform(-1, 1, (n, k)).astype(bad)
    # One-hot rows and weights in quarters: exact in float16, so the rows still sum to 1 exactly.
    q = np.eye(k, dtype=bad)[rng.integers(0, k, n)]
    w = (rng.integers(1, 8, k) / 4).astype(bad)
    with on(path) as be:
        layer = fastbp.Linear(k, 3, seed=0, backend=be)
        np.testing.assert_array_equal(layer.forward(x).copy(), layer.forward(x.astype(np.float32)))
        z = rng.uniform(-1, 1, (n, k)).astype(np.float32)
        got = ops.softmax_cross_entropy(z, q, weight=w, backend=be)
        want = ops.softmax_cross_entropy(z, q.astype(np.float32), weight=w.astype(np.float32), backend=be)
        assert abs(got[0] - want[0]) <= n * k * np.finfo(np.float32).eps * abs(want[0])
        np.testing.assert_array_equal(got[1], want[1])
        # A loss value is a reduction: the parallel build's partial sums may group differently
        # from one call to the next (seen about once in three full runs on the parallel path),
        # so it is compared within one rounding per term, not bitwise.
        got_mse = ops.mse_loss(z, t, backend=be)[0]
        want_mse = ops.mse_loss(z, t.astype(np.float32), backend=be)[0]
        assert abs(got_mse - want_mse) <= n * k * np.finfo(np.float32).eps * abs(want_mse)


# -- probability rows of any width -------------------------------------------------------------

WIDTHS = [1, 2, 10, 10_000, 10_001, 100_003, 1_000_000]


def _rows(rng, kind, k, dtype):
    """A row of positive weights normalised in ``dtype`` by ``q / q.sum()``."""
    if kind == "uniform":
        q = rng.uniform(0, 1, k)
    elif kind == "skewed":  # a few entries dominate, most are tiny or underflow to 0
        q = rng.uniform(0, 1, k) ** 30
        q[rng.integers(0, k)] = 1.0
    else:  # sparse: mostly zeros
        q = rng.uniform(0, 1, k) * (rng.uniform(0, 1, k) < 0.01)
        q[rng.integers(0, k)] = 1.0
    q = q.astype(dtype)
    return (q / q.sum())[None, :]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.sampled_from(WIDTHS),
    kind=st.sampled_from(["uniform", "skewed", "sparse"]),
    rows_dtype=st.sampled_from(DTYPES),
    logits_dtype=st.sampled_from(DTYPES),
)
@pytest.mark.parametrize("path", PATHS)
def test_probability_rows_tolerance_does_not_grow_with_width(path, seed, k, kind, rows_dtype, logits_dtype):
    """Rows normalised in float32 or float64 pass at any width up to 1e6 (also checked as the other dtype);
    an all-zero row or one summing to 0.99 fails at every width."""
    rng = np.random.default_rng(seed)
    z = np.zeros((1, k), logits_dtype)
    q = _rows(rng, kind, k, rows_dtype)
    with on(path) as be:
        loss, grad = ops.softmax_cross_entropy(z, q, backend=be)
        assert np.isfinite(loss) and loss >= 0 and np.isfinite(grad).all()
        ops.cross_entropy(np.full((1, k), 1 / k, logits_dtype), q, backend=be)
        for bad in (np.zeros_like(q), q * rows_dtype(0.99)):
            with pytest.raises(ValueError, match="target: expected rows summing to 1"):
                ops.softmax_cross_entropy(z, bad, backend=be)
            with pytest.raises(ValueError, match="target: expected rows summing to 1"):
                ops.cross_entropy(np.full((1, k), 1 / k, logits_dtype), bad, backend=be)
