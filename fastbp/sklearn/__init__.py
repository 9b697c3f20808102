"""scikit-learn estimators trained by fastbp: a one-line swap for ``sklearn.neural_network``.

>>> from fastbp.sklearn import MLPClassifier, MLPRegressor  # doctest: +SKIP

Requires scikit-learn (``pip install "fastbp[sklearn]"``).
"""

try:
    import sklearn  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError('fastbp.sklearn needs scikit-learn: pip install "fastbp[sklearn]"') from e

from ._estimators import MLPClassifier, MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
