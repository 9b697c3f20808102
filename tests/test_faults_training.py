"""Faults found by injection: what a user can assign, optimizers of another model, non-finite
weights after the last update, inputs aliasing a layer's own buffers, a Ctrl-C that must not be lost."""

import os
import signal

import numpy as np
import pytest

import fastbp
from fastbp import training
from fastbp.loop import defer_interrupts

SCE = fastbp.SoftmaxCrossEntropy


def small_model(seed=0, dtype=np.float32):
    return fastbp.Sequential(
        fastbp.Linear(4, 6, activation="relu", seed=seed, dtype=dtype), fastbp.Linear(6, 3, seed=seed + 1, dtype=dtype)
    )


@pytest.fixture
def data(rng):
    return rng.standard_normal((20, 4)).astype(np.float32), rng.integers(0, 3, 20)


# -- whatever the user can assign: handled, or refused before a kernel sees it ---------------------


@pytest.mark.parametrize(
    "value,err,match",
    [
        (
            np.zeros((3, 3), np.float32),
            ValueError,
            r"W.data: expected .* shape \(4, 6\), got float32 of shape \(3, 3\)",
        ),
        (np.zeros((4, 6), np.float64), ValueError, "W.data: expected a writeable C-contiguous float32"),
        (np.asfortranarray(np.zeros((4, 6), np.float32)), ValueError, "not C-contiguous"),
        (np.zeros((6, 4), np.float32).T, ValueError, "not C-contiguous"),
        ([[0.0] * 6] * 4, TypeError, "W.data: expected .* got list"),
    ],
)
def test_rebinding_data_to_what_kernels_cannot_use_is_refused(value, err, match):
    layer = fastbp.Linear(4, 6, seed=0)
    before = layer.W.data
    with pytest.raises(err, match=match):
        layer.W.data = value
    assert layer.W.data is before


def test_rebinding_to_a_read_only_array_is_refused():
    a = np.zeros((4, 6), np.float32)
    a.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fastbp.Linear(4, 6, seed=0).W.grad = a


@pytest.mark.parametrize("opt", [fastbp.SGD, fastbp.Adam])
def test_a_valid_rebinding_is_followed_by_the_optimizer(opt):
    layer = fastbp.Linear(4, 6, seed=0)
    o = opt(layer.parameters(), lr=0.5)
    o.step()  # views made and used
    new_w, new_g = np.ones((4, 6), np.float32), np.full((4, 6), 2.0, np.float32)
    layer.W.data, layer.W.grad = new_w, new_g
    twin = fastbp.Linear(4, 6, seed=0)
    twin_o = opt(twin.parameters(), lr=0.5)
    twin_o.step()
    twin.W.data[...] = 1.0
    twin.W.grad[...] = 2.0
    o.step()
    twin_o.step()
    assert layer.W.data is new_w  # updated in place: the user's array is the trained one
    np.testing.assert_array_equal(new_w, twin.W.data)


def test_replacing_a_layer_parameter_is_checked():
    layer = fastbp.Linear(4, 6, seed=0)
    with pytest.raises(ValueError, match=r"W: expected a Parameter of shape \(4, 6\) and dtype float32"):
        layer.W = fastbp.Parameter(np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="b: this layer was built with a Parameter"):
        layer.b = None
    with pytest.raises(TypeError, match="b: expected a Parameter .* got ndarray"):
        layer.b = np.zeros(6, np.float32)
    layer.b = fastbp.Parameter(np.ones(6, np.float32), "b")  # same shape and dtype: taken
    np.testing.assert_array_equal(layer.infer(np.zeros((2, 4), np.float32)), np.ones((2, 6), np.float32))


def test_batchnorm_follows_rebound_parameters_and_refuses_bad_statistics(rng):
    bn = fastbp.BatchNorm1d(3)
    bn.weight.data = np.array([2.0, 3.0, 4.0], np.float32)
    bn.bias.data = np.array([1.0, 0.0, -1.0], np.float32)
    x = rng.standard_normal((8, 3)).astype(np.float32)
    y = bn.forward(x)
    xd = x.astype(np.float64)
    want = (xd - xd.mean(0)) / np.sqrt(xd.var(0) + bn.eps) * bn.weight.data + bn.bias.data
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    g = np.zeros(3, np.float32)
    bn.weight.grad = g
    bn.backward(np.ones_like(y))
    assert bn.weight.grad is g and np.any(g != 0)  # the gradient landed in the rebound array
    for name, value, match in [
        (
            "running_var",
            np.ones(4, np.float32),
            r"running_var: expected a writeable C-contiguous float32 array of shape \(3,\)",
        ),
        ("running_mean", np.zeros(3, np.float64), "running_mean: expected"),
        ("running_mean", None, "running_mean: this layer was built with a writeable"),
        ("num_batches_tracked", np.zeros(1, np.int32), "num_batches_tracked: expected"),
    ]:
        with pytest.raises(ValueError, match=match):
            setattr(bn, name, value)
    with pytest.raises(AttributeError, match="weight.data: assign it on the parameter"):
        bn._gamma = np.ones(3, np.float32)


# -- fit: optimizers of another model, non-finite weights, argument names ---------------------------


def test_an_optimizer_of_another_model_is_refused(data):
    model, other = small_model(0), small_model(1)
    with pytest.raises(
        ValueError, match=r"optimizer: expected an optimizer over this model's parameters .* \(4 of 4\)"
    ):
        fastbp.fit(model, *data, loss=SCE(), optimizer=fastbp.Adam(other.parameters()), progress=False)


def test_an_optimizer_over_some_of_the_parameters_trains_those_only(data):
    model = small_model(0)
    frozen = model[0].W.data.copy()
    last = model[1].W.data.copy()
    fastbp.fit(model, *data, loss=SCE(), optimizer=fastbp.SGD(model[1].parameters(), lr=0.1), epochs=2, progress=False)
    np.testing.assert_array_equal(model[0].W.data, frozen)
    assert not np.array_equal(model[1].W.data, last)


@pytest.mark.parametrize(
    "extra", [{}, {"validation_data": "same"}, {"validation_data": "same", "early_stopping": True, "patience": 1}]
)
def test_non_finite_weights_after_the_last_update_raise_and_restore(data, extra):
    model = small_model(0)
    start = model.state_dict()
    X, y = data
    if "validation_data" in extra:
        extra = dict(extra, validation_data=(X, y))
    # One batch per epoch: the update that makes the weights non-finite is the epoch's last.
    with pytest.raises(fastbp.NonFiniteLossError, match="last update of epoch 1 .*restored to the start of the epoch"):
        fastbp.fit(
            model, X[:4], y[:4], loss=SCE(), optimizer=fastbp.Adam(model.parameters(), lr=1e38),
            epochs=3, batch_size=4, shuffle=False, progress=False, **extra,
        )  # fmt: skip
    for k, a in model.state_dict().items():
        np.testing.assert_array_equal(a, start[k])


def test_a_non_finite_validation_loss_is_not_recorded_as_a_score(data):
    model = small_model(0)
    X, y = data
    X_val = X.copy()
    X_val[0, 0] = np.inf
    with pytest.raises(fastbp.NonFiniteLossError, match="validation loss became nan after epoch 1"):
        fastbp.fit(
            model, X, y, loss=SCE(), optimizer=fastbp.SGD(model.parameters(), lr=0.1),
            validation_data=(X_val, y), early_stopping=True, progress=False,
        )  # fmt: skip


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"clip_norm": -1.0}, ValueError, "clip_norm: expected a finite number > 0, got -1"),
        ({"clip_norm": "1"}, TypeError, "clip_norm: expected"),
        ({"min_delta": -0.5}, ValueError, "min_delta: expected a finite number >= 0"),
        ({"patience": -5}, ValueError, "patience: expected an int >= 1, got -5"),
    ],
)
def test_fit_arguments_are_named_in_their_errors(data, kwargs, err, match):
    model = small_model(0)
    with pytest.raises(err, match=match):
        fastbp.fit(model, *data, loss=SCE(), optimizer=fastbp.SGD(model.parameters(), lr=0.1), progress=False, **kwargs)


# -- inputs that alias the layer's own buffers --------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: fastbp.Linear(5, 5, seed=0),
        lambda: fastbp.Linear(5, 5, activation="gelu", seed=0),
        lambda: fastbp.GELU(),
        lambda: fastbp.Softplus(),
        lambda: fastbp.BatchNorm1d(5),
        lambda: fastbp.LayerNorm(5),
    ],
    ids=["linear", "linear-gelu", "gelu", "softplus", "batchnorm", "layernorm"],
)
def test_feeding_a_layer_its_own_output_gives_the_gradients_of_a_copy(make, rng):
    x = rng.standard_normal((6, 5)).astype(np.float32)
    dy = rng.standard_normal((6, 5)).astype(np.float32)
    layer, twin = make(), make()
    h = layer.forward(x)
    layer.forward(h)  # h is the layer's own output buffer, overwritten by this forward
    dx = layer.backward(dy).copy()
    twin.forward(twin.forward(x).copy())
    np.testing.assert_array_equal(dx, twin.backward(dy))
    for p, q in zip(layer.parameters(), twin.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)


# -- Ctrl-C is never swallowed ---------------------------------------------------------------------------


def _interrupt(*_):
    os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_in_the_last_epochs_callback_interrupts(data):
    model = small_model(0)
    with pytest.raises(fastbp.TrainingInterrupted, match="epoch 2"):
        fastbp.fit(
            model, *data, loss=SCE(), optimizer=fastbp.SGD(model.parameters(), lr=0.1), epochs=2,
            callbacks=[lambda e, logs, m: _interrupt() if e == 2 else None], progress=False,
        )  # fmt: skip


def test_ctrl_c_in_the_last_epochs_validation_interrupts(data, monkeypatch):
    model = small_model(0)
    real = training._validation_logs

    def validating(*args):
        _interrupt()
        return real(*args)

    monkeypatch.setattr(training, "_validation_logs", validating)
    with pytest.raises(fastbp.TrainingInterrupted):
        fastbp.fit(
            model, *data, loss=SCE(), optimizer=fastbp.SGD(model.parameters(), lr=0.1), epochs=1,
            validation_split=0.25, progress=False,
        )  # fmt: skip


def test_a_pending_ctrl_c_is_raised_when_the_deferring_block_ends():
    with pytest.raises(KeyboardInterrupt):
        with defer_interrupts() as interrupted:
            _interrupt()
            assert interrupted()  # held, not raised, until the block ends


@pytest.mark.parametrize(
    "make,err,match",
    [
        (lambda: fastbp.BatchNorm1d(3, dtype=None), TypeError, "dtype: expected float32 or float64, got None"),
        (lambda: fastbp.LayerNorm(3, dtype=None), TypeError, "dtype: expected float32 or float64, got None"),
        (
            lambda: fastbp.Standardize(np.zeros(2), np.ones(2), inverse="no"),
            TypeError,
            "inverse: expected True or False",
        ),
    ],
)
def test_layer_arguments_that_used_to_pass_unchecked(make, err, match):
    with pytest.raises(err, match=match):
        make()


@pytest.mark.parametrize("schedule", [fastbp.schedules.StepLR, fastbp.schedules.ReduceLROnPlateau])
def test_a_schedule_names_a_wrong_optimizer(schedule):
    kwargs = {"step_size": 1} if schedule is fastbp.schedules.StepLR else {}
    with pytest.raises(TypeError, match="optimizer: expected a fastbp optimizer, got str"):
        schedule("sgd", **kwargs)


def test_momentum_set_after_construction_gets_buffers_and_matches_a_momentum_sgd():
    a, b = fastbp.Linear(4, 3, seed=0), fastbp.Linear(4, 3, seed=0)
    late, built = fastbp.SGD(a.parameters(), lr=0.1), fastbp.SGD(b.parameters(), lr=0.1, momentum=0.9)
    late.momentum = 0.9
    for layer, opt in ((a, late), (b, built)):
        for _ in range(3):
            layer.forward(np.ones((2, 4), np.float32))
            layer.backward()
            opt.step()
    np.testing.assert_array_equal(a.W.data, b.W.data)
    assert set(late.state_dict()["state"]) == {"momentum_buffer"}
