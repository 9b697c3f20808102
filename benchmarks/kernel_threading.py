"""Kernel-level measurements behind fastbp's threading choices (docs/threading.md).

1. numba's error model decides whether a fused update vectorises: the Adam
   kernel compiled with error_model="python" (numba's default) and "numpy".
2. Serial vs parallel version of the Adam kernel over growing parameter counts,
   each call right after an OpenBLAS matmul as in training: where a second
   thread starts to pay. Runs under fastbp's OpenMP setup (workers sleep), and
   with --gomp-default under GNU OpenMP's default policy in a child process.

    python benchmarks/kernel_threading.py
"""

import os
import subprocess
import sys

import numba
import numpy as np

from fastbp import jit, threads
from fastbp import kernels as K
from fastbp.bench import interleaved

SIZES = (65_536, 262_144, 535_000, 1 << 20, 1 << 21, 1 << 22, 1 << 23)


def _adam_args(n, rng):
    f = np.float32
    arrays = [rng.standard_normal(n).astype(f) for _ in range(2)] + [np.zeros(n, f), np.ones(n, f)]
    return arrays + [f(1e-9), f(1.0), f(1e-8), f(0.9), f(0.999), f(1 - 0.9), f(1 - 0.999), f(0.0), f(1.0)]


def error_models():
    rng = np.random.default_rng(0)
    args = _adam_args(535_000, rng)
    opts = dict(jit.JIT_OPTIONS, cache=False)
    fns = {}
    for model in ("python", "numpy"):
        fn = numba.njit(**dict(opts, error_model=model))(K.adam.py_func)
        fn(*args)
        fns[f"error_model={model}"] = lambda fn=fn: fn(*args)
    r = interleaved(fns, rounds=40)
    print("Adam update, 535k float32 parameters, serial:")
    for k, t in r.items():
        print(f"  {k:22s} {t * 1e3:7.3f} ms")


def serial_vs_parallel(label):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((256, 784)).astype(np.float32)
    B = rng.standard_normal((784, 512)).astype(np.float32)
    C = np.empty((256, 512), np.float32)
    threads.resolve_layer()
    print(f"Adam kernel after a 256x784x512 matmul, {label} (layer {numba.threading_layer()}):")
    for n in SIZES:
        args = _adam_args(n, rng)

        def ser(args=args):
            np.matmul(A, B, out=C)
            K.adam.serial(*args)

        def par(args=args):
            np.matmul(A, B, out=C)
            K.adam.parallel(*args)

        def mm():
            np.matmul(A, B, out=C)

        r = interleaved({"serial": ser, "parallel": par, "matmul": mm}, rounds=40)
        s, p = r["serial"] - r["matmul"], r["parallel"] - r["matmul"]
        print(f"  n={n:9d}  serial {s * 1e6:9.1f} us  parallel {p * 1e6:9.1f} us  parallel/serial {p / s:5.2f}")


if __name__ == "__main__":
    if "--gomp-default" in sys.argv:
        serial_vs_parallel("GNU OpenMP default wait policy")
        sys.exit(0)
    error_models()
    serial_vs_parallel("fastbp's OpenMP setup (OMP_WAIT_POLICY=PASSIVE at load)")
    env = dict(os.environ, OMP_WAIT_POLICY="")  # empty: fastbp leaves it, libgomp uses its default
    subprocess.run([sys.executable, __file__, "--gomp-default"], env=env, check=True)
