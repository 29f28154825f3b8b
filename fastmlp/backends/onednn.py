"""oneDNN, the optional bf16 (and fp32) GEMM engine, opened at run time.

Design: `pip install "fastmlp[onednn]"` installs oneDNN's CPU library built on TBB
(`onednn-cpu-tbb`) with its two run-time libraries (`tbb`, and `intel-cmplr-lib-rt` for
libimf/libintlc).  Nothing is linked at build time: `load()` finds the libraries the wheels
installed (importlib.metadata), opens their dependencies by path, then libdnnl privately
(RTLD_LOCAL), and hands the addresses of its two row-major GEMMs, `dnnl_sgemm` and
`dnnl_gemm_bf16bf16f32`, to fastmlp's C side (csrc/pool.c `set_dnnl`), which returns
adapters with the Fortran BLAS signature the fused steps call (`OneDNN.sgemm`,
`OneDNN.gemm_bf16`).  oneDNN threads its GEMMs itself, on TBB's pool; while a training
steers the threads (fastmlp.threads) TBB is held to one thread (`hold_one_thread`, a TBB
`global_control` of max_allowed_parallelism 1, made through TBB's C++ ABI by ctypes), so
each block of fastmlp's threads is one single-threaded oneDNN call: the thread count the
user allows is honoured, and no TBB worker competes with fastmlp's for the cores.
Without the extra, `load()` raises ImportError naming it and nothing else changes.

bf16 is the upper half of a float32 (uint16 bits here); on a CPU without AVX512-BF16 or AMX
oneDNN emulates it: correct, but slower than fp32 (`cpu_bf16()`, `fastmlp info`).
"""
import ctypes
import importlib.metadata
import os
import threading

EXTRA = 'pip install "fastmlp[onednn]"'
# (distribution, file) in load order: each library's dependencies first
_LIBS = (("intel-cmplr-lib-rt", "libintlc.so.5"), ("intel-cmplr-lib-rt", "libimf.so"),
         ("tbb", "libtbb.so.12"), ("onednn-cpu-tbb", "libdnnl.so.3"))
# dnnl_cpu_isa_t values (oneDNN 3.x, include/oneapi/dnnl/dnnl_types.h), best first
_ISA = ((0x3ef, "avx512_core_amx"), (0xe7, "avx512_core_bf16"), (0x67, "avx512_core_vnni"),
        (0x27, "avx512_core"), (0x7, "avx2"), (0x3, "avx"), (0x1, "sse41"))

_lock = threading.Lock()
_loaded = None
# TBB's global_control ABI (oneTBB 2021+, tbb/global_control.h: d1::global_control and r1's
# create / destroy / global_control_active_value); parameter 0 is max_allowed_parallelism
_TBB_CREATE = "_ZN3tbb6detail2r16createERNS0_2d114global_controlE"
_TBB_DESTROY = "_ZN3tbb6detail2r17destroyERNS0_2d114global_controlE"
_TBB_ACTIVE = "_ZN3tbb6detail2r127global_control_active_valueEi"
_hold = {"count": 0, "control": None}


class _GlobalControl(ctypes.Structure):
    _fields_ = [("value", ctypes.c_size_t), ("reserved", ctypes.c_ssize_t),
                ("param", ctypes.c_int)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint),
                ("gpu_runtime", ctypes.c_uint)]


class OneDNN:
    """The opened library: Fortran-signature GEMM adapters (addresses) and what to print."""

    def __init__(self, path, sgemm, gemm_bf16, version, isa):
        self.name, self.path = "onednn", path
        self.sgemm, self.gemm_bf16 = sgemm, gemm_bf16
        self.version, self.isa = version, isa

    def describe(self):
        """'onednn 3.2.0 (avx512_core_bf16 kernels, TBB threads) .../libdnnl.so.3'."""
        return f"onednn {self.version} ({self.isa} kernels, TBB threads) {self.path}"

    def __repr__(self):
        return f"<fastmlp GEMM engine {self.describe()}>"


def _library(dist, filename):
    try:
        files = importlib.metadata.files(dist) or ()
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"{dist} is not installed ({EXTRA})") from None
    for f in files:
        if f.name == filename:
            path = os.path.realpath(f.locate())
            if os.path.exists(path):
                return path
    raise ImportError(f"{dist} does not provide {filename} ({EXTRA})")


def _open():
    from . import _pool
    paths = [_library(d, f) for d, f in _LIBS]
    libs = [ctypes.CDLL(p, mode=os.RTLD_LOCAL) for p in paths]
    dnnl, path = libs[-1], paths[-1]
    sgemm, bf16 = (ctypes.cast(getattr(dnnl, n), ctypes.c_void_p).value
                   for n in ("dnnl_sgemm", "dnnl_gemm_bf16bf16f32"))
    get_version = dnnl.dnnl_version
    get_version.restype = ctypes.POINTER(_Version)
    v = get_version().contents
    get_isa = dnnl.dnnl_get_effective_cpu_isa
    get_isa.restype = ctypes.c_int
    code = get_isa()
    isa = next((n for c, n in _ISA if code & c == c), hex(code))
    adapters = _pool.set_dnnl(sgemm, bf16)
    engine = OneDNN(path, adapters[0], adapters[1], f"{v.major}.{v.minor}.{v.patch}", isa)
    engine._libs = libs   # keep the handles open
    engine._tbb = _tbb_functions(libs[2])
    return engine


def _tbb_functions(tbb):
    """(create, destroy, active_value) of TBB's global_control, or None if not exported."""
    try:
        create, destroy, active = (getattr(tbb, n) for n in (_TBB_CREATE, _TBB_DESTROY,
                                                              _TBB_ACTIVE))
    except AttributeError:
        return None
    for f in (create, destroy):
        f.argtypes, f.restype = [ctypes.POINTER(_GlobalControl)], None
    active.argtypes, active.restype = [ctypes.c_int], ctypes.c_size_t
    return create, destroy, active


def loaded():
    """The OneDNN engine if this process has opened it, else None (opens nothing)."""
    engine = _loaded
    return None if engine is None or isinstance(engine, ImportError) else engine


def hold_one_thread():
    """Until the matching `release_one_thread`, TBB (and so oneDNN) runs every parallel
    region on its caller alone.  Counted: the first hold makes the control, the last release
    destroys it, TBB's own (or the user's) limit is in force again.  A no-op if oneDNN is
    not open or its TBB does not export global_control."""
    engine = loaded()
    if engine is None or engine._tbb is None:
        return
    with _lock:
        if _hold["count"] == 0:
            control = _GlobalControl(1, 0, 0)
            engine._tbb[0](ctypes.byref(control))
            _hold["control"] = control
        _hold["count"] += 1


def release_one_thread():
    """Ends one `hold_one_thread`."""
    engine = loaded()
    if engine is None or engine._tbb is None:
        return
    with _lock:
        if _hold["count"] == 0:
            return
        _hold["count"] -= 1
        if _hold["count"] == 0:
            engine._tbb[1](ctypes.byref(_hold["control"]))
            _hold["control"] = None


def tbb_threads():
    """TBB's max_allowed_parallelism in force now (None if oneDNN is not open)."""
    engine = loaded()
    if engine is None or engine._tbb is None:
        return None
    return int(engine._tbb[2](0))


def load():
    """The OneDNN engine (opened once per process); ImportError naming the extra if the
    libraries are missing or do not load."""
    global _loaded
    with _lock:
        if _loaded is None:
            try:
                _loaded = _open()
            except OSError as e:
                _loaded = ImportError(f"oneDNN did not load ({e}); {EXTRA}")
            except ImportError as e:
                _loaded = e
        if isinstance(_loaded, ImportError):
            raise ImportError(str(_loaded))
        return _loaded


def available():
    """True if oneDNN loads here."""
    try:
        load()
    except ImportError:
        return False
    return True


def cpu_bf16():
    """The CPU's bf16 instructions ('amx_bf16', 'avx512_bf16'; empty: oneDNN emulates bf16,
    correctly but slowly), from /proc/cpuinfo (Linux; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return tuple(x for x in ("amx_bf16", "avx512_bf16") if x in flags)
    except OSError:
        pass
    return ()
