"""GridSearchCV over MLPClassifier on a Dask cluster (joblib's "dask" backend) gives the same
result as a local single-process search."""
import warnings

import numpy as np
import pytest

distributed = pytest.importorskip("dask.distributed",
                                  reason="dask.distributed is not installed")
joblib = pytest.importorskip("joblib")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from fastmlp import MLPClassifier  # noqa: E402
from fastmlp.datasets import load_digits  # noqa: E402

GRID = {"alpha": [1e-4, 1e-1], "hidden_layer_sizes": [(8,), (32,)]}


def _search(n_jobs):
    X, y = load_digits()[:2]
    clf = MLPClassifier(max_iter=15, learning_rate_init=0.01, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GridSearchCV(clf, GRID, cv=3, n_jobs=n_jobs).fit(X[:600], y[:600])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_grid_search_on_dask_cluster_matches_local():
    local = _search(n_jobs=1)
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
            remote = _search(n_jobs=-1)
        workers = {t["worker"] for t in stream.data}
    assert len(stream.data) >= len(GRID["alpha"]) * len(GRID["hidden_layer_sizes"]) * 3
    assert workers  # the fits ran on the cluster's worker processes
    assert remote.best_params_ == local.best_params_
    assert remote.best_score_ == pytest.approx(local.best_score_, abs=1e-12)
    np.testing.assert_allclose(remote.cv_results_["mean_test_score"],
                               local.cv_results_["mean_test_score"], atol=1e-12)
    X, _ = load_digits()[:2]
    np.testing.assert_array_equal(remote.predict(X[600:700]), local.predict(X[600:700]))
