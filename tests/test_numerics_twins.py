"""Kernels, their numpy twins and PyTorch on special values: +-inf, NaN, +-1e30, +-1e-30, subnormals, +-0.

Property-based differential tests. Each kernel runs in both compiled versions (``K.name.serial`` and
``K.name.parallel``) against its twin in :mod:`fastbp.reference` (the test oracle), and the twin runs
against PyTorch where PyTorch has the op. :func:`assert_agree` asks for NaN at the same places, the same
infinities (sign included) and finite values within a bound derived per op from its inputs, in units of
``u``, the unit roundoff (half the machine epsilon) of the dtype. The bounds hold for any order of
summation and with or without fused multiply-adds, so nothing depends on the instruction set or on
the thread count.

Two error sources recur:

* ``FN``: an elementary function (exp, log, log1p, tanh) is within 4 ulp = 8 u in every implementation
  used: fastbp's float32 exp within 2 ulp (tests/test_math.py), numpy's SIMD float32 exp and log
  measured at 2.4 and 3.0 ulp, libm and PyTorch's SLEEF within 1 ulp. (One ulp is at most 2 u.)
* ``tiny``: results below the smallest normal number may be flushed to 0: fastbp's float32 exp returns 0
  there (fastbp.kernels.vmath) and torch.sigmoid's ``1 / (1 + exp(-x))`` overflows exp(-x), where numpy
  gives a subnormal. So values computed from an exp may differ by ``tiny`` in absolute terms.

Where fastbp deliberately differs from PyTorch, the test skips those positions and says why, and a
plain test below pins fastbp's behaviour. Kernel bugs (kernel differs from the twin and PyTorch) are
were fixed in the kernels; the plain tests below pin the examples (bce at z = +inf, count_hits with NaN).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastbp import kernels as K
from fastbp import reference as R
from fastbp.kernels import IDENTITY, RELU, SIGMOID, TANH
from fastbp.kernels.linear import CHUNKS

VERSIONS = ["serial", "parallel"]
DTYPES = [np.float32, np.float64]
FEW = settings(max_examples=40, deadline=None)
MORE = settings(max_examples=60, deadline=None)  # for tests that also draw the activation or the target kind
FN = 8  # elementary-function error of one implementation, in u (see the module docstring)
INF, NAN = np.inf, np.nan
EPS64 = float(np.finfo(np.float64).eps)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def unit(dtype):
    """``(u, tiny)``: the unit roundoff and the smallest normal number of ``dtype``."""
    fi = np.finfo(dtype)
    return float(fi.eps) / 2, float(fi.tiny)


# -- inputs ----------------------------------------------------------------------------------------


def subnormal(dtype):
    return 1e-40 if dtype == np.float32 else 1e-310


def specials(dtype):
    """The special values, each exactly representable in ``dtype``."""
    s = subnormal(dtype)
    vals = [INF, -INF, NAN, 1e30, -1e30, 1e-30, -1e-30, s, -s, 0.0, -0.0, 1e-40]
    return [float(dtype(v)) for v in vals]


def mixed(dtype, lo=-100.0, hi=100.0):
    """Ordinary values in [lo, hi] mixed half and half with the special values.

    Ordinary values stay small so that every sum and product either stays far from the overflow
    threshold or overflows by far (1e30 * 1e30): an order of operations then never decides between a
    finite result and an infinite one.
    """
    width = 32 if dtype == np.float32 else 64
    return st.one_of(st.sampled_from(specials(dtype)), st.floats(lo, hi, width=width))


def unit_interval(dtype, lo=0.0):
    """Values in [lo, 1] with their special values (0, -0, 1, 1e-30, a subnormal), for outputs of sigmoid,
    tanh and softmax and for targets: the backward formulas are only ever fed those."""
    width = 32 if dtype == np.float32 else 64
    s = subnormal(dtype)
    edge = [0.0, -0.0, 1.0, 1e-30, s] + ([-1.0, -1e-30, -s] if lo < 0 else [])
    return st.one_of(st.sampled_from([float(dtype(v)) for v in edge]), st.floats(lo, 1.0, width=width))


def with_nan(strategy):
    return st.one_of(strategy, st.just(NAN))


def shapes(max_rows=5, max_cols=6):
    return st.tuples(st.integers(1, max_rows), st.integers(1, max_cols))


def arrays(dtype, shape, elements):
    return hnp.arrays(dtype, shape, elements=elements)


# -- comparison ------------------------------------------------------------------------------------


def assert_agree(actual, expected, tol, what, *, skip=None, signed_zeros=False):
    """NaN at the same places, the same infinities, ``|actual - expected| <= tol`` elsewhere.

    ``tol`` broadcasts against the arrays; a NaN bound fails (a bound must be finite wherever the
    results are). ``skip`` masks documented exceptions. ``signed_zeros`` also compares the sign of
    zeros, for results that are selects or copies of an input.
    """
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    with np.errstate(invalid="ignore", over="ignore"):
        tol = np.broadcast_to(np.asarray(tol, np.float64), a.shape)
        nan_a, nan_e = np.isnan(a), np.isnan(e)
        finite = np.isfinite(a) & np.isfinite(e)
        bad = nan_a != nan_e
        bad |= ~finite & ~nan_a & ~nan_e & (a != e)  # an infinity against another value
        bad |= finite & ~(np.abs(a - e) <= tol)
        if signed_zeros:
            bad |= (a == 0) & (e == 0) & (np.signbit(a) != np.signbit(e))
    if skip is not None:
        bad &= ~np.broadcast_to(skip, bad.shape)
    if bad.any():
        idx = [tuple(int(i) for i in ix) for ix in np.argwhere(bad)[:5]]
        rows = "; ".join(f"{ix}: {a[ix]!r} vs {e[ix]!r} (tol {tol[ix]:.3g})" for ix in idx)
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} disagree, e.g. {rows}")


def assert_total(actual, expected, tol, what):
    assert_agree(np.array([actual]), np.array([expected]), np.array([tol]), what)


def run_kernel(name, version, *args):
    """Kernel ``name`` in one compiled version on copies of ``args``: (return value, the copies)."""
    a = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
    return getattr(getattr(K, name), version)(*a), a


def run_twin(name, *args):
    a = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
    with np.errstate(all="ignore"):
        return getattr(R, name)(*a), a


def T(torch, a):
    return torch.from_numpy(np.ascontiguousarray(a))


def f64(a):
    return np.asarray(a, np.float64)


def softmax64(z):
    """Row softmax of ``z`` in float64 (NaN rows where a logit is +inf or NaN, or all are -inf): for bounds."""
    z = f64(z)
    with np.errstate(invalid="ignore"):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


# -- activations -----------------------------------------------------------------------------------


ACTS = [IDENTITY, RELU, SIGMOID, TANH]


@st.composite
def bias_act_cases(draw, dtype):
    n, m = draw(shapes())
    y, b = draw(arrays(dtype, (n, m), mixed(dtype))), draw(arrays(dtype, (m,), mixed(dtype)))
    return dict(dtype=dtype, act=draw(st.sampled_from(ACTS)), y=y, b=b)


def bias_act_tol(act, dtype, a, e):
    u, tiny = unit(dtype)
    r = np.maximum(np.abs(f64(a)), np.abs(f64(e)))
    if act == SIGMOID:
        # y + b is one identical rounding everywhere; then exp (FN), 1 + e, the division and e * s: the exp
        # error is damped by e / (1 + e) <= 1, so (FN + 3) u per side; plus the flush to 0 below tiny.
        return 2 * (FN + 3) * u * r + tiny
    if act == TANH:
        return 2 * FN * u * r + tiny  # one tanh per side on the same rounded y + b
    return 0.0  # identity and relu: the same additions and selects, bit for bit


def torch_act(torch, act, x):
    return {IDENTITY: lambda t: t, RELU: torch.relu, SIGMOID: torch.sigmoid, TANH: torch.tanh}[act](x)


# -0 + -0 is -0, which relu keeps (the twin's np.maximum made it +0); NaN passes through.
_RELU_SIGNED_ZERO = dict(
    dtype=np.float32, act=RELU, y=np.array([[-0.0, -1.0, NAN]], np.float32), b=np.array([-0.0, 0.5, 0.0], np.float32)
)


@MORE
@given(case=st.sampled_from(DTYPES).flatmap(bias_act_cases))
@example(case=_RELU_SIGNED_ZERO)
def test_bias_act_kernels_match_twin(case):
    dtype, act, y, b = case["dtype"], case["act"], case["y"], case["b"]
    _, (twin, _, _) = run_twin("bias_act", y, b, act)
    for version in VERSIONS:
        _, (out, _, _) = run_kernel("bias_act", version, y, b, act)
        assert_agree(
            out,
            twin,
            bias_act_tol(act, dtype, out, twin),
            f"bias_act {act} {version}",
            signed_zeros=act in (IDENTITY, RELU),
        )


@MORE
@given(case=st.sampled_from(DTYPES).flatmap(bias_act_cases))
@example(case=_RELU_SIGNED_ZERO)
def test_bias_act_twin_matches_torch(torch, case):
    dtype, act, y, b = case["dtype"], case["act"], case["y"], case["b"]
    _, (twin, _, _) = run_twin("bias_act", y, b, act)
    ref = torch_act(torch, act, T(torch, y) + T(torch, b)).numpy()
    assert_agree(
        twin, ref, bias_act_tol(act, dtype, twin, ref), f"bias_act {act} vs torch", signed_zeros=act in (IDENTITY, RELU)
    )


@st.composite
def act_backward_cases(draw, dtype):
    shape = draw(shapes())
    act = draw(st.sampled_from(ACTS))
    if act == SIGMOID:  # y is a sigmoid output: in [0, 1] (or NaN)
        y_values = with_nan(unit_interval(dtype))
    elif act == TANH:  # a tanh output: in [-1, 1]
        y_values = with_nan(unit_interval(dtype, lo=-1.0))
    else:  # relu and identity only compare y with 0: anything goes
        y_values = mixed(dtype)
    dy = draw(arrays(dtype, shape, mixed(dtype)))
    return dict(dtype=dtype, act=act, dy=dy, y=draw(arrays(dtype, shape, y_values)))


def act_backward_tol(act, dtype, dy, y, a, e):
    u, tiny = unit(dtype)
    dy, y = f64(dy), f64(y)
    with np.errstate(invalid="ignore", over="ignore"):
        if act == SIGMOID:
            # dy * y * (1 - y) in any association: 1 - y and two products, 3 u per side. Products that
            # underflow lose at most tiny: the factor that multiplies them afterwards is at most 1 in size
            # (a pair product with dy underflows only when it is tiny, and y (1 - y) is exact for subnormal y).
            return 8 * u * np.abs(dy * y * (1 - y)) + tiny
        if act == TANH:
            # 1 - y*y with or without a fused multiply-add: an absolute error of u y^2 + u |1 - y^2| per
            # side, relative to |dy|; then the product, u |dy (1 - y^2)|.
            return 4 * u * np.abs(dy) * (y * y + np.abs(1 - y * y)) + tiny
    return 0.0  # relu and identity: selects and copies


def torch_act_backward(torch, act, dy, y):
    # What autograd calls (PyTorch's tools/autograd/derivatives.yaml): relu -> threshold_backward(grad,
    # result, 0), sigmoid -> sigmoid_backward(grad, result), tanh -> tanh_backward(grad, result).
    g, o = T(torch, dy), T(torch, y)
    aten = torch.ops.aten
    if act == RELU:
        return aten.threshold_backward(g, o, 0).numpy()
    if act == SIGMOID:
        return aten.sigmoid_backward(g, o).numpy()
    if act == TANH:
        return aten.tanh_backward(g, o).numpy()
    return g.numpy()


_RELU_ISSUE = dict(
    dtype=np.float32,
    act=RELU,
    dy=np.array([[INF, NAN, -INF, 2.0]], np.float32),
    y=np.array([[0.0, -1.0, -0.0, 3.0]], np.float32),
)


@MORE
@given(case=st.sampled_from(DTYPES).flatmap(act_backward_cases))
@example(case=_RELU_ISSUE)  # the issue's example: inf/NaN dy where y <= 0 gave NaN in the twin
def test_act_backward_kernels_match_twin(case):
    dtype, act, dy, y = case["dtype"], case["act"], case["dy"], case["y"]
    _, (_, _, _, twin) = run_twin("act_backward", dy, y, act, np.empty_like(dy))
    for version in VERSIONS:
        _, (_, _, _, out) = run_kernel("act_backward", version, dy, y, act, np.empty_like(dy))
        tol = act_backward_tol(act, dtype, dy, y, out, twin)
        assert_agree(out, twin, tol, f"act_backward {act} {version}", signed_zeros=act in (IDENTITY, RELU))


@MORE
@given(case=st.sampled_from(DTYPES).flatmap(act_backward_cases))
@example(case=_RELU_ISSUE)
def test_act_backward_twin_matches_torch(torch, case):
    dtype, act, dy, y = case["dtype"], case["act"], case["dy"], case["y"]
    _, (_, _, _, twin) = run_twin("act_backward", dy, y, act, np.empty_like(dy))
    ref = torch_act_backward(torch, act, dy, y)
    # Exception: ReLU at a NaN output. fastbp's derivative is [y > 0], 0 there; PyTorch's
    # threshold_backward computes ``y <= 0 ? 0 : dy`` and passes dy (test_relu_backward_at_nan_output).
    skip = np.isnan(y) if act == RELU else None
    tol = act_backward_tol(act, dtype, dy, y, twin, ref)
    assert_agree(twin, ref, tol, f"act_backward {act} vs torch", skip=skip, signed_zeros=act in (IDENTITY, RELU))


def test_relu_backward_at_nan_output():
    """fastbp's ReLU derivative is [y > 0]: 0 at a NaN output (kernel and twin); PyTorch passes dy there."""
    dy = np.array([[3.0, INF]], np.float32)
    y = np.array([[NAN, NAN]], np.float32)
    _, (_, _, _, twin) = run_twin("act_backward", dy, y, RELU, np.empty_like(dy))
    for version in VERSIONS:
        _, (_, _, _, out) = run_kernel("act_backward", version, dy, y, RELU, np.empty_like(dy))
        np.testing.assert_array_equal(out, [[0.0, 0.0]])
    np.testing.assert_array_equal(twin, [[0.0, 0.0]])
    torch = pytest.importorskip("torch")
    x = torch.tensor([[NAN, NAN]], requires_grad=True)
    torch.relu(x).backward(T(torch, dy))
    np.testing.assert_array_equal(x.grad.numpy(), dy)  # autograd itself, not only threshold_backward


# -- softmax ---------------------------------------------------------------------------------------


@st.composite
def softmax_cases(draw, dtype):
    shape = draw(shapes())
    return dict(
        dtype=dtype,
        x=draw(arrays(dtype, shape, mixed(dtype))),
        dy=draw(arrays(dtype, shape, mixed(dtype))),
        y=draw(arrays(dtype, shape, with_nan(unit_interval(dtype)))),  # a softmax output, rows not normalised
    )


def softmax_tol(dtype, k, a, e):
    # Per side: each exp(x - max) FN (the subtraction is the same rounding everywhere), their sum of k
    # positive terms (k + 1) u in any order, the division or the product by 1/s 2 u: (2 FN + k + 3) u.
    u, tiny = unit(dtype)
    return 2 * (2 * FN + k + 3) * u * np.maximum(np.abs(f64(a)), np.abs(f64(e))) + tiny


def softmax_backward_tol(dtype, dy, y):
    # dx_j = y_j (dy_j - S), S = sum_k dy_k y_k. Per side: S within (k + 1) u sum |dy y| (any order,
    # fused or not), the subtraction u |dy_j - S|, the product u |dx_j|: together
    # y_j ((k + 1) u sum |dy y| + 2 u |dy_j - S|). Products of subnormals lose < tiny in total.
    u, tiny = unit(dtype)
    dy, y = f64(dy), f64(y)
    k = dy.shape[1]
    with np.errstate(invalid="ignore", over="ignore"):
        s = (dy * y).sum(axis=1, keepdims=True)
        return 2 * u * np.abs(y) * ((k + 1) * np.abs(dy * y).sum(axis=1, keepdims=True) + 2 * np.abs(dy - s)) + tiny


@FEW
@given(case=st.sampled_from(DTYPES).flatmap(softmax_cases))
def test_softmax_kernels_match_twin(case):
    dtype, x, dy, y = case["dtype"], case["x"], case["dy"], case["y"]
    _, (_, twin) = run_twin("softmax_forward", x, np.empty_like(x))
    _, (_, _, twin_b) = run_twin("softmax_backward", dy, y, np.empty_like(dy))
    for version in VERSIONS:
        _, (_, out) = run_kernel("softmax_forward", version, x, np.empty_like(x))
        assert_agree(out, twin, softmax_tol(dtype, x.shape[1], out, twin), f"softmax_forward {version}")
        _, (_, _, out_b) = run_kernel("softmax_backward", version, dy, y, np.empty_like(dy))
        assert_agree(out_b, twin_b, softmax_backward_tol(dtype, dy, y), f"softmax_backward {version}")


@FEW
@given(case=st.sampled_from(DTYPES).flatmap(softmax_cases))
def test_softmax_twin_matches_torch(torch, case):
    dtype, x, dy, y = case["dtype"], case["x"], case["dy"], case["y"]
    _, (_, twin) = run_twin("softmax_forward", x, np.empty_like(x))
    ref = torch.softmax(T(torch, x), 1).numpy()
    assert_agree(twin, ref, softmax_tol(dtype, x.shape[1], twin, ref), "softmax_forward vs torch")
    _, (_, _, twin_b) = run_twin("softmax_backward", dy, y, np.empty_like(dy))
    # What autograd calls for softmax: _softmax_backward_data(grad, output, dim, input_dtype).
    ref_b = torch.ops.aten._softmax_backward_data(T(torch, dy), T(torch, y), 1, T(torch, y).dtype).numpy()
    assert_agree(twin_b, ref_b, softmax_backward_tol(dtype, dy, y), "softmax_backward vs torch")


# -- fused softmax cross-entropy -------------------------------------------------------------------


@st.composite
def xent_cases(draw, dtype, target):
    n, k = draw(shapes())
    t = np.dtype(dtype).type
    case = dict(dtype=dtype, z=draw(arrays(dtype, (n, k), mixed(dtype))))
    if target == "labels":
        case["labels"] = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), np.int64)
    else:  # finite non-negative probabilities, as fastbp's validation accepts (rows need not sum to 1 here)
        case["q"] = draw(arrays(dtype, (n, k), unit_interval(dtype)))
    width = 32 if dtype == np.float32 else 64
    weights = arrays(dtype, (k,), st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0, 4, width=width)))
    case["w"] = draw(st.one_of(st.just(np.empty(0, dtype)), weights))
    case["smoothing"] = t(draw(st.sampled_from([0.0, 0.1, 0.5])))
    case["scale"] = t(draw(st.sampled_from([1.0, 0.5, 1 / n])))
    return case


def xent_coefficients(case):
    """c (n, k) in float64: the weight each row puts on each -log p_k."""
    z, w, s = case["z"], f64(case["w"]), float(case["smoothing"])
    n, k = z.shape
    w = w if w.size else np.ones(k)
    if "labels" in case:
        c = np.broadcast_to(s / k * w, (n, k)).copy()
        c[np.arange(n), case["labels"]] += (1 - s) * w[case["labels"]]
        return c
    return w * ((1 - s) * f64(case["q"]) + s / k)


def xent_tols(case, loss_a, loss_e):
    """Bounds for (row losses, gradient, total) of a fused softmax cross-entropy."""
    u, tiny = unit(case["dtype"])
    k = case["z"].shape[1]
    c = xent_coefficients(case)
    big_c = c.sum(axis=1)
    scale = abs(float(case["scale"]))
    big_l = np.maximum(np.abs(f64(loss_a)), np.abs(f64(loss_e)))
    # Loss: a sum of non-negative terms c_k (m - z_k) or c_k (-log p_k), and C log s: terms and sum within
    # (k + 3) u of the loss per side, and log s off by (FN + k + 1) u absolute (s within (k + 1 + FN) u,
    # log's own FN u is relative to log s <= loss / C), times C.
    loss_tol = 2 * u * ((FN + k + 3) * big_l + (FN + k + 1) * big_c) + tiny
    # Gradient scale (C p - c): p within (2 FN + k + 3) u (see softmax_tol), C within k u, then the product,
    # the subtraction and the scaling; the flush of exp below tiny moves C p by up to C tiny; and with
    # subnormal coefficients each of the 4 roundings errs by up to u tiny (half a subnormal spacing).
    p = softmax64(case["z"])
    with np.errstate(invalid="ignore"):
        grad_tol = 2 * u * scale * ((2 * FN + 2 * k + 5) * big_c[:, None] * p + 3 * c)
        grad_tol += (scale * big_c[:, None] + 8 * u) * tiny
    # The total: the row losses added in float64, in any order.
    total_tol = loss_tol.sum() + loss_tol.shape[0] * EPS64 * big_l.sum()
    return loss_tol, grad_tol, total_tol


def run_xent(case, runner):
    """(total, grad, row_loss) of the fused loss through ``runner(name, *args)``."""
    z = case["z"]
    n, k = z.shape
    name, target = ("softmax_xent_labels", case["labels"]) if "labels" in case else ("softmax_xent_probs", case["q"])
    total, (*_, grad, rows) = runner(
        name, z, target, case["w"], case["smoothing"], case["scale"], np.empty_like(z), np.empty(n, z.dtype)
    )
    return total, grad, rows


def torch_xent(torch, case):
    z = case["z"]
    zt = T(torch, z).requires_grad_()
    target = T(torch, case["labels"]) if "labels" in case else T(torch, case["q"])
    weight = T(torch, case["w"]) if case["w"].size else None
    loss = torch.nn.functional.cross_entropy(
        zt, target, weight=weight, label_smoothing=float(case["smoothing"]), reduction="none"
    )
    loss.backward(torch.full_like(loss, float(case["scale"])))
    return loss.detach().numpy(), zt.grad.numpy()


XENT_CASES = st.sampled_from(DTYPES).flatmap(
    lambda d: st.sampled_from(["labels", "probs"]).flatmap(lambda target: xent_cases(d, target))
)


# The issue's example: a -inf logit off the target has p = 0 and adds nothing (log(1 + e^-1) = 0.3133
# for label 1, 1.3133 for label 0); the twin gave NaN (0 * -inf).
_XENT_ISSUE = [
    dict(
        dtype=dtype,
        z=np.array([[0, 1, -INF], [0, 1, -INF]], dtype),
        labels=np.array([1, 0]),
        w=np.empty(0, dtype),
        smoothing=dtype(0),
        scale=dtype(0.5),
    )
    for dtype in DTYPES
]


@MORE
@given(case=XENT_CASES)
@example(case=_XENT_ISSUE[0])
@example(case=_XENT_ISSUE[1])
def test_softmax_xent_kernels_match_twin(case):
    check_xent_kernels(case)


def check_xent_kernels(case):
    t_total, t_grad, t_rows = run_xent(case, run_twin)
    for version in VERSIONS:
        total, grad, rows = run_xent(case, lambda *a, v=version: run_kernel(*a[:1], v, *a[1:]))
        loss_tol, grad_tol, total_tol = xent_tols(case, rows, t_rows)
        what = f"{'labels' if 'labels' in case else 'probs'} {version}"
        assert_agree(rows, t_rows, loss_tol, f"softmax_xent {what} row loss")
        assert_agree(grad, t_grad, grad_tol, f"softmax_xent {what} grad")
        assert_total(total, t_total, total_tol, f"softmax_xent {what} total")


@MORE
@given(case=XENT_CASES)
@example(case=_XENT_ISSUE[0])
@example(case=_XENT_ISSUE[1])
def test_softmax_xent_twin_matches_torch(torch, case):
    check_xent_torch(torch, case)


def check_xent_torch(torch, case):
    _, t_grad, t_rows = run_xent(case, run_twin)
    ref_rows, ref_grad = torch_xent(torch, case)
    loss_tol, grad_tol, _ = xent_tols(case, t_rows, ref_rows)
    assert_agree(t_rows, ref_rows, loss_tol, "softmax_xent row loss vs torch")
    assert_agree(t_grad, ref_grad, grad_tol, "softmax_xent grad vs torch")


@pytest.mark.parametrize("case", _XENT_ISSUE, ids=["float32", "float64"])
def test_softmax_xent_issue_example(case):
    _, _, rows = run_xent(case, run_twin)
    np.testing.assert_allclose(rows, [np.log1p(np.exp(-1)), 1 + np.log1p(np.exp(-1))], rtol=1e-6)
    check_xent_kernels(case)
    check_xent_torch(pytest.importorskip("torch"), case)


# -- cross-entropy on probabilities ----------------------------------------------------------------


@st.composite
def prob_xent_cases(draw, dtype):
    n, k = draw(shapes())
    t = np.dtype(dtype).type
    return dict(
        dtype=dtype,
        x=draw(arrays(dtype, (n, k), mixed(dtype))),  # probabilities are not validated: anything goes
        labels=np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), np.int64),
        q=draw(arrays(dtype, (n, k), unit_interval(dtype))),
        # fastbp's default eps. It keeps v = max(x, eps) >= eps, so -scale q / v never overflows.
        eps=t(1e-7 if dtype == np.float32 else 1e-12),
        scale=t(draw(st.sampled_from([1.0, 0.5, 1 / n]))),
    )


PROB_XENT_CASES = st.sampled_from(DTYPES).flatmap(prob_xent_cases)


def prob_xent_tols(case, name, loss_a, loss_e, grad_a, grad_e):
    u, tiny = unit(case["dtype"])
    x, k = case["x"], case["x"].shape[1]
    r = np.maximum(np.abs(f64(grad_a)), np.abs(f64(grad_e)))
    # Gradient -scale q / v: one or two roundings per side, in the same order everywhere; a subnormal
    # -scale q loses < 2^-150 (float32), which the division by v >= eps = 1e-7 keeps below tiny.
    grad_tol = 4 * u * r + tiny
    if name == "xent_labels":
        loss_tol = 2 * FN * u * np.maximum(np.abs(f64(loss_a)), np.abs(f64(loss_e))) + tiny  # one log of one v
    else:
        # -sum_k q_k log v_k may cancel (log v > 0 for v > 1): per side FN u for each log, u for each
        # product and (k + 1) u for the sum, relative to sum_k |q_k log v_k|.
        v = np.maximum(f64(x), float(case["eps"]))
        with np.errstate(invalid="ignore", divide="ignore"):
            terms = np.abs(f64(case["q"]) * np.log(v)).sum(axis=1)
        loss_tol = 2 * (FN + k + 2) * u * terms + tiny
    with np.errstate(invalid="ignore"):  # the total: the row losses added in float64, in any order
        total_tol = loss_tol.sum() + x.shape[0] * EPS64 * np.maximum(np.abs(f64(loss_a)), np.abs(f64(loss_e))).sum()
    return loss_tol, grad_tol, total_tol


def run_prob_xent(case, name, runner):
    x = case["x"]
    target = case["labels"] if name == "xent_labels" else case["q"]
    total, (*_, grad, rows) = runner(
        name, x, target, case["eps"], case["scale"], np.empty_like(x), np.empty(x.shape[0], x.dtype)
    )
    return total, grad, rows


@pytest.mark.parametrize("name", ["xent_labels", "xent_probs"])
@FEW
@given(case=PROB_XENT_CASES)
def test_prob_xent_kernels_match_twin(name, case):
    t_total, t_grad, t_rows = run_prob_xent(case, name, run_twin)
    for version in VERSIONS:
        total, grad, rows = run_prob_xent(case, name, lambda *a, v=version: run_kernel(a[0], v, *a[1:]))
        loss_tol, grad_tol, total_tol = prob_xent_tols(case, name, rows, t_rows, grad, t_grad)
        assert_agree(rows, t_rows, loss_tol, f"{name} {version} row loss")
        assert_agree(grad, t_grad, grad_tol, f"{name} {version} grad")
        assert_total(total, t_total, total_tol, f"{name} {version} total")


@pytest.mark.parametrize("name", ["xent_labels", "xent_probs"])
@FEW
@given(case=PROB_XENT_CASES)
def test_prob_xent_twin_matches_torch(torch, name, case):
    _, t_grad, t_rows = run_prob_xent(case, name, run_twin)
    # fastbp clamps in the loss and passes the gradient through the clamp (fastbp.losses.cross_entropy):
    # the gradient is d/dv of the loss at v = clamp(x, eps), so torch differentiates with respect to v.
    v = T(torch, case["x"]).clamp(min=float(case["eps"])).detach().requires_grad_()
    scale = float(case["scale"])
    if name == "xent_labels":
        rows = torch.nn.functional.nll_loss(torch.log(v), T(torch, case["labels"]), reduction="none")
    else:  # PyTorch has no such op: the same formula in torch arithmetic
        rows = -(T(torch, case["q"]) * torch.log(v)).sum(axis=1)
    rows.backward(torch.full_like(rows, scale))
    ref_rows, ref_grad = rows.detach().numpy(), v.grad.numpy()
    loss_tol, grad_tol, _ = prob_xent_tols(case, name, t_rows, ref_rows, t_grad, ref_grad)
    assert_agree(t_rows, ref_rows, loss_tol, f"{name} row loss vs torch")
    skip = None
    if name == "xent_labels":
        # Off the target the derivative is 0; torch's chain rule computes it as 0 / v, NaN for a NaN v.
        skip = np.ones(t_grad.shape, bool)
        skip[np.arange(len(case["labels"])), case["labels"]] = False
    assert_agree(t_grad, ref_grad, grad_tol, f"{name} grad vs torch", skip=skip)


def test_prob_xent_zero_eps_keeps_the_sign_of_zero():
    """With eps = 0 a zero probability gives loss inf and gradient -scale/0: -inf at +0, +inf at -0.

    max(x, 0) is x unless x < 0 in the kernels (Python's max) and in torch.clamp, so -0 stays -0; the
    twin follows (np.maximum gave +0, and so -inf, at -0).
    """
    x = np.array([[0.0, 0.5], [-0.0, 0.5]], np.float32)
    labels = np.array([0, 0])
    q = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    for name, target in (("xent_labels", labels), ("xent_probs", q)):
        args = (x, target, np.float32(0), np.float32(1), np.empty_like(x), np.empty(2, np.float32))
        for _, (*_, grad, rows) in [run_twin(name, *args)] + [run_kernel(name, v, *args) for v in VERSIONS]:
            np.testing.assert_array_equal(rows, [INF, INF])
            np.testing.assert_array_equal(grad[:, 0], [-INF, INF])
    torch = pytest.importorskip("torch")
    v = T(torch, x).clamp(min=0.0).requires_grad_()
    torch.nn.functional.nll_loss(torch.log(v), T(torch, labels), reduction="sum").backward()
    np.testing.assert_array_equal(v.grad.numpy()[:, 0], [-INF, INF])


# -- squared error and binary cross-entropy --------------------------------------------------------


@st.composite
def elementwise_loss_cases(draw, dtype):
    shape = draw(shapes())
    t = np.dtype(dtype).type
    lscale = draw(st.sampled_from([1.0, 0.5, 1 / (shape[0] * shape[1])]))
    return dict(
        dtype=dtype,
        pred=draw(arrays(dtype, shape, mixed(dtype))),
        target=draw(arrays(dtype, shape, mixed(dtype))),  # mse's target: anything goes
        y=draw(arrays(dtype, shape, unit_interval(dtype))),  # bce's target: validated finite in [0, 1]
        lscale=t(lscale),
        gscale=t(2 * lscale),  # what fastbp.losses.mse_loss passes
    )


ELEMENTWISE_CASES = st.sampled_from(DTYPES).flatmap(elementwise_loss_cases)


def mse_tols(case, elem_a, elem_e, total_a, total_e):
    u, tiny = unit(case["dtype"])
    m = case["pred"].shape[1]
    # d = pred - target and gscale * d are the same two roundings everywhere: the gradient is exact.
    # lscale * d * d in either association: 2 roundings per side; subnormal products lose < tiny.
    elem_tol = 4 * u * np.maximum(np.abs(f64(elem_a)), np.abs(f64(elem_e))) + tiny
    # The total: squares (u) summed in float32 blocks of a row ((m + 1) u) and float64 beyond, times lscale.
    total_tol = 2 * (m + 3) * u * max(abs(total_a), abs(total_e))
    return elem_tol, total_tol


def run_mse(case, runner, elementwise=True):
    p = case["pred"]
    elems = np.empty_like(p) if elementwise else np.empty((0, 0), p.dtype)
    total, (*_, grad, elem) = runner("mse", p, case["target"], case["lscale"], case["gscale"], np.empty_like(p), elems)
    return total, grad, elem


@FEW
@given(case=ELEMENTWISE_CASES, elementwise=st.booleans())
def test_mse_kernels_match_twin(case, elementwise):
    t_total, t_grad, t_elem = run_mse(case, run_twin, elementwise)
    for version in VERSIONS:
        total, grad, elem = run_mse(case, lambda *a, v=version: run_kernel(a[0], v, *a[1:]), elementwise)
        elem_tol, total_tol = mse_tols(case, elem if elementwise else t_elem, t_elem, total, t_total)
        assert_agree(grad, t_grad, 0.0, f"mse {version} grad")
        if elementwise:
            assert_agree(elem, t_elem, elem_tol, f"mse {version} elementwise loss")
        assert_total(total, t_total, total_tol, f"mse {version} total")


@FEW
@given(case=ELEMENTWISE_CASES)
def test_mse_twin_matches_torch(torch, case):
    t_total, t_grad, t_elem = run_mse(case, run_twin)
    pt = T(torch, case["pred"]).requires_grad_()
    elem = torch.nn.functional.mse_loss(pt, T(torch, case["target"]), reduction="none")
    elem.backward(torch.full_like(elem, float(case["lscale"])))
    ref_elem = float(case["lscale"]) * elem.detach().numpy().astype(np.float64)
    elem_tol, _ = mse_tols(case, t_elem, ref_elem, 0.0, 0.0)
    assert_agree(t_elem, ref_elem, elem_tol, "mse elementwise loss vs torch")
    # torch: 2 (pred - target) lscale; the doubling is exact, so one rounding as in gscale (pred - target).
    assert_agree(t_grad, pt.grad.numpy(), 0.0, "mse grad vs torch")


def bce_tols(case, elem_a, elem_e):
    u, tiny = unit(case["dtype"])
    z, y = f64(case["pred"]), f64(case["y"])
    gscale = abs(float(case["gscale"]))
    with np.errstate(invalid="ignore", over="ignore"):
        soft = np.log1p(np.exp(-np.abs(z)))  # log(1 + exp(-|z|)) <= log 2
        sig = 1 / (1 + np.exp(-z))
        # Loss: max(z, 0) - z y (kernel) or (1 - y) max(z, 0) + y max(-z, 0) (twin, torch's (1 - y) z + ...):
        # up to 4 roundings of terms of size |z|, which cancel when y is near 1 (hence relative to |z|,
        # not to the loss); log1p(exp(-|z|)) within 2 FN (the exp error passes through log1p damped).
        elem_tol = 8 * u * np.abs(z) + 4 * (FN + 1) * u * soft + tiny
        # Gradient gscale (sigmoid(z) - y): sigmoid within (FN + 3) u per side, the subtraction, the scaling.
        grad_tol = gscale * (2 * (FN + 3) * u * sig + 4 * u * np.abs(sig - y) + tiny)
    m = z.shape[1]
    with np.errstate(invalid="ignore"):
        li = np.maximum(np.abs(f64(elem_a)), np.abs(f64(elem_e)))
        total_tol = elem_tol.sum() + 2 * (m + 2) * u * li.sum()
    return elem_tol, grad_tol, total_tol


def run_bce(case, runner, elementwise=True):
    z = case["pred"]
    elems = np.empty_like(z) if elementwise else np.empty((0, 0), z.dtype)
    total, (*_, grad, elem) = runner("bce_logits", z, case["y"], case["gscale"], np.empty_like(z), elems)
    return total, grad, elem


@FEW
@given(case=ELEMENTWISE_CASES, elementwise=st.booleans())
def test_bce_kernels_match_twin(case, elementwise):
    t_total, t_grad, t_elem = run_bce(case, run_twin, elementwise)
    for version in VERSIONS:
        total, grad, elem = run_bce(case, lambda *a, v=version: run_kernel(a[0], v, *a[1:]), elementwise)
        elem_tol, grad_tol, total_tol = bce_tols(case, elem if elementwise else t_elem, t_elem)
        assert_agree(grad, t_grad, grad_tol, f"bce {version} grad")
        if elementwise:
            assert_agree(elem, t_elem, elem_tol, f"bce {version} elementwise loss")
        assert_total(total, t_total, total_tol, f"bce {version} total")


@FEW
@given(case=ELEMENTWISE_CASES)
def test_bce_twin_matches_torch(torch, case):
    _, t_grad, t_elem = run_bce(case, run_twin)
    zt = T(torch, case["pred"]).requires_grad_()
    elem = torch.nn.functional.binary_cross_entropy_with_logits(zt, T(torch, case["y"]), reduction="none")
    elem.backward(torch.full_like(elem, float(case["gscale"])))
    ref_elem = elem.detach().numpy()
    elem_tol, grad_tol, _ = bce_tols(case, t_elem, ref_elem)
    # Exception: at z = -inf with y > 0 the loss is inf (fastbp: y max(-z, 0) = inf), torch's
    # (1 - y) z + log-sum-exp form gives NaN (-inf + inf). See test_bce_at_minus_inf.
    skip = (case["pred"] == -INF) & (case["y"] > 0)
    assert_agree(t_elem, ref_elem, elem_tol, "bce elementwise loss vs torch", skip=skip)
    assert_agree(t_grad, zt.grad.numpy(), grad_tol, "bce grad vs torch")


def test_bce_at_minus_inf():
    """At z = -inf the loss is y * inf: inf for y > 0 in fastbp (kernel and twin), NaN in PyTorch."""
    z = np.array([[-INF, -INF]], np.float32)
    y = np.array([[1.0, 0.5]], np.float32)
    case = dict(pred=z, y=y, gscale=np.float32(1))
    outs = [run_bce(case, run_twin)] + [
        run_bce(case, lambda *a, v=version: run_kernel(a[0], v, *a[1:])) for version in VERSIONS
    ]
    for total, grad, elem in outs:
        np.testing.assert_array_equal(elem, [[INF, INF]])
        np.testing.assert_array_equal(grad, -y)
        assert total == INF
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.binary_cross_entropy_with_logits(T(torch, z), T(torch, y), reduction="none")
    assert np.isnan(ref.numpy()).all()


@pytest.mark.parametrize("version", VERSIONS)
def test_bce_kernel_at_plus_inf(version):
    """At z = +inf the loss is (1 - y) inf: inf for y < 1 in the twin and PyTorch (NaN at y = 1 in all)."""
    z = np.array([[INF, INF, INF]], np.float32)
    y = np.array([[0.0, 0.5, 1.0]], np.float32)
    case = dict(pred=z, y=y, gscale=np.float32(1))
    _, _, twin = run_bce(case, run_twin)
    np.testing.assert_array_equal(twin, [[INF, INF, NAN]])  # torch's values (test_bce_twin_matches_torch)
    _, _, elem = run_bce(case, lambda *a: run_kernel(a[0], version, *a[1:]))
    np.testing.assert_array_equal(elem, twin)


# -- bias gradient and accuracy --------------------------------------------------------------------


@st.composite
def bias_grad_cases(draw, dtype):
    # Up to 20 rows: more than CHUNKS, so the kernel adds partial sums of several chunks.
    return dict(dtype=dtype, dy=draw(arrays(dtype, draw(shapes(max_rows=20)), mixed(dtype))))


def bias_grad_tol(dtype, dy):
    # A sum of n terms in any order (chunks, threads, pairwise numpy): within (n - 1) u sum |dy| per side.
    u, _ = unit(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        return 2 * dy.shape[0] * u * np.abs(f64(dy)).sum(axis=0)


@FEW
@given(case=st.sampled_from(DTYPES).flatmap(bias_grad_cases))
def test_bias_grad_kernels_match_twin(case):
    dy = case["dy"]
    m = dy.shape[1]
    _, (_, twin, _) = run_twin("bias_grad", dy, np.empty(m, dy.dtype), np.empty((CHUNKS, m), dy.dtype))
    for version in VERSIONS:
        scratch = np.full((CHUNKS, m), NAN, dy.dtype)  # stale contents must not leak into the result
        _, (_, out, _) = run_kernel("bias_grad", version, dy, np.full(m, NAN, dy.dtype), scratch)
        assert_agree(out, twin, bias_grad_tol(case["dtype"], dy), f"bias_grad {version}")


@FEW
@given(case=st.sampled_from(DTYPES).flatmap(bias_grad_cases))
def test_bias_grad_twin_matches_torch(torch, case):
    dy = case["dy"]
    m = dy.shape[1]
    _, (_, twin, _) = run_twin("bias_grad", dy, np.empty(m, dy.dtype), np.empty((CHUNKS, m), dy.dtype))
    # What autograd gives a broadcast bias: the sum of the upstream gradient over the batch.
    assert_agree(twin, T(torch, dy).sum(0).numpy(), bias_grad_tol(case["dtype"], dy), "bias_grad vs torch")


@st.composite
def count_hits_cases(draw, dtype):
    n, k = draw(shapes(max_rows=8))
    scores = draw(arrays(dtype, (n, k), mixed(dtype)))
    labels = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), np.int64)
    return dict(dtype=dtype, scores=scores, labels=labels)


@FEW
@given(case=st.sampled_from(DTYPES).flatmap(count_hits_cases))
def test_count_hits_kernels_match_twin(case):
    scores, labels = case["scores"], case["labels"]
    twin = R.count_hits(scores, labels)
    for version in VERSIONS:
        assert getattr(K.count_hits, version)(scores, labels) == twin, version


@FEW
@given(case=st.sampled_from(DTYPES).flatmap(count_hits_cases))
def test_count_hits_twin_matches_torch(torch, case):
    # The first maximum, NaN counting as the largest value, in numpy's argmax and torch's alike.
    ref = int((T(torch, case["scores"]).argmax(1) == T(torch, case["labels"])).sum())
    assert R.count_hits(case["scores"], case["labels"]) == ref


@pytest.mark.parametrize("version", VERSIONS)
def test_count_hits_kernel_with_nan(version):
    """A NaN score is the row's maximum for numpy's and torch's argmax (so for the twin): 2 hits here."""
    scores = np.array([[0.0, NAN, 1.0], [NAN, 2.0, 1.0]], np.float32)
    labels = np.array([1, 0])
    assert R.count_hits(scores, labels) == 2
    assert getattr(K.count_hits, version)(scores, labels) == 2
