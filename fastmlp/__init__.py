"""fastmlp: multilayer perceptrons on the CPU at the speed of the matrix multiply."""
from .backends import available_backends, get_backend
from .estimator import MLPClassifier
from .history import History
from .model import MLP, ModelFileError
from .schedules import (Constant, EarlyStopping, ExponentialDecay, InverseScaling,
                        ReduceOnPlateau, StepDecay)
from .trainer import Trainer, TrainingDivergedError

__version__ = "0.1.0"

__all__ = ["available_backends", "get_backend", "MLP", "MLPClassifier", "Trainer", "History", "ModelFileError",
           "TrainingDivergedError", "Constant", "StepDecay", "ExponentialDecay",
           "InverseScaling", "ReduceOnPlateau", "EarlyStopping", "__version__"]
