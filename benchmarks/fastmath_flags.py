"""Which fastmath flags each kernel needs: every kernel compiled three ways, timed interleaved.

Variants (serial builds, ``error_model="numpy"``, no disk cache):

* ``all``: nsz, arcp, contract, reassoc (fastbp's flags before they were reviewed);
* ``no-reassoc``: nsz, arcp, contract;
* ``contract``: fused multiply-add only (:data:`fastbp.jit.ELEMENTWISE`);
* ``contract+reassoc``: :data:`fastbp.jit.REDUCTION`;
* ``none``: IEEE arithmetic.

The last column names the set the kernel is compiled with (``kern.fastmath``).

``reassoc`` is what lets LLVM vectorise a floating-point reduction (``s += x``),
and also what let it rewrite Adam's ``c2 * g * g`` as ``c2 * (g * g)``, which
overflows for |g| > 1.8e19 in float32 (docs/numerics.md). Shapes are those of the
784-512-256-10 MLP at batch 256 (and 535k parameters for the optimizers). Run::

    python benchmarks/fastmath_flags.py [--rounds 60]

Prints, per kernel, the median time of each variant and its ratio to ``all``.
"""

from __future__ import annotations

import argparse

import numba
import numpy as np

from fastbp import kernels as K
from fastbp.bench import interleaved

VARIANTS = {
    "all": {"nsz", "arcp", "contract", "reassoc"},
    "no-reassoc": {"nsz", "arcp", "contract"},
    "contract": {"contract"},
    "contract+reassoc": {"contract", "reassoc"},
    "none": set(),
}


def cases(rng):
    f = np.float32
    n, k, h = 256, 10, 512
    z = rng.standard_normal((n, k)).astype(f) * 3
    labels = rng.integers(0, k, n)
    y = rng.standard_normal((n, h)).astype(f)
    b = rng.standard_normal(h).astype(f)
    p = 535_000
    w, g = rng.standard_normal(p).astype(f), rng.standard_normal(p).astype(f)
    m, v = np.zeros(p, f), np.ones(p, f)
    return {
        "bias_act relu": (K.bias_act, (y.copy(), b, K.RELU)),
        "bias_act sigmoid": (K.bias_act, (y.copy(), b, K.SIGMOID)),
        "act_backward relu": (K.act_backward, (y, y, K.RELU, np.empty_like(y))),
        "bias_grad": (K.bias_grad, (y, np.empty(h, f), np.empty((8, h), f))),
        "softmax_forward": (K.softmax_forward, (z, np.empty_like(z))),
        "softmax_backward": (K.softmax_backward, (z, z, np.empty_like(z))),
        "softmax_xent_labels": (
            K.softmax_xent_labels,
            (z, labels, np.empty(0, f), f(0), f(1 / n), np.empty_like(z), np.empty(n, f)),
        ),
        "mse": (K.mse, (y, y * f(0.5), f(1), f(1 / y.size), np.empty_like(y), np.empty((0, 0), f))),
        "bce_logits": (K.bce_logits, (y, (y > 0).astype(f), f(1 / y.size), np.empty_like(y), np.empty((0, 0), f))),
        "sgd momentum": (K.sgd, (w.copy(), g, m.copy(), f(1e-3), f(0.9), f(0), False)),
        "adam": (
            K.adam,
            (
                w.copy(),
                g,
                m.copy(),
                v.copy(),
                f(1e-2),
                f(1.0),
                f(1e-8),
                f(0.9),
                f(0.999),
                f(1 - 0.9),
                f(1 - 0.999),
                f(0),
                f(1),
            ),
        ),
        "sum_squares": (K.sum_squares, (g,)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'kernel':22s} " + " ".join(f"{name:>16s}" for name in VARIANTS) + "   (us, ratio to 'all'; uses)")
    for label, (kern, a) in cases(rng).items():
        fns = {}
        for name, flags in VARIANTS.items():
            fn = numba.njit(fastmath=flags or False, error_model="numpy", nogil=True)(kern.py_func)
            fns[name] = lambda fn=fn, a=a: fn(*a)
        times = interleaved(fns, rounds=args.rounds)
        base = times["all"]
        cells = " ".join(f"{times[n] * 1e6:10.1f} {times[n] / base:5.2f}" for n in VARIANTS)
        print(f"{label:22s} {cells}   {'+'.join(sorted(kern.fastmath))}")


if __name__ == "__main__":
    main()
