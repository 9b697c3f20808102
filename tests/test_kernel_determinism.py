"""The same row gives the same bits wherever its arrays lie: softmax and the fused losses.

LLVM guards a vectorised loop that stores to one array and reads another with a run-time
overlap check; a sum inside such a loop then took a scalar path (another rounding) for
some addresses of the two arrays, and one float64 model's predictions differed by 1 ulp
from call to call. The sums now run in loops that only read.
"""

import numpy as np
import pytest

from fastbp.jit import Kernel
from fastbp.kernels import activations as KA
from fastbp.kernels import losses as KL
from fastbp.losses import _NO_WEIGHTS


def placed(a, buf, offset):
    """A copy of ``a`` at ``offset`` elements into ``buf``."""
    out = buf[offset : offset + a.size].reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("build", ["serial", "parallel"])
def test_softmax_rows_do_not_depend_on_where_input_and_output_lie(dtype, build):
    rng = np.random.default_rng(0)
    for shape in [(5, 4), (3, 9), (2, 33), (4, 300)]:
        z = (rng.standard_normal(shape) * 3).astype(dtype)
        kern = getattr(KA.softmax_forward, build)
        ref = np.empty_like(z)
        kern(z.copy(), ref)
        n = z.size
        for gap in range(0, 24):  # output right after the input, then further: every relative offset
            buf = np.zeros(2 * n + 64, dtype)
            x = placed(z, buf, 0)
            y = buf[n + gap : 2 * n + gap].reshape(shape)
            kern(x, y)
            np.testing.assert_array_equal(y, ref, err_msg=f"{shape} gap {gap}")
        buf = np.zeros(n + 64, dtype)
        for start in range(0, 16):
            x = placed(z, buf, start)
            kern(x, x)  # in place: y is x
            np.testing.assert_array_equal(x, ref, err_msg=f"{shape} in place at {start}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_loss_gradient_does_not_depend_on_where_it_lies(dtype):
    rng = np.random.default_rng(1)
    z = (rng.standard_normal((6, 7)) * 3).astype(dtype)
    labels = rng.integers(0, 7, 6)
    t = dtype
    no_weights = _NO_WEIGHTS[np.dtype(dtype)]

    def run(x, grad):
        rows = np.empty(6, dtype)
        total = KL.softmax_xent_labels.serial(x, labels, no_weights, t(0.0), t(1 / 6), grad, rows)
        return total, rows

    ref_grad = np.empty_like(z)
    ref_total, ref_rows = run(z.copy(), ref_grad)
    n = z.size
    for gap in range(0, 24):
        buf = np.zeros(2 * n + 64, dtype)
        x = placed(z, buf, 0)
        grad = buf[n + gap : 2 * n + gap].reshape(z.shape)
        total, rows = run(x, grad)
        assert total == ref_total, gap
        np.testing.assert_array_equal(rows, ref_rows)
        np.testing.assert_array_equal(grad, ref_grad)


def test_the_kernels_checked_here_are_kernels():
    assert isinstance(KA.softmax_forward, Kernel) and isinstance(KL.softmax_xent_labels, Kernel)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("build", ["serial", "parallel"])
@pytest.mark.parametrize("k", [3, 10, 63])
def test_narrow_softmax_rows_do_not_depend_on_their_place_in_the_batch(dtype, build, k):
    # Rows of fewer than 64 classes are exponentiated as one flat run per 64-row block: a row
    # falls in the vectorised body or the scalar remainder depending on the rows before it, and
    # must get the same bits either way (a sample's loss and gradient must not depend on its batch).
    rng = np.random.default_rng(2)
    z = (rng.standard_normal((70, k)) * 4).astype(dtype)
    labels = rng.integers(0, k, 70)
    kern = getattr(KL.softmax_xent_labels, build)
    t, no_weights = np.dtype(dtype).type, _NO_WEIGHTS[np.dtype(dtype)]

    def run(rows_z, rows_labels):
        grad, rows = np.empty_like(rows_z), np.empty(rows_z.shape[0], dtype)
        kern(rows_z, rows_labels, no_weights, t(0.1), t(0.5), grad, rows)
        return grad, rows

    ref_grad, ref_rows = run(z[:6], labels[:6])
    for before in range(0, 64, 5):  # the same 6 rows after `before` others
        others = slice(6, 6 + before)
        grad, rows = run(np.concatenate([z[others], z[:6]]), np.concatenate([labels[others], labels[:6]]))
        np.testing.assert_array_equal(grad[before:], ref_grad, err_msg=f"after {before} rows")
        np.testing.assert_array_equal(rows[before:], ref_rows, err_msg=f"after {before} rows")
