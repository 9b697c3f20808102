import numpy as np
import pytest

DTYPES = [np.float32, np.float64]
# batch 1, one feature, widths that are not a multiple of the vector length (16 floats)
SHAPES = [(1, 1), (1, 7), (5, 1), (3, 17), (64, 33), (130, 100)]


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def tol(dtype):
    """Tolerances for comparing a kernel with its twin in ``dtype``."""
    return dict(rtol=2e-5, atol=2e-6) if np.dtype(dtype) == np.float32 else dict(rtol=1e-12, atol=1e-13)


def torch_or_skip():
    return pytest.importorskip("torch")
