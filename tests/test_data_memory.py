"""No whole copies of the data: float64 or Fortran-ordered input into a float32 model is converted a batch
or block at a time (fastbp/data.py). Measured with tracemalloc, to which numpy reports its allocations:
the peak traced while fitting, predicting or evaluating stays under 10% of the data's size (a copy
would be 50% or 100%). Memory properties, not timings."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fastbp
from fastbp.training import evaluate, predict

N, D, K = 20_000, 784, 10


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    return rng.standard_normal((N, D)), rng.integers(0, K, N)  # 125 MB of float64


def _model():
    return fastbp.Sequential(fastbp.Linear(D, 32, activation="relu", seed=0), fastbp.Linear(32, K, seed=1))


def _peak(fn) -> int:
    """Bytes allocated at the peak of ``fn()`` above what was allocated when it started."""
    fn()  # warm-up: compiled kernels, caches and lazily made module state are not what is measured
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("layout", ["float64", "fortran64", "fortran32"])
def test_fit_predict_evaluate_copy_nothing_whole(xy, layout):
    X, y = xy
    X = {"float64": X, "fortran64": np.asfortranarray(X), "fortran32": np.asfortranarray(X, dtype=np.float32)}[layout]
    limit = 0.1 * X.nbytes
    model, loss = _model(), fastbp.SoftmaxCrossEntropy()

    def train():
        opt = fastbp.optim.SGD(model.parameters(), lr=0.01)
        fastbp.fit(model, X, y, loss=loss, optimizer=opt, epochs=1, batch_size=128, progress=False, seed=0)

    def train_with_validation():
        opt = fastbp.optim.SGD(model.parameters(), lr=0.01)
        fastbp.fit(
            model, X, y, loss=loss, optimizer=opt, epochs=1, batch_size=128, progress=False, validation_split=0.2
        )

    assert _peak(train) < limit
    assert _peak(train_with_validation) < limit
    assert _peak(lambda: predict(model, X, batch_size=1024)) < limit
    assert _peak(lambda: model.predict(X, batch_size=1024)) < limit
    assert _peak(lambda: evaluate(model, X, y, loss=loss, batch_size=1024)) < limit


def test_checkpoint_digest_copies_nothing_whole(xy, tmp_path):
    X, y = xy
    X = np.asfortranarray(X)
    model, loss = _model(), fastbp.SoftmaxCrossEntropy()

    def train():
        opt = fastbp.optim.SGD(model.parameters(), lr=0.01)
        path = str(tmp_path / "run.npz")
        fastbp.fit(model, X, y, loss=loss, optimizer=opt, epochs=1, batch_size=128, progress=False, checkpoint=path)

    assert _peak(train) < 0.1 * X.nbytes


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_estimators_copy_nothing_whole(xy, solver, early_stopping, monkeypatch):
    pytest.importorskip("sklearn")
    from fastbp.sklearn import MLPClassifier, _base, _lbfgs

    if solver == "lbfgs" and early_stopping:
        pytest.skip("L-BFGS has no early stopping")
    # The working sets are bounded, not proportional to the rows: L-BFGS's by BLOCK_BYTES (64 MB),
    # prediction's by 4096 rows a block (12.8 MB at 784 float32 columns). Smaller here, to see past them.
    monkeypatch.setattr(_lbfgs, "BLOCK_BYTES", 4 << 20)
    monkeypatch.setattr(_base, "_PREDICT_ROWS", 1024)
    X, y = xy
    est = MLPClassifier(
        hidden_layer_sizes=(16,),
        max_iter=2,
        random_state=0,
        dtype="float32",
        solver=solver,
        early_stopping=early_stopping,
        n_iter_no_change=100,
    )
    limit = 0.1 * X.nbytes
    with pytest.warns(Warning):
        assert _peak(lambda: est.fit(X, y)) < limit
    assert _peak(lambda: est.predict_proba(X)) < limit
