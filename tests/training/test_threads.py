"""The thread policy (fastmlp.threads): the user's limits, the per-shape choice, and the
process's BLAS state after training."""
import os
import subprocess
import sys

import numpy as np
import pytest
import threadpoolctl

from fastmlp import MLP, MLPClassifier, Trainer
from fastmlp.backends import _pool, blas, onednn
from fastmlp.backends.contract import MIN_GEMM_FLOPS, gemm_threads, step_gemms
from fastmlp.threads import ThreadPolicy, check_threads

CPUS = len(os.sched_getaffinity(0))
needs_two = pytest.mark.skipif(CPUS < 2 or _pool.workers() < 1,
                               reason="needs 2 CPUs (fastmlp's pool has no worker)")


def blas_state():
    """Every BLAS pool of the process and its thread count (NumPy's, SciPy's, fastmlp's)."""
    return sorted((i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info())


def big_data(n=256, d=784, k=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, k, n)


def test_check_threads_refuses_nonsense():
    assert check_threads("auto") == "auto" and check_threads(3) == 3
    for bad in (0, -1, 1.5, True, "two", None):
        with pytest.raises(ValueError, match="threads"):
            check_threads(bad)
    with pytest.raises(ValueError, match="threads"):
        Trainer(MLP((4, 3)), threads=0)
    with pytest.raises(ValueError, match="threads"):
        MLPClassifier(threads=0).fit(np.zeros((4, 2)), [0, 1, 0, 1])


def test_gemm_threads_follow_the_measured_crossover():
    assert gemm_threads(MIN_GEMM_FLOPS - 1, 2) == 1 and gemm_threads(MIN_GEMM_FLOPS, 2) == 2
    assert gemm_threads(1e9, 1) == 1
    # 784-128-10 at N=32: the first layer's forward and dW are 6.4 MFLOP, the second
    # layer's three 0.08 MFLOP (below the measured crossover, docs/benchmarks.md)
    big = [name for name, f in step_gemms((784, 128, 10), 32) if gemm_threads(f, 2) > 1]
    assert big == ["forward 1", "dW 1"]
    big = [name for name, f in step_gemms((784, 256, 10), 128) if gemm_threads(f, 2) > 1]
    assert big == ["forward 1", "dW 1", "forward 2", "dW 2", "delta 1"]
    # sparse X: the first layer is CSR kernels, not GEMMs
    assert [n for n, _ in step_gemms((784, 256, 10), 128, sparse=True)] == \
        ["forward 2", "dW 2", "delta 1"]


@pytest.mark.parametrize("sizes, m", [((784, 256, 10), 128), ((784, 1024, 512, 10), 64),
                                      ((64, 100, 10), 200), ((20, 8, 3), 1)])
@pytest.mark.parametrize("threads", [1, 2])
def test_each_gemm_gets_the_threads_the_policy_says(compiled, sizes, m, threads):
    """The pool's counters: every GEMM of at least MIN_GEMM_FLOPS goes to fastmlp's pool,
    and exactly those step_gemms/gemm_threads give more than one thread are shared with its
    workers; the others are one provider call on the caller's thread."""
    if threads > 1 and (CPUS < 2 or _pool.workers() < 1):
        pytest.skip("needs 2 CPUs")
    tr = Trainer(MLP(sizes, backend=compiled, seed=0), batch_size=m, threads=threads)
    X, y = big_data(m, sizes[0], sizes[-1])
    tr.step(X, y)   # builds (and compiles) the step
    gemms = step_gemms(sizes, m)
    pooled = sum(f >= MIN_GEMM_FLOPS for _, f in gemms)
    shared = sum(gemm_threads(f, threads) > 1 for _, f in gemms)
    before = _pool.stats()
    for _ in range(3):
        tr.step(X, y)
    after = _pool.stats()
    assert after["jobs"] - before["jobs"] == 3 * pooled
    assert after["shared"] - before["shared"] == 3 * shared


@needs_two
def test_threadpoolctl_limit_is_honoured(compiled):
    X, y = big_data()
    tr = Trainer(MLP((784, 256, 10), backend=compiled, seed=0), batch_size=128, epochs=1)
    tr.fit(X, y)
    before = _pool.stats()
    with threadpoolctl.threadpool_limits(1):
        assert ThreadPolicy(blas.get_provider()).limit() == 1
        tr.fit(X, y)
    mid = _pool.stats()
    assert mid["jobs"] > before["jobs"] and mid["shared"] == before["shared"]
    assert ThreadPolicy(blas.get_provider()).limit() == min(2, CPUS)
    Trainer(tr.model, batch_size=128, epochs=1, threads=2).fit(X, y)
    assert _pool.stats()["shared"] > mid["shared"]


@pytest.mark.parametrize("var", ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"])
def test_environment_limit_is_honoured(var, tmp_path):
    """A fresh process started with OPENBLAS_NUM_THREADS=1 / OMP_NUM_THREADS=1: the limit is
    1 and no GEMM is shared, even with threads=2."""
    code = ("import numpy as np; from fastmlp import MLP, Trainer; "
            "from fastmlp.backends import _pool, blas; from fastmlp.threads import ThreadPolicy;"
            "X = np.random.default_rng(0).standard_normal((256, 784)).astype(np.float32);"
            "y = np.arange(256) % 10;"
            "Trainer(MLP((784, 256, 10), backend='cython'), batch_size=128, epochs=1, "
            "threads=2).fit(X, y);"
            "print(ThreadPolicy(blas.get_provider()).limit(), _pool.stats()['jobs'] > 0, "
            "_pool.stats()['shared'])")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    env[var] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, check=True, cwd=tmp_path).stdout.split()
    assert out == ["1", "True", "0"], out


def _limit_in_worker():
    return ThreadPolicy(blas.get_provider()).limit()


def test_joblib_inner_limit_is_honoured():
    """joblib (what GridSearchCV(n_jobs=2) runs on) limits its workers' BLAS threads to
    cpus // n_jobs: the policy sees that limit."""
    from joblib import Parallel, delayed
    limits = Parallel(n_jobs=2)(delayed(_limit_in_worker)() for _ in range(2))
    assert limits == [max(1, CPUS // 2)] * 2


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("threads", ["auto", 1, 2])
def test_blas_state_is_unchanged_after_training(compiled, threads):
    """NumPy's, SciPy's and the provider's pools hold the user's counts after fit, partial_fit,
    step and an interrupted epoch (while training, the provider's pool runs 1 thread)."""
    X, y = big_data()
    for limit in (None, 1):
        with threadpoolctl.threadpool_limits(limit):
            state = blas_state()
            tr = Trainer(MLP((784, 256, 10), backend=compiled, seed=0), batch_size=128,
                         epochs=1, threads=threads)
            tr.fit(X, y)
            tr.step(X[:128], y[:128])
            assert blas_state() == state
            seen = []
            tr.callbacks = [lambda h: seen.append(blas.get_provider().threads())]
            tr.fit(X, y)
            assert seen == [blas.get_provider().threads()]   # restored before callbacks
            clf = MLPClassifier((64,), max_iter=2, backend=compiled, threads=threads)
            clf.fit(X, y)
            clf.partial_fit(X, y)
            assert blas_state() == state

            def boom(*a, **k):
                raise KeyboardInterrupt
            tr._step = boom
            with pytest.raises(KeyboardInterrupt):
                tr.fit(X, y)
            assert blas_state() == state


def test_results_do_not_depend_on_threads(compiled):
    X, y = big_data()
    weights = []
    for threads in (1, 2, "auto"):
        m = MLP((784, 256, 10), backend=compiled, seed=0)
        Trainer(m, optimizer="adam", lr=1e-3, batch_size=128, epochs=2, seed=0,
                threads=threads).fit(X, y)
        weights.append(b"".join(w.tobytes() for w in m.weights + m.biases))
    assert weights[0] == weights[1] == weights[2]


def test_auto_gives_threads_back_under_load(monkeypatch):
    """threads='auto': with another runnable thread per CPU the cap is 1; on an idle machine
    it is the limit."""
    from fastmlp import threads as T
    provider = blas.get_provider()
    pol = ThreadPolicy(provider, "auto", recheck=0.0)
    monkeypatch.setattr(T, "others_running", lambda: 0)   # only us
    limit = pol.limit()
    try:
        assert pol.begin() == limit
        # while steered (its pool at 1 thread), another policy still sees the user's limit
        assert ThreadPolicy(provider).limit() == limit
        monkeypatch.setattr(T, "others_running", lambda: CPUS)   # one other per CPU
        assert pol.cap() == pol.limit()   # one check is an instant: not yet contention
        assert pol.cap() == 1             # two in a row are
        monkeypatch.setattr(T, "others_running", lambda: None)   # unknown: keep the last cap
        assert pol.cap() == 1
        assert provider.threads() == 1   # steering: the provider's pool runs one thread
    finally:
        pol.end()
    one = ThreadPolicy(provider, 1)
    try:
        assert one.begin() == 1
    finally:
        one.end()


def test_others_running_counts_other_processes_only():
    """A process spinning on one core is seen as another runnable thread (the counts are
    instantaneous: the largest of 20 is taken)."""
    from fastmlp import threads as T
    if T._running() is None:
        pytest.skip("no /proc/loadavg")
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time
        time.sleep(0.3)
        busy = max(T.others_running() for _ in range(20))
    finally:
        spin.kill()
        spin.wait()
    assert busy >= 1, busy
    assert T._own_running() >= 1


needs_onednn = pytest.mark.skipif(not onednn.available(),
                                  reason=f"oneDNN is not installed ({onednn.EXTRA})")


@needs_onednn
def test_auto_picks_onednn_only_on_its_amx_kernels(monkeypatch):
    """'auto' depends on what is installed and the CPU alone: oneDNN's sgemm on its AMX
    kernels, else the OpenBLAS wheel; FASTMLP_GEMM and gemm= pin a provider."""
    p = blas.get_provider("onednn")
    monkeypatch.delenv("FASTMLP_GEMM", raising=False)
    expected = "onednn" if p.architecture == blas.AUTO_ONEDNN_ISA else "openblas"
    assert blas.auto_name() == expected and blas.get_provider().name == expected
    monkeypatch.setattr(p, "architecture", "avx512_core_bf16")
    assert blas.get_provider().name == "openblas"
    monkeypatch.setattr(p, "architecture", blas.AUTO_ONEDNN_ISA)
    assert blas.get_provider() is p
    monkeypatch.setenv("FASTMLP_GEMM", "scipy")
    assert blas.get_provider().name == "scipy"
    assert blas.get_provider("openblas").name == "openblas"


@needs_onednn
def test_onednn_provider_steers_its_base_pool_and_holds_tbb_to_one_thread():
    """The "onednn" provider's float64 GEMM and thread count are its BLAS base's; steering
    it sets that pool to 1 thread and TBB's max_allowed_parallelism to 1, and the last policy
    to end puts both back."""
    p, base = blas.get_provider("onednn"), blas.get_provider("openblas")
    assert p.pool is base and p.dgemm == base.dgemm and p.sgemm != base.sgemm
    assert p.threads() == base.threads()
    assert sum(q is base for q in blas.loaded_providers()) == 1   # one pool, listed once
    tbb, count = onednn.tbb_threads(), base.threads()
    assert tbb >= 1
    a, b = ThreadPolicy(p, 1), ThreadPolicy(base, 1)
    a.begin()
    try:
        assert base.threads() == 1 and onednn.tbb_threads() == 1
        b.begin()
        a.end()
        assert base.threads() == 1 and onednn.tbb_threads() == 1   # b still steers
    finally:
        a.end()
        b.end()
    assert base.threads() == count and onednn.tbb_threads() == tbb


def _fortran_sgemm(address, A, B):
    """Row-major C = A·B (float32) through the Fortran-ABI sgemm at `address` (the
    benchmark floors' by-address driver)."""
    from types import SimpleNamespace

    from fastmlp.bench.cases import _provider_floor
    C = np.zeros((A.shape[0], B.shape[1]), np.float32)
    _provider_floor([(A, B, C)], SimpleNamespace(sgemm=address), np.float32)()
    return C


@needs_onednn
@pytest.mark.parametrize("shape", [(4, 4096, 4), (64, 784, 32), (128, 784, 256)],
                         ids=["tiny", "below", "above"])
def test_onednn_sgemm_leaves_small_gemms_to_its_base(shape):
    """The "onednn" provider's sgemm is oneDNN's for 2·m·n·k >= ONEDNN_MIN_FLOPS and its
    base's below, bit for bit (the shapes are ones where the two libraries round apart)."""
    m, k, n = shape
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    p = blas.get_provider("onednn")
    got, base, dnnl = (_fortran_sgemm(a, A, B) for a in (p.sgemm, p.pool.sgemm,
                                                             p.engine.sgemm))
    np.testing.assert_allclose(got, A.astype(np.float64) @ B, rtol=0, atol=2e-5 * np.sqrt(k))
    assert not np.array_equal(base, dnnl)   # else this shape could not tell them apart
    expected = dnnl if 2 * m * n * k >= blas.ONEDNN_MIN_FLOPS else base
    np.testing.assert_array_equal(got, expected)


@needs_onednn
def test_set_mixed_refuses_a_null_base():
    with pytest.raises(ValueError, match="null base sgemm"):
        _pool.set_mixed(0, blas.ONEDNN_MIN_FLOPS)


@needs_onednn
@pytest.mark.parametrize("precision", [None, "bf16"], ids=["fp32", "bf16"])
def test_tbb_is_restored_after_training(compiled, precision, monkeypatch):
    """A fit and a step through oneDNN (its sgemm, or its bf16 GEMM) leave TBB's limit as it
    was, and the step ran through the provider asked for."""
    monkeypatch.setenv("FASTMLP_GEMM", "onednn")
    X, y = big_data()
    tbb = onednn.tbb_threads()
    tr = Trainer(MLP((784, 256, 10), backend=compiled, seed=0), batch_size=128, epochs=1,
                 precision=precision)
    tr.fit(X, y)
    tr.step(X[:128], y[:128])
    assert tr._train_step().provider.name == "onednn"
    assert onednn.tbb_threads() == tbb
