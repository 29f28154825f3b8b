"""scikit-learn estimators trained by fastmlp (they import scikit-learn)."""
from .classifier import MLPClassifier  # noqa: F401
