"""Constants and tolerances shared by the tests."""

import numpy as np

DTYPES = [np.float32, np.float64]
# batch 1, one feature, widths that are not a multiple of the vector length (16 floats)
SHAPES = [(1, 1), (1, 7), (5, 1), (3, 17), (64, 33), (130, 100)]


def tol(dtype):
    """Tolerances for comparing a kernel with its twin in ``dtype``."""
    return dict(rtol=2e-5, atol=2e-6) if np.dtype(dtype) == np.float32 else dict(rtol=1e-12, atol=1e-13)
