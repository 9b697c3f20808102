"""Every kernel against its numpy twin: float32 and float64, edge shapes, both compiled versions."""

import numpy as np
import pytest
from _helpers import DTYPES, SHAPES, tol

from fastbp import kernels as K
from fastbp import reference as R
from fastbp.kernels import IDENTITY, RELU, SIGMOID, TANH

VERSIONS = ["serial", "parallel"]


def run(name, version, *args):
    """Run kernel ``name`` in the chosen compiled version, and its twin, on copies of ``args``."""
    a = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
    b = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
    ra = getattr(getattr(K, name), version)(*a)
    rb = getattr(R, name)(*b)
    return (ra, a), (rb, b)


def assert_same(pair, dtype, check_return=True):
    (ra, a), (rb, b) = pair
    for x, y in zip(a, b):
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype
            np.testing.assert_allclose(x, y, **tol(dtype))
    if check_return and ra is not None:
        # A returned total sums row losses; near-zero row losses are log(s) with s ~ 1, where one
        # float32 ulp in s is ~1e-7 absolute: hence an absolute term per row for float32.
        rows = next(x for x in a if isinstance(x, np.ndarray)).shape[0]
        np.testing.assert_allclose(
            ra, rb, rtol=1e-5 if dtype == np.float32 else 1e-11, atol=2e-7 * rows if dtype == np.float32 else 0
        )


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", [IDENTITY, RELU, SIGMOID, TANH])
def test_bias_act(rng, shape, dtype, version, act):
    y = (rng.standard_normal(shape) * 3).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    assert_same(run("bias_act", version, y, b, act), dtype)
    assert_same(run("bias_act", version, y, np.zeros(shape[1], dtype), act), dtype)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", [IDENTITY, RELU, SIGMOID, TANH])
def test_act_backward(rng, shape, dtype, version, act):
    dy = rng.standard_normal(shape).astype(dtype)
    y = rng.standard_normal(shape).astype(dtype)
    if act == SIGMOID:
        y = rng.random(shape).astype(dtype)
    assert_same(run("act_backward", version, dy, y, act, np.empty(shape, dtype)), dtype)


def test_act_backward_in_place(rng):
    dy = rng.standard_normal((4, 9)).astype(np.float32)
    y = rng.random((4, 9)).astype(np.float32)
    expected = dy * y * (1 - y)
    K.act_backward(dy, y, SIGMOID, dy)
    np.testing.assert_allclose(dy, expected, rtol=1e-6)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax(rng, shape, dtype, version):
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    assert_same(run("softmax_forward", version, x, np.empty(shape, dtype)), dtype)
    y = R.softmax_forward(x, out := np.empty(shape, dtype)) or out
    dy = rng.standard_normal(shape).astype(dtype)
    assert_same(run("softmax_backward", version, dy, y, np.empty(shape, dtype)), dtype)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(1024, 257), (3, 64), (2, 65)])
def test_bias_grad(rng, shape, dtype, version):
    dy = rng.standard_normal(shape).astype(dtype)
    scratch = np.full((8, shape[1]), np.nan, dtype)
    pair = run("bias_grad", version, dy, np.full(shape[1], np.nan, dtype), scratch)  # stale contents overwritten
    (_, a), (_, b) = pair
    rtol = 1e-4 if dtype == np.float32 else 1e-12  # float32 sums of up to 1024 terms, numpy sums pairwise
    np.testing.assert_allclose(a[1], b[1], rtol=rtol, atol=rtol * np.sqrt(shape[0]))
    assert a[1].dtype == dtype


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
# k < NARROW (64) takes the blocked path (64 rows a block: 130 and 200 rows end mid-block), k >= 64 the row path
@pytest.mark.parametrize("shape", SHAPES + [(130, 10), (200, 63), (7, 64)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_softmax_xent_labels(rng, shape, dtype, version, weighted, smoothing):
    n, k = shape
    z = (rng.standard_normal(shape) * 4).astype(dtype)
    labels = rng.integers(0, k, n)
    w = rng.random(k).astype(dtype) + 0.1 if weighted else np.empty(0, dtype)
    t = np.dtype(dtype).type
    pair = run(
        "softmax_xent_labels", version, z, labels, w, t(smoothing), t(1 / n), np.empty(shape, dtype), np.empty(n, dtype)
    )
    assert_same(pair, dtype)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["in place", "F order"])
def test_softmax_xent_labels_narrow_in_place_and_strided(rng, dtype, version, layout):
    # the narrow path writes the shifted scores into grad before exponentiating: grad may be z
    # itself, and a grad numba types as non-contiguous takes the block's row-by-row exp
    n, k = 150, 10
    z = (rng.standard_normal((n, k)) * 4).astype(dtype)
    labels = rng.integers(0, k, n)
    t = np.dtype(dtype).type
    w = np.empty(0, dtype)
    want_g, want_r = np.empty_like(z), np.empty(n, dtype)
    R.softmax_xent_labels(z, labels, w, t(0.1), t(1 / n), want_g, want_r)
    rows = np.empty(n, dtype)
    if layout == "in place":
        g = z.copy()
        getattr(K.softmax_xent_labels, version)(g, labels, w, t(0.1), t(1 / n), g, rows)
    else:
        g = np.asfortranarray(np.empty_like(z))
        getattr(K.softmax_xent_labels, version)(np.asfortranarray(z), labels, w, t(0.1), t(1 / n), g, rows)
    np.testing.assert_allclose(g, want_g, **tol(dtype))
    np.testing.assert_allclose(rows, want_r, **tol(dtype))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_xent_probs(rng, shape, dtype, version, weighted):
    n, k = shape
    z = (rng.standard_normal(shape) * 4).astype(dtype)
    q = rng.random(shape).astype(dtype)
    q /= q.sum(axis=1, keepdims=True)
    w = rng.random(k).astype(dtype) + 0.1 if weighted else np.empty(0, dtype)
    t = np.dtype(dtype).type
    pair = run("softmax_xent_probs", version, z, q, w, t(0.1), t(1 / n), np.empty(shape, dtype), np.empty(n, dtype))
    assert_same(pair, dtype)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_xent(rng, shape, dtype, version):
    n, k = shape
    x = rng.random(shape).astype(dtype)
    x[0, 0] = 0  # clamped at eps
    labels = rng.integers(0, k, n)
    t = np.dtype(dtype).type
    assert_same(
        run("xent_labels", version, x, labels, t(1e-7), t(1 / n), np.empty(shape, dtype), np.empty(n, dtype)), dtype
    )
    q = rng.random(shape).astype(dtype)
    assert_same(run("xent_probs", version, x, q, t(1e-7), t(1 / n), np.empty(shape, dtype), np.empty(n, dtype)), dtype)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("elementwise", [False, True])
def test_mse_and_bce(rng, shape, dtype, version, elementwise):
    p = rng.standard_normal(shape).astype(dtype)
    y = rng.random(shape).astype(dtype)
    t = np.dtype(dtype).type
    elems = np.empty(shape if elementwise else (0, 0), dtype)
    assert_same(run("mse", version, p, y, t(0.5), t(1.0), np.empty(shape, dtype), elems), dtype)
    z = (rng.standard_normal(shape) * 30).astype(dtype)
    assert_same(run("bce_logits", version, z, y, t(0.25), np.empty(shape, dtype), elems), dtype)


def _compile_uncached(py_func, *args, fastmath=None):
    """``py_func`` compiled with fastbp's options for ``args``, uncached: inspection is off for cached code."""
    import numba

    from fastbp.jit import JIT_OPTIONS

    opts = {**JIT_OPTIONS, "cache": False}
    if fastmath is not None:
        opts["fastmath"] = set(fastmath)
    fn = numba.njit(**opts)(py_func)
    fn(*args)
    return fn


# A float32 sum that LLVM widens to a double accumulator (fpext, then fadd/phi, in vectors or
# not) is only more accurate, and measured no slower (benchmarks/fastmath_flags.py); arithmetic
# in double (fmul, fdiv, calls) is what the check is for.
ACCUMULATE = ("fpext", "fadd", "phi", "shufflevector", "extractelement", "insertelement")


def double_precision_work(fn):
    """Instructions of ``fn``'s compiled LLVM function that compute on float32 data in double precision.

    Walks the optimised IR of the kernel's own function (not numba's Python
    wrapper, whose ``PyFloat_AsDouble`` + ``fptrunc`` unboxes float arguments)
    through llvmlite's instruction API, so nothing depends on how numba or LLVM
    name SSA values. Flagged:

    * any instruction on or producing a vector of doubles (a promoted vectorised loop)
      other than a widened float32 sum (:data:`ACCUMULATE`);
    * any ``fptrunc`` (a value computed in double and narrowed back to float32),
      except of a double accumulator itself (a ``phi``/``fadd``): a float64 row sum
      rounded once to float32;
    * a scalar ``fpext float -> double`` of anything but a function argument (a
      float32 scalar parameter converted once is not array work), unless its only
      uses are ``fadd``s into a double accumulator (a ``phi``/``fadd`` chain): the
      allowed promotion, a float32 partial sum (a block of a row, or a row loss)
      added to a float64 total (docs/numerics.md, "Wide rows").
    """
    import ctypes
    from collections import defaultdict

    from llvmlite.binding import ValueKind

    cres = fn.overloads[fn.signatures[0]]
    func = cres.library.get_function(cres.fndesc.llvm_func_name)
    instrs = [i for block in func.blocks for i in block.instructions]

    def ident(v):  # the address of the underlying llvm::Value: its identity
        return ctypes.cast(v._as_parameter_, ctypes.c_void_p).value

    defs = {ident(i): i for i in instrs}
    users = defaultdict(list)
    for ins in instrs:
        for op in ins.operands:
            users[ident(op)].append(ins)
    flagged = []
    for ins in instrs:
        ops = list(ins.operands)
        if any("x double>" in str(v.type) for v in [ins, *ops]) and ins.opcode not in ACCUMULATE:
            flagged.append(str(ins).strip())
        elif ins.opcode == "fptrunc":
            source = defs.get(ident(ops[0]))
            if source is None or source.opcode not in ("phi", "fadd"):
                flagged.append(str(ins).strip())
        elif ins.opcode == "fpext" and ops[0].value_kind != ValueKind.argument:
            for use in users[ident(ins)]:
                other = [defs.get(ident(o)) for o in use.operands if ident(o) != ident(ins)]
                accumulates = use.opcode in ("phi", "shufflevector", "insertelement") or (
                    use.opcode == "fadd"
                    and len(other) == 1
                    and other[0] is not None
                    and other[0].opcode in ("phi", "fadd", "fpext", "shufflevector")
                )
                if not accumulates:
                    flagged.append(str(use).strip())
    return flagged


@pytest.mark.parametrize(
    "name,args",
    [
        ("bias_act", lambda a: (a, a[0], SIGMOID)),
        ("act_backward", lambda a: (a, a, TANH, a.copy())),
        ("softmax_forward", lambda a: (a, a.copy())),
        ("softmax_backward", lambda a: (a, a, a.copy())),
        ("bias_grad", lambda a: (a, a[0].copy(), np.empty((8, 8), np.float32))),
        ("softmax_xent_probs", lambda a: (a, a, a[0], np.float32(0.1), np.float32(0.5), a.copy(), a[0].copy())),
        (
            "softmax_xent_labels",
            lambda a: (a, np.zeros(4, np.int64), a[0], np.float32(0.1), np.float32(0.5), a.copy(), a[:, 0].copy()),
        ),
        ("mse", lambda a: (a, a, np.float32(0.5), np.float32(1), a.copy(), a.copy())),
        ("bce_logits", lambda a: (a, a * 0.5, np.float32(1), a.copy(), a.copy())),
    ],
)
def test_kernels_keep_float32_inside(name, args):
    """No array value is promoted to double inside a float32 kernel (docs/derivations.md, "float32 kernels stay
    float32": slower loops). Compiled with each kernel's own fastmath flags."""
    kern = getattr(K, name)
    fn = _compile_uncached(kern.py_func, *args(np.ones((4, 8), np.float32)), fastmath=kern.fastmath)
    flagged = double_precision_work(fn)
    assert not flagged, f"{name}: float32 values computed in double: {flagged[:3]}"


# Kernels that make the mistakes the check exists for, and the allowed pattern.
def _planted_literal(x, out):
    for i in range(x.shape[0]):
        out[i] = x[i] * 0.1  # a Python float is float64: x[i] is widened, multiplied, narrowed


def _planted_np_float64(x, out):
    for i in range(x.shape[0]):
        out[i] = np.exp(np.float64(x[i]))


def _planted_scaled_row_total(x, out):
    total = 0.0
    for i in range(x.shape[0]):
        s = x.dtype.type(0.0)
        for j in range(x.shape[1]):
            s += x[i, j]
        total += s * 0.1  # scalar, not vectorised: the row sum is promoted and multiplied in double
    return total


def _allowed_row_total(x, out):
    total = 0.0
    for i in range(x.shape[0]):
        s = x.dtype.type(0.0)
        for j in range(x.shape[1]):
            s += x[i, j]
        total += s  # what the loss kernels do: one float32 row value added to a float64 total
    return total


@pytest.mark.parametrize("py_func", [_planted_literal, _planted_np_float64, _planted_scaled_row_total])
def test_float64_promotion_check_catches_a_planted_promotion(py_func):
    a = np.ones((4, 33), np.float32)
    x = a[:, 0].copy() if py_func is not _planted_scaled_row_total else a
    assert double_precision_work(_compile_uncached(py_func, x, x.copy()))


def test_float64_promotion_check_allows_a_float64_row_total():
    a = np.ones((4, 33), np.float32)
    assert double_precision_work(_compile_uncached(_allowed_row_total, a, a.copy())) == []


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits_stay_finite(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype)
    y = np.empty_like(z)
    K.softmax_forward(z, y)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[0], [1, 0, 0])
    np.testing.assert_allclose(y[1], [1 / 3] * 3, rtol=1e-6)
    s = z.copy()
    K.bias_act(s, np.zeros(3, dtype), SIGMOID)
    assert np.isfinite(s).all()
    np.testing.assert_allclose(s[0], [1, 0, 0.5])
    g = np.empty_like(z)
    rows = np.empty(2, dtype)
    t = np.dtype(dtype).type
    total = K.softmax_xent_labels(z, np.array([1, 2]), np.empty(0, dtype), t(0), t(0.5), g, rows)
    assert np.isfinite(total) and np.isfinite(g).all()
    np.testing.assert_allclose(rows, [2e4, np.log(3)], rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates(dtype):
    y = np.array([[np.nan, 1.0, -1.0]], dtype)
    for act in (IDENTITY, RELU, SIGMOID, TANH):
        a = y.copy()
        K.bias_act(a, np.zeros(3, dtype), act)
        assert np.isnan(a[0, 0]) and np.isfinite(a[0, 1:]).all()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_count_hits(rng, shape, dtype, version):
    scores = rng.standard_normal(shape).astype(dtype)
    scores[0, :] = 0  # ties: the first maximum counts, as numpy's argmax
    labels = rng.integers(0, shape[1], shape[0])
    labels[: shape[0] // 2] = scores[: shape[0] // 2].argmax(axis=1)  # make some hits certain
    assert getattr(K.count_hits, version)(scores, labels) == R.count_hits(scores, labels)
