"""Linear-layer kernels. The matmuls stay BLAS calls (in :mod:`fastbp.ops`); this is the rest."""

from numba import prange

from ..threads import kernel

# Columns per parallel task in the bias reduction: wide enough for full vector
# lanes, narrow enough that a 256-wide layer still splits across threads.
_COL_BLOCK = 64


@kernel
def bias_grad(dy, db):
    """Batch bias reduction ``db = dy.sum(axis=0)``: ``dy`` (n, m), ``db`` (m,), overwritten.

    Threads take blocks of columns and walk every row, so no partial sums are
    allocated and each thread writes only its own slice of ``db``.
    """
    n, m = dy.shape
    zero = dy.dtype.type(0.0)
    n_blocks = (m + _COL_BLOCK - 1) // _COL_BLOCK
    for blk in prange(n_blocks):
        j0 = blk * _COL_BLOCK
        j1 = min(j0 + _COL_BLOCK, m)
        for j in range(j0, j1):
            db[j] = zero
        for i in range(n):
            row = dy[i]
            for j in range(j0, j1):
                db[j] += row[j]
