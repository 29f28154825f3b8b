"""The thread policy of training: how many threads the fused step's large GEMMs may use.

Design (docs/benchmarks.md has the measurements behind it): OpenBLAS's worker threads spin
for ~100 ms after every call and a threaded GEMM waits for all of its threads, so two
trainings on one 2-core machine that both use 2 OpenBLAS threads keep four threads busy on
two cores and every GEMM waits for a descheduled partner: the step slows 10-150x.  So the
fused step does not use OpenBLAS's threads at all.  It runs the provider's GEMM on one
OpenBLAS thread and cuts each large GEMM into blocks that its caller and fastmlp's own
workers (csrc/pool.c) take from a shared counter: a worker that is not running simply takes
none, and the result is the same whoever computed which block.

* A fit's limit is the user's: the smallest thread count of the process's BLAS pools when it
  starts -- what OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, threadpoolctl limits, joblib's and
  Dask's worker settings leave -- and never more than the CPUs the process may run on
  (`os.sched_getaffinity`).
* `threads="auto"` (the default) lets fastmlp's workers help only while the machine has the
  cores free: every `recheck` seconds it counts the runnable threads of other processes
  (/proc/loadavg's runnable count less this process's own, /proc/self/task) and gives a
  thread back for each one, down to 1 (the caller alone).  An int asks for that many (still
  within the limit); 1 is always safe.
* GEMMs below contract.MIN_GEMM_FLOPS are one call on the caller's thread whatever the cap.
* While any training steers it, the provider's pool is set to 1 thread (a pool's count is
  one per process, and OpenBLAS's results depend on it); its own count is put back when the
  last epoch or step ends, so the process's BLAS state is the user's again after a fit
  (NumPy's pool is never touched).  The "onednn" provider's pool is its BLAS base's; while
  any training steers, oneDNN's TBB pool is held to 1 thread as well (a TBB global_control,
  destroyed when the last one ends), for the fp32 GEMMs of "onednn" and the bf16 ones alike.
"""
import os
import threading
import time

from .backends import blas, onednn

RECHECK_SECONDS = 0.02
# provider -> [its pool's count before the first policy began, policies steering it now]
_steering = {}
_steering_lock = threading.Lock()


def _cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_loadavg_fd = None


def _running():
    """Runnable threads on the machine now (the 4th field of /proc/loadavg), or None.  The
    file stays open and is read with pread: no buffer is allocated per check."""
    global _loadavg_fd
    try:
        if _loadavg_fd is None:
            _loadavg_fd = os.open("/proc/loadavg", os.O_RDONLY)
        return int(os.pread(_loadavg_fd, 128, 0).split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _own_running():
    """Runnable threads of this process now (state R in /proc/self/task/*/stat): the caller,
    fastmlp's spinning workers, BLAS threads still spinning after a call; 1 if unknown."""
    n = 0
    try:
        # listdir, os.open and os.read: the least a check can allocate (no scandir entries,
        # no file objects with their buffers), since an epoch's steps run around it
        for t in os.listdir("/proc/self/task"):
            try:
                fd = os.open("/proc/self/task/" + t + "/stat", os.O_RDONLY)
                try:
                    stat = os.read(fd, 512)
                finally:
                    os.close(fd)
            except OSError:
                continue   # the thread ended
            # "pid (comm) S ...": the state follows the last ')'
            i = stat.rindex(b")")
            if stat[i + 2: i + 3] == b"R":
                n += 1
    except (OSError, ValueError):
        return 1
    return max(n, 1)


def others_running():
    """Runnable threads of other processes now (None if unknown): what 'auto' gives cores
    back to.  This process's own are counted before and after the machine's total and the
    larger count is taken, so an own thread that stops spinning in between (a BLAS thread
    going to sleep) is not mistaken for another process."""
    before = _own_running()
    total = _running()
    return None if total is None else max(0, total - max(before, _own_running()))


def check_threads(threads):
    """'auto' or an int >= 1."""
    if threads == "auto":
        return threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be 'auto' or an integer >= 1, got {threads!r}")
    return threads


class ThreadPolicy:
    """Steers one provider's pool during training: `begin()` reads the user's limit,
    `cap()` is the thread count the step may use now, `end()` restores the pool."""

    def __init__(self, provider, threads="auto", recheck=RECHECK_SECONDS):
        self.provider, self.threads = provider, check_threads(threads)
        self.recheck = recheck
        self.saved = None
        self._cap, self._checked = 1, -1.0
        self._last_others = 0

    def limit(self):
        """The user's limit now: the smallest count of the process's BLAS pools, and the
        CPUs this process may use."""
        for name in blas.POOLS:   # opens each once, so its count is seen
            blas._try(name)
        with _steering_lock:   # a pool steered now runs 1 thread: its user's count is saved
            counts = [_steering[p][0] if p in _steering else p.threads()
                      for p in blas.loaded_providers()] or [1]
        return max(1, min(min(counts), _cpus()))

    def begin(self):
        """Start steering: the provider's pool runs 1 thread until the last steering policy
        of the process ends (the pool's count is one per process, and OpenBLAS's results
        depend on it); returns the cap for fastmlp's threads."""
        limit = self.limit()
        pool = self.provider.pool
        with _steering_lock:
            if not _steering:
                onednn.hold_one_thread()
            held = _steering.get(pool)
            if held is None:
                held = _steering[pool] = [pool.threads(), 0]
                pool.set_threads(1)
            held[1] += 1
            self.saved = held
        self._max = limit if self.threads == "auto" else min(self.threads, limit)
        # the last check's cap stands for `recheck` s across epochs too (a check costs ~40 µs)
        self._cap = self._max if self._checked < 0 else max(1, min(self._cap, self._max))
        return self.cap()

    def cap(self, force=False):
        """The thread cap for the next steps (re-checked at most every `recheck` s)."""
        if self.threads != "auto" or self._max <= 1:
            return self._max
        now = time.perf_counter()
        if force or now - self._checked >= self.recheck:
            self._checked = now
            others = others_running()
            if others is not None:
                # give threads back only when two checks in a row see the others (a process
                # that ran for an instant is not contention); take them again at once
                others, self._last_others = min(others, self._last_others), others
                self._cap = max(1, min(self._max, _cpus() - others))
        return self._cap

    def end(self):
        """Stop steering; the last policy to end gives the pool its count back."""
        if self.saved is None:
            return
        with _steering_lock:
            held = self.saved
            held[1] -= 1
            if held[1] == 0:
                pool = self.provider.pool
                pool.set_threads(held[0])
                del _steering[pool]
                if not _steering:
                    onednn.release_one_thread()
        self.saved = None
