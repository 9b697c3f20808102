"""Dropout: counter-based mask (kernel and twin bit for bit), PyTorch's semantics, generator state in buffers."""

import math

import numba
import numpy as np
import pytest
from _helpers import DTYPES, SHAPES

import fastbp
from fastbp import io, threads
from fastbp.kernels import dropout as K
from fastbp.layers.dropout import Dropout
from fastbp.reference import dropout as R

VERSIONS = ["serial", "parallel"]
BACKENDS = ["numba", "numpy"]
PS = [0.0, 0.1, 0.5, 0.9, 1.0]


def args(p, dtype):
    """(threshold, scale) as the layer passes them."""
    return np.uint64(math.ceil(p * 2.0**53)), np.dtype(dtype).type(0.0 if p == 1 else 1.0 / (1.0 - p))


def bits(a):
    """The raw bits of a float array: equality that also tells -0 from 0 and compares NaNs."""
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def forward(fn, x, seed, step, p):
    y = np.full_like(x, np.nan)
    mask = np.full(x.shape, 7, np.uint8)  # stale contents must be overwritten
    fn(x, y, mask, np.uint64(seed), np.uint64(step), *args(p, x.dtype))
    return y, mask


def kept(layer):
    """The mask of ``layer``'s last training forward, as bools."""
    return layer._mask.astype(bool)


# -- kernel against twin ---------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(257, 1031)])
@pytest.mark.parametrize("p", PS)
def test_kernels_match_twin_bit_for_bit(rng, version, dtype, shape, p):
    x = rng.standard_normal(shape).astype(dtype)
    for seed, step in [(0, 0), (12345, 7), (2**64 - 1, 2**64 - 1), (2**63 + 5, 2**40)]:
        y_k, m_k = forward(getattr(K.dropout_forward, version), x, seed, step, p)
        y_r, m_r = forward(R.dropout_forward, x, seed, step, p)
        assert y_k.dtype == dtype and m_k.dtype == np.uint8
        np.testing.assert_array_equal(m_k, m_r)
        assert set(np.unique(m_k)) <= {0, 1}
        np.testing.assert_array_equal(bits(y_k), bits(y_r))
        dy = rng.standard_normal(shape).astype(dtype)
        scale = args(p, dtype)[1]
        dx_k, dx_r = np.full_like(dy, np.nan), np.full_like(dy, np.nan)
        getattr(K.dropout_backward, version)(dy, m_k, scale, dx_k)
        R.dropout_backward(dy, m_r, scale, dx_r)
        np.testing.assert_array_equal(bits(dx_k), bits(dx_r))


@pytest.mark.parametrize("seed,step", [(0, 0), (1, 2), (2**64 - 1, 2**64 - 1), (0xDEADBEEF, 3)])
def test_stream_key_matches_twin(seed, step):
    assert int(K.stream_key(np.uint64(seed), np.uint64(step))) == int(R.stream_key(seed, step))


def test_splitmix64_reference_values():
    """The finalizer is SplitMix64's: the first outputs of the reference generator seeded 0 (Vigna's splitmix64.c)."""
    z = np.arange(1, 4, dtype=np.uint64) * np.uint64(K.GAMMA)
    assert R._mix64(z).tolist() == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_backward_in_place(rng):
    dy = rng.standard_normal((5, 9)).astype(np.float32)
    _, mask = forward(K.dropout_forward, dy, 3, 4, 0.5)
    expected = dy * (mask * np.float32(2))
    K.dropout_backward(dy, mask, np.float32(2), dy)
    np.testing.assert_array_equal(dy, expected)


# -- statistics of the mask --------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.01, 0.2, 0.5, 0.75, 0.99])
def test_kept_fraction_within_5_sigma(backend, p):
    layer = Dropout(p, seed=2024, backend=backend)
    x = np.ones((512, 1000), np.float32)
    total, n = 0, 0
    for _ in range(4):
        layer(x)
        total += int(kept(layer).sum())
        n += x.size
    assert abs(total - n * (1 - p)) <= 5 * math.sqrt(n * p * (1 - p))


def _corr(a, b):
    """Correlation of two bool arrays, and 5 standard errors for independent ones."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(np.corrcoef(a, b)[0, 1]), 5 / math.sqrt(a.size)


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_no_correlation_between_neighbours_steps_rows_and_seeds(p):
    shape = (256, 1024)
    x = np.ones(shape)
    a, b = Dropout(p, seed=0), Dropout(p, seed=1)  # neighbouring seeds
    a(x)
    m0 = kept(a).copy()
    a(x)
    m1 = kept(a).copy()
    b(x)
    mb = kept(b).copy()
    flat = m0.ravel()
    for lhs, rhs in [
        (flat[:-1], flat[1:]),  # neighbouring elements (crossing rows too)
        (flat[:-2], flat[2:]),
        (m0[:-1], m0[1:]),  # the element below
        (m0, m1),  # consecutive steps
        (m0, mb),  # neighbouring seeds, same step
    ]:
        c, bound = _corr(lhs, rhs)
        assert abs(c) < bound, c
    # Each bit of the 53-bit uniform is balanced: no dead or stuck low bits of the hash.
    z = np.arange(1, 1 << 18, dtype=np.uint64) * np.uint64(K.GAMMA) + R.stream_key(0, 0)
    h = R._mix64(z) >> np.uint64(11)
    ones = ((h[:, None] >> np.arange(53, dtype=np.uint64)) & np.uint64(1)).sum(axis=0)
    assert np.all(np.abs(ones - h.size / 2) <= 5 * math.sqrt(h.size / 4))


# -- the layer ----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.1, 0.2, 1 / 3, 0.5, 0.7, 0.9])
def test_kept_elements_scaled_exactly_dropped_zero(rng, backend, dtype, p):
    x = rng.standard_normal((64, 129)).astype(dtype)
    layer = Dropout(p, seed=5, backend=backend)
    y = layer(x)
    keep = kept(layer)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y[keep], x[keep] * np.dtype(dtype).type(1 / (1 - p)))
    assert np.all(y[~keep] == 0)
    assert 0 < keep.sum() < keep.size


@pytest.mark.parametrize("backend", BACKENDS)
def test_p_zero_is_identity_and_p_one_zeros(rng, backend):
    x = rng.standard_normal((7, 33)).astype(np.float32)
    x[0, 0] = -0.0
    y = Dropout(0.0, seed=1, backend=backend)(x)
    np.testing.assert_array_equal(bits(y), bits(x))
    layer = Dropout(1.0, seed=1, backend=backend)
    assert np.all(layer(x) == 0) and not kept(layer).any()
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), np.zeros_like(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_and_infer_are_identity_and_leave_state_alone(rng, backend):
    x = rng.standard_normal((8, 16)).astype(np.float32)
    layer = Dropout(0.5, seed=3, backend=backend)
    layer(x)
    mask, step, seen = layer._mask.copy(), layer.buffers()["step"].copy(), layer._x
    assert layer.infer(x) is x  # in training mode too
    assert layer._x is seen and np.array_equal(layer._mask, mask) and layer.buffers()["step"] == step
    layer.eval()
    assert layer(x) is x
    assert layer.buffers()["step"] == step  # eval forwards draw no mask
    np.testing.assert_array_equal(layer.backward(2 * x), 2 * x)
    layer.train()
    layer(x)
    assert layer.buffers()["step"] == step + 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_uses_the_forward_mask(rng, backend, dtype):
    x = rng.standard_normal((32, 50)).astype(dtype)
    dy = rng.standard_normal((32, 50)).astype(dtype)
    layer = Dropout(0.4, seed=9, backend=backend)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(dy)
    y = layer(x).copy()
    keep = kept(layer)
    dx = layer.backward(dy)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, dy * (keep * np.dtype(dtype).type(1 / 0.6)))
    np.testing.assert_array_equal(dx != 0, y != 0)
    assert layer.backward(dy, need_dx=False) is None
    ones = layer.backward()  # upstream of ones: the mask times the scale
    np.testing.assert_array_equal(ones, keep * np.dtype(dtype).type(1 / 0.6))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_by_central_differences(rng, backend):
    """With the step held fixed the map is linear; its gradient must match central differences in float64."""
    x = rng.standard_normal((3, 5))
    layer = Dropout(0.5, seed=11, backend=backend)
    r = rng.standard_normal(x.shape)
    step = layer.buffers()["step"]

    def loss():
        step[:] = 0
        return float(np.sum(layer.forward(x) * r))

    loss()
    analytic = layer.backward(r).copy()
    numeric = np.zeros_like(x)
    h = 1e-6
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        fp = loss()
        x[idx] = old - h
        fm = loss()
        x[idx] = old
        numeric[idx] = (fp - fm) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    assert 0 < np.count_nonzero(analytic) < x.size


def test_backends_give_the_same_masks(rng):
    x = rng.standard_normal((40, 77)).astype(np.float32)
    a, b = Dropout(0.3, seed=77, backend="numba"), Dropout(0.3, seed=77, backend="numpy")
    for _ in range(3):
        np.testing.assert_array_equal(bits(a(x)), bits(b(x)))


def test_steps_differ_same_seed_and_step_repeat(rng):
    x = np.ones((16, 64), np.float32)
    a, b, c = Dropout(0.5, seed=42), Dropout(0.5, seed=42), Dropout(0.5, seed=43)
    masks = []
    for _ in range(3):
        a(x)
        b(x)
        c(x)
        np.testing.assert_array_equal(kept(a), kept(b))
        assert not np.array_equal(kept(a), kept(c))
        masks.append(kept(a).copy())
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    b.buffers()["step"][:] = 1  # back to the second step
    b(x)
    np.testing.assert_array_equal(kept(b), masks[1])


def test_seed_none_draws_a_seed_at_construction():
    a, b = Dropout(0.5), Dropout(0.5)
    assert a.buffers()["seed"] != b.buffers()["seed"]
    x = np.ones((4, 256), np.float32)
    assert not np.array_equal(a(x), b(x))
    g = Dropout(0.5, seed=np.random.default_rng(0)).buffers()["seed"]
    assert g == Dropout(0.5, seed=np.random.default_rng(0)).buffers()["seed"]


def test_buffers_are_updated_in_place_and_round_trip(rng):
    x = rng.standard_normal((10, 20)).astype(np.float32)
    model = fastbp.Sequential(fastbp.Linear(20, 30, seed=0), Dropout(0.5, seed=123), fastbp.Linear(30, 3, seed=1))
    bufs = model.buffers()
    assert set(bufs) == {"1.seed", "1.step"} and bufs["1.seed"].dtype == bufs["1.step"].dtype == np.uint64
    for _ in range(3):
        model(x)
    assert model.buffers()["1.step"] is bufs["1.step"] and bufs["1.step"][0] == 3
    state = model.state_dict()
    other = fastbp.Sequential(fastbp.Linear(20, 30, seed=0), Dropout(0.5), fastbp.Linear(30, 3, seed=1))
    other.load_state_dict(state)
    for _ in range(2):
        np.testing.assert_array_equal(model(x), other(x))


def test_model_file_round_trip_continues_the_masks(rng, tmp_path):
    x = rng.standard_normal((6, 8)).astype(np.float64)
    model = fastbp.Sequential(fastbp.Linear(8, 16, dtype=np.float64, seed=0), Dropout(0.25, seed=99))
    model(x)
    io.save(model, tmp_path / "m.npz")
    loaded = io.load(tmp_path / "m.npz")
    assert loaded[1].config() == {"p": 0.25} and loaded[1].dtype is None
    np.testing.assert_array_equal(model(x), loaded(x))
    np.testing.assert_array_equal(model.predict(x), x @ model[0].W.data + model[0].b.data)


def test_mask_buffer_reused_per_shape(rng):
    layer = Dropout(0.5, seed=0)
    big, small = np.ones((8, 4), np.float32), np.ones((3, 4), np.float32)
    layer(big)
    m_big = layer._mask
    layer(small)
    m_small = layer._mask
    layer(big)
    assert layer._mask is m_big
    layer(small)
    assert layer._mask is m_small


@pytest.mark.parametrize("backend", BACKENDS)
def test_dtype_follows_the_input_or_the_layer(backend):
    layer = Dropout(0.5, seed=0, backend=backend)
    for dtype in DTYPES:
        x = np.ones((4, 6), dtype)
        assert layer(x).dtype == dtype and layer.backward().dtype == dtype
    assert Dropout(0.5, dtype=np.float64, backend=backend)(np.ones((2, 3), np.float32)).dtype == np.float64
    with pytest.raises(TypeError, match="x: expected float32 or float64"):
        layer(np.ones((2, 3), np.float16))
    with pytest.raises(ValueError, match="x: expected a 2-D array"):
        layer(np.ones(3, np.float32))


@pytest.mark.parametrize(
    "p,err", [(-0.1, ValueError), (1.5, ValueError), (float("nan"), ValueError), ("0.5", TypeError), (True, TypeError)]
)
def test_bad_p_is_a_clear_error(p, err):
    with pytest.raises(err, match=r"^p: expected a number in \[0, 1\], got"):
        Dropout(p)


@pytest.mark.parametrize("seed,err", [(-1, ValueError), (2**64, ValueError), (1.5, TypeError), ("1", TypeError)])
def test_bad_seed_is_a_clear_error(seed, err):
    with pytest.raises(err, match="^seed: expected None or an int in"):
        Dropout(0.5, seed=seed)


def test_setting_p_checks_it_and_moves_threshold_and_scale():
    layer = Dropout(0.5, seed=3)
    x = np.ones((64, 64), np.float32)
    layer.p = 0.75
    y = layer(x)
    assert set(np.unique(y)) == {0.0, 4.0}
    with pytest.raises(ValueError, match=r"^p: expected a number in \[0, 1\], got 2"):
        layer.p = 2
    assert layer.p == 0.75


def test_kernel_takes_python_ints_as_uint64(rng):
    x = rng.standard_normal((9, 13)).astype(np.float32)
    y_np, m_np = forward(K.dropout_forward.serial, x, 2**64 - 3, 5, 0.5)
    y, m = np.empty_like(x), np.empty(x.shape, np.uint8)
    K.dropout_forward.serial(x, y, m, 2**64 - 3, 5, 2**52, np.float32(2))
    np.testing.assert_array_equal(m, m_np)
    np.testing.assert_array_equal(y, y_np)


def test_bad_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend: expected"):
        Dropout(0.5, backend="torch")


def test_config_rebuilds_and_repr():
    layer = Dropout(0.3, seed=1)
    assert layer.config() == {"p": 0.3}
    assert Dropout(**layer.config()).p == 0.3
    assert repr(layer) == "Dropout(p=0.3)"
    assert layer.parameters() == [] and layer.dtype is None


# -- threads -----------------------------------------------------------------


def _two_threads_or_skip():
    if int(numba.config.NUMBA_NUM_THREADS) < 2:
        pytest.skip("needs NUMBA_NUM_THREADS >= 2")  # an environment fact
    if not threads.resolve_layer():
        layer = threads.threading_info()["numba_threading_layer"]
        pytest.skip(f"no thread-safe numba threading layer here ({layer!r})")  # an installation fact


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_mask_for_1_and_2_threads(rng, dtype):
    _two_threads_or_skip()
    x = rng.standard_normal((301, 257)).astype(dtype)
    before = numba.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            numba.set_num_threads(n)
            results.append(forward(K.dropout_forward.parallel, x, 8, 9, 0.35))
    finally:
        numba.set_num_threads(before)
    serial = forward(K.dropout_forward.serial, x, 8, 9, 0.35)
    for y, m in results:
        np.testing.assert_array_equal(m, serial[1])
        np.testing.assert_array_equal(bits(y), bits(serial[0]))


def test_layer_dispatch_parallel_equals_serial(rng):
    _two_threads_or_skip()
    if fastbp.get_num_threads() < 2:
        pytest.skip("parallel kernels need 2+ threads (set_num_threads)")
    x = rng.standard_normal((64, 100)).astype(np.float32)
    dy = rng.standard_normal((64, 100)).astype(np.float32)
    serial = Dropout(0.5, seed=4)
    y_s, dx_s = serial(x).copy(), serial.backward(dy).copy()
    with threads.parallel_min_work(0):
        assert threads.use_parallel(x.size)
        par = Dropout(0.5, seed=4)
        y_p, dx_p = par(x), par.backward(dy)
    np.testing.assert_array_equal(y_p, y_s)
    np.testing.assert_array_equal(dx_p, dx_s)


# -- special values, against PyTorch -------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_give_nan_where_dropped_nan_where_kept(backend):
    x = np.full((8, 32), np.nan, np.float32)
    x[::2] = np.inf
    layer = Dropout(0.5, seed=1, backend=backend)
    with np.errstate(invalid="ignore"):  # the numpy twin computes inf * 0 as numpy does, with a warning
        y = layer(x)
    keep = kept(layer)
    assert np.isnan(y[~keep]).all()  # x * 0, as PyTorch multiplies by its mask
    np.testing.assert_array_equal(y[keep], x[keep])  # NaN stays NaN, inf stays inf
    dx = layer.backward(np.full_like(x, np.nan))
    assert np.isnan(dx).all()
    with np.errstate(invalid="ignore"):
        assert np.isnan(Dropout(1.0, seed=1, backend=backend)(x)).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_matches_torch_rule_and_special_values(rng, dtype, p):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((16, 40)).astype(dtype)
    x[0, :8] = [np.nan, np.inf, -np.inf, -0.0, 0.0, np.nan, np.inf, 1e30]
    dy = rng.standard_normal(x.shape).astype(dtype)
    dy[1, :4] = [np.nan, np.inf, np.nan, -np.inf]
    # torch's mask, read from the same draws on ones.
    torch.manual_seed(0)
    t_mask = torch.nn.functional.dropout(torch.ones(x.shape, dtype=getattr(torch, np.dtype(dtype).name)), p).numpy()
    torch.manual_seed(0)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.dropout(tx, p)
    ty.backward(torch.from_numpy(dy))
    # torch: y = x * (mask * scale), dx = dy * (mask * scale); fastbp must follow the same rule with its own mask.
    with np.errstate(invalid="ignore"):  # inf * 0
        np.testing.assert_array_equal(ty.detach().numpy(), x * t_mask)
        np.testing.assert_array_equal(tx.grad.numpy(), dy * t_mask)
    layer = Dropout(p, seed=5)
    y = layer(x).copy()
    dx = layer.backward(dy)
    scale = np.dtype(dtype).type(0.0 if p == 1 else 1 / (1 - p))
    ours = kept(layer) * scale
    np.testing.assert_array_equal(np.unique(t_mask), np.unique(ours))  # the same values: 0 and the scale
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(y, x * ours)
        np.testing.assert_array_equal(dx, dy * ours)
