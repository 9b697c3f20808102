"""fit time of fastbp.sklearn.MLPClassifier against scikit-learn's at the same settings.

Same parameters, data, dtype and ``tol=0`` (so both run exactly ``max_iter``
epochs); the BLAS floor (the same matmuls and nothing else) runs beside them,
since no implementation can go below it. Test accuracy goes to ``extra_info``.
``python -m fastbp.bench.sklearn_fit`` prints the ratios from interleaved runs.
"""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn import neural_network as sk  # noqa: E402

from fastbp import sklearn as fb  # noqa: E402
from fastbp.bench.sklearn_fit import load_case, matmul_floor  # noqa: E402

CASES = {
    "digits-adam-f64": ("digits", dict(solver="adam", max_iter=20)),
    "digits-adam-f32": ("digits32", dict(solver="adam", max_iter=20)),
    "digits-sgd-f64": ("digits", dict(solver="sgd", learning_rate_init=0.01, max_iter=20)),
    "784-512-256-10-adam-f32": ("wide32", dict(hidden_layer_sizes=(512, 256), max_iter=2)),
}


@pytest.fixture(scope="module")
def datasets():
    return {name: load_case(name) for name in {d for d, _ in CASES.values()}}


@pytest.mark.parametrize("impl", ["fastbp", "sklearn", "floor"])
@pytest.mark.parametrize("case", list(CASES))
def test_fit(benchmark, datasets, case, impl):
    data, params = CASES[case]
    Xtr, Xte, ytr, yte = datasets[data]
    if impl == "floor":
        run = matmul_floor(Xtr, len(np.unique(ytr)), params.get("hidden_layer_sizes", (100,)), params["max_iter"])
        model = None
    else:
        model = (fb if impl == "fastbp" else sk).MLPClassifier(random_state=0, tol=0.0, **params)

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tol=0: "maximum iterations reached"
                model.fit(Xtr, ytr)

    run()  # warm-up: numba's cache, first allocations
    benchmark.pedantic(run, rounds=3, iterations=1)
    if model is not None:
        benchmark.extra_info["test_accuracy"] = float(model.score(Xte, yte))
