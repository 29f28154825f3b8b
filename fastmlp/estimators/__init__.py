"""scikit-learn estimators trained by fastmlp (they import scikit-learn)."""
from .classifier import MLPClassifier  # noqa: F401
from .regressor import MLPRegressor  # noqa: F401
