"""Timing for the benchmark report: contenders interleaved round by round, ratios taken in the
same round, and what else ran on the machine meanwhile.

Design (docs/benchmarks.md, Methodology): contenders are grouped by the BLAS thread pool they
use.  A round visits every group, sleeping `settle` s before each so the previous pool's
spinning workers go idle; in a group each contender takes a turn: one untimed call, then
timed calls filling ~5 ms.  A contender's value in a round is the best call of its turn; its
time is the median over rounds, and a ratio A/B is the median over rounds of A's value / B's
value in the same round.
"""
import math
import os
import platform
import time

import numpy as np


def turn(fn, inner):
    """One untimed call (refills caches, wakes this pool's threads), then the best of
    `inner` timed calls, in seconds."""
    fn()
    best, clock = math.inf, time.perf_counter
    for _ in range(inner):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def interleave(groups, rounds, settle, turn_seconds=0.005):
    """Time contenders round-robin.

    Parameters
    ----------
    groups : list of lists of (name, zero-argument callable); one list per thread pool
    rounds : int
    settle : float, seconds slept before each group's turns when there are several groups
    turn_seconds : float, about how long each turn's timed calls take (3 to 50 calls)

    Returns
    -------
    dict name -> array of shape (rounds,): the best call of each round's turn, in seconds.
    The group order and the order inside a group rotate every round.
    """
    inner = {name: int(min(50, max(3, math.ceil(turn_seconds / max(turn(fn, 2), 1e-7)))))
             for group in groups for name, fn in group}
    best = {name: np.empty(rounds) for name in inner}
    for r in range(rounds):
        for g in range(len(groups)):
            group = groups[(g + r) % len(groups)]
            if settle and len(groups) > 1:
                time.sleep(settle)
            for k in range(len(group)):
                name, fn = group[(k + r) % len(group)]
                best[name][r] = turn(fn, inner[name])
    return best


def ratio(best, a, b):
    """(q1, median, q3) over rounds of best[a] / best[b]."""
    return tuple(float(x) for x in np.percentile(best[a] / best[b], [25, 50, 75]))


def sequence(parts, reps):
    """Call parts (name -> fn) in order `reps` times, timing each call: (reps, len(parts))."""
    fns, clock = list(parts.values()), time.perf_counter
    t = np.empty((reps, len(fns)))
    for r in range(reps):
        for i, fn in enumerate(fns):
            t0 = clock()
            fn()
            t[r, i] = clock() - t0
    return t


def busy_seconds():
    """CPU seconds used by all processes, and stolen by the hypervisor (Linux /proc/stat:
    every field but idle and iowait); None elsewhere."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def environment():
    """Versions, threads and BLAS libraries of this process, as a dict."""
    import numba
    import scipy
    import fastmlp
    env = {"fastmlp": fastmlp.__version__, "fastmlp_path": os.path.dirname(fastmlp.__file__),
           "python": platform.python_version(), "numpy": np.__version__,
           "scipy": scipy.__version__, "numba": numba.__version__, "cpus": os.cpu_count(),
           "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    for mod in ("torch", "sklearn"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    if env["torch"]:
        env["torch_threads"] = __import__("torch").get_num_threads()
    try:
        from threadpoolctl import threadpool_info
        env["threadpools"] = [f"{p.get('internal_api')} {p.get('version')}, "
                              f"{p.get('num_threads')} threads ({os.path.basename(p['filepath'])})"
                              for p in threadpool_info()]
    except ImportError:
        env["threadpools"] = []
    return env


def times(r):
    """A (q1, median, q3) ratio as its median, e.g. '  2.41×' ('' for None)."""
    return f"{r[1]:6.2f}×" if r else ""
