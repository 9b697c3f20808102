"""scikit-learn's own estimator checks, with no expected failures.

scikit-learn runs its MLPs through these checks with ``max_iter=100``
(``sklearn/utils/_test_common/instance_generator.py``); the same here, plus
the SGD solver. A float32 model is left out: the sample-weight checks compare
at rtol 1e-7, below float32 rounding; ``test_sklearn_estimators.py`` checks the
same equivalence in float32 at float32 tolerance.
"""

import pytest

pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastbp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

ESTIMATORS = [
    MLPClassifier(max_iter=100),
    MLPRegressor(max_iter=100),
    MLPClassifier(solver="sgd", max_iter=100),
    MLPRegressor(solver="sgd", max_iter=100),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
