"""One SGD step and two Adam steps whose numbers are worked out by hand in the comments."""
import numpy as np
import pytest

import fastmlp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_step_worked_out(backend, dtype):
    be = fastmlp.get_backend(backend)
    tol = dict(rtol=1e-6 if dtype == np.float32 else 1e-14)
    # W = [1, -2], dW = [0.5, 0.25], lr = 0.1, weight_decay = 0.05, momentum 0.9, v = [0.1, -0.2]
    # g = dW + 2*0.05*W = [0.5 + 0.1, 0.25 - 0.2] = [0.6, 0.05]
    # plain:    W - 0.1*g = [0.94, -2.005]
    W = np.array([1.0, -2.0], dtype)
    be.sgd_update(W, np.array([0.5, 0.25], dtype), 0.1, weight_decay=0.05)
    np.testing.assert_allclose(W, [0.94, -2.005], **tol)
    # momentum: v = 0.9*[0.1, -0.2] + g = [0.69, -0.13];  W - 0.1*v = [0.931, -1.987]
    W, v = np.array([1.0, -2.0], dtype), np.array([0.1, -0.2], dtype)
    be.sgd_update(W, np.array([0.5, 0.25], dtype), 0.1, weight_decay=0.05, velocity=v,
                  momentum=0.9)
    np.testing.assert_allclose(v, [0.69, -0.13], **tol)
    np.testing.assert_allclose(W, [0.931, -1.987], **tol)
    # nesterov: same v; step = g + 0.9*v = [1.221, -0.067];  W - 0.1*step = [0.8779, -1.9933]
    W, v = np.array([1.0, -2.0], dtype), np.array([0.1, -0.2], dtype)
    be.sgd_update(W, np.array([0.5, 0.25], dtype), 0.1, weight_decay=0.05, velocity=v,
                  momentum=0.9, nesterov=True)
    np.testing.assert_allclose(v, [0.69, -0.13], **tol)
    np.testing.assert_allclose(W, [0.8779, -1.9933], **tol)


def test_adam_two_steps_worked_out(backend):
    be = fastmlp.get_backend(backend)
    W, m, v = np.array([1.0]), np.zeros(1), np.zeros(1)
    # step 1, g = 0.5: m = 0.1*0.5 = 0.05; v = 0.001*0.25 = 0.00025
    # m_hat = 0.05/0.1 = 0.5; v_hat = 0.00025/0.001 = 0.25; sqrt = 0.5
    # W = 1 - 0.01 * 0.5/(0.5 + 1e-8) = 1 - 0.01/(1 + 2e-8)
    be.adam_update(W, np.array([0.5]), m, v, 1, 0.01)
    np.testing.assert_allclose([m[0], v[0]], [0.05, 0.00025], rtol=1e-14)
    w1 = 1 - 0.01 / (1 + 2e-8)
    np.testing.assert_allclose(W, [w1], rtol=1e-14)
    # step 2, g = -0.5: m = 0.9*0.05 - 0.05 = -0.005; v = 0.999*0.00025 + 0.00025 = 0.00049975
    # c1 = 1 - 0.81 = 0.19, c2 = 1 - 0.998001 = 0.001999; m_hat = -0.005/0.19, v_hat = 0.25
    # W = w1 + 0.01 * (0.005/0.19) / (0.5 + 1e-8)
    be.adam_update(W, np.array([-0.5]), m, v, 2, 0.01)
    np.testing.assert_allclose([m[0], v[0]], [-0.005, 0.00049975], rtol=1e-12)
    np.testing.assert_allclose(W, [w1 + 0.01 * (0.005 / 0.19) / (0.5 + 1e-8)], rtol=1e-12)
    # weight decay enters the gradient: g = 0 + 2*0.25*W = 0.5 at W = 1 gives the same step 1
    W2 = np.array([1.0])
    be.adam_update(W2, np.zeros(1), np.zeros(1), np.zeros(1), 1, 0.01, weight_decay=0.25)
    np.testing.assert_allclose(W2, [w1], rtol=1e-14)
