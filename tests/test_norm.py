"""BatchNorm1d and LayerNorm: kernels against twins, finite differences, PyTorch, numerics at the edges.

Tolerances are stated against each output's natural scale ``S`` (docs/normalization.md,
"Tests"): ``|kernel - twin| <= TWIN_ULPS * eps(dtype) * S``, where ``S`` is ``max|y|``
for outputs, ``max|scale| * max|dy|`` for ``dx`` (whose entries can be rounding noise
around 0, e.g. at batch 2) and ``max_j sum_i |term_ij|`` for the column sums. The
kernels and twins measured within 4 of these ulps over random shapes and offsets up
to 1e9; 16 leaves room. The serial and parallel versions are bitwise equal, for 1
and 2 threads.
"""

import tracemalloc

import numba
import numpy as np
import pytest

import fastbp
from fastbp import threads
from fastbp.kernels import norm as K
from fastbp.layers.norm import BatchNorm1d, LayerNorm
from fastbp.reference import norm as R

DTYPES = [np.float32, np.float64]
BACKENDS = ["numba", "numpy"]
VERSIONS = ["serial", "parallel"]
CHUNKS = K.CHUNKS
TWIN_ULPS = 16
# batch 2 (the smallest BatchNorm trains on), width 1, widths not a multiple of the vector length,
# batches not a multiple of the 4-row sweep nor of CHUNKS
SHAPES = [(2, 1), (2, 7), (3, 1), (5, 3), (9, 17), (64, 33), (130, 100), (37, 1)]


def eps_of(dtype):
    return float(np.finfo(dtype).eps)


def assert_scaled(actual, expected, scale, tol):
    """``|actual - expected| <= tol * scale`` elementwise, NaNs in the same places."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    ok = ~np.isnan(expected)
    err = np.max(np.abs(actual[ok] - expected[ok]), initial=0.0)
    assert err <= tol * scale, f"max error {err:.3g} > {tol:.3g} * scale {scale:.3g}"


def inputs(rng, shape, dtype, offset=0.0, sd=1.0):
    n, m = shape
    x = (offset + sd * rng.standard_normal(shape)).astype(dtype)
    gamma = rng.standard_normal(m).astype(dtype)
    beta = rng.standard_normal(m).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, dy


def bn_buffers(shape, dtype):
    n, m = shape
    return dict(
        y=np.full(shape, np.nan, dtype),
        stats=np.full((2, m), np.nan),
        save=np.full((5, m), np.nan, dtype),
        acc=np.full((2, CHUNKS, m), np.nan),
        work=np.full((2, m), np.nan, dtype),
        dx=np.full(shape, np.nan, dtype),
        dgamma=np.full(m, np.nan, dtype),
        dbeta=np.full(m, np.nan, dtype),
    )


def bn_run(impl, x, gamma, beta, dy, *, batch_stats=True, need_dx=True, running=None, eps=1e-5):
    """Forward then backward of one implementation (a module of kernels or twins, or a kernel version)."""
    b = bn_buffers(x.shape, x.dtype)
    if batch_stats:
        impl["batchnorm_forward"](x, gamma, beta, eps, b["y"], b["stats"], b["save"], b["acc"])
    else:
        rm, rv = running
        impl["batchnorm_eval"](x, gamma, beta, rm, rv, eps, b["y"], b["save"])
    dx = b["dx"] if need_dx else np.empty((0, x.shape[1]), x.dtype)
    impl["batchnorm_backward"](dy, x, b["save"], batch_stats, need_dx, dx, b["dgamma"], b["dbeta"], b["acc"], b["work"])
    return b


def ln_run(impl, x, gamma, beta, dy, *, need_dx=True, eps=1e-5):
    n, m = x.shape
    y, save = np.full(x.shape, np.nan, x.dtype), np.full((3, n), np.nan, x.dtype)
    impl["layernorm_forward"](x, gamma, beta, eps, y, save)
    dx = np.full(x.shape, np.nan, x.dtype) if need_dx else np.empty((0, m), x.dtype)
    dgamma, dbeta = np.full(m, np.nan, x.dtype), np.full(m, np.nan, x.dtype)
    impl["layernorm_backward"](dy, x, gamma, save, need_dx, dx, dgamma, dbeta, np.full((2, CHUNKS, m), np.nan))
    return dict(y=y, save=save, dx=dx, dgamma=dgamma, dbeta=dbeta)


NAMES = [
    "batchnorm_forward",
    "batchnorm_eval",
    "batchnorm_backward",
    "batchnorm_running",
    "layernorm_forward",
    "layernorm_backward",
]


def kernels(version):
    return {name: getattr(getattr(K, name), version) for name in NAMES}


TWINS = {name: getattr(R, name) for name in NAMES}


def exact_stats(x, axis):
    """Mean and biased variance in extended precision, shifted by the first element (exact differences)."""
    xl = x.astype(np.longdouble)
    shift = np.take(xl, [0], axis=axis)
    d = xl - shift
    md = d.mean(axis=axis, keepdims=True)
    return shift + md, ((d - md) ** 2).mean(axis=axis, keepdims=True), d - md


def reference_bn(x, gamma, beta, dy, eps=1e-5, axis=0):
    """y, dx, dgamma, dbeta of training-mode normalization over ``axis``, in extended precision."""
    _, var, xc = exact_stats(x, axis)
    inv = 1 / np.sqrt(var + eps)
    xh = xc * inv
    g, b, dyl = (a.astype(np.longdouble) for a in (gamma, beta, dy))
    y = xh * g + b
    dxh = dyl * g
    dx = inv * (dxh - dxh.mean(axis=axis, keepdims=True) - xh * (dxh * xh).mean(axis=axis, keepdims=True))
    return tuple(a.astype(np.float64) for a in (y, dx, (dyl * xh).sum(0), dyl.sum(0), inv, xh))


# -- kernels against twins ------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_batchnorm_kernels_match_twins(rng, version, dtype, shape, offset):
    x, gamma, beta, dy = inputs(rng, shape, dtype, offset)
    tol = TWIN_ULPS * eps_of(dtype)
    for batch_stats in (True, False):
        running = (x.mean(0).astype(dtype), (x.var(0) + 0.5).astype(dtype))
        for need_dx in (True, False):
            a = bn_run(kernels(version), x, gamma, beta, dy, batch_stats=batch_stats, need_dx=need_dx, running=running)
            b = bn_run(TWINS, x, gamma, beta, dy, batch_stats=batch_stats, need_dx=need_dx, running=running)
            for k in ("y", "dx", "dgamma", "dbeta", "save"):
                assert a[k].dtype == dtype
            assert_scaled(a["y"], b["y"], np.abs(b["y"]).max(), tol)
            xh = (x - b["save"][0]) * b["save"][1] + b["save"][2]
            assert_scaled(a["dgamma"], b["dgamma"], np.abs(dy * xh).sum(0).max(), tol)
            assert_scaled(a["dbeta"], b["dbeta"], np.abs(dy).sum(0).max(), tol)
            if need_dx:
                assert_scaled(a["dx"], b["dx"], np.abs(b["save"][3]).max() * np.abs(dy).max(), tol)
            else:
                assert np.isnan(a["dx"]).all()  # untouched
            if batch_stats:
                mean, var = b["stats"]
                assert_scaled(a["stats"][0], mean, np.abs(mean).max() + np.sqrt(var.max()), 2 * tol)  # float64
                assert_scaled(a["stats"][1], var, var.max(), 2 * tol)
            # save: the same x_hat, scale and shift
            assert_scaled(a["save"][3], b["save"][3], np.abs(b["save"][3]).max(), tol)
            xa = (x - a["save"][0]) * a["save"][1] + a["save"][2]
            assert_scaled(xa, xh, max(1.0, np.abs(xh).max()), tol)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("factor", [0.1, 1.0, 1 / 3])
def test_batchnorm_running_matches_twin(rng, version, dtype, factor):
    m = 13
    stats = np.stack([rng.standard_normal(m), rng.random(m) + 0.1])
    rm, rv = rng.standard_normal(m).astype(dtype), (rng.random(m) + 0.5).astype(dtype)
    a = rm.copy(), rv.copy()
    b = rm.copy(), rv.copy()
    getattr(K.batchnorm_running, version)(*a, stats, factor, 7)
    R.batchnorm_running(*b, stats, factor, 7)
    for u, w in zip(a, b):
        assert u.dtype == dtype
        np.testing.assert_allclose(u, w, rtol=2 * eps_of(dtype), atol=0)  # float64 sums (fused or not), rounded once


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(1, 5), (1, 1)])
@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_layernorm_kernels_match_twins(rng, version, dtype, shape, offset):
    x, gamma, beta, dy = inputs(rng, shape, dtype, offset)
    tol = TWIN_ULPS * eps_of(dtype)
    for need_dx in (True, False):
        a = ln_run(kernels(version), x, gamma, beta, dy, need_dx=need_dx)
        b = ln_run(TWINS, x, gamma, beta, dy, need_dx=need_dx)
        assert_scaled(a["y"], b["y"], np.abs(b["y"]).max(), tol)
        xh = (x - b["save"][0][:, None]) * b["save"][1][:, None] + b["save"][2][:, None]
        assert_scaled(a["dgamma"], b["dgamma"], np.abs(dy * xh).sum(0).max(), tol)
        assert_scaled(a["dbeta"], b["dbeta"], np.abs(dy).sum(0).max(), tol)
        if need_dx:
            assert_scaled(a["dx"], b["dx"], np.abs(b["save"][1]).max() * np.abs(gamma).max() * np.abs(dy).max(), tol)


def _numba_threads(n):
    if numba.config.NUMBA_NUM_THREADS < n:
        pytest.skip(f"needs {n} numba threads")  # a machine fact
    if not threads.resolve_layer():
        pytest.skip(f"no thread-safe numba threading layer ({threads.threading_info()['numba_threading_layer']!r})")
    numba.set_num_threads(n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3), (37, 19), (1000, 70)])
def test_parallel_is_bitwise_serial_for_1_and_2_threads(rng, dtype, shape):
    x, gamma, beta, dy = inputs(rng, shape, dtype, 5.0)
    before = numba.get_num_threads()
    try:
        runs = [(bn_run(kernels("serial"), x, gamma, beta, dy), ln_run(kernels("serial"), x, gamma, beta, dy))]
        for n_threads in (1, 2):
            _numba_threads(n_threads)
            runs.append(
                (bn_run(kernels("parallel"), x, gamma, beta, dy), ln_run(kernels("parallel"), x, gamma, beta, dy))
            )
    finally:
        numba.set_num_threads(before)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            for k in ("y", "dx", "dgamma", "dbeta", "save"):
                np.testing.assert_array_equal(a[k], b[k])


# -- finite differences, float64 -----------------------------------------------------------

H = 1e-6
RTOL, ATOL = 1e-6, 1e-8


def numeric_grad(f, a):
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


def _seeded(layer, rng):
    for p in layer.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5 + (1.0 if p.name == "weight" else 0.0)
    return layer


GRAD_LAYERS = {
    "bn_train": lambda b: BatchNorm1d(4, dtype=np.float64, backend=b),
    "bn_eval": lambda b: BatchNorm1d(4, dtype=np.float64, backend=b).eval(),
    "bn_no_running_eval": lambda b: BatchNorm1d(4, track_running_stats=False, dtype=np.float64, backend=b).eval(),
    "bn_no_affine": lambda b: BatchNorm1d(4, affine=False, dtype=np.float64, backend=b),
    "ln": lambda b: LayerNorm(4, dtype=np.float64, backend=b),
    "ln_no_affine": lambda b: LayerNorm(4, elementwise_affine=False, dtype=np.float64, backend=b),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", GRAD_LAYERS)
@pytest.mark.parametrize("batch", [2, 5])
def test_finite_differences(rng, name, backend, batch):
    layer = _seeded(GRAD_LAYERS[name](backend), rng)
    if layer.buffers():
        layer.running_mean[...] = rng.standard_normal(4)
        layer.running_var[...] = rng.random(4) + 0.5
    x = rng.standard_normal((batch, 4)) * 2 + 1
    weights = rng.standard_normal((batch, 4))  # L = sum(y * weights), so dL/dy = weights

    def loss():
        return float((layer.forward(x) * weights).sum())

    layer.forward(x)
    dx = layer.backward(weights).copy()
    grads = [p.grad.copy() for p in layer.parameters()]
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=RTOL, atol=ATOL)
    for p, g in zip(layer.parameters(), grads):
        np.testing.assert_allclose(g, numeric_grad(loss, p.data), rtol=RTOL, atol=ATOL)
    assert len(grads) == (0 if "no_affine" in name else 2)


# -- PyTorch ----------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


def _shapes(seed, count=4):
    rng = np.random.default_rng(seed)
    fixed = [(2, 1), (2, 6), (3, 1), (17, 1)]
    return fixed + [(int(rng.integers(2, 300)), int(rng.integers(1, 130))) for _ in range(count)]


TORCH_RTOL = {np.float32: 2e-3, np.float64: 1e-6}


def _torch_module(torch, layer, dtype):
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    if isinstance(layer, BatchNorm1d):
        mod = torch.nn.BatchNorm1d(
            layer.num_features,
            eps=layer.eps,
            momentum=layer.momentum,
            affine=layer.affine,
            track_running_stats=layer.track_running_stats,
            dtype=tdt,
        )
    else:
        mod = torch.nn.LayerNorm(
            layer.num_features, eps=layer.eps, elementwise_affine=layer.elementwise_affine, dtype=tdt
        )
    with torch.no_grad():
        for p in layer.parameters():
            getattr(mod, p.name).copy_(torch.from_numpy(p.data))
    mod.train(layer.training)
    return mod


def _compare_step(torch, layer, mod, x, dy, rtol):
    """One forward/backward of both; compares y, dx and the parameter gradients against natural scales."""
    mod.zero_grad()  # PyTorch accumulates; fastbp overwrites
    xt = torch.tensor(x, requires_grad=True)
    yt = mod(xt)
    yt.backward(torch.tensor(dy))
    y = layer.forward(x).copy()
    dx = layer.backward(dy)
    ty = yt.detach().numpy()
    assert y.dtype == x.dtype and dx.dtype == x.dtype
    assert_scaled(y, ty, np.nanmax(np.abs(ty), initial=1.0), rtol)
    # dx: entries around 0 are rounding noise (batch 2: x_hat = +-1 whatever x is), so the scale is |dy| * max scale.
    inv = 1 / np.sqrt(x.astype(np.float64).var(axis=0 if isinstance(layer, BatchNorm1d) else 1) + layer.eps)
    g = np.abs(layer.weight.data).max() if layer.parameters() else 1.0
    assert_scaled(dx, xt.grad.numpy(), np.nanmax(np.abs(dy)) * g * np.nanmax(inv, initial=1.0), rtol)
    xh = np.nan_to_num(_torch_xhat(torch, mod, x))
    for p in layer.parameters():
        tg = getattr(mod, p.name).grad.numpy()
        # sum |dy * x_hat|, at least sum |dy|: where x_hat is 0 (constant features) PyTorch's is rounding noise
        term = np.maximum(np.abs(dy * xh), np.abs(dy)) if p.name == "weight" else np.abs(dy)
        assert_scaled(p.grad, tg, term.sum(0).max(), rtol)


def _torch_xhat(torch, mod, x):
    with torch.no_grad():
        if isinstance(mod, torch.nn.LayerNorm):
            return torch.nn.functional.layer_norm(torch.tensor(x), (x.shape[1],), eps=mod.eps).numpy()
        xt = torch.tensor(x)
        if mod.training or mod.running_mean is None:
            return ((xt - xt.mean(0)) / torch.sqrt(xt.var(0, unbiased=False) + mod.eps)).numpy()
        return ((xt - mod.running_mean) / torch.sqrt(mod.running_var + mod.eps)).numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", _shapes(0))
@pytest.mark.parametrize("cls", [BatchNorm1d, LayerNorm])
def test_matches_torch(rng, backend, dtype, shape, cls):
    torch = _torch()
    layer = _seeded(cls(shape[1], dtype=dtype, backend=backend), rng)
    mod = _torch_module(torch, layer, dtype)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    _compare_step(torch, layer, mod, x, dy, TORCH_RTOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, None, 0.0, 1.0])
def test_running_statistics_and_eval_match_torch(rng, backend, dtype, momentum):
    torch = _torch()
    m = 9
    layer = _seeded(BatchNorm1d(m, momentum=momentum, dtype=dtype, backend=backend), rng)
    mod = _torch_module(torch, layer, dtype)
    rtol = TORCH_RTOL[dtype]
    for step, n in enumerate([16, 5, 2, 33, 7]):
        x = (rng.standard_normal((n, m)) * (step + 1) + step).astype(dtype)
        _compare_step(torch, layer, mod, x, rng.standard_normal((n, m)).astype(dtype), rtol)
        # float64 arithmetic rounded once against PyTorch's float32 arithmetic: a few ulps
        stat_rtol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(layer.running_mean, mod.running_mean.numpy(), rtol=stat_rtol, atol=stat_rtol)
        np.testing.assert_allclose(layer.running_var, mod.running_var.numpy(), rtol=stat_rtol)
        assert layer.num_batches_tracked.dtype == np.int64 and layer.num_batches_tracked.shape == (1,)
        assert int(layer.num_batches_tracked[0]) == int(mod.num_batches_tracked) == step + 1
    layer.eval()
    mod.eval()
    for n in (1, 2, 10):  # eval mode: batch of one is fine
        x = (rng.standard_normal((n, m)) * 2 + 1).astype(dtype)
        _compare_step(torch, layer, mod, x, rng.standard_normal((n, m)).astype(dtype), rtol)
        np.testing.assert_array_equal(layer.infer(x), layer.forward(x))
    assert int(layer.num_batches_tracked[0]) == 5  # eval forwards do not count


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("kw", [dict(track_running_stats=False), dict(affine=False), dict(affine=False, momentum=None)])
def test_options_match_torch(rng, backend, dtype, mode, kw):
    torch = _torch()
    layer = _seeded(BatchNorm1d(6, dtype=dtype, backend=backend, **kw), rng)
    mod = _torch_module(torch, layer, dtype)
    x0 = (rng.standard_normal((8, 6)) + 3).astype(dtype)
    _compare_step(torch, layer, mod, x0, rng.standard_normal((8, 6)).astype(dtype), TORCH_RTOL[dtype])  # one step
    layer.train(mode == "train")
    mod.train(mode == "train")
    x = (rng.standard_normal((5, 6)) * 2).astype(dtype)
    _compare_step(torch, layer, mod, x, rng.standard_normal((5, 6)).astype(dtype), TORCH_RTOL[dtype])
    if not layer.track_running_stats:
        assert layer.buffers() == {} and layer.running_mean is None and mod.running_mean is None
    if not layer.affine:
        assert layer.parameters() == [] and layer.weight is None
        assert layer.backward(rng.standard_normal((5, 6)), need_dx=False) is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_no_affine_matches_torch(rng, backend, dtype):
    torch = _torch()
    layer = LayerNorm(7, elementwise_affine=False, dtype=dtype, backend=backend)
    assert layer.parameters() == []
    mod = _torch_module(torch, layer, dtype)
    x = (rng.standard_normal((4, 7)) * 3 - 1).astype(dtype)
    _compare_step(torch, layer, mod, x, rng.standard_normal((4, 7)).astype(dtype), TORCH_RTOL[dtype])


# -- numerics at the edges ----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_features_give_finite_output(rng, backend, dtype):
    torch = _torch()
    x = (rng.standard_normal((6, 5)) * 2).astype(dtype)
    x[:, 1] = 3.25
    x[:, 3] = -7.0
    layer = _seeded(BatchNorm1d(5, dtype=dtype, backend=backend), rng)
    mod = _torch_module(torch, layer, dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    _compare_step(torch, layer, mod, x, dy, TORCH_RTOL[dtype])
    # PyTorch's float32 x * scale + shift is off by units at -1e6 (scale = 1/sqrt(eps)); fastbp's is exact
    x[:, 3] = -1e6
    y, dx = layer.forward(x), layer.backward(dy)
    np.testing.assert_array_equal(y[:, 3], layer.bias.data[3])
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    np.testing.assert_array_equal(y[:, 1], layer.bias.data[1])  # x_hat = 0 exactly
    np.testing.assert_array_equal(layer.weight.grad[[1, 3]], 0)
    np.testing.assert_allclose(layer.running_var[1], 0.9 * 0.9, rtol=eps_of(dtype))  # two steps, variance 0
    np.testing.assert_allclose(layer.running_mean[3], 0.1 * -7.0 * 0.9 + 0.1 * -1e6, rtol=4 * eps_of(dtype))
    row = np.full((2, 5), 7.0, dtype)
    ln = _seeded(LayerNorm(5, dtype=dtype, backend=backend), rng)
    np.testing.assert_array_equal(ln.forward(row), np.broadcast_to(ln.bias.data, row.shape))
    assert np.isfinite(ln.backward(dy[:2])).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", [BatchNorm1d, LayerNorm])
def test_huge_offsets_are_accurate(rng, backend, dtype, cls):
    """1e6 (float32) or 1e9 (float64) plus noise of 1: E[x^2] - E[x]^2 cancels every digit of the noise."""
    offset = 1e6 if dtype == np.float32 else 1e9
    shape = (300, 40)
    x, _, _, dy = inputs(rng, shape, dtype, offset, 1.0)
    x[0] += 10  # the first row (the kernels' shift) far from the mean
    layer = _seeded(cls(shape[1], dtype=dtype, backend=backend), rng)
    axis = 0 if cls is BatchNorm1d else 1
    y = layer.forward(x)
    dx = layer.backward(dy)
    ref_y, ref_dx, ref_dg, ref_db, inv, xh = reference_bn(x, layer.weight.data, layer.bias.data, dy, axis=axis)
    tol = 64 * eps_of(dtype)  # a few ulps of each output's scale; the one-pass formula is off by 100%
    if cls is BatchNorm1d and dtype == np.float64:
        # The shifted one-pass sums lose (mean - x[0])**2 / var (<= n) in float64 arithmetic; float32 input
        # is exact in float64 and loses nothing at its precision (docs/normalization.md, "Numerics").
        mean, var, _ = exact_stats(x, 0)
        tol *= 1 + float(((x[:1] - mean) ** 2 / var).max())
    assert_scaled(y, ref_y, np.abs(ref_y).max(), tol)
    assert_scaled(dx, ref_dx, np.abs(dy).max() * np.abs(layer.weight.data).max() * inv.max(), tol)
    assert_scaled(layer.weight.grad, ref_dg, np.abs(dy * xh).sum(0).max(), tol)
    assert_scaled(layer.bias.grad, ref_db, np.abs(dy).sum(0).max(), tol)
    naive_var = (x.astype(dtype) ** 2).mean(axis=axis) - x.mean(axis=axis) ** 2
    true_var = exact_stats(x, axis)[1].ravel().astype(np.float64)
    assert np.max(np.abs(naive_var - true_var) / true_var) > 0.5  # the test has teeth
    if cls is BatchNorm1d:
        running = 0.9 + 0.1 * true_var * shape[0] / (shape[0] - 1)
        np.testing.assert_allclose(layer.running_var, running, rtol=tol)
        np.testing.assert_allclose(layer.running_mean, 0.1 * exact_stats(x, 0)[0].ravel().astype(float), rtol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_like_torch(rng, backend, dtype):
    torch = _torch()
    x = rng.standard_normal((7, 5)).astype(dtype)
    x[3, 2] = np.nan
    dy = rng.standard_normal(x.shape).astype(dtype)
    for cls in (BatchNorm1d, LayerNorm):
        layer = _seeded(cls(5, dtype=dtype, backend=backend), rng)
        mod = _torch_module(torch, layer, dtype)
        _compare_step(torch, layer, mod, x, dy, TORCH_RTOL[dtype])  # NaNs in the same places
        y = layer.forward(x)
        if cls is BatchNorm1d:
            assert np.isnan(y[:, 2]).all() and np.isfinite(np.delete(y, 2, axis=1)).all()
            assert np.isnan(layer.running_mean[2]) and np.isfinite(np.delete(layer.running_mean, 2)).all()
        else:
            assert np.isnan(y[3]).all() and np.isfinite(np.delete(y, 3, axis=0)).all()
    layer = BatchNorm1d(5, dtype=dtype, backend=backend)
    layer.forward(np.nan_to_num(x))
    dy[1, 4] = np.nan
    dx = layer.backward(dy)
    assert np.isnan(dx[:, 4]).all() and np.isfinite(dx[:, :4]).all()


# -- the layer API -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_of_one_in_training_raises_like_torch(backend):
    layer = BatchNorm1d(512, backend=backend)
    msg = r"^Expected more than 1 value per channel when training, got input size \(1, 512\)$"
    with pytest.raises(ValueError, match=msg):
        layer.forward(np.ones((1, 512), np.float32))
    assert int(layer.num_batches_tracked[0]) == 0
    layer.eval()
    assert layer.forward(np.ones((1, 512), np.float32)).shape == (1, 512)
    assert layer.infer(np.ones((1, 512), np.float32)).shape == (1, 512)
    no_stats = BatchNorm1d(3, track_running_stats=False, backend=backend).eval()
    for fn in (no_stats.forward, no_stats.infer):
        with pytest.raises(ValueError, match=r"got input size \(1, 3\)"):
            fn(np.ones((1, 3), np.float32))
    assert LayerNorm(3, backend=backend).forward(np.ones((1, 3), np.float32)).shape == (1, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_infer_is_eval_and_touches_nothing(rng, backend):
    layer = _seeded(BatchNorm1d(6, backend=backend), rng)
    for _ in range(3):
        layer.forward(rng.standard_normal((10, 6)).astype(np.float32))
    x = rng.standard_normal((4, 6)).astype(np.float32)
    y_train = layer.forward(x)
    kept = y_train.copy()
    state = {k: a.copy() for k, a in layer.buffers().items()}
    save = layer._save.copy()
    out = layer.infer(x)
    assert layer.training and out is not y_train
    np.testing.assert_array_equal(y_train, kept)  # the training buffer is untouched
    np.testing.assert_array_equal(layer._save, save)
    for k, a in layer.buffers().items():
        np.testing.assert_array_equal(a, state[k])
    np.testing.assert_array_equal(out, layer.eval().forward(x))
    ln = _seeded(LayerNorm(6, backend=backend), rng)
    y = ln.forward(x).copy()
    np.testing.assert_array_equal(ln.infer(x[1:3]), y[1:3])
    np.testing.assert_array_equal(ln.forward(x), y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_in_a_model(rng, backend):
    model = fastbp.Sequential(
        fastbp.Linear(5, 8, seed=0, backend=backend),
        BatchNorm1d(8, backend=backend),
        fastbp.ReLU(backend=backend),
        LayerNorm(8, backend=backend),
        fastbp.Linear(8, 3, seed=1, backend=backend),
    )
    x = rng.standard_normal((20, 5)).astype(np.float32)
    for _ in range(3):
        model.forward(x)
        model.backward(rng.standard_normal((20, 3)).astype(np.float32))
    pred = model.predict(x, batch_size=7)
    model.eval()
    np.testing.assert_allclose(pred, model.forward(x), rtol=1e-6, atol=1e-6)
    state = model.state_dict()
    assert {"1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked", "3.weight"} <= set(state)
    assert state["1.num_batches_tracked"][0] == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_buffers_and_workspace_reused_no_allocation(rng, backend):
    layer = BatchNorm1d(300, backend=backend)
    x = rng.standard_normal((256, 300)).astype(np.float32)
    dy = rng.standard_normal((256, 300)).astype(np.float32)
    bufs = layer.buffers()
    y0, dx0 = layer.forward(x), layer.backward(dy)
    assert layer.forward(x) is y0 and layer.backward(dy) is dx0
    assert all(layer.buffers()[k] is a for k, a in bufs.items())  # updated in place
    assert layer.parameters()[0].name == "weight" and layer.parameters()[1].name == "bias"
    if backend != "numba":
        return  # the twins allocate temporaries: they are the readable reference
    for lay in (layer, LayerNorm(300)):
        lay.forward(x)
        lay.backward(dy)
        tracemalloc.start()
        for _ in range(5):
            lay.forward(x)
            lay.backward(dy)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 10_000, peak  # no array allocated in the steady state (one array here is 300 KB)


@pytest.mark.parametrize("backend", BACKENDS)
def test_need_dx_false_and_backward_before_forward(rng, backend):
    layer = BatchNorm1d(4, backend=backend)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((3, 4), np.float32))
    x = rng.standard_normal((3, 4)).astype(np.float32)
    dy = rng.standard_normal((3, 4)).astype(np.float32)
    layer.forward(x)
    full = layer.backward(dy).copy()
    grads = [p.grad.copy() for p in layer.parameters()]
    for p in layer.parameters():
        p.grad[...] = np.nan
    assert layer.backward(dy, need_dx=False) is None
    for p, g in zip(layer.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g)  # overwritten, not accumulated
    np.testing.assert_array_equal(layer.backward(dy), full)
    with pytest.raises(ValueError, match="dy: expected shape"):
        layer.backward(np.ones((2, 4), np.float32))


def test_config_and_repr():
    bn = BatchNorm1d(7, eps=1e-3, momentum=None, affine=False, track_running_stats=False, dtype=np.float64)
    assert bn.config() == dict(num_features=7, eps=1e-3, momentum=None, affine=False, track_running_stats=False)
    assert BatchNorm1d(**bn.config()).config() == bn.config()
    assert bn.in_features == bn.out_features == 7
    assert repr(bn).startswith("BatchNorm1d(7, eps=0.001, momentum=None, affine=False")
    ln = LayerNorm(3, eps=1e-6, elementwise_affine=False)
    assert ln.config() == dict(num_features=3, eps=1e-6, elementwise_affine=False)
    assert LayerNorm(**ln.config()).config() == ln.config()
    default = BatchNorm1d(2)
    assert default.config() == dict(num_features=2, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)
    np.testing.assert_array_equal(default.running_mean, [0, 0])
    np.testing.assert_array_equal(default.running_var, [1, 1])
    assert default.running_mean.dtype == np.float32 and default.weight.data.dtype == np.float32


BAD = [
    (BatchNorm1d, dict(num_features=0), ValueError, "num_features: expected an int >= 1, got 0"),
    (BatchNorm1d, dict(num_features=2.5), TypeError, "num_features: expected an int >= 1, got float 2.5"),
    (BatchNorm1d, dict(num_features="3"), TypeError, "num_features: expected"),
    (BatchNorm1d, dict(eps=0), ValueError, "eps: expected a finite number > 0, got 0"),
    (BatchNorm1d, dict(eps=-1e-5), ValueError, "eps: expected a finite number > 0"),
    (BatchNorm1d, dict(eps=float("nan")), ValueError, "eps: expected a finite number > 0, got nan"),
    (BatchNorm1d, dict(eps="small"), TypeError, "eps: expected a finite number > 0, got str 'small'"),
    (BatchNorm1d, dict(momentum=1.5), ValueError, r"momentum: expected None or a number in \[0, 1\], got 1.5"),
    (BatchNorm1d, dict(momentum=-0.1), ValueError, "momentum: expected None or a number in"),
    (BatchNorm1d, dict(momentum="0.1"), TypeError, "momentum: expected None or a number in"),
    (BatchNorm1d, dict(affine=1), TypeError, "affine: expected True or False, got int 1"),
    (BatchNorm1d, dict(track_running_stats="yes"), TypeError, "track_running_stats: expected True or False"),
    (BatchNorm1d, dict(dtype=np.int32), TypeError, "dtype: expected float32 or float64, got int32"),
    (BatchNorm1d, dict(backend="cuda"), ValueError, "backend: expected one of 'numba', 'numpy', got 'cuda'"),
    (LayerNorm, dict(num_features=-1), ValueError, "num_features: expected an int >= 1, got -1"),
    (LayerNorm, dict(eps=float("inf")), ValueError, "eps: expected a finite number > 0, got inf"),
    (LayerNorm, dict(elementwise_affine=None), TypeError, "elementwise_affine: expected True or False, got NoneType"),
    (LayerNorm, dict(dtype="float16"), TypeError, "dtype: expected float32 or float64, got float16"),
    (LayerNorm, dict(backend=3), TypeError, "backend: expected"),
]


@pytest.mark.parametrize(
    "cls,kw,exc,msg", BAD, ids=[f"{c.__name__}-{next(iter(k))}-{i}" for i, (c, k, _, _) in enumerate(BAD)]
)
def test_bad_arguments_name_the_argument(cls, kw, exc, msg):
    args = {"num_features": 4, **kw}
    with pytest.raises(exc, match=msg):
        cls(**args)


@pytest.mark.parametrize("cls", [BatchNorm1d, LayerNorm])
def test_bad_inputs(cls):
    layer = cls(4)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 4\), got \(3, 5\)"):
        layer.forward(np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="x: expected a 2-D array"):
        layer.forward(np.ones(4, np.float32))
    with pytest.raises(TypeError, match="x: expected a floating-point array"):
        layer.forward(np.ones((3, 4), np.int64))
    assert layer.forward(np.ones((3, 4), np.float64)).dtype == np.float32  # converted to the layer's dtype
    assert layer.forward(np.asfortranarray(np.arange(12.0).reshape(3, 4))).flags.c_contiguous
