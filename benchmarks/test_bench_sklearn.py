"""One epoch against scikit-learn's MLPClassifier: same architecture, solver, batch size and data.

Accuracy after the epochs is recorded next to the time (``extra_info``).
"""

import warnings

import numpy as np
import pytest

import fastbp
from fastbp import datasets

pytest.importorskip("sklearn")
from sklearn.neural_network import MLPClassifier  # noqa: E402

BATCH = 200


@pytest.fixture(scope="module")
def data():
    X, y = datasets.make_classification(6000, 784, 10, seed=0)
    return X[:5000], y[:5000], X[5000:], y[5000:]


@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("impl", ["fastbp", "sklearn"])
def test_epoch(benchmark, data, impl, solver):
    Xtr, ytr, Xte, yte = data
    if impl == "fastbp":
        model = fastbp.Sequential(fastbp.Linear(784, 512, activation="relu", seed=0),
                                  fastbp.Linear(512, 256, activation="relu", seed=1), fastbp.Linear(256, 10, seed=2))
        loss = fastbp.SoftmaxCrossEntropy()
        opt = (fastbp.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True) if solver == "sgd"
               else fastbp.Adam(model.parameters(), lr=1e-3))

        def epoch():
            fastbp.fit(model, Xtr, ytr, loss=loss, optimizer=opt, epochs=1, batch_size=BATCH, progress=False)

        def accuracy():
            return fastbp.evaluate(model, Xte, yte, loss=loss)["accuracy"]
    else:
        clf = MLPClassifier(hidden_layer_sizes=(512, 256), solver=solver, batch_size=BATCH, alpha=0.0,
                            learning_rate_init=0.01 if solver == "sgd" else 1e-3, momentum=0.9,
                            nesterovs_momentum=True, max_iter=1, warm_start=True, random_state=0, tol=0.0)

        def epoch():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # max_iter=1: "did not converge"
                clf.fit(Xtr, ytr)

        def accuracy():
            return float(np.mean(clf.predict(Xte) == yte))

    epoch()  # warm-up: compilation, first allocations
    benchmark.pedantic(epoch, rounds=3, iterations=1)
    benchmark.extra_info["test_accuracy"] = accuracy()
