"""fit, evaluate, predict: behaviour, determinism, failures, PyTorch equivalence, allocations."""

import os
import signal
import tracemalloc

import numpy as np
import pytest
from _helpers import in_fresh_process

import fastbp
from fastbp import datasets
from fastbp.loop import Batches, backward_update, count_correct, forward_loss


def small_model(seed=0, dtype=np.float32, width=20, classes=3):
    return fastbp.Sequential(
        fastbp.Linear(width, 32, activation="relu", dtype=dtype, seed=seed),
        fastbp.Linear(32, classes, dtype=dtype, seed=seed + 1),
    )


@pytest.fixture
def data():
    return datasets.make_classification(600, 20, 3, seed=1)


def test_fit_learns_and_records_history(data):
    X, y = data
    model = small_model()
    opt = fastbp.Adam(model.parameters(), lr=1e-2)
    h = fastbp.fit(
        model,
        X,
        y,
        loss=fastbp.SoftmaxCrossEntropy(),
        optimizer=opt,
        epochs=15,
        batch_size=32,
        seed=0,
        validation_split=0.2,
        progress=False,
    )
    assert h.epochs == 15 and len(h.val_loss) == len(h.val_accuracy) == len(h.samples_per_sec) == 15
    assert h.loss[-1] < 0.5 * h.loss[0]
    assert h.accuracy[-1] > 0.9 and h.val_accuracy[-1] > 0.85
    ev = fastbp.evaluate(model, X[-120:], y[-120:], loss=fastbp.SoftmaxCrossEntropy())
    assert ev["loss"] == pytest.approx(h.val_loss[-1], rel=1e-6)
    assert ev["accuracy"] == pytest.approx(h.val_accuracy[-1])


def test_fit_is_deterministic_given_seed(data):
    X, y = data

    def run(seed):
        model = small_model()
        opt = fastbp.SGD(model.parameters(), lr=0.05, momentum=0.9)
        h = fastbp.fit(
            model,
            X,
            y,
            loss=fastbp.SoftmaxCrossEntropy(),
            optimizer=opt,
            epochs=3,
            batch_size=50,
            seed=seed,
            progress=False,
        )
        return h.loss, model.state_dict()

    (la, sa), (lb, sb), (lc, _) = run(7), run(7), run(8)
    assert la == lb and all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert la != lc


def test_last_partial_batch_is_used(data):
    X, y = data
    seen = []

    class Counting(fastbp.SoftmaxCrossEntropy):
        def forward(self, pred, target):
            seen.append(pred.shape[0])
            return super().forward(pred, target)

    model = small_model()
    fastbp.fit(
        model,
        X[:110],
        y[:110],
        loss=Counting(),
        optimizer=fastbp.SGD(model.parameters(), lr=0.1),
        epochs=2,
        batch_size=32,
        progress=False,
    )
    assert seen == [32, 32, 32, 14] * 2


def test_evaluate_matches_full_batch_mean(data):
    X, y = data
    model = small_model()
    loss = fastbp.SoftmaxCrossEntropy(weight=[1.0, 2.0, 0.5])
    full = loss(model.predict(X), y)
    ev = fastbp.evaluate(model, X, y, loss=loss, batch_size=64)
    assert ev["loss"] == pytest.approx(full, rel=1e-5)
    assert ev["accuracy"] == pytest.approx(np.mean(model.predict(X).argmax(1) == y))
    p = fastbp.predict_proba(model, X, batch_size=100)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    assert p.dtype == np.float32


def test_regression_fit(data):
    X, Y = datasets.make_regression(400, 8, 2, seed=0)
    model = fastbp.Sequential(fastbp.Linear(8, 32, activation="tanh", seed=0), fastbp.Linear(32, 2, seed=1))
    h = fastbp.fit(
        model,
        X,
        Y,
        loss=fastbp.MSELoss(),
        optimizer=fastbp.Adam(model.parameters(), lr=1e-2),
        epochs=30,
        batch_size=32,
        seed=0,
        progress=False,
    )
    assert h.loss[-1] < 0.2 * h.loss[0] and h.accuracy == []


def test_early_stopping_restores_best(data):
    X, y = data
    model = small_model()
    opt = fastbp.SGD(model.parameters(), lr=2.0)  # too large: validation loss gets worse
    snapshots = []

    def keep(epoch, logs, m):
        snapshots.append((logs["val_loss"], m.state_dict()))

    h = fastbp.fit(
        model,
        X,
        y,
        loss=fastbp.SoftmaxCrossEntropy(),
        optimizer=opt,
        epochs=40,
        batch_size=32,
        seed=0,
        validation_split=0.25,
        early_stopping=True,
        patience=3,
        callbacks=[keep],
        progress=False,
    )
    best = int(np.argmin([s[0] for s in snapshots]))
    assert h.stopped_early and h.best_epoch == best + 1 and len(h.loss) == best + 4
    for k, a in model.state_dict().items():
        np.testing.assert_array_equal(a, snapshots[best][1][k])


def test_callback_stops_and_schedule_steps(data):
    X, y = data
    model = small_model()
    opt = fastbp.SGD(model.parameters(), lr=0.1)
    sched = fastbp.schedules.StepLR(opt, step_size=1, gamma=0.5)
    h = fastbp.fit(
        model,
        X,
        y,
        loss=fastbp.SoftmaxCrossEntropy(),
        optimizer=opt,
        epochs=10,
        lr_schedule=sched,
        callbacks=[lambda e, logs, m: e == 3],
        progress=False,
        clip_norm=1.0,
    )
    assert h.epochs == 3 and h.lr == [0.1, 0.05, 0.025]


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # numpy warns about the inf/NaN we feed
def test_non_finite_loss_stops_with_location_and_finite_model(data):
    X, y = data
    X = X[:100].copy()
    X[70] = np.inf  # in batch 3 (rows 64..95) when not shuffled
    model = small_model()
    ref = small_model()
    loss = fastbp.SoftmaxCrossEntropy()
    opt, ref_opt = fastbp.SGD(model.parameters(), lr=0.1), fastbp.SGD(ref.parameters(), lr=0.1)
    with pytest.raises(fastbp.NonFiniteLossError, match=r"epoch 1, batch 3"):
        fastbp.fit(model, X, y[:100], loss=loss, optimizer=opt, epochs=2, batch_size=32, shuffle=False, progress=False)
    fastbp.fit(
        ref,
        X[:64],
        y[:64],
        loss=fastbp.SoftmaxCrossEntropy(),
        optimizer=ref_opt,
        epochs=1,
        batch_size=32,
        shuffle=False,
        progress=False,
    )
    for a, b in zip(model.parameters(), ref.parameters()):
        np.testing.assert_array_equal(a.data, b.data)  # the state after the last finite batch


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # numpy warns about the inf/NaN we feed
def test_non_finite_parameters_roll_back_to_epoch_start(data):
    X, y = data
    model = small_model()
    start = model.state_dict()
    calls = []

    class InfGradient(fastbp.SoftmaxCrossEntropy):
        def backward(self):
            g = super().backward()
            calls.append(1)
            if len(calls) == 2:
                g[0, 0] = np.inf  # the second update makes some weights non-finite
            return g

    opt = fastbp.SGD(model.parameters(), lr=0.1)
    with pytest.raises(fastbp.NonFiniteLossError, match="batch 3.*restored to the start of the epoch"):
        fastbp.fit(
            model, X, y, loss=InfGradient(), optimizer=opt, epochs=1, batch_size=16, shuffle=False, progress=False
        )
    for k, a in model.state_dict().items():
        np.testing.assert_array_equal(a, start[k])


def test_ctrl_c_finishes_the_step(data, default_sigint):
    X, y = data
    calls = []

    class Interrupting(fastbp.SoftmaxCrossEntropy):
        def forward(self, pred, target):
            calls.append(1)
            if len(calls) == 5:
                os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step
            return super().forward(pred, target)

    model, ref = small_model(), small_model()
    with pytest.raises(KeyboardInterrupt, match="batch 5"):
        fastbp.fit(
            model,
            X,
            y,
            loss=Interrupting(),
            optimizer=fastbp.SGD(model.parameters(), lr=0.1),
            epochs=1,
            batch_size=32,
            shuffle=False,
            progress=False,
        )
    fastbp.fit(
        ref,
        X[:160],
        y[:160],
        loss=fastbp.SoftmaxCrossEntropy(),
        optimizer=fastbp.SGD(ref.parameters(), lr=0.1),
        epochs=1,
        batch_size=32,
        shuffle=False,
        progress=False,
    )
    for a, b in zip(model.parameters(), ref.parameters()):
        np.testing.assert_array_equal(a.data, b.data)  # exactly five whole steps
    assert signal.getsignal(signal.SIGINT) is default_sigint  # the handler from before fit is back


def step_memory(optimizer: str) -> list:
    """Traced memory growth and peak (bytes) over 315 steps after a warm-up epoch, and the smallest buffer."""
    X, y = datasets.make_classification(1000, 64, 100, seed=0)
    model = fastbp.Sequential(fastbp.Linear(64, 128, activation="relu", seed=0), fastbp.Linear(128, 100, seed=1))
    loss = fastbp.SoftmaxCrossEntropy()
    params = model.parameters()
    opt = fastbp.SGD(params, lr=0.01, momentum=0.9) if optimizer == "sgd" else fastbp.Adam(params)
    batches = Batches(X, y)
    order = np.arange(1000)
    rng = np.random.default_rng(0)

    def epoch():
        rng.shuffle(order)
        for start in range(0, 1000, 48):  # 20 full batches and a partial one of 40
            xb, yb = batches.gather(order[start : start + 48])
            out, _ = forward_loss(model, loss, xb, yb)
            count_correct(out, yb, loss)  # fit counts accuracy every step
            backward_update(model, loss, opt, params, 1.0)

    epoch()  # warm-up: buffers for both batch sizes, numba compilation
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(15):  # 315 steps
            epoch()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Every activation- or batch-sized float array of a step is >= 40 x 100 x 4 bytes (the
    # partial batch's logits); Python's own objects (argument tuples, floats) churn a few KB.
    return [current - base, peak - base, 40 * 100 * 4]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_step_allocates_nothing_after_warmup(optimizer):
    """tracemalloc sees numpy's allocations; a few hundred steps must not grow memory by even one buffer.

    Measured in a fresh process: tracemalloc also counts threads earlier tests left running.
    """
    grew, peak, smallest_buffer = in_fresh_process("test_training", "step_memory", optimizer)
    assert grew < smallest_buffer, f"memory grew by {grew} bytes"
    assert peak < smallest_buffer, f"a step allocated {peak} bytes at its peak"


def test_predict_large_input_in_batches():
    model = fastbp.Sequential(fastbp.Linear(8, 256, activation="relu", seed=0), fastbp.Linear(256, 2, seed=1))
    X = np.random.default_rng(0).standard_normal((1_000_000, 8)).astype(np.float32)
    model.predict(X[:10])
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = model.predict(X, batch_size=4096)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    all_rows_hidden = 1_000_000 * 256 * 4
    assert out.shape == (1_000_000, 2)
    assert peak < all_rows_hidden / 10, f"peak {peak} bytes: activations for all rows were allocated"


def test_fit_rejects_bad_arguments(data):
    X, y = data
    model = small_model()
    loss, opt = fastbp.SoftmaxCrossEntropy(), fastbp.SGD(model.parameters(), lr=0.1)
    kw = dict(loss=loss, optimizer=opt, progress=False)
    with pytest.raises(ValueError, match=r"y: expected 600 rows"):
        fastbp.fit(model, X, y[:10], **kw)
    with pytest.raises(ValueError, match=r"X: expected shape \(batch, 20\)"):
        fastbp.fit(model, X[:, :5], y, **kw)
    with pytest.raises(TypeError, match="y: expected integer class labels"):
        fastbp.fit(model, X, y.astype(float), **kw)
    with pytest.raises(ValueError, match="epochs"):
        fastbp.fit(model, X, y, epochs=0, **kw)
    with pytest.raises(ValueError, match="batch_size"):
        fastbp.fit(model, X, y, batch_size=-1, **kw)
    with pytest.raises(ValueError, match="validation_split"):
        fastbp.fit(model, X, y, validation_split=0.5, validation_data=(X, y), **kw)
    with pytest.raises(ValueError, match="validation_split"):
        fastbp.fit(model, X[:2], y[:2], validation_split=0.1, **kw)
    with pytest.raises(TypeError, match="loss: expected a fastbp Loss"):
        fastbp.fit(model, X, y, loss="mse", optimizer=opt)
    with pytest.raises(TypeError, match="optimizer"):
        fastbp.fit(model, X, y, loss=loss, optimizer="adam")
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\), got 3"):
        fastbp.fit(model, X, y + 1, **kw)


@pytest.mark.parametrize("name", ["sgd_momentum", "adam", "adamw"])
def test_twenty_steps_match_torch(name):
    """Same initial weights, data order and optimizer: the loss at every one of 20 steps equals PyTorch's."""
    torch = pytest.importorskip("torch")
    X, y = datasets.make_classification(320, 20, 3, seed=3)
    model = small_model(seed=4)
    recorded = []

    class Recording(fastbp.SoftmaxCrossEntropy):
        def forward(self, pred, target):
            value = super().forward(pred, target)
            recorded.append(value)
            return value

    make = {
        "sgd_momentum": (fastbp.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
        "adam": (fastbp.Adam, torch.optim.Adam, dict(lr=1e-2)),
        "adamw": (fastbp.AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.05)),
    }[name]
    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for p in model.parameters()]
    opt, topt = make[0](model.parameters(), **make[2]), make[1](tparams, **make[2])
    fastbp.fit(model, X, y, loss=Recording(), optimizer=opt, epochs=1, batch_size=16, shuffle=False, progress=False)
    theirs = []
    for start in range(0, 320, 16):
        xb, yb = torch.tensor(X[start : start + 16]), torch.tensor(y[start : start + 16])
        h = torch.relu(xb @ tparams[0] + tparams[1])
        loss = torch.nn.functional.cross_entropy(h @ tparams[2] + tparams[3], yb)
        topt.zero_grad()
        loss.backward()
        topt.step()
        theirs.append(loss.item())
    assert len(recorded) == 20
    np.testing.assert_allclose(recorded, theirs, rtol=2e-5, atol=1e-6)


def test_ignored_sigint_stays_ignored_during_fit(data):
    """A background job (nohup, ``cmd &``) ignores SIGINT: fit must not turn it into a KeyboardInterrupt."""
    X, y = data
    calls = []

    class Interrupting(fastbp.SoftmaxCrossEntropy):
        def forward(self, pred, target):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGINT)
            return super().forward(pred, target)

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        model = small_model()
        history = fastbp.fit(
            model,
            X[:160],
            y[:160],
            loss=Interrupting(),
            epochs=1,
            batch_size=32,
            progress=False,
            optimizer=fastbp.SGD(model.parameters(), lr=0.1),
        )
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # left as it was
    finally:
        signal.signal(signal.SIGINT, previous)
    assert history.epochs == 1 and len(calls) == 5  # all five batches ran
