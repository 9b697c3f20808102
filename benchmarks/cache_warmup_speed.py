"""Training speed in a new process after the kernel cache was warmed through the parallel path.

Once, numba's cache gave the serial and the parallel build of a kernel one
entry: a process that ran a big ``predict_proba`` (4M elements per batch, the
parallel path) left ``prange`` code that every later process then ran as its
"serial" kernels, 10-40x slower at batch 32. This script measures it:

* cache "warmed": a process runs ``predict_proba`` on ``Linear(784, 1024, relu)``
  with 10,000 rows (needs 2+ threads to take the parallel path), then new
  processes train 784-512-256-10 at batch 32;
* cache "fresh": the same training processes on a cache warmed by training only.

The training processes alternate between the two caches (A B A B ...), and
the medians of their samples/s are compared. Run::

    python benchmarks/cache_warmup_speed.py [--rounds 3] [--steps 300] [--pythonpath DIR]

``--pythonpath`` runs another checkout of fastbp (for a before/after comparison).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

WARM = """
import numpy as np, fastbp
layer = fastbp.Linear(784, 1024, activation="relu", seed=0)
x = np.random.default_rng(0).standard_normal((10000, 784)).astype(np.float32)
fastbp.predict_proba(fastbp.Sequential(layer), x)
"""

TRAIN = """
import time, numpy as np, fastbp
rng = np.random.default_rng(0)
model = fastbp.Sequential(fastbp.Linear(784, 512, activation="relu", seed=0),
                          fastbp.Linear(512, 256, activation="relu", seed=1), fastbp.Linear(256, 10, seed=2))
X = rng.standard_normal((32 * {steps}, 784)).astype(np.float32)
y = rng.integers(0, 10, X.shape[0])
opt = fastbp.SGD(model.parameters(), lr=0.01)
fastbp.fit(model, X[:320], y[:320], loss=fastbp.SoftmaxCrossEntropy(), optimizer=opt, epochs=1, progress=False)
t0 = time.perf_counter()
fastbp.fit(model, X, y, loss=fastbp.SoftmaxCrossEntropy(), optimizer=opt, epochs=1, batch_size=32, progress=False)
print(X.shape[0] / (time.perf_counter() - t0))
"""


def _run(script: str, cache: str, pythonpath: str | None) -> str:
    env = dict(os.environ, FASTBP_CACHE_DIR=cache, NUMBA_CACHE_DIR=cache)  # NUMBA_CACHE_DIR: older fastbp
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    res = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=pythonpath or tempfile.gettempdir(),
    )
    return res.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--pythonpath", default=None)
    args = ap.parse_args()
    train = TRAIN.format(steps=args.steps)
    with tempfile.TemporaryDirectory() as warmed, tempfile.TemporaryDirectory() as fresh:
        _run(WARM, warmed, args.pythonpath)  # the parallel path compiles first
        _run(train, fresh, args.pythonpath)  # the serial path compiles first
        speeds: dict[str, list[float]] = {"warmed": [], "fresh": []}
        for _ in range(args.rounds):
            for label, cache in (("warmed", warmed), ("fresh", fresh)):
                speeds[label].append(float(_run(train, cache, args.pythonpath)))
    med = {k: statistics.median(v) for k, v in speeds.items()}
    for k, v in speeds.items():
        print(f"{k:7s} samples/s: median {med[k]:,.0f}  ({', '.join(f'{s:,.0f}' for s in v)})")
    print(f"after a parallel-path warm-up / fresh: {med['warmed'] / med['fresh']:.2f}")


if __name__ == "__main__":
    main()
