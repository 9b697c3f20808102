"""Linear-layer kernels. The matmuls stay BLAS calls (in :mod:`fastbp.ops`); this is the rest."""

import numpy as np
from numba import prange

from ..threads import kernel

# Row chunks of the bias reduction: a constant, so the order of additions (and
# so the result) is the same for any thread count and for both compiled versions.
_CHUNKS = 8


@kernel
def bias_grad(dy, db):
    """Batch bias reduction ``db = dy.sum(axis=0)``: ``dy`` (n, m), ``db`` (m,), overwritten.

    Rows are split into up to 8 chunks that threads take in parallel; each chunk
    streams its rows into a partial sum and the partials are added at the end.
    """
    n, m = dy.shape
    chunks = min(_CHUNKS, n)
    partial = np.zeros((chunks, m), dy.dtype)
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        acc = partial[c]
        for i in range(c * step, min(n, (c + 1) * step)):
            row = dy[i]
            for j in range(m):
                acc[j] += row[j]
    for j in range(m):
        db[j] = partial[0, j]
    for c in range(1, chunks):
        for j in range(m):
            db[j] += partial[c, j]
