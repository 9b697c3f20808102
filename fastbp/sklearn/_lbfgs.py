"""``solver="lbfgs"``: scipy's L-BFGS-B over the flat parameter vector, as scikit-learn runs it.

scikit-learn's ``BaseMultilayerPerceptron._fit_lbfgs`` packs the parameters as
``[W_0.ravel(), ..., W_L.ravel(), b_0, ..., b_L]``, which is exactly the layout
of :class:`~fastbp.sklearn._network.Network`'s flat buffer, and minimises its
``_loss_grad_lbfgs`` with ``scipy.optimize.minimize(method="L-BFGS-B",
jac=True)`` and the options ``maxfun=max_fun``, ``maxiter=max_iter``,
``gtol=tol`` (and ``iprint`` on scipy < 1.15). Its objective, in the installed
version, is

    loss(y, act, w) + alpha / 2 * sum_l ||W_l||^2 / sum(w)

with the gradient ``(A_l^T delta_l + alpha W_l) / sum(w)`` (``sum(w) = n``
without sample weights) and ``delta = w (act - y)`` on the output scores.

:class:`Objective` computes the same values with fastbp's fused kernels: the
rows are taken in blocks (a bounded working set, whatever the data size), each
block's forward, loss and backward run through the network's planned buffers,
and the blocks' gradients are summed into one reused buffer. The arithmetic is
in the network's dtype (float32 or float64); scipy works in float64, so the
parameters are copied in and the gradient out at each call.
"""

from __future__ import annotations

import contextlib
import os
import threading

import numpy as np
import scipy.sparse as sp

from .. import kernels
from ..data import Rows
from ._network import Network
from ._outputs import OutputLoss

# Bytes of per-row working memory (activations, deltas, loss buffers, a densified sparse
# block) that one block may use: large enough that each block's matmuls run at BLAS speed,
# small enough that wide data never needs a second copy of itself.
BLOCK_BYTES = 64 << 20


def block_rows(n_samples: int, units: list[int], n_outputs: int, itemsize: int, sparse: bool) -> int:
    """Rows per block so that one block's buffers stay within :data:`BLOCK_BYTES`.

    Per row, each layer's plan holds its output and output delta and an input
    delta (:meth:`Network._plan`); the loss holds a few ``n_outputs``-wide rows;
    sparse input needs a dense copy of the block's rows.

    Parameters
    ----------
    n_samples : int
        Rows of the data.
    units : list of int
        Layer widths, input first (``[n_features, *hidden, n_outputs]``).
    n_outputs : int
        Width of the output layer.
    itemsize : int
        Bytes per value of the network's dtype.
    sparse : bool
        Whether each block's rows are copied (sparse input made dense, or dense input
        converted to the network's dtype or read through an index).

    Returns
    -------
    int
        Between 1 and ``n_samples``.
    """
    per_row = sum(2 * out + fan_in for fan_in, out in zip(units[:-1], units[1:])) + 4 * n_outputs + 4
    if sparse:
        per_row += units[0]
    return int(max(1, min(n_samples, BLOCK_BYTES // (per_row * itemsize))))


class Objective:
    """scikit-learn's ``_loss_grad_lbfgs`` over all of ``X``, computed by fastbp's kernels.

    Parameters
    ----------
    net : Network
        The network whose flat buffer holds the parameters (``net.data``).
    out_loss : OutputLoss
        The output activation's loss.
    X : :class:`fastbp.data.Rows` or CSR matrix (n, n_features), read in the network's dtype
        (dense rows converted a block at a time into one buffer)
    T : ndarray
        Targets in the form ``out_loss`` takes (int labels for softmax).
    sample_weight : ndarray (n,) float64, or None
    alpha : float
        The L2 strength.

    Notes
    -----
    A call allocates only the float64 gradient handed to scipy (one value per
    parameter); every buffer proportional to the rows is made once, here or in
    the network's plans on the first call.
    """

    def __init__(self, net: Network, out_loss: OutputLoss, X, T, sample_weight, alpha: float):
        self.net, self.out_loss, self.X, self.T, self.sw = net, out_loss, X, T, sample_weight
        self.alpha = float(alpha)
        n = X.shape[0]
        # sklearn's sw_sum: n, or sample_weight.sum() (the same pairwise float64 sum)
        self.sw_sum = float(n) if sample_weight is None else float(sample_weight.sum(dtype=np.float64))
        units = [c.shape[0] for c in net.coefs] + [net.coefs[-1].shape[1]]
        if not sp.issparse(X) and not isinstance(X, Rows):
            X = self.X = Rows(np.asarray(X), net.data.dtype)
        copied = sp.issparse(X) or not X.direct
        rows = block_rows(n, units, units[-1], net.data.dtype.itemsize, copied)
        self.blocks = [(s, min(s + rows, n)) for s in range(0, n, rows)]
        self.sparse_blocks = None
        self.dense = np.empty((rows, X.shape[1]), net.data.dtype) if copied else None
        if sp.issparse(X):
            # Sliced once per fit: each call then only densifies a block into one buffer.
            self.sparse_blocks = [X[s:e] for s, e in self.blocks]
        self.n_weights = net.weights.size
        self.acc = np.empty_like(net.grad) if len(self.blocks) > 1 else None
        self.decay = np.empty(self.n_weights, np.float64) if self.alpha else None
        self.n_calls = 0

    def _rows(self, i: int):
        s, e = self.blocks[i]
        if self.sparse_blocks is None:
            return self.X.block(s, e, self.dense)  # a view, or the block converted into the one buffer
        assert self.dense is not None  # made with the sparse blocks
        dense = self.dense[: e - s]
        self.sparse_blocks[i].toarray(out=dense)  # zero-fills, then scatters the block's entries
        return dense

    def __call__(self, packed):
        """Loss and gradient at ``packed`` (scipy's float64 parameter vector).

        Returns
        -------
        loss : float
        grad : ndarray (n_parameters,) float64
        """
        self.n_calls += 1
        net = self.net
        np.copyto(net.data, packed, casting="same_kind")
        loss = 0.0
        for i, (s, e) in enumerate(self.blocks):
            z = net.forward(self._rows(i))
            sw = None if self.sw is None else self.sw[s:e]
            block_loss, delta = self.out_loss(z, self.T[s:e], sw, norm=self.sw_sum)
            loss += block_loss
            net.backward(delta)  # overwrites net.grad with this block's share
            if self.acc is not None:
                if i == 0:
                    np.copyto(self.acc, net.grad)
                else:
                    self.acc += net.grad
        # scikit-learn's order: (A^T delta + alpha W) / sum(w), delta unscaled
        grad = np.array(net.grad if self.acc is None else self.acc, dtype=np.float64)
        if self.alpha:
            loss += 0.5 * self.alpha * kernels.sum_squares(net.weights) / self.sw_sum
            np.multiply(net.weights, self.alpha, out=self.decay)
            grad[: self.n_weights] += self.decay
        grad /= self.sw_sum
        return loss, grad


def _iprint_option(iprint: int) -> dict:
    """scikit-learn passes ``iprint`` only where scipy still takes it (< 1.15)."""
    try:
        from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
    except ImportError:  # pragma: no cover - scikit-learn versions without the helper
        import scipy

        major, minor = (int(p) for p in scipy.__version__.split(".")[:2])
        return {} if (major, minor) >= (1, 15) else {"iprint": iprint}
    return _get_additional_lbfgs_options_dict("iprint", iprint)


class _ScipyBlasLimit:
    """scipy's own BLAS at one thread while L-BFGS-B runs, where it is not numpy's.

    pip's scipy and numpy each bundle an OpenBLAS with its own thread pool. L-BFGS-B's
    update (scipy's pool) and the objective's matmuls (numpy's) alternate at every
    evaluation, and each pool's threads spin for a while after a call, on the cores the
    other pool then needs: measured on 2 cores, scikit-learn's 100-iteration
    breast-cancer fit took 1.1-6.7 s with both pools at 2 threads and 0.10-0.74 s with
    scipy's at 1 (``python -m fastbp.bench.sklearn_fit``, docs/sklearn.md). L-BFGS-B's own
    BLAS work is vector operations over the parameters, which one thread does in a small
    fraction of an evaluation.
    Where scipy and numpy share one BLAS nothing is limited.

    The limit is process-wide, as BLAS pools are: fits running at the same time in
    several threads share it, and the previous limits come back when the last one ends.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._restore = None
        self._selection = None  # threadpoolctl controller of scipy's own BLAS, found on first use

    def _scipy_only(self):
        if self._selection is None:
            import scipy
            from threadpoolctl import ThreadpoolController

            def folders(module):
                here = os.path.realpath(os.path.dirname(module.__file__))
                return (here + os.sep, here + ".libs" + os.sep)  # the package, and auditwheel's library folder

            scipy_dirs, numpy_dirs = folders(scipy), folders(np)
            controller = ThreadpoolController()  # made now: scipy.optimize's BLAS is loaded by now
            paths = [
                lib.filepath
                for lib in controller.lib_controllers
                if lib.user_api == "blas"
                and os.path.realpath(lib.filepath).startswith(scipy_dirs)
                and not os.path.realpath(lib.filepath).startswith(numpy_dirs)
            ]
            self._selection = controller.select(filepath=paths)
        return self._selection

    @contextlib.contextmanager
    def __call__(self):
        """A block during which scipy's own BLAS pool (if it has one of its own) runs one thread."""
        with self._lock:
            if self._depth == 0:
                selection = self._scipy_only()
                self._restore = selection.limit(limits=1) if selection.lib_controllers else None
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._restore is not None:
                    self._restore.restore_original_limits()
                    self._restore = None


scipy_blas_single_thread = _ScipyBlasLimit()


def minimize(est, objective: Objective):
    """Run L-BFGS-B from the network's current parameters, as scikit-learn's ``_fit_lbfgs``.

    Sets ``est.n_iter_`` and ``est.loss_``, leaves the solution in the network's
    buffer (the fitted ``coefs_``/``intercepts_``) and warns as scikit-learn
    does (``ConvergenceWarning`` from ``_check_optimize_result``).

    Parameters
    ----------
    est : MLPClassifier or MLPRegressor
        The estimator being fitted: its ``max_iter``, ``max_fun``, ``tol`` and
        ``verbose`` are the run's options.
    objective : Objective
        The loss and gradient over the training data.

    Returns
    -------
    scipy.optimize.OptimizeResult
    """
    import scipy.optimize
    from sklearn.utils.optimize import _check_optimize_result

    iprint = 1 if est.verbose is True or est.verbose >= 1 else -1
    with scipy_blas_single_thread():
        result = scipy.optimize.minimize(
            objective,
            objective.net.data.astype(np.float64),
            method="L-BFGS-B",
            jac=True,
            options={"maxfun": est.max_fun, "maxiter": est.max_iter, "gtol": est.tol, **_iprint_option(iprint)},
        )
    est.n_iter_ = _check_optimize_result("lbfgs", result, est.max_iter)
    est.loss_ = result.fun
    np.copyto(objective.net.data, result.x, casting="same_kind")
    return result
