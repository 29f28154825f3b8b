"""The Numba backend's raw kernels (kernels.py) and fused `TrainStep` (train_step.py), under
the names of the contract; compile settings and the thread policy are in config.py."""
from .kernels import (activation_backward, adam_update, batch_norm_backward,  # noqa: F401
                      batch_norm_forward, batch_norm_running, csr_gather_rows,
                      csr_linear_backward, csr_linear_forward, dropout, gather_rows,
                      linear_backward, linear_forward, logistic_xent_grad, poisson_grad,
                      sgd_update, softmax_xent_grad, squared_error_grad, to_bf16)
from .train_step import TrainStep  # noqa: F401

name = "numba"
