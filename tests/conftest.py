"""Shared fixtures.  The tests import the *installed* fastmlp (README: `pip install ".[test]"`
then `pytest`); a bare source checkout has no compiled extension and would shadow it."""
import pathlib

import numpy as np
import pytest

import fastmlp

REPO = pathlib.Path(__file__).resolve().parents[1]
COMPILED = ("numba", "cython")
ALL_BACKENDS = ("numpy",) + COMPILED
DTYPES = (np.float32, np.float64)


def pytest_report_header(config):
    return f"fastmlp {fastmlp.__version__} from {pathlib.Path(fastmlp.__file__).parent}; " \
           f"backends {fastmlp.available_backends()}"


def pytest_configure(config):
    pkg = pathlib.Path(fastmlp.__file__).resolve().parent
    if pkg.parent == REPO and not any(pkg.glob("_ckernels*.so")):
        pytest.exit("tests are importing fastmlp from the source checkout, which has no compiled "
                    "extension: run them with `pytest` (not `python -m pytest`) after "
                    "`pip install .[test]`, or build in place first", returncode=4)


@pytest.fixture(params=COMPILED)
def compiled_backend(request):
    return fastmlp.get_backend(request.param)


@pytest.fixture(params=DTYPES, ids=["f32", "f64"])
def dtype(request):
    return request.param
