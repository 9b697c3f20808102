"""Reproduce the OpenMP threading trap: a per-op parallel prototype under GNU OpenMP's default policy.

The measurements are in docs/threading.md, "The trap is real, and depends on
the launch pattern".

The first fastbp prototype ran every elementwise kernel and a separate
``@njit(parallel=True)`` SGD update with numba threads between OpenBLAS matmuls.
Under GNU OpenMP's default wait policy its step is several times slower than
plain numpy, and the numpy steps interleaved with it slow down too; with
``OMP_WAIT_POLICY=PASSIVE`` (what fastbp asks for when it loads numba's omp
layer) the same code runs at numpy's speed.

    python benchmarks/omp_trap_repro.py
"""

import os
import subprocess
import sys

import numpy as np


def prototype():
    import numba
    from numba import prange

    from fastbp import kernels as K
    from fastbp import threads
    from fastbp.bench import NumpyMLP, interleaved, make_problem

    @numba.njit(parallel=True, nogil=True, fastmath=True)
    def sgd_par(w, g, lr):
        for i in prange(w.size):
            w[i] -= lr * g[i]

    class Proto:
        def __init__(self, model, x, y):
            self.Ws = [layer.W.data.copy() for layer in model.layers]
            self.bs = [layer.b.data.copy() for layer in model.layers]
            self.x, self.y = x, y
            n = x.shape[0]
            self.h = [np.empty((n, W.shape[1]), np.float32) for W in self.Ws]
            self.d = [np.empty((n, W.shape[1]), np.float32) for W in self.Ws]
            self.dx = [np.empty((n, W.shape[0]), np.float32) for W in self.Ws]
            self.gW = [np.empty_like(W) for W in self.Ws]
            self.gb = [np.empty_like(b) for b in self.bs]
            self.rows = np.empty(n, np.float32)
            self.scratch = [np.empty((8, b.shape[0]), np.float32) for b in self.bs]

        def step(self):
            lr = np.float32(1e-3)
            h, L, n = self.x, len(self.Ws), self.x.shape[0]
            for i in range(L):
                np.matmul(h, self.Ws[i], out=self.h[i])
                K.bias_act(self.h[i], self.bs[i], K.RELU if i < L - 1 else K.IDENTITY)
                h = self.h[i]
            d = self.d[-1]
            K.softmax_xent_labels(h, self.y, np.empty(0, np.float32), np.float32(0), np.float32(1 / n), d, self.rows)
            for i in reversed(range(L)):
                np.matmul(self.x.T if i == 0 else self.h[i - 1].T, d, out=self.gW[i])
                K.bias_grad(d, self.gb[i], self.scratch[i])
                if i:
                    np.matmul(d, self.Ws[i].T, out=self.dx[i])
                    K.act_backward(self.dx[i], self.h[i - 1], K.RELU, self.d[i - 1])
                    d = self.d[i - 1]
                sgd_par(self.Ws[i].reshape(-1), self.gW[i].reshape(-1), lr)
                sgd_par(self.bs[i], self.gb[i], lr)

    cells = []
    for batch in (32, 256, 1024):
        model, x, y = make_problem(batch=batch)
        p, npy = Proto(model, x, y), NumpyMLP(model, x, y)
        with threads.parallel_min_work(0):  # every fastbp kernel parallel
            r = interleaved({"proto": p.step, "numpy": npy.step}, rounds=max(5, 3200 // batch))
        cells.append(
            f"batch {batch}: {r['proto'] * 1e3:.2f} vs numpy {r['numpy'] * 1e3:.2f} ms ({r['proto'] / r['numpy']:.2f})"
        )
    return "; ".join(cells)


if __name__ == "__main__":
    if "--child" in sys.argv:
        print(prototype())
        sys.exit(0)
    for label, policy in (("GNU OpenMP default policy", ""), ("OMP_WAIT_POLICY=PASSIVE", "PASSIVE")):
        env = dict(os.environ, OMP_WAIT_POLICY=policy)
        out = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True)
        print(f"{label:28s} {out.stdout.strip()}")
