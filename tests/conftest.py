"""Shared fixtures.  The tests import the *installed* fastmlp (README: `pip install ".[test]"`
then `pytest`); a bare source checkout has no compiled extension and would shadow it.

Layout: kernels/ (each kernel and the fused step against the reference, gradients, the
checked boundary), training/ (MLP and Trainer), estimator/ (the scikit-learn drop-ins),
robustness/ (faults, bad input, divergence, concurrency, memory), tools/ (CLI, datasets).
The backends come from these fixtures, whose lists are the registry's own
(`fastmlp.backends.BACKEND_NAMES`, `COMPILED_NAMES`), imported by the tables that
need them at collection time.
"""
import pathlib

import numpy as np
import pytest

import fastmlp
from fastmlp.backends import BACKEND_NAMES, COMPILED_NAMES

REPO = pathlib.Path(__file__).resolve().parents[1]
DTYPES = (np.float32, np.float64)


def pytest_report_header(config):
    return f"fastmlp {fastmlp.__version__} from {pathlib.Path(fastmlp.__file__).parent}; " \
           f"backends {fastmlp.available_backends()}"


def pytest_configure(config):
    pkg = pathlib.Path(fastmlp.__file__).resolve().parent
    if pkg.parent == REPO and not any((pkg / "backends").glob("_cython*.so")):
        pytest.exit("tests are importing fastmlp from the source checkout, which has no compiled "
                    "extension: run them with `pytest` (not `python -m pytest`) after "
                    "`pip install .[test]`, or build in place first", returncode=4)


# module scope: hypothesis's @given refuses function-scoped fixtures
@pytest.fixture(scope="module", params=BACKEND_NAMES)
def backend(request):
    """Each backend's name: numpy (the reference), numba, cython."""
    return request.param


@pytest.fixture(scope="module", params=COMPILED_NAMES)
def compiled(request):
    """Each compiled backend's name."""
    return request.param


@pytest.fixture
def compiled_backend(compiled):
    """Each compiled backend (the object from get_backend)."""
    return fastmlp.get_backend(compiled)


@pytest.fixture(params=DTYPES, ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits as fastmlp.datasets.load_digits splits them."""
    from fastmlp.datasets import load_digits
    return load_digits()
