"""fastmlp: multilayer perceptrons on the CPU at the speed of the matrix multiply."""
from .backends import available_backends, get_backend
from .history import History
from .model import MLP, ModelFileError
from .schedules import (Constant, Cosine, EarlyStopping, ExponentialDecay, InverseScaling,
                        OneCycle, ReduceOnPlateau, StepDecay)
from .trainer import Trainer, TrainingDivergedError

__version__ = "0.1.0"


def __getattr__(name):
    # the estimators pull in scikit-learn: import them on first use, not with the package
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'fastmlp' has no attribute {name!r}")


__all__ = ["available_backends", "get_backend", "MLP", "MLPClassifier", "MLPRegressor",
           "Trainer", "History", "ModelFileError", "TrainingDivergedError", "Constant",
           "StepDecay", "ExponentialDecay", "InverseScaling", "ReduceOnPlateau",
           "OneCycle", "Cosine", "EarlyStopping", "__version__"]
