"""Where a small network's ``fit`` time goes, against the matmul floor of ``python -m fastbp.bench.sklearn_fit``.

On digits (64-100-10, batch 200, 20 epochs) the floor is about 70 us a step and
everything around the matmuls is of the same order. This splits a whole ``fit``
into parts, each timed in the same process with the floor, all interleaved, medians:

* ``floor``: the bench's matmul floor (numpy matmuls of every batch, nothing else);
* ``gemms``: the compiled loop's own BLAS calls alone (``fastbp.kernels.blas.gemm`` at
  the fit's shapes, batch after batch, from numba), to show they cost the floor;
* ``compiled``: the time inside the compiled epoch calls during a ``fit``;
  ``compiled - gemms`` is every non-matmul kernel of the step (gather, bias and
  activation, loss, bias sums, the solver);
* ``sklearn contract``: the work any scikit-learn-compatible ``fit`` does whatever its
  kernels: the parameter checks, ``validate_data`` and label encoding (scikit-learn's
  own functions, which fastbp calls as scikit-learn's MLP does), and the epochs'
  shuffles (``RandomState.shuffle``, which fixes the batches);
* the rest of ``fit``: initialisation, the Python loop over epochs, bookkeeping.

``gemms + sklearn contract`` is what a fit would take with every non-matmul kernel
free. ``kernels alone`` runs the step's other kernels (gather, bias and ReLU, softmax
cross-entropy, L2 sum, bias sums, the solver) at the fit's shapes with no matmul in
between, so each finds its inputs in cache: about as fast as those kernels go, and
``gemms + contract + kernels alone`` is about the best this design of the step can reach.

    python benchmarks/sklearn_fit_parts.py [--rounds 15] [--cases "digits adam float32" ...]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from fastbp.bench.sklearn_fit import CASES, load_case, matmul_floor
from fastbp.bench.timing import interleaved
from fastbp.jit import IDENTITY, RELU, jit
from fastbp.kernels import mlp_epoch as me
from fastbp.kernels.blas import gemm
from fastbp.sklearn import MLPClassifier, _compiled


def _gemms(fn, X, order, first, last, batch_size, Ws, gWs, ys, dxs, xb):
    """The compiled epoch's matmuls alone, in its order, on its buffers (mlp_epoch.run without the rest)."""
    n = order.shape[0]
    n_layers = len(Ws)
    for bi in range(first, last):
        start = bi * batch_size
        m = min(start + batch_size, n) - start
        x = xb[:m]
        h = x
        for li in range(n_layers):
            y = ys[li][:m]
            gemm(fn, h, False, Ws[li], False, y)
            h = y
        d = h
        for li in range(n_layers - 1, -1, -1):
            gemm(fn, ys[li - 1][:m] if li else x, True, d, False, gWs[li])
            if li:
                dx = dxs[li][:m]
                gemm(fn, d, False, Ws[li], True, dx)
                d = dx


gemms = jit(_gemms)


def _kernels(X, T, order, first, last, batch_size, bs, gbs, ys, dzs, scratches, xb, tb, grad, rows, segs, gsegs, s1, s2,
             alpha, use_adam, rate):  # fmt: skip
    """The compiled epoch's other kernels alone, in its order, on its buffers, with no matmul in between.

    For a ReLU MLP with a softmax output (digits' defaults); each kernel then runs on
    data the one before it left in cache, as fast as it runs alone. Values are not
    meaningful (no matmul produces the kernels' inputs): only the time.
    """
    n = order.shape[0]
    dt = X.dtype.type
    n_layers = len(bs)
    total = 0.0
    for bi in range(first, last):
        start = bi * batch_size
        m = min(start + batch_size, n) - start
        x = xb[:m]
        for r in range(m):
            i = order[start + r]
            for j in range(x.shape[1]):
                x[r, j] = X[i, j]
            tb[r] = T[i]
        for li in range(n_layers):
            me.ba(ys[li][:m], bs[li], RELU if li < n_layers - 1 else IDENTITY)
        me.sx(ys[n_layers - 1][:m], tb[:m], segs[0][:0], dt(0.0), dt(1.0 / m), grad[:m], rows[:m])
        total += me.ss(segs[0]) * alpha
        me.bg(grad[:m], gbs[n_layers - 1], scratches[n_layers - 1])
        for li in range(n_layers - 2, -1, -1):
            # upstream: the layer's output (no matmul made one); not dz itself, whose aliasing
            # check would send the loop to its scalar version
            me.relu_backward_bias_grad(ys[li][:m], ys[li][:m], dzs[li][:m], gbs[li], scratches[li])
        for si in range(2):
            if use_adam:
                me.ad(segs[si], gsegs[si], s1[si], s2[si], dt(rate), dt(1.0), dt(1e-8), dt(0.9), dt(0.999), dt(0.1),
                      dt(0.001), dt(0.0), dt(1.0))  # fmt: skip
            else:
                me.sg(segs[si], gsegs[si], s1[si], dt(rate), dt(0.9), dt(0.0), False)
    return total


kernels_alone = jit(_kernels)


def measure(name, rounds):
    case = next(c for c in CASES if c[0] == name)
    _, data, params, ours_only, _ = case
    Xtr, _, ytr, _ = load_case(data)
    common = dict(random_state=0, tol=0.0, **params, **ours_only)
    model = MLPClassifier(**common)
    hidden = params.get("hidden_layer_sizes", (100,))
    epochs = params["max_iter"]

    inside = []  # seconds inside the compiled calls, one entry per fit
    seen = {}
    run = _compiled.CompiledEpoch.run

    def timed_run(self, order, interrupted):
        seen["epoch"] = self
        t0 = time.perf_counter()
        try:
            return run(self, order, interrupted)
        finally:
            inside[-1] += time.perf_counter() - t0

    _compiled.CompiledEpoch.run = timed_run
    try:

        def fit():
            inside.append(0.0)
            model.fit(Xtr, ytr)

        fit()
        ep = seen["epoch"]
        order = np.arange(ep.n, dtype=np.int64)
        n_batches = -(-ep.n // ep.batch_size)

        def blas():
            for _ in range(epochs):
                gemms(ep.gemm, ep.X, order, 0, n_batches, ep.batch_size, W, gW, y, dx, ep.xb)

        W, b, gW, gb, act, y, dz, dx, scratch = ep.layers
        s1, s2 = ep._solver_args(1)[:2]
        adam = params["solver"] == "adam"

        def kernels():
            for _ in range(epochs):
                kernels_alone(
                    ep.X, ep.T, order, 0, n_batches, ep.batch_size, b, gb, y, dz, scratch, ep.xb, ep.tb, ep.grad,
                    ep.rows, ep.segs, ep.gsegs, s1, s2, ep.alpha, adam, 1e-12,
                )  # fmt: skip

        rs = np.random.RandomState(0)

        def contract():
            m = MLPClassifier(**common)
            m._validate_params()
            m._validate_input(Xtr, ytr, False, reset=True)
            for _ in range(epochs):
                perm = np.arange(ep.n)
                rs.shuffle(perm)

        fns = {"floor": matmul_floor(ep.X, len(np.unique(ytr)), hidden, epochs), "fit": fit}
        fns.update(gemms=blas, contract=contract)
        if all(a == RELU for a in act[:-1]) and ep.T.ndim == 1:  # the ReLU/softmax MLP _kernels covers
            fns["kernels"] = kernels
        inside.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            times = interleaved(fns, rounds=rounds, warmup=1)
    finally:
        _compiled.CompiledEpoch.run = run
    times["compiled"] = float(np.median(inside[1:]))  # the warmup fit's call is not counted
    return times


def report(name, t):
    f = t["floor"]
    rows = [
        ("fit", t["fit"]),
        ("  inside the compiled calls", t["compiled"]),
        ("    of it the gemms alone", t["gemms"]),
        ("    of it every other kernel", t["compiled"] - t["gemms"]),
        ("      those kernels alone, no matmul in between", t.get("kernels", np.nan)),
        ("  scikit-learn's contract (checks, encoding, shuffles)", t["contract"]),
        ("  the rest of fit", t["fit"] - t["compiled"] - t["contract"]),
    ]
    print(f"\n{name}: matmul floor {f * 1e3:.2f} ms (medians, interleaved)")
    for label, s in rows:
        print(f"{label:<56} {s * 1e3:7.2f} ms {s / f:5.2f} floors")
    bound = (t["gemms"] + t["contract"]) / f
    print(f"{'gemms + contract (every other kernel free)':<56} {'':>10} {bound:5.2f} floors")
    if "kernels" in t:
        best = (t["gemms"] + t["contract"] + t["kernels"]) / f
        print(f"{'gemms + contract + the kernels alone':<56} {'':>10} {best:5.2f} floors")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    default = ["digits adam float32", "digits adam float64", "digits sgd float64"]
    ap.add_argument("--cases", nargs="+", default=default, help="case names of fastbp.bench.sklearn_fit.CASES")
    args = ap.parse_args(argv)
    for name in args.cases:
        report(name, measure(name, args.rounds))


if __name__ == "__main__":
    main()
