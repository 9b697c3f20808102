"""Fused ``BatchNorm1d -> activation -> Dropout`` (fastbp/kernels/fused_norm.py, fastbp/layers/fused.py).

The fused kernels must give what the unfused chain of kernels gives: output, dropout mask,
statistics, saved values, dx, dgamma, dbeta, within ``ULPS`` of each array's scale (bit for
bit on the machine they were written on; see ``assert_close``), masks and counters exactly;
and a ``Sequential`` that fuses must train as the same layers run one by one by a
hand-written loop (the unfused path). The serial and parallel builds of one kernel give the
same bits on 1 and 2 threads. Against the numpy twins the tolerance is that of
tests/test_norm.py (16 ulps of each output's natural scale), the mask exact.
"""

import copy
import pickle
import tracemalloc

import numba
import numpy as np
import pytest
from _helpers import in_fresh_process

import fastbp
from fastbp import threads
from fastbp._buffers import BufferPool
from fastbp.backend import identity_bias, no_input, zero_bias
from fastbp.bench.mlp import make_regularized_problem
from fastbp.jit import IDENTITY, LEAKY_RELU, RELU, SIGMOID, TANH
from fastbp.kernels import activations as KA
from fastbp.kernels import dropout as KD
from fastbp.kernels import fused_norm as KF
from fastbp.kernels import norm as KN
from fastbp.layers import ELU, Dropout, Identity, LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from fastbp.layers.fused import find_runs
from fastbp.layers.norm import BatchNorm1d
from fastbp.loop import backward_update, forward_loss
from fastbp.losses import SoftmaxCrossEntropy
from fastbp.reference import fused_norm as RF

DTYPES = [np.float32, np.float64]
CHUNKS = KN.CHUNKS
VARIANTS = [(act, drop) for act in KF.FUSED_ACTIVATIONS for drop in (True, False) if act != IDENTITY or drop]
# batch 2 (the smallest BatchNorm trains on) and 3, width 1, widths not a multiple of the vector
# length, batches not a multiple of the 4-row sweep nor of CHUNKS
SHAPES = [(2, 1), (3, 7), (9, 17), (64, 33), (130, 100)]
P, SEED, STEP, SLOPE = 0.3, 7, 3, 0.1
MOMENTUM = 0.3  # of the running statistics the fused forward updates


def _running(m, dtype):
    """Running mean and variance to start from (not the defaults, so that both terms count)."""
    r = np.random.default_rng(5)
    return r.standard_normal(m).astype(dtype), (0.5 + r.random(m)).astype(dtype)


def _dropout_args(dtype, p=P):
    return np.uint64(SEED), np.uint64(STEP), np.uint64(int(np.ceil(p * 2.0**53))), dtype.type(1 / (1 - p))


def _inputs(rng, shape, dtype):
    x = (1.0 + 3.0 * rng.standard_normal(shape)).astype(dtype)
    x[0, 0] = -0.0  # signed zeros must come out as the chain gives them
    gamma = rng.standard_normal(shape[1]).astype(dtype)
    beta = rng.standard_normal(shape[1]).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, dy


def chain(x, gamma, beta, dy, act, drop):
    """The unfused chain of kernels (serial), as the layers call them one by one."""
    n, m = x.shape
    dt = x.dtype
    seed, step, thr, ds = _dropout_args(dt)
    h, stats, save, acc = np.empty_like(x), np.empty((2, m)), np.empty((5, m), dt), np.empty((2, CHUNKS, m))
    KN.batchnorm_forward.serial(x, gamma, beta, 1e-5, h, stats, save, acc)
    a = h.copy()
    if act in (RELU, SIGMOID, TANH):
        KA.bias_act.serial(a, zero_bias(m, dt), act)
    elif act == LEAKY_RELU:
        KA.bias_act_param.serial(a, identity_bias(m, dt), act, dt.type(SLOPE), dt.type(0), no_input(dt))
    out, mask = a, None
    if drop:
        out, mask = np.empty_like(a), np.empty((n, m), np.uint8)
        KD.dropout_forward.serial(a, out, mask, seed, step, thr, ds)
    g = dy
    if drop:
        g = np.empty_like(dy)
        KD.dropout_backward.serial(dy, mask, ds, g)
    if act in (RELU, SIGMOID, TANH):
        KA.act_backward.serial(g, a, act, g := g.copy())
    elif act == LEAKY_RELU:
        KA.act_backward_param.serial(g, a, no_input(dt), act, dt.type(SLOPE), dt.type(0), g := g.copy())
    dx, dg, db, work = np.empty_like(x), np.empty(m, dt), np.empty(m, dt), np.empty((2, m), dt)
    KN.batchnorm_backward.serial(g, x, save, True, True, dx, dg, db, acc, work)
    rm, rv = _running(m, dt)
    KN.batchnorm_running.serial(rm, rv, stats, MOMENTUM, n)
    steps = np.array([STEP + drop], np.uint64)
    return dict(y=out, mask=mask, stats=stats, save=save, dx=dx, dgamma=dg, dbeta=db,
                running_mean=rm, running_var=rv, tracked=np.ones(1, np.int64), steps=steps)  # fmt: skip


def fused(impl, x, gamma, beta, dy, act, drop, version=None):
    """One fused forward and backward: ``impl`` the kernel module (``version`` serial/parallel) or the twins."""
    n, m = x.shape
    dt = x.dtype
    seed, step, thr, ds = _dropout_args(dt)
    y, stats, save, acc = np.full_like(x, np.nan), np.empty((2, m)), np.empty((5, m), dt), np.empty((2, CHUNKS, m))
    store = drop and act in KF.STORES_OUTPUT
    a = np.empty_like(x) if store else np.empty((0, m), dt)
    mask = np.empty((n, m), np.uint8) if drop else np.empty((0, m), np.uint8)
    dx, dg, db, work = np.full_like(x, np.nan), np.empty(m, dt), np.empty(m, dt), np.empty((2, m), dt)
    rm, rv = _running(m, dt)
    steps, tracked = np.array([step], np.uint64), np.zeros(1, np.int64)
    state = (rm, rv, MOMENTUM, tracked)
    if version is None:
        impl.bn_act_drop_forward(
            x, gamma, beta, 1e-5, act, dt.type(SLOPE), drop, seed, steps, thr, ds, y, a, mask, stats, save, acc, *state
        )
    else:
        getattr(KF.fused_kernels(act, drop)[0], version)(
            x, gamma, beta, 1e-5, dt.type(SLOPE), seed, steps, thr, ds, y, a, mask, stats, save, acc, *state
        )
    o = (a if drop else y) if act in KF.STORES_OUTPUT else np.empty((0, m), dt)
    if version is None:
        impl.bn_act_drop_backward(dy, x, save, o, mask, act, dt.type(SLOPE), drop, ds, True, dx, dg, db, acc, work)
    else:
        getattr(KF.fused_kernels(act, drop)[1], version)(
            dy, x, save, o, mask, dt.type(SLOPE), ds, True, dx, dg, db, acc, work
        )
    return dict(y=y, mask=mask if drop else None, stats=stats, save=save, dx=dx, dgamma=dg, dbeta=db,
                running_mean=rm, running_var=rv, tracked=tracked, steps=steps)  # fmt: skip


def assert_bitwise(a, b):
    """For one implementation run two ways (serial and parallel builds of one source): the same bits."""
    for k in a:
        if a[k] is not None:
            np.testing.assert_array_equal(a[k].view(np.uint8), b[k].view(np.uint8), err_msg=k)


# Fused kernels against the chain of layer kernels: two implementations of the same expressions.
# On this machine they agree bit for bit; the tests allow a few ulps of each array's largest
# magnitude, since whether LLVM contracts a product and a sum into one fused multiply-add is a
# per-loop decision that another CPU may make differently. Integers (masks, counters) are exact,
# and so is the sign of every zero (relu(-0) is +0, as the chain gives it).
ULPS = 4


def assert_close(a, b, name="", ulps=ULPS):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape, a.dtype, b.dtype)
    if a.dtype.kind != "f":
        np.testing.assert_array_equal(a, b, err_msg=name)
        return
    scale = float(np.abs(b).max()) if b.size else 0.0
    bound = ulps * float(np.finfo(a.dtype).eps) * scale
    err = float(np.abs(a.astype(np.float64) - b).max()) if b.size else 0.0
    assert err <= bound, f"{name}: differs by {err:.3g}, more than {ulps} ulps of {scale:.3g}"
    zeros = b == 0
    np.testing.assert_array_equal(np.signbit(a[zeros]), np.signbit(b[zeros]), err_msg=f"{name}: sign of zero")


def assert_all_close(a, b, ulps=ULPS):
    for k in a:
        if a[k] is not None:
            assert_close(a[k], b[k], k, ulps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act,drop", VARIANTS)
def test_fused_kernels_are_the_chain(rng, dtype, shape, act, drop):
    x, gamma, beta, dy = _inputs(rng, shape, dtype)
    assert_all_close(fused(KF, x, gamma, beta, dy, act, drop, "serial"), chain(x, gamma, beta, dy, act, drop))


def _numba_threads(n):
    if numba.config.NUMBA_NUM_THREADS < n:
        pytest.skip(f"needs {n} numba threads")  # a machine fact
    if not threads.resolve_layer():
        pytest.skip(f"no thread-safe numba threading layer ({threads.threading_info()['numba_threading_layer']!r})")
    numba.set_num_threads(n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 1), (37, 1), (130, 100)])
@pytest.mark.parametrize("act,drop", [(RELU, True), (SIGMOID, True), (IDENTITY, True), (TANH, False)])
def test_parallel_is_bitwise_serial_for_1_and_2_threads(rng, dtype, shape, act, drop):
    x, gamma, beta, dy = _inputs(rng, shape, dtype)
    serial = fused(KF, x, gamma, beta, dy, act, drop, "serial")
    before = numba.get_num_threads()
    try:
        for n_threads in (1, 2):
            _numba_threads(n_threads)
            assert_bitwise(serial, fused(KF, x, gamma, beta, dy, act, drop, "parallel"))
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 1), (9, 17), (130, 100)])
@pytest.mark.parametrize("act,drop", VARIANTS)
def test_fused_kernels_match_numpy_twins(rng, dtype, shape, act, drop):
    x, gamma, beta, dy = _inputs(rng, shape, dtype)
    k = fused(KF, x, gamma, beta, dy, act, drop)
    t = fused(RF, x, gamma, beta, dy, act, drop)
    if drop:
        np.testing.assert_array_equal(k["mask"], t["mask"])
    for key in ("steps", "tracked"):
        np.testing.assert_array_equal(k[key], t[key], err_msg=key)
    for key in ("running_mean", "running_var"):  # from statistics that agree to a few ulps (tests/test_norm.py)
        assert_close(k[key], t[key], key, ulps=16)
    eps = float(np.finfo(dtype).eps)
    # scales as tests/test_norm.py: max|y|, max|scale| * max|dy| for dx, sum |dy| (* max|x_hat|) for the sums
    x_hat = np.abs((x - k["save"][0]) * k["save"][1] + k["save"][2]).max()
    scales = dict(
        y=np.abs(t["y"]).max() + 1,
        dx=np.abs(k["save"][3]).max() * np.abs(dy).max() / (1 - P),
        dbeta=np.abs(dy).sum(axis=0).max() / (1 - P),
        dgamma=np.abs(dy).sum(axis=0).max() * x_hat / (1 - P),
    )
    for key, scale in scales.items():
        err = np.abs(k[key].astype(np.float64) - t[key]).max()
        assert err <= 16 * eps * scale, f"{key}: error {err:.3g} > 16 ulps of {scale:.3g}"


def test_unknown_activation_code_is_refused():
    with pytest.raises(ValueError, match="act: expected one of the fused activation codes"):
        KF.fused_kernels(99, True)


# -- Sequential ------------------------------------------------------------------------------------


def _act_layer(name, backend):
    if name == "none":
        return None
    if name == "leaky":
        return LeakyReLU(SLOPE, backend=backend)
    return {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}[name](backend=backend)


def build(act_name, drop, dtype=np.float32, width=5, backend="numba", seed=0):
    """Linear, BatchNorm1d, [activation], [Dropout], Linear: the same model for the same arguments."""
    layers = [
        Linear(4, width, dtype=dtype, seed=seed, backend=backend),
        BatchNorm1d(width, dtype=dtype, backend=backend),
    ]
    act = _act_layer(act_name, backend)
    if act is not None:
        layers.append(act)
    if drop:
        layers.append(Dropout(P, seed=seed + 1, backend=backend))
    layers.append(Linear(width, 3, dtype=dtype, seed=seed + 2, backend=backend))
    return fastbp.Sequential(*layers)


def hand_forward(model, x):
    for layer in model.layers:
        x = layer.forward(x)
    return x


def hand_backward(model, dy, input_grad):
    first = -1 if input_grad else next(i for i, layer in enumerate(model.layers) if layer.parameters())
    for i in range(len(model.layers) - 1, -1, -1):
        dy = model.layers[i].backward(dy, need_dx=i > first)
        if i <= first:
            return None
    return dy


def _state(model):
    """Everything a step leaves: parameters, their gradients, buffers (running statistics, dropout step)."""
    out = {k: v.copy() for k, v in model.state_dict().items()}
    out.update({f"{i}.grad": p.grad.copy() for i, p in enumerate(model.parameters())})
    return out


def _assert_same_state(a, b, ulps=ULPS):
    assert a.keys() == b.keys()
    assert_all_close(a, b, ulps)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width,batch", [(5, 8), (1, 2), (7, 3)])
@pytest.mark.parametrize("act_name,drop", [("relu", True), ("leaky", True), ("sigmoid", True), ("tanh", True),
                                           ("none", True), ("relu", False), ("sigmoid", False)])  # fmt: skip
def test_sequential_fused_equals_layers_one_by_one(rng, backend, dtype, width, batch, act_name, drop):
    fused_model = build(act_name, drop, dtype, width, backend)
    plain = build(act_name, drop, dtype, width, backend)
    assert [(r.start, r.stop) for r in fused_model._plan()] == [(1, 3 + (act_name != "none") - (not drop))]
    for _ in range(3):
        x = rng.standard_normal((batch, 4)).astype(dtype)
        dy = rng.standard_normal((batch, 3)).astype(dtype)
        out = fused_model.forward(x).copy()
        assert fused_model._runs[0].fused_last
        assert_close(out, hand_forward(plain, x), "y")
        dx = fused_model.backward(dy, input_grad=True)
        assert_close(dx, hand_backward(plain, dy, True), "dx")
        _assert_same_state(_state(fused_model), _state(plain))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("momentum,track", [(None, True), (1, True), (0.0, True), (0.1, False)])
def test_fused_running_statistics_options(rng, backend, momentum, track):
    # The fused forward updates running statistics, num_batches_tracked and the Dropout step
    # itself: for every BatchNorm option they must be what the layers' own forwards leave.
    def make():
        return fastbp.Sequential(
            Linear(4, 5, dtype=np.float64, seed=0, backend=backend),
            BatchNorm1d(5, momentum=momentum, track_running_stats=track, dtype=np.float64, backend=backend),
            ReLU(backend=backend),
            Dropout(P, seed=1, backend=backend),
        )

    fused_model, plain = make(), make()
    for _ in range(4):
        x = rng.standard_normal((6, 4))
        fused_model.forward(x)
        assert fused_model._runs[0].fused_last
        hand_forward(plain, x)
        _assert_same_state(_state(fused_model), _state(plain))
    if track:
        assert fused_model.layers[1].num_batches_tracked[0] == 4
    assert fused_model.layers[3]._step[0] == 4


# 20 steps let a difference of an ulp in a step grow: allowed 1024 ulps (1.2e-4 of each array's
# scale in float32, 2.3e-13 in float64); measured here, 0.
TRAJECTORY_ULPS = 1024


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_training_trajectory_is_the_unfused_one(optimizer, dtype):
    batch = 16
    models = [make_regularized_problem((12, 10, 6, 3), batch, dtype)[0] for _ in range(2)]
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((batch, 12)).astype(dtype) for _ in range(20)]
    ys = [rng.integers(0, 3, batch) for _ in range(20)]
    opts = [
        fastbp.SGD(m.parameters(), lr=0.05, momentum=0.9)
        if optimizer == "sgd"
        else fastbp.Adam(m.parameters(), lr=0.01)
        for m in models
    ]
    losses = [SoftmaxCrossEntropy(), SoftmaxCrossEntropy()]
    for x, y in zip(xs, ys):
        _, loss_f = forward_loss(models[0], losses[0], x, y)
        backward_update(models[0], losses[0], opts[0], models[0].parameters(), None)
        loss_u = losses[1].forward(hand_forward(models[1], x), y)
        hand_backward(models[1], losses[1].backward(), False)
        opts[1].step()
        assert abs(loss_f - loss_u) <= TRAJECTORY_ULPS * np.finfo(dtype).eps * abs(loss_u)
    assert all(run.fused_last for run in models[0]._runs)
    _assert_same_state(_state(models[0]), _state(models[1]), TRAJECTORY_ULPS)


def test_eval_mode_runs_the_layers_and_equals_them(rng):
    model, plain = build("relu", True), build("relu", True)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    model.forward(x)  # one training step moves the running statistics
    hand_forward(plain, x)
    model.eval()
    plain.eval()
    out = model.forward(x).copy()
    assert not model._runs[0].fused_last
    assert_close(out, hand_forward(plain, x), "y")  # the running statistics came from a fused step
    np.testing.assert_array_equal(model.predict(x), out)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    assert_close(model.backward(dy, input_grad=True), hand_backward(plain, dy, True), "dx")
    # one layer in eval mode is enough to run the run layer by layer
    model.train()
    model.layers[3].eval()
    model.forward(x)
    assert not model._runs[0].fused_last


def test_mutating_layers_is_followed(rng):
    model, plain = build("relu", True), build("relu", True)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    dy = rng.standard_normal((6, 3)).astype(np.float32)

    def check():
        assert_close(model.forward(x), hand_forward(plain, x), "y")
        assert_close(model.backward(dy, input_grad=True), hand_backward(plain, dy, True), "dx")
        _assert_same_state(_state(model), _state(plain))

    check()
    for m in (model, plain):
        m.layers[2] = Identity()  # the ReLU goes: BatchNorm1d -> Identity is not a run
    check()
    assert model._runs == []
    for m in (model, plain):
        m.layers[2] = Tanh()
        del m.layers[3]  # the Dropout goes: BatchNorm1d -> Tanh
    check()
    assert [(r.start, r.stop) for r in model._runs] == [(1, 3)]
    for m in (model, plain):
        m.layers = [BatchNorm1d(4), *m.layers]  # a new list, starting with a layer with parameters
    check()
    assert [(r.start, r.stop) for r in model._runs] == [(2, 4)]


def test_what_is_fused():
    relu, drop, bn = ReLU(), Dropout(0.5), BatchNorm1d(3)
    assert [(r.start, r.stop) for r in find_runs([bn, relu, drop, Linear(3, 3)])] == [(0, 3)]
    assert [(r.start, r.stop) for r in find_runs([bn, drop])] == [(0, 2)]
    assert find_runs([bn]) == [] and find_runs([relu, drop]) == []
    # not fused: an activation the kernels do not apply, or LeakyReLU with a negative slope (reads its input)
    assert find_runs([bn, ELU(), drop]) == [] and find_runs([bn, LeakyReLU(-0.1)]) == []
    assert [(r.start, r.stop) for r in find_runs([bn, Sigmoid(), BatchNorm1d(3), Dropout(0.1)])] == [(0, 2), (2, 4)]


def test_layers_backward_after_a_fused_forward(rng):
    model = build("relu", True)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    model.forward(x)
    drop, relu = model.layers[3], model.layers[2]
    dy = rng.standard_normal((6, 5)).astype(np.float32)
    np.testing.assert_array_equal(drop.backward(dy), dy * drop._mask * np.float32(1 / (1 - P)))
    with pytest.raises(RuntimeError, match="before forward"):  # its output was never written: no stale one is read
        relu.backward(dy)


def test_bad_input_names_the_argument():
    model = build("relu", True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model.forward(np.ones((1, 4), np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        build("relu", True).backward(np.ones((2, 3), np.float32))
    model.forward(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="dy: expected shape"):
        model.backward(np.ones((3, 3), np.float32))


def steady_state_peak(optimizer: str) -> list:
    """Traced peak (bytes) over 5 steps of the fused regularized MLP after warm-up; whether every run was fused."""
    model, x, y = make_regularized_problem((20, 64, 32, 4), 64, np.float32)
    loss = SoftmaxCrossEntropy()
    params = model.parameters()
    opt = fastbp.SGD(params, lr=0.01, momentum=0.9) if optimizer == "sgd" else fastbp.Adam(params, lr=1e-3)
    for _ in range(3):  # warm-up: buffers, kernels
        forward_loss(model, loss, x, y)
        backward_update(model, loss, opt, params, None)
    fused = all(run.fused_last for run in model._runs)
    tracemalloc.start()
    for _ in range(5):
        forward_loss(model, loss, x, y)
        backward_update(model, loss, opt, params, None)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return [peak, fused]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_steady_state_steps_allocate_nothing(optimizer):
    # In a fresh process: tracemalloc also counts threads earlier tests left running.
    peak, fused = in_fresh_process("test_fused_layers", "steady_state_peak", optimizer)
    assert fused
    assert peak < 10_000, peak  # one (64, 64) float32 activation is 16 KB


def test_momentum_assignment_is_checked():
    # The fused forward passes momentum=None to its kernel as -1.0: a value outside [0, 1] must never get in.
    bn = BatchNorm1d(3)
    for bad in (-0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="momentum"):
            bn.momentum = bad
    for bad in ("0.1", True):
        with pytest.raises(TypeError, match="momentum"):
            bn.momentum = bad
    bn.momentum = None
    assert bn.momentum is None
    bn.momentum = np.float32(0.5)
    assert type(bn.momentum) is float and bn.momentum == 0.5


def test_buffer_pool_holds_its_own_arrays_after_a_copy():
    # holds() answers from a set of ids: a copy must answer for its own arrays, not the original's.
    pool = BufferPool()
    a = pool.get("y", (2, 3), np.float32)
    assert pool.holds(a) and pool.holds(a[1:]) and not pool.holds(np.empty((2, 3), np.float32))
    for twin in (copy.deepcopy(pool), pickle.loads(pickle.dumps(pool))):
        b = twin.get("y", (2, 3), np.float32)
        assert b is not a and twin.holds(b) and not twin.holds(a)
