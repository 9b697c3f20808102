"""``fastbp.sklearn`` against scikit-learn's MLPs: whole ``fit`` calls at the same settings.

Both estimators get the same parameters, data and dtype, with ``tol=0`` so
that both run exactly ``max_iter`` epochs (L-BFGS: ``max_iter`` iterations,
unless scipy's relative-reduction test stops it first); they take turns fit by
fit and the medians are compared. Run ``python -m fastbp.bench.sklearn_fit``.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from ..datasets import make_classification
from .timing import interleaved

# name, dataset, estimator parameters, fastbp-only parameters, rounds
CASES = [
    ("digits adam float64", "digits", dict(solver="adam", max_iter=20), {}, 9),
    ("digits adam float32", "digits32", dict(solver="adam", max_iter=20), {}, 9),
    ("digits sgd float64", "digits", dict(solver="sgd", learning_rate_init=0.01, max_iter=20), {}, 9),
    ("784-512-256-10 adam float32", "wide32", dict(hidden_layer_sizes=(512, 256), max_iter=2), {}, 5),
    ("784-512-256-10 adam float64", "wide", dict(hidden_layer_sizes=(512, 256), max_iter=2), {}, 5),
    # Not the same settings: scikit-learn on float64 data against fastbp told to train in float32.
    ("digits adam, fastbp dtype=float32", "digits", dict(solver="adam", max_iter=20), dict(dtype="float32"), 9),
    (
        "784-512-256-10 adam, fastbp dtype=float32",
        "wide",
        dict(hidden_layer_sizes=(512, 256), max_iter=2),
        dict(dtype="float32"),
        5,
    ),
    # L-BFGS: full-batch loss and gradient per evaluation (scipy's L-BFGS-B drives both)
    ("digits lbfgs float64", "digits", dict(solver="lbfgs", max_iter=100), {}, 5),
    ("breast cancer lbfgs float64", "cancer", dict(solver="lbfgs", max_iter=100), {}, 5),
    ("784-512-256-10 lbfgs float64", "wide", dict(solver="lbfgs", hidden_layer_sizes=(512, 256), max_iter=10), {}, 3),
]


def load_case(name):
    """(X_train, X_test, y_train, y_test) of a named dataset: "digits", "cancer" or "wide" (+ "32": float32)."""
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.model_selection import train_test_split

    if name.startswith("digits"):
        X, y = load_digits(return_X_y=True)
        X = X / 16.0
    elif name.startswith("cancer"):
        X, y = load_breast_cancer(return_X_y=True)
    else:
        X, y = make_classification(6000, 784, 10, seed=0)
        X = X.astype(np.float64)
    if name.endswith("32"):
        X = X.astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    if name.startswith("cancer"):  # features span 1e-3 .. 1e3: standardized with the training split's statistics
        mean, std = Xtr.mean(axis=0), Xtr.std(axis=0)
        Xtr, Xte = (Xtr - mean) / std, (Xte - mean) / std
    return Xtr, Xte, ytr, yte


def matmul_floor(X, n_classes, hidden, epochs, batch=200):
    """The BLAS work of ``fit`` and nothing else: per batch, the forward matmuls and the
    backward ones (weight gradients, and the input gradients below the last layer),
    in ``X``'s dtype. Neither library can train faster than this.

    For L-BFGS, ``batch`` is all the rows and ``epochs`` the number of loss and gradient
    evaluations. Two classes have one output unit (logistic), as in the estimators.
    """
    rng = np.random.default_rng(0)
    units = [X.shape[1], *hidden, 1 if n_classes == 2 else n_classes]
    Ws = [rng.standard_normal((a, b)).astype(X.dtype) * 0.01 for a, b in zip(units[:-1], units[1:])]
    grads = [np.empty_like(W) for W in Ws]

    def run():
        for _ in range(epochs):
            for start in range(0, X.shape[0], batch):
                acts = [X[start : start + batch]]
                for W in Ws:
                    acts.append(acts[-1] @ W)
                delta = acts[-1]
                for i in range(len(Ws) - 1, -1, -1):
                    np.matmul(acts[i].T, delta, out=grads[i])
                    if i:
                        delta = delta @ Ws[i].T

    return run


def compare(cases=CASES, log=None) -> list[dict]:
    """One row per case: median fit seconds of each side, their ratio, test accuracies."""
    from sklearn import neural_network as sk

    from .. import sklearn as fb

    rows = []
    for name, data, params, ours_only, rounds in cases:
        Xtr, Xte, ytr, yte = load_case(data)
        common = dict(random_state=0, tol=0.0, **params)
        models = {"fastbp": fb.MLPClassifier(**common, **ours_only), "sklearn": sk.MLPClassifier(**common)}
        fns = {k: (lambda m=m, X=Xtr, y=ytr: m.fit(X, y)) for k, m in models.items()}
        X_floor = Xtr.astype(np.float32) if ours_only.get("dtype") == "float32" else Xtr
        hidden = params.get("hidden_layer_sizes", (100,))
        evaluations = None
        if params.get("solver") == "lbfgs":
            from ..sklearn._lbfgs import scipy_blas_single_thread

            # the floor does what fastbp's fit does: one full-batch forward and backward per evaluation
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                evaluations = models["fastbp"].fit(Xtr, ytr)._lbfgs_calls
            fns["floor"] = matmul_floor(X_floor, len(np.unique(ytr)), hidden, evaluations, batch=Xtr.shape[0])
            # fastbp keeps scipy's own BLAS pool at one thread during L-BFGS-B; scikit-learn given the same
            # setting separates that from the kernels' share of the speed-up
            sk_blas1 = sk.MLPClassifier(**common)

            def sklearn_blas1(m=sk_blas1, X=Xtr, y=ytr):
                with scipy_blas_single_thread():
                    m.fit(X, y)

            fns["sklearn_blas1"] = sklearn_blas1
        else:
            fns["floor"] = matmul_floor(X_floor, len(np.unique(ytr)), hidden, params["max_iter"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tol=0: "maximum iterations reached"
            times = interleaved(fns, rounds=rounds, warmup=1)
        row = {
            "case": name,
            "samples": int(Xtr.shape[0]),
            "features": int(Xtr.shape[1]),
            "epochs": int(params["max_iter"]),
            "fastbp_s": times["fastbp"],
            "sklearn_s": times["sklearn"],
            "speedup": times["sklearn"] / times["fastbp"],
            "matmul_floor_s": times["floor"],
            "fastbp_over_floor": times["fastbp"] / times["floor"],
            "best_possible_speedup": times["sklearn"] / times["floor"],
            "fastbp_accuracy": float(models["fastbp"].score(Xte, yte)),
            "sklearn_accuracy": float(models["sklearn"].score(Xte, yte)),
            "same_settings": not ours_only,
            "lbfgs_evaluations": evaluations,
            "sklearn_scipy_blas1_s": times.get("sklearn_blas1"),
        }
        rows.append(row)
        if log:
            log(format_row(row))
    return rows


def format_row(r) -> str:
    text = (
        f"{r['case']:<42} {r['fastbp_s']:6.3f} s vs {r['sklearn_s']:6.3f} s {r['speedup']:5.2f}x | "
        f"matmul floor {r['matmul_floor_s']:6.3f} s: fastbp {r['fastbp_over_floor']:4.2f}x it, best possible "
        f"{r['best_possible_speedup']:4.2f}x | accuracy {r['fastbp_accuracy']:.3f} vs {r['sklearn_accuracy']:.3f}"
    )
    if r.get("sklearn_scipy_blas1_s") is not None:
        text += (
            f" | {r['lbfgs_evaluations']} evaluations; scikit-learn with scipy's BLAS at 1 thread "
            f"{r['sklearn_scipy_blas1_s']:6.3f} s"
        )
    return text


if __name__ == "__main__":  # pragma: no cover - a measurement, run by hand
    print("fit time, fastbp.sklearn vs sklearn.neural_network MLPClassifier (medians, interleaved)", file=sys.stderr)
    compare(log=print)
