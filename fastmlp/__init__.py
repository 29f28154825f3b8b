"""fastmlp: multilayer perceptrons on the CPU at the speed of the matrix multiply."""
from .backends import available_backends, get_backend
from .history import History
from .model import MLP, ModelFileError
from .schedules import (Constant, EarlyStopping, ExponentialDecay, InverseScaling,
                        ReduceOnPlateau, StepDecay)
from .trainer import Trainer, TrainingDivergedError

__version__ = "0.1.0"


def __getattr__(name):
    # the estimator pulls in scikit-learn: import it on first use, not with the package
    if name == "MLPClassifier":
        from .estimators import MLPClassifier
        return MLPClassifier
    raise AttributeError(f"module 'fastmlp' has no attribute {name!r}")

__all__ = ["available_backends", "get_backend", "MLP", "MLPClassifier", "Trainer", "History", "ModelFileError",
           "TrainingDivergedError", "Constant", "StepDecay", "ExponentialDecay",
           "InverseScaling", "ReduceOnPlateau", "EarlyStopping", "__version__"]
