"""The benchmark report: `fastmlp bench [--quick] [--json PATH] [--plot PATH] [--repeat K]`
(also `python -m fastmlp.bench.report`).

Design: one run checks every contender of a training step against the NumPy reference, times
them interleaved (fastmlp's compiled backends, the GEMM floor, the NumPy reference, PyTorch,
scikit-learn), does the same for inference (`predict_proba` on 1 and 10 000 rows, against
scikit-learn, PyTorch and onnxruntime: inference.py), trains the time-to-accuracy recipe with
each, and prints ratios measured in that same run: absolute times on a shared machine drift,
ratios taken round by round do not.

Timing: timing.py (docs/benchmarks.md, Methodology).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from . import cases as B
from . import contention as CT
from . import crossover as XO
from . import inference as INF
from . import peers, tta
from .timing import busy_seconds, environment, interleave, ratio, sequence, turn

# one floor per fp32 GEMM library found (cases.gemm_floor); ratios are to the fastest
FLOORS = {"scipy": "floor (scipy BLAS)", "numpy": "floor (np.matmul)",
          "openblas": "floor (openblas32)"}
FLOOR = "fastest floor"
STEPS_PER_CALL = 16   # the fused steps are timed as slices of an epoch (cases.fastmlp_steps)
COMPILED = ("cython", "numba")
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


def parse_args(argv):
    p = argparse.ArgumentParser(prog="fastmlp bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer rounds, no adam N=512 case, digits only for time to accuracy")
    p.add_argument("--repeat", type=int, metavar="K",
                   help="rounds of the interleaved step timing (default 15, quick 5)")
    p.add_argument("--json", metavar="PATH", help="write every result as JSON")
    p.add_argument("--plot", metavar="PATH", help="bar chart (PNG, PDF, SVG) via matplotlib")
    p.add_argument("--breakdown", action="store_true",
                   help="time each kernel call of the step beside its floor GEMMs")
    p.add_argument("--no-tta", action="store_true", help="skip time to accuracy")
    p.add_argument("--no-inference", action="store_true",
                   help="skip predict_proba latency and throughput against the peers")
    p.add_argument("--no-estimator", action="store_true",
                   help="skip MLPClassifier.fit against Trainer.fit")
    p.add_argument("--no-activations", action="store_true",
                   help="skip the fused step's activations against ReLU")
    p.add_argument("--no-sparse", action="store_true",
                   help="skip the TF-IDF-like sparse problem against scikit-learn")
    p.add_argument("--no-crossover", action="store_true",
                   help="skip the GEMM sizes at which fastmlp's second thread pays")
    p.add_argument("--no-contention", action="store_true",
                   help="skip 2 and 4 trainings at once (fastmlp, scikit-learn, PyTorch)")
    p.add_argument("--contention-epochs", type=int, metavar="E",
                   help="epochs of each digits fit there (default 200, quick 50)")
    p.add_argument("--settle", type=float, default=0.15, metavar="S",
                   help="seconds to sleep before switching thread pools (default 0.15)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target FAILs")
    a = p.parse_args(argv)
    if a.repeat is None:
        a.repeat = 5 if a.quick else 15
    if a.contention_epochs is None:
        a.contention_epochs = 50 if a.quick else CT.CASE["epochs"]
    if a.repeat < 1 or not a.settle >= 0 or a.contention_epochs < 1:
        p.error("--repeat and --contention-epochs must be >= 1 and --settle >= 0")
    for path in (a.json, a.plot):   # fail now, not after minutes of timing
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            p.error(f"cannot write {path!r}: no such directory")
    return a


# --------------------------------------------------------------------------- timing


# --------------------------------------------------------------------------- train step

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
    timed the same way; the three blocks alternate for `--repeat` rounds; medians in seconds."""
    out = []
    for opt, n, h in BREAKDOWN_CASES:
        for b in COMPILED:
            say(f"  breakdown {b} {opt} N={n} H={h}")
            parts, whole = B.step_parts(b, opt, n, h)
            blocks = {"parts": parts, "floor": B.floor_parts(n, h), "whole": {"_step": whole}}
            reps = max(5, int(0.02 / max(turn(whole, 3), 1e-6)))
            runs = {k: [] for k in blocks}
            for _ in range(max(a.repeat, 5)):
                for k, fns in blocks.items():
                    runs[k].append(sequence(fns, reps))
            med = {k: np.median(np.concatenate(v), axis=0).tolist() for k, v in runs.items()}
            out.append({"backend": b, "optimizer": opt, "n": n, "h": h,
                        "whole_s": med["whole"][0], "parts_s": dict(zip(parts, med["parts"])),
                        "floor_s": dict(zip(blocks["floor"], med["floor"]))})
    return out


def run_tta(a, say):
    plan = [("digits", tta.TTA_EPOCHS["digits"])]
    if not a.quick:
        plan.insert(0, ("fashion-mnist", tta.TTA_EPOCHS["fashion-mnist"]))
    out = []
    for name, epochs in plan:
        try:
            data = tta.dataset(name)
        except B.Unavailable as exc:
            out.append({"dataset": name, "skipped": str(exc)})
            continue
        runs = {}
        for c in COMPILED + ("torch", "sklearn"):
            say(f"  time to accuracy {name} {epochs} epochs: {c}")
            time.sleep(a.settle)
            try:
                runs[c] = tta.time_to_accuracy(c, data, epochs)
            except B.Unavailable as exc:
                runs[c] = {"skipped": str(exc)}
        out.append({"dataset": name, "epochs": epochs, "n_train": int(data[0].shape[0]),
                    "recipe": dict(tta.RECIPE), "runs": runs})
    return out


# (rows, peer, limit): single-row latency <= onnxruntime's (the peer's time / fastmlp's >= 1),
# 10 000-row throughput >= 1.5x scikit-learn's, for the cython and numba backends
INFERENCE_TARGETS = ((1, INF.ORT_NAME, 1.0), (10_000, "sklearn", 1.5))
INF_PEERS = ("sklearn", "torch", INF.ORT_NAME)


def run_inference(a, say):
    """predict_proba of each contender on 1 and 10 000 rows, checked, then interleaved."""
    out = []
    for rows in INF.ROWS:
        groups, skipped = INF.contenders(rows)
        mismatch = INF.check(groups, rows)
        say(f"  inference {rows} rows: {sum(map(len, groups))} contenders, {a.repeat} rounds")
        best = interleave(groups, a.repeat, a.settle)
        table = {}
        for name in best:
            med = float(np.median(best[name]))
            table[name] = {"median_s": med, "rows_per_s": rows / med,
                           **{f"vs {p}": ratio(best, p, name) for p in INF_PEERS if p in best}}
        out.append({"rows": rows, "contenders": table, "skipped": skipped,
                    "mismatch": mismatch, "rounds": a.repeat})
    return out


def evaluate_inference(inf):
    """PASS/FAIL/SKIP per INFERENCE_TARGETS and compiled backend."""
    out, by_rows = [], {r["rows"]: r for r in inf}
    for rows, peer, limit in INFERENCE_TARGETS:
        r = by_rows.get(rows)
        for b in COMPILED:
            row = r["contenders"].get(f"fastmlp {b}") if r else None
            what = f"{b:<7}{rows:>6} row{'s' if rows > 1 else ' '}"
            t = {"backend": b, "rows": rows, "peer": peer, "limit": limit}
            if row is None or f"vs {peer}" not in row:
                why = r["skipped"].get(peer, "not run") if r else "not run"
                t.update(status="SKIP", line=f"SKIP  {what} vs {peer}: {why}")
            else:
                q1, v, q3 = row[f"vs {peer}"]
                t.update(value=v, status="PASS" if v >= limit else "FAIL")
                t["line"] = (f"{t['status']}  {what} {row['median_s'] * 1e6:.1f} µs: {peer}'s "
                             f"time ÷ fastmlp's = {v:.2f}× [{q1:.2f}-{q3:.2f}] "
                             f"(target ≥ {limit:.1f})")
            out.append(t)
    return out


def format_inference(inf):
    lines = [f"{'rows':>6}  {'contender':<22}{'µs/call':>10}{'rows/s':>12}"
             + "".join(f"{'vs ' + p:>17}" for p in INF_PEERS)]
    for r in inf:
        head = f"{r['rows']:>6}  "
        for name, row in r["contenders"].items():
            vs = "".join(f"{_x(row.get('vs ' + p)):>17}" for p in INF_PEERS)
            lines.append(f"{head}{name:<22}{row['median_s'] * 1e6:10.1f}"
                         f"{row['rows_per_s']:12.0f}{vs}")
            head = " " * 8
        lines += [f"{'':>8}{name:<22}skipped: {why}" for name, why in r["skipped"].items()]
    return "\n".join(lines)


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


def run_sparse(a, say):
    """fastmlp.MLPClassifier against scikit-learn's on a TF-IDF-like sparse problem
    (cases.SPARSE_CASE), interleaved fits; seconds per epoch and the speed-up."""
    out = []
    for b in COMPILED:
        say(f"  sparse input {b}")
        try:
            fits = B.sparse_fits(b, epochs=1 if a.quick else B.SPARSE_CASE["epochs"])
        except B.Unavailable as exc:
            out.append({"backend": b, "skipped": str(exc)})
            continue
        epochs = fits["epochs"]
        best = interleave([[("fastmlp", fits["fastmlp"]), ("sklearn", fits["sklearn"])]],
                          2 if a.quick else 3, a.settle, turn_seconds=0.0)
        X, y = fits["data"]
        out.append({"backend": b, "epochs": epochs, "nnz": fits["nnz"], "shape": X.shape,
                    "s_per_epoch": {k: float(np.median(v)) / epochs for k, v in best.items()},
                    "x_sklearn": ratio(best, "sklearn", "fastmlp"),
                    "train_accuracy": float(fits["model"].score(X, y))})
    return out


def format_sparse(rows):
    lines = []
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['backend']:<7}skipped: {r['skipped']}")
            continue
        q1, v, q3 = r["x_sklearn"]
        t = r["s_per_epoch"]
        lines.append(f"{r['backend']:<7}fastmlp {t['fastmlp']:.2f} s/epoch, sklearn "
                     f"{t['sklearn']:.2f} s/epoch: {v:.2f}× faster [{q1:.2f}-{q3:.2f}] "
                     f"(train accuracy {r['train_accuracy']:.3f})")
    return "\n".join(lines)


ESTIMATOR_LIMIT = 1.05   # MLPClassifier.fit per step <= 1.05 x Trainer.fit per step


def run_estimator(a, say):
    """MLPClassifier.fit against Trainer.fit on the same data, net and optimizer (digits,
    64-100-10, Adam, batch 200, 200 epochs), interleaved; per-step times and their ratio."""
    out = []
    for b in COMPILED:
        say(f"  estimator overhead {b}")
        fits = B.estimator_vs_trainer(b)
        steps = fits.pop("steps")
        best = interleave([list(fits.items())], max(3, a.repeat // 3), a.settle,
                          turn_seconds=0.0)
        q1, v, q3 = ratio(best, "MLPClassifier.fit", "Trainer.fit")
        out.append({"backend": b, "steps": steps, "ratio": (q1, v, q3),
                    "us_per_step": {k: float(np.median(t)) / steps * 1e6
                                    for k, t in best.items()},
                    "status": "PASS" if v <= ESTIMATOR_LIMIT else "FAIL"})
    return out


def format_estimator(est):
    lines = []
    for r in est:
        us = r["us_per_step"]
        q1, v, q3 = r["ratio"]
        lines.append(f"{r['status']}  {r['backend']:<7}MLPClassifier.fit {us['MLPClassifier.fit']:.1f} "
                     f"µs/step, Trainer.fit {us['Trainer.fit']:.1f} µs/step ({r['steps']} steps): "
                     f"{v:.3f}× [{q1:.2f}-{q3:.2f}] (target ≤ {ESTIMATOR_LIMIT:.2f})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- output

def _x(r):
    return f"{r[1]:6.2f}×" if r else ""


def format_step(results):
    lines = [f"{'case':<18}{'contender':<20}{'µs/step':>9}  {'× floor [IQR]':<19}"
             f"{'vs numpy':>10}{'vs torch':>10}{'vs sklearn':>11}{'GFLOP/s':>9}"]
    for r in results:
        case = f"{r['optimizer']} N={r['n']} H={r['h']}"
        for name, row in r["contenders"].items():
            q1, m, q3 = row["x_floor"]
            xf = f"{m:5.2f} [{q1:.2f}-{q3:.2f}]"
            peers = "".join(f"{_x(row.get(k)):>{w}}" for (_, k), w in zip(PEERS, (10, 10, 11)))
            lines.append(f"{case:<18}{name:<20}{row['median_s'] * 1e6:9.1f}  {xf:<19}{peers}"
                         f"{row['gflops']:9.1f}")
            case = ""
        lines += [f"{'':<18}{name:<20}skipped: {why}" for name, why in r["skipped"].items()]
    return "\n".join(lines)


def format_tta(tta):
    lines = [f"{'dataset':<15}{'epochs':>6}  {'contender':<10}{'seconds':>9}{'test acc':>10}"
             f"{'vs torch':>10}{'vs sklearn':>11}"]
    for d in tta:
        head = f"{d['dataset']:<15}{d.get('epochs', ''):>6}  "
        for c, r in d.get("runs", {"": d}).items():
            if "skipped" in r:
                lines.append(f"{head}{c:<10}skipped: {r['skipped']}")
                continue
            vs = [f"{d['runs'][p]['seconds'] / r['seconds']:.2f}×"
                  if "seconds" in d["runs"].get(p, {}) else "" for p in ("torch", "sklearn")]
            lines.append(f"{head}{c:<10}{r['seconds']:9.2f}{r['accuracy']:10.4f}"
                         f"{vs[0]:>10}{vs[1]:>11}")
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


def plot(path, step, tta):
    """Bars of step time ÷ floor per case and contender; time to accuracy as speed-up over
    PyTorch per dataset and contender."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), width_ratios=(3, 1))
    names = [k for k in step[0]["contenders"] if k != FLOOR] if step else []
    width, x = 0.8 / max(1, len(names)), np.arange(len(step))
    for i, name in enumerate(names):
        ys = [r["contenders"].get(name, {}).get("x_floor", (0, np.nan, 0))[1] for r in step]
        ax1.bar(x + i * width, ys, width, label=name)
    ax1.axhline(1.0, color="k", lw=0.8)
    ax1.set_yscale("log")
    ax1.set_xticks(x + 0.4 - width / 2, [f"{r['optimizer']}\nN={r['n']} H={r['h']}" for r in step])
    ax1.set_ylabel("step time ÷ GEMM floor (log scale)")
    ax1.legend(fontsize=7, ncol=2)
    runs = [(f"{d['dataset']} {c} (acc {r['accuracy']:.3f})",
             d["runs"]["torch"]["seconds"] / r["seconds"])
            for d in tta if "seconds" in d.get("runs", {}).get("torch", {})
            for c, r in d["runs"].items() if "seconds" in r]
    if runs:
        ax2.barh(*zip(*runs))
        ax2.axvline(1.0, color="k", lw=0.8)
    ax2.set_xlabel("time to accuracy: speed-up over PyTorch")
    ax2.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    """Run the report.

    Parameters
    ----------
    argv : list of str or None (sys.argv[1:])

    Returns
    -------
    int exit code: 1 when a contender's step does not match the reference, or with --strict
    when a target FAILs; 2 for a usage error; else 0 (timing alone never fails a run).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        a = parse_args(argv[1:] if argv[:1] == ["--"] else argv)   # `fastmlp bench -- ...`
    except SystemExit as exc:
        return exc.code or 0
    t0, busy0, own0 = time.perf_counter(), busy_seconds(), time.process_time()

    def say(msg):
        print(msg, file=sys.stderr, flush=True)
    env = environment()
    print(f"fastmlp {env['fastmlp']} ({env['fastmlp_path']}) benchmark report, "
          f"{'quick' if a.quick else 'full'}; {env['cpus']} CPUs, load average {env['loadavg']}")
    print(f"numpy {env['numpy']}, scipy {env['scipy']}, numba {env['numba']}, torch "
          f"{env['torch']} ({env.get('torch_threads')} threads), sklearn {env['sklearn']}")
    print("".join(f"  {pool}\n" for pool in env["threadpools"]), end="")
    libs = B.floor_libraries()
    print("GEMM floors (each library with its own thread count):")
    print("".join(f"  {FLOORS[k]}: {v}\n" for k, v in libs.items()), end="")
    forced = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ]
    if forced:
        print(f"warning: {' and '.join(forced)} set: OpenBLAS runs forced kernels, not what "
              "users get; for figures run `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "
              "fastmlp bench`")
    step = run_step(QUICK_CASES if a.quick else FULL_CASES, a, say)
    mismatches = [f"MISMATCH {r['optimizer']} N={r['n']} H={r['h']} {who}: {msg}"
                  for r in step for who, msg in r["mismatch"].items()]
    targets = evaluate_targets(step, env["torch"])
    bd = run_breakdown(a, say) if a.breakdown else []
    inf = [] if a.no_inference else run_inference(a, say)
    mismatches += [f"MISMATCH inference {r['rows']} rows {who}: {msg}"
                   for r in inf for who, msg in r["mismatch"].items()]
    inf_targets = evaluate_inference(inf)
    acts = [] if a.no_activations else run_activations(a, say)
    est = [] if a.no_estimator else run_estimator(a, say)
    sparse = [] if a.no_sparse else run_sparse(a, say)
    ttas = [] if a.no_tta else run_tta(a, say)
    xo = [] if a.no_crossover else XO.crossover(rounds=max(5, a.repeat), say=say)
    ct = {} if a.no_contention else CT.contention(epochs=a.contention_epochs,
                                                  solo_runs=2 if a.quick else 3, say=say)
    ct_targets = CT.evaluate(ct) if ct else []
    seconds, busy = time.perf_counter() - t0, busy_seconds()
    foreign = None if busy is None or busy0 is None else \
        max(0.0, (busy - busy0 - (time.process_time() - own0)) / seconds)
    print(f"\nTrain step, float32, 784-H-10.  µs/step: median over {a.repeat} rounds of each "
          "turn's best call.  Ratios: median [IQR] over rounds; 'vs X' = X's time ÷ this "
          "row's.  _step: batch in the workspace, no validation; step(): the public call.  "
          f"Timed at lr={B.STEP_LR:g} (see docs/benchmarks.md).")
    print(format_step(step))
    print("\n".join(mismatches) if mismatches else
          "Every contender's step was first checked against the NumPy reference: all match.")
    print("\nTargets\n" + "\n".join(t["line"] for t in targets))
    if bd:
        print("\nBreakdown: the fused _step beside the same step as separate kernel calls, each "
              "timed in sequence, medians; 'its GEMMs' = "
              "the floor's products inside that call, timed the same way")
        print(format_breakdown(bd))
    if inf:
        print(f"\nInference: predict_proba of a 784-{INF.H}-10 float32 net, same weights "
              f"everywhere (onnxruntime runs MLP.to_onnx's graph), each checked against the "
              f"NumPy reference first.  µs/call: median over {inf[0]['rounds']} rounds of "
              f"each turn's best call; 'vs X' = X's time ÷ this row's")
        print(format_inference(inf))
        print("\n".join(t["line"] for t in inf_targets))
    if acts:
        print("\nActivations: the fused step (784-H-10, float32) with each hidden activation, "
              "÷ the same step with ReLU in the same round; median [IQR]")
        print(format_activations(acts))
    if est:
        print("\nEstimator overhead: MLPClassifier.fit against Trainer.fit, digits 64-100-10, "
              "Adam, batch 200, 200 epochs, float32; per-step time, ratio median [IQR] over "
              "interleaved rounds")
        print(format_estimator(est))
    if sparse:
        c = B.SPARSE_CASE
        print(f"\nSparse input: MLPClassifier on {c['rows']} x {c['features']} CSR at "
              f"{c['density']:.1%} (TF-IDF-like), {c['hidden']} hidden units, Adam, batch 200, "
              "float32, the same X for both; interleaved fits, median over rounds")
        print(format_sparse(sparse))
    if ttas:
        print(f"\nTime to accuracy: D-{tta.RECIPE['hidden']}-10, Adam lr {tta.RECIPE['lr']:g}, "
              f"batch {tta.RECIPE['batch_size']}, seed 0; training wall time, one run each")
        print(format_tta(ttas))
    if xo:
        from ..backends.contract import MIN_GEMM_FLOPS
        print("\nCrossover: one float32 GEMM through fastmlp's pool, the caller alone against "
              "the caller and a worker (the provider's own pool on 1 thread, as in training); "
              f"median [IQR] over rounds.  The step gives 2 threads from MIN_GEMM_FLOPS = "
              f"{MIN_GEMM_FLOPS / 1e6:g} MFLOP")
        print(XO.format_crossover(xo, MIN_GEMM_FLOPS))
    if ct:
        print(f"\nTrainings at once: k processes started together, each one digits fit "
              f"(1347 x 64, {CT.CASE['hidden']} hidden units, Adam, batch "
              f"{CT.CASE['batch_size']}, {a.contention_epochs} epochs); median seconds of the "
              "k, ÷ the median solo time of the same run")
        print(CT.format_contention(ct))
        print("\n".join(t["line"] for t in ct_targets))
    note = "" if foreign is None else \
        f"; other processes (and hypervisor steal) took {foreign:.2f} CPUs on average"
    print(f"\nfinished in {seconds:.0f} s{note}")
    if foreign is not None and foreign > 0.25:
        print("warning: the machine was busy, so these ratios are less reliable than usual")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"environment": env, "args": vars(a), "step": step,
                       "targets": targets + inf_targets, "breakdown": bd, "inference": inf,
                       "activations": acts, "estimator": est, "sparse": sparse, "tta": ttas,
                       "contention": ct, "contention_targets": ct_targets, "crossover": xo,
                       "floor_libraries": libs, "seconds": seconds,
                       "foreign_cpus": foreign}, f, indent=1)
    if a.plot:
        plot(a.plot, step, ttas)
    failed = any(t["status"] == "FAIL"
                 for t in targets + inf_targets + acts + est + ct_targets)
    return 1 if mismatches or (a.strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
