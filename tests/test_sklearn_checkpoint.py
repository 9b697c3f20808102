"""fastbp.sklearn checkpoints: a fit stopped at any iteration and resumed from its checkpoint ends
with the model of the fit never stopped, bit for bit; a different fit is refused by name."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from fastbp.sklearn import (  # noqa: E402
    MLPClassifier,
    MLPRegressor,
    _base,  # noqa: E402
)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 6))
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 1)
    return X, y


def fitted_arrays(est):
    return est.coefs_ + est.intercepts_ + est._extra_state()


def assert_same_fit(a, b):
    for x, y in zip(fitted_arrays(a), fitted_arrays(b)):
        np.testing.assert_array_equal(x, y)
    assert a.loss_curve_ == b.loss_curve_ and a.n_iter_ == b.n_iter_ and a.t_ == b.t_
    assert a.validation_scores_ == b.validation_scores_


class Crash(Exception):
    pass


def crash_at(monkeypatch, iteration):
    """Make the fit fail inside iteration ``iteration`` (as a killed process would), once."""
    real = _base._Epoch.run
    calls = {"n": 0}

    def run(self, order, interrupted):
        calls["n"] += 1
        if calls["n"] == iteration:
            raise Crash
        return real(self, order, interrupted)

    monkeypatch.setattr(_base._Epoch, "run", run)
    return lambda: monkeypatch.setattr(_base._Epoch, "run", real)


CASES = [
    dict(solver="sgd", momentum=0.9, learning_rate="adaptive"),
    dict(solver="adam", early_stopping=True, validation_fraction=0.2, n_iter_no_change=30),
    dict(solver="adam", dropout=0.2, batch_norm=True, dtype="float32"),
    dict(solver="sgd", learning_rate="invscaling", random_state=None, early_stopping=True, n_iter_no_change=30),
]


@pytest.mark.parametrize("params", CASES, ids=["sgd-momentum", "adam-early-stopping", "adam-dropout-bn-f32", "no-seed"])
@pytest.mark.parametrize("crash", [3, 7])
def test_a_fit_crashed_and_resumed_ends_as_the_fit_never_stopped(tmp_path, monkeypatch, data, params, crash):
    params = {"random_state": 0, **params, "hidden_layer_sizes": (16,), "max_iter": 12, "batch_size": 32}
    path = tmp_path / "fit.ckpt"
    warnings.simplefilter("ignore", ConvergenceWarning)
    undo = crash_at(monkeypatch, crash)
    with pytest.raises(Crash):
        MLPClassifier(**params, checkpoint=path, checkpoint_every=2).fit(*data)
    undo()
    assert path.exists()
    if params["random_state"] is None:
        # No seed, so no uninterrupted twin: two resumes from one checkpoint must agree, validation
        # scores included, which needs the split drawn again from the fit's saved starting state.
        copy = tmp_path / "copy.ckpt"
        copy.write_bytes(path.read_bytes())
        one = MLPClassifier(**params, checkpoint=path, checkpoint_every=2).fit(*data)
        two = MLPClassifier(**params, checkpoint=copy, checkpoint_every=2).fit(*data)
        assert_same_fit(one, two)
        return
    resumed = MLPClassifier(**params, checkpoint=path, checkpoint_every=2).fit(*data)
    assert_same_fit(resumed, MLPClassifier(**params).fit(*data))


def test_max_iter_may_grow_and_the_longer_fit_is_the_same(tmp_path, data):
    warnings.simplefilter("ignore", ConvergenceWarning)
    params = dict(hidden_layer_sizes=(8,), random_state=1, batch_size=40, n_iter_no_change=100)
    path = tmp_path / "c.npz"
    MLPRegressor(**params, max_iter=4, checkpoint=path).fit(data[0], data[1].astype(float))
    longer = MLPRegressor(**params, max_iter=9, checkpoint=path).fit(data[0], data[1].astype(float))
    assert_same_fit(longer, MLPRegressor(**params, max_iter=9).fit(data[0], data[1].astype(float)))


def test_a_converged_fit_continues_no_further(tmp_path, data):
    params = dict(hidden_layer_sizes=(8,), random_state=0, tol=10.0, n_iter_no_change=2, max_iter=50)
    path = tmp_path / "c.npz"
    first = MLPClassifier(**params, checkpoint=path).fit(*data)
    assert first.n_iter_ < 50
    again = MLPClassifier(**params, checkpoint=path).fit(*data)
    assert_same_fit(first, again)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"alpha": 0.5}, "alpha: the checkpoint .* was written with alpha=0.0001, this fit has alpha=0.5"),
        ({"hidden_layer_sizes": (9,)}, "hidden_layer_sizes: the checkpoint"),
        ({"random_state": 3}, "random_state: the checkpoint"),
    ],
)
def test_a_different_fit_is_refused_by_name(tmp_path, data, change, match):
    params = dict(hidden_layer_sizes=(8,), random_state=0, max_iter=2)
    path = tmp_path / "c.npz"
    warnings.simplefilter("ignore", ConvergenceWarning)
    MLPClassifier(**params, checkpoint=path).fit(*data)
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**{**params, **change}, checkpoint=path).fit(*data)
    with pytest.raises(ValueError, match="X: the checkpoint .* other data"):
        MLPClassifier(**params, checkpoint=path).fit(data[0] + 1, data[1])


def test_arguments_and_files_are_checked(tmp_path, data):
    with pytest.raises(ValueError, match="checkpoint: needs solver='sgd' or 'adam'"):
        MLPClassifier(solver="lbfgs", checkpoint=tmp_path / "c").fit(*data)
    with pytest.raises(ValueError, match="checkpoint: partial_fit does not write checkpoints"):
        MLPClassifier(checkpoint=tmp_path / "c").partial_fit(*data, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="checkpoint: folder .* does not exist"):
        MLPClassifier(checkpoint=tmp_path / "no" / "c").fit(*data)
    with pytest.raises(ValueError, match="checkpoint_every"):
        MLPClassifier(checkpoint=tmp_path / "c", checkpoint_every=0).fit(*data)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="checkpoint: .*bad.npz: not a readable fastbp.sklearn checkpoint"):
        MLPClassifier(checkpoint=bad).fit(*data)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastbp.sklearn checkpoint"):
        MLPClassifier(checkpoint=tmp_path / "other.npz").fit(*data)


@pytest.mark.slow
def test_a_process_killed_during_the_fit_resumes_bit_identical(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, warnings
            import numpy as np
            from fastbp.sklearn import MLPClassifier
            warnings.simplefilter("ignore")
            rng = np.random.default_rng(0)
            X = rng.standard_normal((4000, 20))
            y = (X[:, :3].sum(axis=1) > 0).astype(int)
            ck = sys.argv[2] if sys.argv[2] != "-" else None
            est = MLPClassifier((64, 32), solver="adam", max_iter=150, random_state=0, n_iter_no_change=1000,
                                batch_size=64, checkpoint=ck).fit(X, y)
            np.savez(sys.argv[1], *est.coefs_, *est.intercepts_, curve=np.array(est.loss_curve_))
            """
        )
    )
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    subprocess.run([sys.executable, str(script), str(tmp_path / "ref.npz"), "-"], check=True, env=env, timeout=300)
    ck = tmp_path / "fit.ckpt"
    rng = np.random.default_rng(7)
    for _ in range(3):
        # Kill at a random moment after the run has written a new checkpoint (it made progress).
        before = ck.stat().st_mtime_ns if ck.exists() else None
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "out.npz"), str(ck)], env=env)
        deadline = time.monotonic() + 120
        while (not ck.exists() or ck.stat().st_mtime_ns == before) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0.0, 0.15)))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the fit ended before it could be killed: make it longer"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "out.npz"), str(ck)], env=env, timeout=300)
    assert proc.returncode == 0
    ref, out = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "out.npz")
    for k in ref.files:
        np.testing.assert_array_equal(ref[k], out[k])
