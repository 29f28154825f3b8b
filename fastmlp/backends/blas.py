"""GEMM providers: the BLAS libraries the fused training steps call, found at run time.

Design: a `Provider` is one BLAS library as the compiled steps see it -- the addresses of
its Fortran-ABI sgemm and dgemm (32-bit integers), and its thread-count setter and getter
(ctypes functions) -- plus what to print about it (file, version, the kernel it runs).  The
steps take these addresses when they are built (no build-time link), so more providers can
stand behind the same `_gemm`.  Three are known:

* "openblas": the OpenBLAS of the `scipy-openblas32` wheel (the packaging NumPy and SciPy
  build against), a newer release than SciPy's bundled copy and 8-20% faster on one thread at
  MLP batch sizes (docs/benchmarks.md).  Its library is opened privately (RTLD_LOCAL) by path,
  without importing the `scipy_openblas32` module, which would open it globally and take over
  SciPy's own BLAS symbols.  Its thread pool is its own.
* "scipy": SciPy's bundled OpenBLAS through `scipy.linalg.cython_blas` -- what the separate
  kernels call -- the fallback.
* "onednn" (the optional extra, fastmlp.backends.onednn): oneDNN's fp32 `dnnl_sgemm` through
  csrc/pool.c's Fortran-signature adapter for GEMMs of at least `ONEDNN_MIN_FLOPS`, with the
  BLAS provider above ("openblas", else "scipy": `Provider.pool`) for smaller sgemms, where
  oneDNN's per-call cost made it up to 1.8x slower (docs/benchmarks.md), and for the float64
  GEMM and the thread pool.  While a training steers
  it, oneDNN's TBB pool is held to one thread too (`onednn.hold_one_thread`), so each block of
  fastmlp's threads is one single-threaded oneDNN call, as with OpenBLAS.

`get_provider("auto")` is decided by what is installed and the CPU alone, never by a timing
(a model trains to the same bits in every process on one machine): "onednn" when it loads
and runs its AMX kernels (`AUTO_ONEDNN_ISA`: there its sgemm made the fused float32 step
6-15% faster than OpenBLAS's; on an AVX512-BF16 EPYC without AMX the step alone measured
5-18% faster at N >= 128 but whole Fashion-MNIST fits took 0.96-1.16x OpenBLAS's time,
docs/benchmarks.md), else "openblas" when the wheel is installed, else "scipy".
FASTMLP_GEMM or `gemm=` pins one.  Thread counts: `Provider.threads()` reads the pool's count
now (it reflects OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, threadpoolctl limits, joblib's and
Dask's worker settings, CPU affinity), `set_threads(n)` sets it.
"""
import ctypes
import glob
import importlib.metadata
import os
import threading

_lock = threading.RLock()   # re-entrant: building "onednn" builds its base provider
_cache = {}
POOLS = ("openblas", "scipy")          # the providers that are BLAS libraries with a pool
PROVIDERS = POOLS + ("onednn",)
AUTO_ONEDNN_ISA = "avx512_core_amx"    # the oneDNN kernels "auto" prefers to OpenBLAS
ONEDNN_MIN_FLOPS = 4e6   # "onednn" leaves GEMMs under 2*m*n*k = 4 MFLOP to its base


class Provider:
    """One BLAS library: Fortran-ABI function addresses and its thread pool."""

    def __init__(self, name, path, sgemm, dgemm, lib, suffix=""):
        self.name, self.path = name, path
        self.sgemm, self.dgemm = sgemm, dgemm
        self._set = self._get = None
        self.version = self.architecture = None
        self.pool = self   # the provider whose thread pool this one's count is
        if lib is not None:
            self._set = _symbol(lib, "scipy_openblas_set_num_threads" + suffix,
                                "openblas_set_num_threads" + suffix)
            self._get = _symbol(lib, "scipy_openblas_get_num_threads" + suffix,
                                "openblas_get_num_threads" + suffix)
            if self._set is not None:
                self._set.argtypes, self._set.restype = [ctypes.c_int], None
            if self._get is not None:
                self._get.argtypes, self._get.restype = [], ctypes.c_int
            for attr, names in (("version", ("scipy_openblas_get_config", "openblas_get_config")),
                                ("architecture", ("scipy_openblas_get_corename",
                                                  "openblas_get_corename"))):
                f = _symbol(lib, *(n + suffix for n in names))
                if f is not None:
                    f.argtypes, f.restype = [], ctypes.c_char_p
                    setattr(self, attr, f().decode(errors="replace"))
            if self.version:   # "OpenBLAS 0.3.30 DYNAMIC_ARCH ..." -> "0.3.30"
                words = self.version.split()
                self.version = words[1] if len(words) > 1 else self.version

    def threads(self):
        """The pool's thread count now (1 when the library does not say)."""
        return int(self._get()) if self._get is not None else 1

    def set_threads(self, n):
        if self._set is not None:
            self._set(int(n))

    def describe(self):
        """'openblas 0.3.34 (SkylakeX kernels, 2 threads) .../libscipy_openblas.so'."""
        arch = f"{self.architecture} kernels, " if self.architecture else ""
        return (f"{self.name} {self.version or '?'} ({arch}{self.threads()} threads) "
                f"{self.path}")

    def __repr__(self):
        return f"<fastmlp GEMM provider {self.describe()}>"


class _OneDNNProvider(Provider):
    """oneDNN's sgemm (its Fortran-signature adapter) with `base`'s dgemm; its thread counts
    are `base`'s pool (oneDNN's own TBB pool is held to one thread while a policy steers)."""

    def __init__(self, engine, base):
        self.name, self.path, self.engine, self.pool = "onednn", engine.path, engine, base
        from . import _pool
        self.sgemm = _pool.set_mixed(base.sgemm, ONEDNN_MIN_FLOPS)
        self.dgemm = base.dgemm
        self.version, self.architecture = engine.version, engine.isa

    def threads(self):
        return self.pool.threads()

    def set_threads(self, n):
        self.pool.set_threads(n)

    def describe(self):
        """'onednn 3.2.0 (avx512_core_amx kernels; float64 GEMM and thread count: openblas
        0.3.34 ...) .../libdnnl.so.3'."""
        return (f"onednn {self.version} ({self.architecture} kernels; float64 GEMM and "
                f"thread count: {self.pool.describe()}) {self.path}")


def _symbol(lib, *names):
    for n in names:
        try:
            return getattr(lib, n)
        except AttributeError:
            continue
    return None


def _address(f):
    return ctypes.cast(f, ctypes.c_void_p).value if f is not None else 0


def _capsule_address(capsule):
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


def _scipy():
    """SciPy's BLAS through cython_blas; its bundled OpenBLAS (scipy.libs, in a wheel install)
    for the thread count and the description."""
    import scipy
    from scipy.linalg import cython_blas
    cap = cython_blas.__pyx_capi__
    found = glob.glob(os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)),
                                   "scipy.libs", "libscipy_openblas*.so"))
    path = found[0] if found else cython_blas.__file__
    lib = ctypes.CDLL(path) if found else None   # already loaded: the same handle
    return Provider("scipy", path, *(_capsule_address(cap[n]) for n in ("sgemm", "dgemm")),
                    lib)


def _openblas_wheel_path():
    try:
        files = importlib.metadata.files("scipy-openblas32") or ()
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name.startswith("libscipy_openblas") and ".so" in f.name:
            path = str(f.locate())
            return path if os.path.exists(path) else None
    return None


def _openblas():
    """The scipy-openblas32 wheel's library, opened privately by path (RTLD_LOCAL)."""
    path = _openblas_wheel_path()
    if path is None:
        raise ImportError("scipy-openblas32 is not installed")
    lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL)
    fns = [_address(_symbol(lib, "scipy_" + n + "_")) for n in ("sgemm", "dgemm")]
    if not all(fns):
        raise ImportError(f"{path} does not export scipy_sgemm_ and its kin")
    return Provider("openblas", path, *fns, lib)


def _onednn():
    """oneDNN's sgemm over the first BLAS provider that loads (ImportError without the
    extra)."""
    from . import onednn
    engine = onednn.load()
    base = next((p for p in map(_try, POOLS) if p is not None), None)
    if base is None:
        raise ImportError("no BLAS provider for oneDNN's float64 GEMM and thread count")
    return _OneDNNProvider(engine, base)


def loaded_providers():
    """The thread pools of the providers open in this process so far, each once (opens
    none)."""
    with _lock:
        pools = [p.pool for p in _cache.values() if p is not None]
    return tuple(dict.fromkeys(pools))


def available_providers():
    """Names of the GEMM providers that load here, e.g. ('openblas', 'scipy', 'onednn')."""
    return tuple(n for n in PROVIDERS if _try(n) is not None)


def _try(name):
    with _lock:
        if name not in _cache:
            try:
                _cache[name] = {"openblas": _openblas, "scipy": _scipy,
                                "onednn": _onednn}[name]()
            except (ImportError, OSError):
                _cache[name] = None
        return _cache[name]


def auto_name():
    """What "auto" is here: "onednn" on its AMX kernels, else "openblas", else "scipy"."""
    p = _try("onednn")
    if p is not None and p.architecture == AUTO_ONEDNN_ISA:
        return "onednn"
    return next((n for n in POOLS if _try(n) is not None), POOLS[-1])


def get_provider(name="auto"):
    """The Provider called `name` ("openblas", "scipy", "onednn"), or "auto" (`auto_name`).
    FASTMLP_GEMM (same values) sets the default."""
    if name == "auto":
        name = os.environ.get("FASTMLP_GEMM", "auto").strip() or "auto"
    if name == "auto":
        name = auto_name()
    if name not in PROVIDERS:
        raise ValueError(f"unknown GEMM provider {name!r}; choose from {PROVIDERS} or 'auto'")
    p = _try(name)
    if p is None and name == "onednn":
        from . import onednn
        onednn.load()   # raises the reason it does not load, naming the extra
    if p is None:
        raise ImportError(f"GEMM provider {name!r} is not available here"
                          + {"openblas": " (pip install scipy-openblas32)",
                             "onednn": ' (pip install "fastmlp[onednn]")'}.get(name, ""))
    return p


def gemm_pool():
    """(address of fm_gemm, blocks per large GEMM) of fastmlp's own GEMM threads
    (fastmlp.backends._pool: the caller and cpus - 1 workers take the blocks), or (0, 1)
    when the pool is not built.  The number of blocks depends on the machine, not on how many
    threads a step uses, so a step's result does not either."""
    try:
        from . import _pool
    except ImportError:
        return 0, 1
    return _pool.gemm_address(), _pool.workers() + 1
