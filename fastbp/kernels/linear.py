"""Linear-layer kernels. The matmuls stay BLAS calls (in :mod:`fastbp.ops`); this is the rest."""

from numba import prange

from ..jit import jit, kernel

# Row chunks of the bias reduction: a constant, so the order of additions (and
# so the result) is the same for any thread count and for both compiled versions.
CHUNKS = 8


def _row_chunks(n):
    """``(chunks, rows per chunk)`` of the bias reduction over ``n`` rows."""
    chunks = min(CHUNKS, n)
    return chunks, (n + chunks - 1) // chunks


def _sum_chunks(db, scratch, chunks):
    """``db`` = the sum of the first ``chunks`` rows of ``scratch``, added in row order."""
    m = db.shape[0]
    for j in range(m):
        db[j] = scratch[0, j]
    for c in range(1, chunks):
        for j in range(m):
            db[j] += scratch[c, j]


# The bias reduction's chunking and total, shared with fused passes that must sum the same way
# (fastbp.kernels.mlp_epoch.relu_backward_bias_grad).
row_chunks, sum_chunks = jit(_row_chunks, inline="always"), jit(_sum_chunks, inline="always")


@kernel
def bias_grad(dy, db, scratch):
    """Batch bias reduction ``db = dy.sum(axis=0)``: ``dy`` (n, m), ``db`` (m,), overwritten.

    Rows are split into up to ``CHUNKS`` chunks that threads take in parallel;
    each chunk streams its rows into its row of ``scratch`` (CHUNKS, m), and the
    partial sums are added at the end. ``scratch`` belongs to the caller so that
    a training step allocates nothing.
    """
    n, m = dy.shape
    chunks, step = row_chunks(n)
    zero = dy.dtype.type(0.0)
    for c in prange(chunks):
        acc = scratch[c]
        for j in range(m):
            acc[j] = zero
        for i in range(c * step, min(n, (c + 1) * step)):
            row = dy[i]
            for j in range(m):
                acc[j] += row[j]
    sum_chunks(db, scratch, chunks)
