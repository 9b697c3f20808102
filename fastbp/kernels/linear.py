"""Linear-layer kernels. The matmuls stay BLAS calls (in :mod:`fastbp.ops`); this is the rest."""

from numba import prange

from ..jit import kernel

# Row chunks of the bias reduction: a constant, so the order of additions (and
# so the result) is the same for any thread count and for both compiled versions.
CHUNKS = 8


@kernel
def bias_grad(dy, db, scratch):
    """Batch bias reduction ``db = dy.sum(axis=0)``: ``dy`` (n, m), ``db`` (m,), overwritten.

    Rows are split into up to ``CHUNKS`` chunks that threads take in parallel;
    each chunk streams its rows into its row of ``scratch`` (CHUNKS, m), and the
    partial sums are added at the end. ``scratch`` belongs to the caller so that
    a training step allocates nothing.
    """
    n, m = dy.shape
    chunks = min(CHUNKS, n)
    zero = dy.dtype.type(0.0)
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        acc = scratch[c]
        for j in range(m):
            acc[j] = zero
        for i in range(c * step, min(n, (c + 1) * step)):
            row = dy[i]
            for j in range(m):
                acc[j] += row[j]
    for j in range(m):
        db[j] = scratch[0, j]
    for c in range(1, chunks):
        for j in range(m):
            db[j] += scratch[c, j]
