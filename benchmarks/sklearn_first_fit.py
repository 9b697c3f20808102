"""Time of an estimator's first fit in new processes: cold kernel cache, then warm.

A process that finds the compiled epoch (fastbp/kernels/mlp_epoch.py) in the cache
loads it; one whose cache key does not match compiles it again (seconds). Each
round runs a new process on a fresh cache folder, then two on the same folder;
``MLPClassifier(max_iter=2)`` on digits, seconds of ``fit`` alone.

    python benchmarks/sklearn_first_fit.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

FIT = """
import time, warnings
warnings.simplefilter("ignore")
from sklearn.datasets import load_digits
from fastbp.sklearn import MLPClassifier
X, y = load_digits(return_X_y=True)
t0 = time.perf_counter()
MLPClassifier(max_iter=2).fit(X / 16, y)
print(time.perf_counter() - t0)
"""


def first_fit(cache: str) -> float:
    env = {**os.environ, "FASTBP_CACHE_DIR": cache}
    out = subprocess.run([sys.executable, "-c", FIT], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as cache:
            times = [first_fit(cache) for _ in range(3)]
        print(f"round {r + 1}: first fit, cold cache {times[0]:.2f} s; warm cache {times[1]:.2f} s, {times[2]:.2f} s")


if __name__ == "__main__":
    main()
