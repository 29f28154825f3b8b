"""MLPClassifier on Dask (docs/scaling.md): a GridSearchCV through joblib's "dask" backend
gives the same result as a local single-process search, with the workers' BLAS at one thread;
and dask-ml's Incremental trains out of core on a zarr store larger than the worker's memory
limit, with the worker's peak memory bounded."""
import os
import shutil
import time
import warnings

import numpy as np
import pytest

distributed = pytest.importorskip("dask.distributed",
                                  reason="dask.distributed is not installed")
joblib = pytest.importorskip("joblib")
threadpoolctl = pytest.importorskip("threadpoolctl")

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


def blas_threads():
    """{library: threads} of every BLAS/OpenMP pool loaded in this process (fastmlp's
    backends and numpy/scipy loaded first)."""
    import fastmlp.estimators  # noqa: F401  (the libraries a fit loads)
    return {f"{p['internal_api']} {os.path.basename(p['filepath'])}": p["num_threads"]
            for p in threadpoolctl.threadpool_info()}


def _fit_and_report_threads():
    """A small fit inside a worker task, then the thread pools as that task saw them."""
    X, y = load_digits()[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier((16,), max_iter=2, random_state=0).fit(X, y)
    from fastmlp.backends.blas import get_provider
    from fastmlp.threads import ThreadPolicy
    # and the limit fastmlp's thread policy takes from them
    return dict(blas_threads(), policy_limit=ThreadPolicy(get_provider()).limit())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_grid_search_on_dask_cluster_matches_local():
    t0 = time.perf_counter()
    local = _search(n_jobs=1)
    local_s = time.perf_counter() - t0
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        t0 = time.perf_counter()
        with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
            remote = _search(n_jobs=-1)
        remote_s = time.perf_counter() - t0
        workers = {t["worker"] for t in stream.data}
        # BLAS at one thread inside the workers (the nanny sets OMP/OPENBLAS/MKL_NUM_THREADS
        # to 1 before it starts them: distributed.nanny.pre-spawn-environ), seen from a task
        # that trains, and from every worker process
        in_task = client.submit(_fit_and_report_threads, pure=False).result()
        per_worker = client.run(blas_threads)
    print(f"grid search, 12 fits: local n_jobs=1 {local_s:.1f} s, dask 2 workers "
          f"{remote_s:.1f} s")
    assert in_task and set(in_task.values()) == {1}, in_task
    assert len(per_worker) == 2
    assert all(pools and set(pools.values()) == {1} for pools in per_worker.values()), \
        per_worker
    assert len(stream.data) >= len(GRID["alpha"]) * len(GRID["hidden_layer_sizes"]) * 3
    assert workers  # the fits ran on the cluster's worker processes
    assert remote.best_params_ == local.best_params_
    assert remote.best_score_ == pytest.approx(local.best_score_, abs=1e-12)
    np.testing.assert_allclose(remote.cv_results_["mean_test_score"],
                               local.cv_results_["mean_test_score"], atol=1e-12)
    X, _ = load_digits()[:2]
    np.testing.assert_array_equal(remote.predict(X[600:700]), local.predict(X[600:700]))


# ---- out of core ----------------------------------------------------------------------------

# 1.6M rows x 100 float32 features = 640 MB (~590 MB on disk, zstd) in a zarr store of 40
# chunks of 16 MB, against a worker memory limit of 600 MB.  The worker itself, with fastmlp,
# scikit-learn, dask-ml and zarr imported, is 350-420 MB (418 MB in one CI run), so the fit
# has ~130 MB of room.  One epoch of Incremental.fit:
# ~4 s; writing the store ~10-15 s, the cluster ~5 s.  Spilling and pausing are off: a worker
# that starts above the spill threshold (70% of its limit) writes every chunk it holds to
# disk (4x slower here), and one above the pause threshold (80%) would wait for memory that
# is never freed; the nanny still restarts the worker at 95% of the limit.
NO_SPILL = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
            "distributed.worker.memory.pause": False}
OOC_ROWS, OOC_FEATURES, OOC_CHUNK = 1_600_000, 100, 40_000
OOC_LIMIT = 600 * 10**6


def _vm(key):
    """VmRSS / VmHWM (peak RSS since the last reset) of this process, in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:   # "5": VmHWM := VmRSS
        f.write("5")


def _worker_imports():
    import dask_ml.wrappers  # noqa: F401
    import zarr  # noqa: F401

    import fastmlp.estimators  # noqa: F401
    return _vm("VmRSS")


@pytest.fixture(scope="module")
def zarr_store(tmp_path_factory):
    """X (1.6M, 100) float32 and y = [X·w > 0] as zarr arrays, written chunk by chunk."""
    da = pytest.importorskip("dask.array")
    pytest.importorskip("zarr", reason="zarr is not installed")
    folder = tmp_path_factory.mktemp("ooc")
    rs = da.random.RandomState(0)
    X = rs.standard_normal((OOC_ROWS, OOC_FEATURES), chunks=(OOC_CHUNK, OOC_FEATURES))
    X = X.astype(np.float32)
    w = np.random.default_rng(1).standard_normal(OOC_FEATURES).astype(np.float32)
    y = (X @ w > 0).astype(np.int8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # zarr's notes on codecs and formats
        da.to_zarr(X, str(folder / "X.zarr"), compute=True)
        da.to_zarr(y, str(folder / "y.zarr"), compute=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)   # ~600 MB: not left behind in pytest's tmp


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                    reason="peak memory is read from Linux's /proc/self")
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_incremental_out_of_core_on_a_store_larger_than_the_worker_memory(zarr_store):
    da = pytest.importorskip("dask.array")
    wrappers = pytest.importorskip("dask_ml.wrappers", reason="dask-ml is not installed")
    X = da.from_zarr(str(zarr_store / "X.zarr"))
    y = da.from_zarr(str(zarr_store / "y.zarr"))
    assert X.nbytes > OOC_LIMIT and X.numblocks[0] == OOC_ROWS // OOC_CHUNK
    disk = sum(f.stat().st_size for f in (zarr_store / "X.zarr").rglob("*") if f.is_file())
    dask = pytest.importorskip("dask")
    with dask.config.set(NO_SPILL), \
            distributed.LocalCluster(n_workers=1, processes=True, threads_per_worker=1,
                                     memory_limit=OOC_LIMIT, host="127.0.0.1",
                                     dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        (base,) = client.run(_worker_imports).values()
        client.run(_reset_peak)
        clf = MLPClassifier((16,), learning_rate_init=1e-2, random_state=0)
        t0 = time.perf_counter()
        inc = wrappers.Incremental(clf, shuffle_blocks=False).fit(X, y, classes=[0, 1])
        seconds = time.perf_counter() - t0
        (peak,) = client.run(_vm, "VmHWM").values()
        accuracy = inc.score(X[:OOC_CHUNK], y[:OOC_CHUNK])
    print(f"out of core: {X.nbytes / 1e6:.0f} MB in {X.numblocks[0]} chunks ({disk / 1e6:.0f} "
          f"MB on disk, compressed), worker limit "
          f"{OOC_LIMIT / 1e6:.0f} MB: fit {seconds:.1f} s, worker RSS {base / 1e6:.0f} MB "
          f"before, peak {peak / 1e6:.0f} MB, accuracy {accuracy:.3f}")
    assert inc.estimator_.t_ == OOC_ROWS             # every row seen once: one epoch
    assert accuracy > 0.9                            # a linear rule: learnt from the stream
    assert peak < OOC_LIMIT * 0.9                    # well below the nanny's 95%
    assert peak - base < 8 * X.nbytes / X.numblocks[0] + 64e6   # a few chunks, not the data
