"""LeakyReLU, ELU, GELU (exact and tanh), SiLU, Softplus: kernels, twins, layers, Linear, ops.

Checked five ways: each kernel (serial and parallel builds) against its numpy twin;
float32 kernels against float64 (accuracy in ulps, the figures of docs/derivations.md);
central finite differences in float64; PyTorch autograd (forward, input gradient, and
the parameter gradients of the fused ``Linear``); special values (+-inf, huge, +-0, NaN)
and bad parameters.

Twin tolerances, ``|kernel - twin| <= rtol |twin| + atol``:

* float32: rtol 2e-6 (16 ulp; measured at most 6: the kernels use vmath's exp, the
  twins numpy's, and the kernels fuse multiply-adds). gelu_tanh: 2e-5, because
  ``exp(-|2u|)`` with ``|2u|`` up to 87 turns one rounding of its argument into
  ``|2u|`` ulps of the result (measured 33 ulp where ``|y| > 1e-6``, PyTorch's
  ``tanh`` form has the same conditioning).
* float64: rtol 1e-14 (measured 3 ulp), gelu_tanh 1e-12 (``|2u|`` up to 709: measured 1.1e-13).
* atol: derivatives are sums of terms of size ~1 that cancel near their zeros
  (GELU's at x = -0.75, SiLU's at -1.28), so 2 ulp of 1 times ``max |dy|``
  (2.4e-7 float32, 4.4e-16 float64); and float32 values below 1.2e-37, because the
  kernels' exp returns 0 below float32's normal range where numpy returns subnormals.
"""

import numpy as np
import pytest
from _helpers import SHAPES
from test_kernels import _compile_uncached, double_precision_work

import fastbp
from fastbp import kernels as K
from fastbp import ops
from fastbp import reference as R
from fastbp.backend import resolve_activation
from fastbp.jit import ELEMENTWISE, GELU, GELU_TANH, SOFTPLUS
from fastbp.kernels import activations as A
from fastbp.layers.activations import ELU as ELULayer
from fastbp.layers.activations import GELU as GELULayer
from fastbp.layers.activations import LeakyReLU, SiLU, Softplus

VERSIONS = ["serial", "parallel"]
DTYPES = [np.float32, np.float64]

# (id, activation name, activation params): every kernel path, negative parameters included.
CASES = [
    ("leaky_relu", "leaky_relu", {}),
    ("leaky_relu_0.2", "leaky_relu", {"negative_slope": 0.2}),
    ("leaky_relu_neg", "leaky_relu", {"negative_slope": -0.3}),
    ("elu", "elu", {}),
    ("elu_0.5", "elu", {"alpha": 0.5}),
    ("elu_neg", "elu", {"alpha": -1.5}),
    ("gelu", "gelu", {}),
    ("gelu_tanh", "gelu_tanh", {}),
    ("gelu_approx_tanh", "gelu", {"approximate": "tanh"}),
    ("silu", "silu", {}),
    ("softplus", "softplus", {}),
    ("softplus_2_5", "softplus", {"beta": 2.0, "threshold": 5.0}),
    ("softplus_neg_beta", "softplus", {"beta": -0.5, "threshold": 3.0}),
]
IDS = [c[0] for c in CASES]

# The layer for each case, built from the constructor arguments PyTorch's module takes.
LAYER = {
    "leaky_relu": lambda p, **kw: LeakyReLU(**p, **kw),
    "elu": lambda p, **kw: ELULayer(**p, **kw),
    "gelu": lambda p, **kw: GELULayer(**p, **kw),
    "gelu_tanh": lambda p, **kw: GELULayer("tanh", **kw),
    "silu": lambda p, **kw: SiLU(**kw),
    "softplus": lambda p, **kw: Softplus(**p, **kw),
}

EDGES = [-np.inf, -1e30, -1e4, -100.0, -20.0, -13.2, -8.0, -5.0, -1.28, -0.75, -0.0, 0.0, 1e-30, -1e-30]
EDGES += [0.3, 1.0, 5.0, 20.0, 100.0, 1e4, 1e30, np.inf, np.nan]


def _torch_fn(torch, name, params):
    F = torch.nn.functional
    if name == "leaky_relu":
        return lambda t: F.leaky_relu(t, params.get("negative_slope", 0.01))
    if name == "elu":
        return lambda t: F.elu(t, params.get("alpha", 1.0))
    if name == "gelu":
        return lambda t: F.gelu(t, approximate=params.get("approximate", "none"))
    if name == "gelu_tanh":
        return lambda t: F.gelu(t, approximate="tanh")
    if name == "silu":
        return F.silu
    return lambda t: F.softplus(t, params.get("beta", 1.0), params.get("threshold", 20.0))


def _inputs(rng, shape, dtype, edges=True):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    if edges:
        flat = x.reshape(-1)
        k = min(flat.size, len(EDGES))
        flat[:k] = np.array(EDGES[:k], dtype)
    return x


def _tol(act, dtype):
    f32 = np.dtype(dtype) == np.float32
    rtol = (2e-5 if f32 else 1e-12) if act.code == GELU_TANH else (2e-6 if f32 else 1e-14)
    return rtol, (2.4e-7 if f32 else 4.4e-16), (1.2e-37 if f32 else 0.0)


def assert_close(a, b, rtol, atol, what):
    assert a.dtype == b.dtype, what
    nan = np.isnan(b)
    np.testing.assert_array_equal(np.isnan(a), nan, err_msg=f"{what}: NaN positions")
    inf = np.isinf(b)
    np.testing.assert_array_equal(a[inf], b[inf], err_msg=f"{what}: infinities")
    ok = ~(nan | inf)
    err = np.abs(a[ok].astype(np.float64) - b[ok])
    bound = rtol * np.abs(b[ok].astype(np.float64)) + atol
    worst = int(np.argmax(err - bound)) if err.size else 0
    assert np.all(err <= bound), f"{what}: {a[ok][worst]!r} vs {b[ok][worst]!r} (|diff| {err[worst]:.3g})"


def _run_pair(version, act, x, b, dy, save=True, from_output=False):
    """Forward and backward (when it can run) through kernel ``version`` and through the twin, on copies."""
    t = x.dtype.type
    p1, p2 = t(act.p1), t(act.p2)
    out = []
    for fwd, bwd in (
        (getattr(K.bias_act_param, version), getattr(K.act_backward_param, version)),
        (R.bias_act_param, R.act_backward_param),
    ):
        y = x.copy()
        z = np.full(x.shape, np.nan, x.dtype) if save else np.empty((0, 0), x.dtype)
        fwd(y, b, act.code, p1, p2, z)
        dx = np.full(x.shape, np.nan, x.dtype)
        if save or from_output:
            bwd(dy, y, np.empty((0, 0), x.dtype) if from_output else z, act.code, p1, p2, dx)
        out.append((y, z, dx))
    return out


# -- kernels against their twins ---------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(2, 1), (2, 513), (37, 260)])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kernels_match_twins(rng, case, shape, dtype, version):
    _, name, params = case
    act = resolve_activation(name, params)
    x = _inputs(rng, shape, dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    b[: min(3, shape[1])] = -0.0  # keeps the edge values of row 0 as they are
    dy = rng.standard_normal(shape).astype(dtype)
    rtol, datol, flush = _tol(act, dtype)
    (ky, kz, kdx), (ry, rz, rdx) = _run_pair(version, act, x, b, dy)
    np.testing.assert_array_equal(kz, rz)  # the saved pre-activation is y + b itself
    assert_close(ky, ry, rtol, flush, f"{name} forward {version}")
    assert_close(kdx, rdx, rtol, datol * np.abs(dy).max() + flush, f"{name} backward {version}")
    # Forward without saving gives the same output; backward from the output where it is exact.
    (ky2, _, _), _ = _run_pair(version, act, x, b, dy, save=False, from_output=not act.reads_input)
    np.testing.assert_array_equal(ky2, ky)
    if not act.reads_input:
        (_, _, kdx2), (_, _, rdx2) = _run_pair(version, act, x, b, dy, from_output=True)
        assert_close(kdx2, rdx2, rtol, datol * np.abs(dy).max() + flush, f"{name} backward from y {version}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_in_place(rng, case):
    _, name, params = case
    act = resolve_activation(name, params)
    x = _inputs(rng, (5, 19), np.float32)
    y, z = x.copy(), np.empty_like(x)
    t = np.float32
    K.bias_act_param(y, np.zeros(19, t), act.code, t(act.p1), t(act.p2), z)
    dy = rng.standard_normal(x.shape).astype(t)
    expected = np.empty_like(dy)
    K.act_backward_param(dy, y, z, act.code, t(act.p1), t(act.p2), expected)
    K.act_backward_param(dy, y, z, act.code, t(act.p1), t(act.p2), dy)  # dx is dy
    np.testing.assert_array_equal(dy, expected)


_ROWS = [n for n in vars(A) if n.startswith(("_fwd_", "_bwd_"))]


@pytest.mark.parametrize("name", ["bias_act_param", "act_backward_param", *_ROWS])
def test_float32_kernels_stay_float32(name):
    """No float64 temporaries: the float32 builds of the kernels and of the row functions they call
    (each activation's loop) convert nothing to double (docs/derivations.md, "float32 kernels stay float32")."""
    a, t = np.ones((4, 8), np.float32), np.float32
    row = a[0].copy()
    args = {
        "bias_act_param": (a, row, GELU, t(0.5), t(3), a.copy()),
        "act_backward_param": (a, a, a.copy(), GELU, t(0.5), t(3), a.copy()),
    }.get(name, (row, row.copy(), t(0.5), t(3)) + ((row.copy(),) if name.startswith("_bwd_") else ()))
    fn = getattr(K if name in ("bias_act_param", "act_backward_param") else A, name).py_func
    flagged = double_precision_work(_compile_uncached(fn, *args, fastmath=ELEMENTWISE))
    assert not flagged, f"{name}: float32 values computed in double: {flagged[:3]}"


# -- float32 accuracy: the figures docs/derivations.md quotes -----------------------------------

# Max error of the float32 kernels against the float64 kernels (themselves within a few float64 ulp:
# libm's erfc, exp, log1p, expm1), over 2M points of [-20, 20] and 400k of |x| in [1e-30, 20]:
# forward, in ulps of the result where it exceeds 1e-30; derivative, in ulps of the result where it
# exceeds 1e-2, and in absolute terms (ulps of 1) everywhere (the derivatives cross zero).
ACCURACY = {
    # name, params, from_output: (forward ulp, derivative ulp, derivative abs in ulp(1))
    ("leaky_relu", (), False): (1, 1, 1),
    ("elu", (), False): (2, 2, 1),
    ("elu", (), True): (2, 40, 1),  # y + alpha cancels as y -> -alpha: abs error stays below ulp(alpha)
    ("gelu", (), False): (8, 80, 2),
    ("gelu_tanh", (), False): (200, 80, 3),  # exp(-|2u|), |2u| up to 87: see the module docstring
    ("silu", (), False): (5, 60, 2),
    ("softplus", (), False): (3, 4, 1),
}


def _float32_accuracy_points():
    rng = np.random.default_rng(0)
    mags = 10 ** rng.uniform(-30, 1.3, 200_000)
    return np.concatenate([np.linspace(-20, 20, 2_000_001), -mags, mags]).astype(np.float32)


@pytest.mark.parametrize("key", list(ACCURACY), ids=[f"{k[0]}{'_from_y' if k[2] else ''}" for k in ACCURACY])
def test_float32_accuracy(key):
    name, _, from_output = key
    act = resolve_activation(name)
    x32 = _float32_accuracy_points()[None, :]
    res = {}
    for dtype in DTYPES:
        x = x32.astype(dtype)
        t = x.dtype.type
        y, z = x.copy(), np.empty_like(x)
        K.bias_act_param(y, np.full(x.shape[1], -0.0, dtype), act.code, t(act.p1), t(act.p2), z)
        dx = np.empty_like(x)
        K.act_backward_param(np.ones_like(x), y, z[:0, :0] if from_output else z, act.code, t(act.p1), t(act.p2), dx)
        res[dtype] = (y[0].astype(np.float64), dx[0].astype(np.float64))
    fwd_ulp, grad_ulp, grad_abs = ACCURACY[key]
    for i, (thr, bound) in enumerate(((1e-30, fwd_ulp), (1e-2, grad_ulp))):
        got, ref = res[np.float32][i], res[np.float64][i]
        m = np.isfinite(ref) & (np.abs(ref) > thr)
        ulps = np.abs(got[m] - ref[m]) / np.spacing(np.abs(ref[m]).astype(np.float32))
        assert ulps.max() <= bound, (name, "forward derivative".split()[i], ulps.max())
    got, ref = res[np.float32][1], res[np.float64][1]
    assert np.nanmax(np.abs(got - ref)) <= grad_abs * 2.0**-23, (name, np.nanmax(np.abs(got - ref)) / 2.0**-23)


def test_float64_gelu_tail_is_accurate():
    """x Phi(x) from erfc, not 1/2 + erf/2: right where PyTorch's float64 cancels (x = -8: 2% off).

    Within 1e-12: erfc's argument x / sqrt 2 is rounded, which moves erfc by 2 a^2 eps relative (1e-13 at -30).
    """
    mp = pytest.importorskip("mpmath")
    x = np.array([[-30.0, -13.0, -8.0, -5.0, -1.0, 0.5, 3.0]])
    y = ops.gelu(x)
    want = [float(mp.mpf(v) * mp.ncdf(mp.mpf(v))) for v in x[0]]
    np.testing.assert_allclose(y[0], want, rtol=1e-12)


# -- finite differences, float64 ---------------------------------------------------------------

H, RTOL, ATOL = 1e-6, 1e-6, 1e-8  # as tests/test_gradcheck.py (its docstring has the error analysis)


def _numeric_grad(f, a):
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + H
        fp = f()
        flat[i] = old - H
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * H)
    return g


def _away_from_kinks(x, act):
    # LeakyReLU and ELU bend at 0 and Softplus jumps at its threshold: finite differences need distance.
    x[np.abs(x) < 1e-3] = 0.5
    if act.code == SOFTPLUS:
        x[np.abs(act.p1 * x - act.p2) < 1e-3] += 0.01
    return x


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("fused", [False, True], ids=["layer", "linear"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_finite_differences(rng, case, fused, backend):
    _, name, params = case
    act = resolve_activation(name, params)
    if fused:
        layer = fastbp.Linear(
            5, 4, activation=name, activation_params=params, dtype=np.float64, seed=3, backend=backend
        )
        x = rng.standard_normal((3, 5))
    else:
        layer = LAYER[name](params, backend=backend)
        x = _away_from_kinks(rng.standard_normal((3, 4)) * 3, act)
    y0 = layer.forward(x)
    Rw = rng.standard_normal(y0.shape)

    def loss():
        return float((layer.forward(x) * Rw).sum())

    layer.forward(x)
    dx = layer.backward(Rw).copy()
    grads = [p.grad.copy() for p in layer.parameters()]
    np.testing.assert_allclose(dx, _numeric_grad(loss, x), rtol=RTOL, atol=ATOL)
    for p, g in zip(layer.parameters(), grads):
        np.testing.assert_allclose(g, _numeric_grad(loss, p.data), rtol=RTOL, atol=ATOL)


# -- PyTorch autograd --------------------------------------------------------------------------

# float32 needs an absolute term: PyTorch's float32 GELU computes 1/2 + erf(x/sqrt 2)/2, which cancels
# for x < -4 (gelu(-5) is -1.19e-6 in PyTorch, -1.43e-6 exactly: 17% off, 2.4e-7 absolute), its tanh
# form the same with 1 + tanh(u), and the derivative of the tanh form 1 - tanh(u)^2 (absolute error
# ~ulp(1) |x u'| |dy|, 1.8e-6 seen). So float32 results are also compared with PyTorch in float64 on the
# same inputs, where fastbp's are much closer than PyTorch's float32 ones.
TORCH_TOL = {np.float32: dict(rtol=2e-3, atol=1e-5), np.float64: dict(rtol=1e-6, atol=1e-12)}
TORCH64_TOL = dict(rtol=2e-3, atol=1e-6)  # float32 results against PyTorch float64


def _compare_torch(torch, name, params, inputs, dy, ours, fn):
    """``fn(*tensors)`` in PyTorch in the inputs' dtype, and in float64 for float32 inputs; ``ours`` are the
    forward output followed by the gradients of ``inputs``."""
    dtype = inputs[0].dtype.type
    for tdtype, tol in ((None, TORCH_TOL[dtype]), (torch.float64, TORCH64_TOL)):
        if tdtype is not None and dtype != np.float32:
            continue
        ts = [torch.tensor(a, dtype=tdtype, requires_grad=True) for a in inputs]
        yt = fn(*ts)
        yt.backward(torch.tensor(dy, dtype=tdtype))
        for a, t in zip(ours, [yt.detach(), *(t.grad for t in ts)]):
            assert a.dtype == dtype
            np.testing.assert_allclose(a, t.numpy(), **tol, err_msg=f"{name} against torch {t.dtype}")


def _torch_shapes():
    rng = np.random.default_rng(7)
    return [(2, 1), (2, 9), (1, 1), (6, 1)] + [tuple(int(v) for v in rng.integers(1, 70, 2)) for _ in range(3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", _torch_shapes())
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_layers_match_torch(rng, case, shape, dtype):
    torch = pytest.importorskip("torch")
    _, name, params = case
    layer = LAYER[name](params)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y = layer.forward(x)
    dx = layer.backward(dy)
    _compare_torch(torch, name, params, [x], dy, [y, dx], _torch_fn(torch, name, params))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 1, 1), (2, 7, 3), (9, 13, 1), (33, 20, 17)])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_linear_matches_torch(rng, case, shape, dtype):
    torch = pytest.importorskip("torch")
    _, name, params = case
    n, k, m = shape
    layer = fastbp.Linear(k, m, activation=name, activation_params=params, dtype=dtype, seed=0)
    layer.b.data[...] = rng.standard_normal(m)
    x = (rng.standard_normal((n, k)) * 2).astype(dtype)
    dy = rng.standard_normal((n, m)).astype(dtype)
    y = layer.forward(x)
    dx = layer.backward(dy)
    act = _torch_fn(torch, name, params)
    _compare_torch(
        torch,
        name,
        params,
        [x, layer.W.data, layer.b.data],
        dy,
        [y, dx, layer.W.grad, layer.b.grad],
        lambda xt, Wt, bt: act(xt @ Wt + bt),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ops_match_torch(rng, case, dtype):
    torch = pytest.importorskip("torch")
    _, name, params = case
    x = (rng.standard_normal((4, 6)) * 3).astype(dtype)
    dy = rng.standard_normal((4, 6)).astype(dtype)
    y = ops.activation(x, name, params=params)
    act = resolve_activation(name, params)
    dx = ops.activation_backward(
        dy, None if act.reads_input else y, name, x=x if act.reads_input else None, params=params
    )
    _compare_torch(torch, name, params, [x], dy, [y, dx], _torch_fn(torch, name, params))


# -- special values ----------------------------------------------------------------------------

# f(-inf), f(+inf), f'(-inf), f'(+inf) (slope/alpha/beta at their defaults). PyTorch gives NaN for GELU and
# SiLU at -inf (-inf * 0) and for the GELU derivatives at +-inf; these are the limits.
LIMITS = {
    "leaky_relu": (-np.inf, np.inf, 0.01, 1.0),
    "elu": (-1.0, np.inf, 0.0, 1.0),
    "gelu": (-0.0, np.inf, 0.0, 1.0),
    "gelu_tanh": (-0.0, np.inf, 0.0, 1.0),
    "silu": (-0.0, np.inf, 0.0, 1.0),
    "softplus": (0.0, np.inf, 0.0, 1.0),
}


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(LIMITS))
def test_limits_zeros_and_nan(name, dtype, backend):
    x = np.array([[-np.inf, np.inf, -0.0, 0.0, np.nan]], dtype)
    y = ops.activation(x, name, backend=backend)
    act = resolve_activation(name)
    dx = ops.activation_backward(np.ones_like(x), y, name, x=x if act.reads_input else None, backend=backend)
    lo, hi, dlo, dhi = LIMITS[name]
    np.testing.assert_array_equal(y[0, :2], np.array([lo, hi], dtype))
    assert np.signbit(y[0, 0]) == np.signbit(lo)
    np.testing.assert_allclose(dx[0, :2], np.array([dlo, dhi], dtype), rtol=1e-6)
    # the sign of zero: f(-0) and f(+0) as PyTorch (softplus(0) = log 2)
    if name == "softplus":
        np.testing.assert_allclose(y[0, 2:4], np.log(2), rtol=1e-7)
    else:
        assert np.signbit(y[0, 2]) and not np.signbit(y[0, 3]), y
    # NaN propagates forward; backward gives what PyTorch gives: NaN, except leaky_relu (slope * dy)
    # and elu (dy), whose NaN test compares as PyTorch's
    assert np.isnan(y[0, 4])
    expected = {"leaky_relu": 0.01, "elu": 1.0}.get(name, np.nan)
    np.testing.assert_allclose(dx[0, 4], expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_finite_for_any_finite_input(case, dtype):
    """Every finite float gives a finite value and derivative: no exp overflows (PyTorch's softplus
    with a large threshold, its tanh GELU's x**3 and its GELU derivative do)."""
    _, name, params = case
    fi = np.finfo(dtype)
    # every binade, subnormals to the largest, with a few mantissas each, and the extremes
    exps = np.arange(fi.minexp - fi.nmant, fi.maxexp)
    mags = np.concatenate([np.ldexp(dtype(m), exps) for m in (1.0, 1.3, 1.7, 1.99)] + [[fi.max, fi.smallest_subnormal]])
    x = np.concatenate([-mags, [-0.0, 0.0], mags])[None, :].astype(dtype)
    act = resolve_activation(name, params)
    for backend in ("numba", "numpy"):
        y = ops.activation(x, name, params=params, backend=backend)
        dx = ops.activation_backward(np.ones_like(x), y, name, x=x, params=params, backend=backend)
        assert np.isfinite(y).all() and np.isfinite(dx).all(), (name, backend)
    if act.code == SOFTPLUS:
        assert (y >= 0).all() if act.p1 > 0 else (y <= 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_softplus_threshold_as_torch(dtype):
    torch = pytest.importorskip("torch")
    x = np.array([[1.0, 2.4, 2.5, 2.6, 10.0, 100.0]], dtype)
    y = ops.softplus(x, beta=2.0, threshold=5.0)
    dx = ops.softplus_backward(np.ones_like(x), x, beta=2.0, threshold=5.0)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.softplus(xt, 2.0, 5.0)
    yt.backward(torch.ones_like(yt))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(y[0, 3:], x[0, 3:])  # linear above the threshold, exactly
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6)
    # a threshold of +inf never switches to x, and never overflows
    big = ops.softplus(np.array([[1e4, 1e30]], dtype), threshold=np.inf)
    np.testing.assert_array_equal(big, np.array([[1e4, 1e30]], dtype))


# -- layers, Linear, ops: API ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_layer_takes_the_input_dtype_and_keeps_no_copy(rng, case, dtype):
    _, name, params = case
    layer = LAYER[name](params)
    assert layer.dtype is None
    x = rng.standard_normal((3, 5)).astype(dtype)
    y = layer.forward(x)
    assert y.dtype == dtype and layer.backward().dtype == dtype
    assert layer.forward(x) is y  # the same buffer next step
    if layer.act.reads_input:
        assert layer._x is x  # the pre-activation is the input itself, kept by reference
    np.testing.assert_array_equal(layer.infer(x), y)
    np.testing.assert_allclose(LAYER[name](params, backend="numpy").forward(x), y, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_config_rebuilds(rng, case):
    _, name, params = case
    layer = LAYER[name](params)
    again = type(layer)(**layer.config())
    assert again.act == layer.act and repr(again) == repr(layer)
    lin = fastbp.Linear(4, 3, activation=name, activation_params=params, seed=1)
    cfg = lin.config()
    rebuilt = fastbp.Linear(**cfg, seed=1)
    assert rebuilt.act == lin.act and rebuilt.config() == cfg
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.forward(x), lin.forward(x))
    # every parameter is recorded with its value, defaults included
    assert set(cfg.get("activation_params", {})) == {p for p in lin.act.params}


def test_linear_config_unchanged_without_parameters():
    assert "activation_params" not in fastbp.Linear(2, 3, activation="relu").config()
    assert "activation_params" not in fastbp.Linear(2, 3, activation="silu").config()
    assert fastbp.Linear(2, 3, activation="leaky_relu").config()["activation_params"] == {"negative_slope": 0.01}


def test_linear_reuses_its_pre_activation_buffer(rng):
    layer = fastbp.Linear(6, 4, activation="gelu", seed=0)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    layer.forward(x)
    z = layer._z
    np.testing.assert_allclose(z, x @ layer.W.data + layer.b.data, rtol=1e-6)
    layer.backward()
    layer.forward(x)
    assert layer._z is z  # one buffer per batch size, no allocation per step
    assert fastbp.Linear(6, 4, activation="elu", seed=0).forward(x) is not None
    relu_like = fastbp.Linear(6, 4, activation="leaky_relu", seed=0)
    relu_like.forward(x)
    assert relu_like._z is None  # a non-negative slope differentiates from the output: nothing kept


def test_linear_from_weights_with_parameters(rng):
    W = rng.standard_normal((3, 2)).astype(np.float32)
    layer = fastbp.Linear.from_weights(W, activation="softplus", activation_params={"beta": 3.0})
    x = rng.standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(layer(x), np.logaddexp(0, 3 * (x @ W)) / 3, rtol=1e-6)
    assert layer.activation_params == {"beta": 3.0, "threshold": 20.0}


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_ops_named_functions(rng, backend):
    x = rng.standard_normal((3, 4))
    dy = rng.standard_normal((3, 4))
    kw = dict(backend=backend)
    pairs = [
        (ops.leaky_relu(x, 0.2, **kw), ops.leaky_relu_backward(dy, ops.leaky_relu(x, 0.2), 0.2, **kw), "leaky_relu"),
        (ops.elu(x, 0.7, **kw), ops.elu_backward(dy, ops.elu(x, 0.7), 0.7, **kw), "elu"),
        (ops.gelu(x, **kw), ops.gelu_backward(dy, x, **kw), "gelu"),
        (ops.gelu(x, "tanh", **kw), ops.gelu_backward(dy, x, "tanh", **kw), "gelu_tanh"),
        (ops.silu(x, **kw), ops.silu_backward(dy, x, **kw), "silu"),
        (ops.softplus(x, 2.0, 4.0, **kw), ops.softplus_backward(dy, x, 2.0, 4.0, **kw), "softplus"),
    ]
    layers = [LeakyReLU(0.2), ELULayer(0.7), GELULayer(), GELULayer("tanh"), SiLU(), Softplus(2.0, 4.0)]
    for (y, dx, name), layer in zip(pairs, layers):
        np.testing.assert_allclose(y, layer.forward(x), rtol=1e-13, err_msg=name)
        np.testing.assert_allclose(dx, layer.backward(dy), rtol=1e-13, atol=1e-15, err_msg=name)
    # out= and in place
    out = np.empty_like(x)
    assert ops.gelu(x, out=out) is out
    g = dy.copy()
    assert ops.silu_backward(g, x, out=g) is g
    np.testing.assert_allclose(g, ops.silu_backward(dy, x), rtol=1e-15)
    # linear_forward fuses them too
    W = rng.standard_normal((4, 2))
    np.testing.assert_allclose(
        ops.linear_forward(x, W, activation="elu", activation_params={"alpha": 0.7}, backend=backend),
        ops.elu(x @ W, 0.7),
        rtol=1e-13,
    )


def test_negative_parameters_need_the_input(rng):
    x = rng.standard_normal((3, 4))
    y = ops.leaky_relu(x, -0.5)
    with pytest.raises(ValueError, match=r"x: expected the forward input for 'leaky_relu' .*negative_slope < 0"):
        ops.leaky_relu_backward(np.ones_like(x), y, -0.5)
    with pytest.raises(ValueError, match=r"x: expected the forward input for 'elu' .*alpha < 0"):
        ops.elu_backward(np.ones_like(x), ops.elu(x, -1.0), -1.0)
    with pytest.raises(ValueError, match="x: expected the forward input for 'gelu'"):
        ops.activation_backward(np.ones_like(x), x, "gelu")
    with pytest.raises(ValueError, match="y: expected the forward output"):
        ops.activation_backward(np.ones_like(x), None, "relu")
    with pytest.raises(ValueError, match="y: expected the forward output for 'tanh'"):
        ops.activation_backward(np.ones_like(x), None, "tanh", x=x)  # tanh's backward reads y only
    dx = ops.leaky_relu_backward(np.ones_like(x), y, -0.5, x=x)
    np.testing.assert_array_equal(dx, np.where(x > 0, 1.0, -0.5))


BAD = [
    (lambda: LeakyReLU("0.1"), TypeError, "negative_slope: expected a finite number, got str '0.1'"),
    (lambda: LeakyReLU(float("nan")), ValueError, "negative_slope: expected a finite number, got nan"),
    (lambda: LeakyReLU(True), TypeError, "negative_slope: expected a finite number, got bool"),
    (lambda: ELULayer(None), TypeError, "alpha: expected a finite number, got NoneType"),
    (lambda: ELULayer(float("inf")), ValueError, "alpha: expected a finite number, got inf"),
    (lambda: GELULayer("foo"), ValueError, "approximate: expected one of 'none', 'tanh', got 'foo'"),
    (lambda: GELULayer(1), TypeError, "approximate: expected one of 'none', 'tanh', got int 1"),
    (lambda: Softplus(0), ValueError, "beta: expected a finite number > 0 or a finite number < 0, got 0"),
    (lambda: Softplus(1.0, float("nan")), ValueError, "threshold: expected a number, got nan"),
    (lambda: Softplus(1.0, "20"), TypeError, "threshold: expected a number, got str"),
    (
        lambda: fastbp.Linear(2, 3, activation="leaky_relu", activation_params={"negative_slope": "x"}),
        TypeError,
        r"activation_params\['negative_slope'\]: expected a finite number, got str 'x'",
    ),
    (
        lambda: fastbp.Linear(2, 3, activation="leaky_relu", activation_params={"alpha": 0.1}),
        TypeError,
        "activation_params: expected parameters among negative_slope for activation 'leaky_relu', got 'alpha'",
    ),
    (
        lambda: fastbp.Linear(2, 3, activation="relu", activation_params={"alpha": 0.1}),
        TypeError,
        "activation_params: expected no parameters for activation 'relu', got 'alpha'",
    ),
    (
        lambda: fastbp.Linear(2, 3, activation="elu", activation_params=[1.0]),
        TypeError,
        "activation_params: expected a dict or None, got list",
    ),
    (lambda: fastbp.Linear(2, 3, activation="swish"), ValueError, "activation: expected one of"),
    (lambda: ops.gelu(np.ones((2, 2)), approximate="exact"), ValueError, r"params\['approximate'\]: expected one of"),
    (lambda: ops.softplus(np.ones((2, 2)), beta=0.0), ValueError, r"params\['beta'\]: expected a finite number"),
]


@pytest.mark.parametrize("make,err,match", BAD, ids=range(len(BAD)))
def test_bad_parameters(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_parameters_pytorch_allows_are_allowed(rng):
    """Negative slope, alpha and beta, and an infinite threshold, as PyTorch takes them."""
    x = rng.standard_normal((3, 4))
    np.testing.assert_allclose(LeakyReLU(-0.5).forward(x), np.where(x > 0, x, -0.5 * x))
    np.testing.assert_allclose(ELULayer(-2.0).forward(x), np.where(x > 0, x, -2.0 * np.expm1(x)))
    np.testing.assert_allclose(Softplus(-0.5).forward(x), np.log1p(np.exp(-0.5 * x)) / -0.5, rtol=1e-14)
    assert Softplus(threshold=float("inf")).config() == {"beta": 1.0, "threshold": float("inf")}
    assert LeakyReLU(np.float32(0.25)).config() == {"negative_slope": 0.25}  # numpy scalars become floats
