"""oneDNN, the optional bf16 (and fp32) GEMM engine, opened at run time.

Design: `pip install "fastmlp[onednn]"` installs oneDNN's CPU library built on TBB
(`onednn-cpu-tbb`) with its two run-time libraries (`tbb`, and `intel-cmplr-lib-rt` for
libimf/libintlc).  Nothing is linked at build time: `load()` finds the libraries the wheels
installed (importlib.metadata), opens their dependencies by path, then libdnnl privately
(RTLD_LOCAL), and hands the addresses of its two row-major GEMMs, `dnnl_sgemm` and
`dnnl_gemm_bf16bf16f32`, to fastmlp's C side (csrc/pool.c `set_dnnl`), which returns
adapters with the Fortran BLAS signature the fused steps call (`OneDNN.sgemm`,
`OneDNN.gemm_bf16`).  oneDNN threads its GEMMs itself, on TBB's pool.
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
    return engine


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
