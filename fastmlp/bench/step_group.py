"""The train-step group of `fastmlp bench`: every contender of one step case timed
interleaved against the GEMM floors (the fastest of SciPy's, NumPy's and the scipy-openblas32
OpenBLAS), the targets, the per-kernel breakdown and the activations against ReLU.

Timing: timing.py; cases: cases.py (fastmlp, floors), peers.py (PyTorch, scikit-learn).
"""
import time

import numpy as np

from . import cases as B
from . import peers
from .cases import COMPILED
from .timing import interleave, ratio, sequence, times, turn

# one floor per fp32 GEMM library found (cases.gemm_floor); ratios are to the fastest
FLOORS = {"scipy": "floor (scipy BLAS)", "numpy": "floor (np.matmul)",
          "openblas": "floor (openblas32)", "onednn": "floor (onednn sgemm)"}


FLOOR = "fastest floor"


STEPS_PER_CALL = 16   # the fused steps are timed as slices of an epoch (cases.fastmlp_steps)




PEERS = (("numpy _step", "vs_numpy"), ("torch", "vs_torch"), ("sklearn", "vs_sklearn"))


# (optimizer, N, H, compared with, limit), for the cython and numba `_step`, float32:
# "floor": step time / the fastest floor <= limit; "torch": torch time / step time >= limit.
TARGETS = (("sgd", 128, 256, "floor", 1.10), ("sgd", 32, 128, "floor", 1.40),
           ("sgd", 512, 1024, "floor", 1.05), ("adam", 128, 256, "floor", 1.20),
           ("adam", 32, 128, "floor", 1.60),
           ("sgd", 128, 256, "torch", 1.8), ("adam", 128, 256, "torch", 1.8),
           ("sgd", 32, 128, "torch", 2.5), ("adam", 32, 128, "torch", 2.5))


FULL_CASES = tuple((o, n, h) for o in ("sgd", "adam") for n, h in B.STEP_SHAPES)


QUICK_CASES = (("sgd", 32, 128), ("sgd", 128, 256), ("sgd", 512, 1024), ("adam", 32, 128),
               ("adam", 128, 256))


BREAKDOWN_CASES = (("sgd", 32, 128), ("sgd", 128, 256), ("adam", 128, 256))


def step_contenders(opt, n, h):
    """Thread-pool groups of (name, closure) for one step case, {name: steps per call} for
    those that take several, and {name: skip reason}.  The fused steps (`_step`) run as in
    `fit`: STEPS_PER_CALL steps under the Trainer's thread policy."""
    skipped, floors = {}, {}
    for lib, name in FLOORS.items():
        try:
            floors[lib] = [(name, B.gemm_floor(n, h, blas=lib))]
        except B.Unavailable as exc:
            skipped[name] = str(exc)
    # every floor in a group of its own: an OpenBLAS call on 2 threads leaves its worker
    # spinning for ~0.1 s, which takes the core from fastmlp's worker if a step follows
    fm = [(f"{b} _step", B.fastmlp_steps(b, opt, n, h, STEPS_PER_CALL)) for b in COMPILED]
    fm += [(f"{b} step()", B.fastmlp_step(b, opt, n, h, public=True)) for b in COMPILED]
    npy = [("numpy _step", B.fastmlp_step("numpy", opt, n, h))]
    groups = [fm, npy] + list(floors.values())
    per_call = {f"{b} _step": STEPS_PER_CALL for b in COMPILED}
    for name, build in (("sklearn", peers.sklearn_step), ("torch", peers.torch_step)):
        try:
            fn = build(opt, n, h)
        except B.Unavailable as exc:
            skipped[name] = str(exc)
            continue
        if name == "sklearn":
            npy.append((name, fn))
        else:
            groups.append([(name, fn)])
    return groups, per_call, skipped


def check_case(opt, n, h):
    """{contender: message} for each contender whose step differs from the reference's."""
    bad = {}
    for who in COMPILED + ("torch", "sklearn"):
        try:
            peers.check_step(who, opt, n, h)
        except B.Unavailable:
            pass
        except AssertionError as exc:
            bad[who] = " ".join(str(exc).split())[:300]
    return bad


def run_step(cases, a, say):
    results = []
    for opt, n, h in cases:
        mismatch = check_case(opt, n, h)
        groups, per_call, skipped = step_contenders(opt, n, h)
        say(f"  step {opt} N={n} H={h}: {sum(map(len, groups))} contenders, {a.repeat} rounds")
        best = interleave(groups, a.repeat, a.settle)
        for name, k in per_call.items():
            best[name] = best[name] / k   # seconds per step
        floors = [f for f in FLOORS.values() if f in best]
        fastest = min(floors, key=lambda f: np.median(best[f]))
        best[FLOOR] = best[fastest]
        flops, rows = B.step_flops(n, h), {}
        for name in best:
            med = float(np.median(best[name]))
            rows[name] = {"median_s": med, "gflops": flops / med / 1e9,
                          "x_floor": ratio(best, name, FLOOR)}
            rows[name].update({k: ratio(best, p, name) for p, k in PEERS if p in best})
        del rows[FLOOR]
        results.append({"optimizer": opt, "n": n, "h": h, "d": B.D, "c": B.C, "flops": flops,
                        "rounds": a.repeat, "contenders": rows, "skipped": skipped,
                        "mismatch": mismatch, "fastest_floor": fastest})
    return results


def evaluate_targets(step_results, torch_version):
    """One dict per target and compiled backend: status PASS, FAIL or SKIP, and a line."""
    out, by_case = [], {(r["optimizer"], r["n"], r["h"]): r for r in step_results}
    for opt, n, h, kind, limit in TARGETS:
        r = by_case.get((opt, n, h))
        for b in COMPILED:
            row = r["contenders"].get(f"{b} _step") if r else None
            what = f"{b:<7}{opt:<5}N={n:<4}H={h:<5}"
            t = {"backend": b, "optimizer": opt, "n": n, "h": h, "kind": kind, "limit": limit}
            if row is None or (kind == "torch" and "vs_torch" not in row):
                why = r["skipped"].get("torch", "not run") if r else "case not run (--quick?)"
                t.update(status="SKIP", line=f"SKIP  {what} vs {kind}: {why}")
            else:
                q1, v, q3 = row["x_floor" if kind == "floor" else "vs_torch"]
                ok = v <= limit if kind == "floor" else v >= limit
                t.update(value=v, iqr=(q1, q3), status="PASS" if ok else "FAIL")
                if kind == "floor":
                    got = (f"_step {v:.3f}× the fastest floor, {r['fastest_floor']} "
                           f"[{q1:.2f}-{q3:.2f}] (target ≤ {limit:.2f})")
                else:
                    got = (f"{v:.3f}× faster than torch {torch_version} [{q1:.2f}-{q3:.2f}] "
                           f"(target ≥ {limit:.1f})")
                t["line"] = f"{t['status']}  {what} {got}"
            out.append(t)
    return out


def run_breakdown(a, say):
    """Each kernel call of an unfused step timed in sequence (caches and BLAS threads as the
    previous call left them, as inside a step), beside the floor GEMMs and the fused `_step`
    (STEPS_PER_CALL steps a call under the thread policy, as fit runs it and as the step
    table times it; reported per step); the three blocks alternate for `--repeat` rounds, each after `--settle`
    seconds of sleep (the unfused calls and the floor run on OpenBLAS's threads, whose
    spinning slowed the fused step timed right after them up to 200x); medians in seconds."""
    out = []
    for opt, n, h in BREAKDOWN_CASES:
        for b in COMPILED:
            say(f"  breakdown {b} {opt} N={n} H={h}")
            parts = B.step_parts(b, opt, n, h)
            whole = B.fastmlp_steps(b, opt, n, h, STEPS_PER_CALL)
            blocks = {"parts": parts, "floor": B.floor_parts(n, h), "whole": {"_step": whole}}
            reps = max(5, int(0.02 / max(turn(whole, 3), 1e-6)))
            runs = {k: [] for k in blocks}
            for _ in range(max(a.repeat, 5)):
                for k, fns in blocks.items():
                    time.sleep(a.settle)
                    runs[k].append(sequence(fns, reps))
            med = {k: np.median(np.concatenate(v), axis=0).tolist() for k, v in runs.items()}
            out.append({"backend": b, "optimizer": opt, "n": n, "h": h,
                        "whole_s": med["whole"][0] / STEPS_PER_CALL, "parts_s": dict(zip(parts, med["parts"])),
                        "floor_s": dict(zip(blocks["floor"], med["floor"]))})
    return out


ACTIVATION_CASES = (("sgd", 128, 256), ("adam", 128, 256), ("sgd", 32, 128))


ACTIVATION_LIMIT = 1.15   # a tanh / logistic / identity step <= 1.15 x the ReLU step


def run_activations(a, say):
    """The fused step with each hidden activation against the same step with ReLU, float32,
    interleaved; ratios to the ReLU step."""
    out = []
    cases = ACTIVATION_CASES[:2] if a.quick else ACTIVATION_CASES
    for opt, n, h in cases:
        for b in COMPILED:
            say(f"  activations {b} {opt} N={n} H={h}")
            group = [(act, B.fastmlp_step(b, opt, n, h, activation=act))
                     for act in ("relu", "tanh", "logistic", "identity")]
            best = interleave([group], a.repeat, a.settle)
            rows = {act: ratio(best, act, "relu") for act, _ in group[1:]}
            out.append({"backend": b, "optimizer": opt, "n": n, "h": h,
                        "relu_us": float(np.median(best["relu"])) * 1e6, "x_relu": rows,
                        "status": "PASS" if all(r[1] <= ACTIVATION_LIMIT for r in rows.values())
                        else "FAIL"})
    return out


def format_activations(acts):
    lines = []
    for r in acts:
        cells = "  ".join(f"{k} {v[1]:.3f} [{v[0]:.2f}-{v[2]:.2f}]" for k, v in r["x_relu"].items())
        lines.append(f"{r['status']}  {r['backend']:<7}{r['optimizer']:<5}N={r['n']:<4}"
                     f"H={r['h']:<5}relu {r['relu_us']:.1f} µs; × relu: {cells} "
                     f"(target ≤ {ACTIVATION_LIMIT:.2f})")
    return "\n".join(lines)


def format_step(results):
    lines = [f"{'case':<18}{'contender':<20}{'µs/step':>9}  {'× floor [IQR]':<19}"
             f"{'vs numpy':>10}{'vs torch':>10}{'vs sklearn':>11}{'GFLOP/s':>9}"]
    for r in results:
        case = f"{r['optimizer']} N={r['n']} H={r['h']}"
        for name, row in r["contenders"].items():
            q1, m, q3 = row["x_floor"]
            xf = f"{m:5.2f} [{q1:.2f}-{q3:.2f}]"
            peers = "".join(f"{times(row.get(k)):>{w}}" for (_, k), w in zip(PEERS, (10, 10, 11)))
            lines.append(f"{case:<18}{name:<20}{row['median_s'] * 1e6:9.1f}  {xf:<19}{peers}"
                         f"{row['gflops']:9.1f}")
            case = ""
        lines += [f"{'':<18}{name:<20}skipped: {why}" for name, why in r["skipped"].items()]
    return "\n".join(lines)


def format_breakdown(bd):
    lines = []
    for r in bd:
        parts, floor, whole = r["parts_s"], r["floor_s"], r["whole_s"]
        lines.append(f"{r['backend']} {r['optimizer']} N={r['n']} H={r['h']}: fused _step "
                     f"{whole * 1e6:.1f} µs; the same step as separate kernel calls "
                     f"{sum(parts.values()) * 1e6:.1f} µs; floor GEMMs "
                     f"{sum(floor.values()) * 1e6:.1f} µs")
        lines.append(f"    {'kernel call':<22}{'time':>9}{'its GEMMs':>11}{'excess':>9}  (µs)")
        rows = [(k, v, sum(floor[x] for x in B.GEMMS_IN.get(k, ()))) for k, v in parts.items()]
        lines += [f"    {k:<22}{v * 1e6:9.1f}{g * 1e6:11.1f}{(v - g) * 1e6:9.1f}"
                  for k, v, g in rows]
    return "\n".join(lines)
