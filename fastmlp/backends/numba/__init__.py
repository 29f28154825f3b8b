"""The Numba backend's raw kernels (kernels.py) and fused `TrainStep` (train_step.py), under
the names of the contract; compile settings and the thread policy are in config.py."""
from .kernels import (adam_update, linear_backward, linear_forward, relu_backward,  # noqa: F401
                      sgd_update, softmax_xent_grad)
from .train_step import TrainStep  # noqa: F401

name = "numba"
