"""The benchmark report: `fastmlp bench [--quick] [--json PATH] [--plot PATH] [--repeat K]`
(also `python -m fastmlp.bench.report`).

Design: one run checks every contender of a training step against the NumPy reference, times
them interleaved (fastmlp's compiled backends, the GEMM floor, the NumPy reference, PyTorch,
scikit-learn), does the same for inference (`predict_proba` on 1 and 10 000 rows, against
scikit-learn, PyTorch and onnxruntime: inference.py), trains the time-to-accuracy recipe with
each, and prints ratios measured in that same run: absolute times on a shared machine drift,
ratios taken round by round do not.

The groups: step_group.py (train step, breakdown, activations), inference.py, fits.py (time
to accuracy, sparse input, estimator overhead), crossover.py, contention.py, bf16.py (the
bf16 step and Fashion-MNIST against float32 and PyTorch autocast), recipes_group.py
(`fastmlp train`'s recipes against the same recipes in PyTorch, the seed network); timing:
timing.py (docs/benchmarks.md, Methodology).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from . import bf16 as BF
from . import cases as B
from . import contention as CT
from . import crossover as XO
from . import inference as INF
from . import recipes_group as RC
from . import tta
from .fits import (
    format_estimator,
    format_sparse,
    format_tta,
    run_estimator,
    run_sparse,
    run_tta,
)
from .inference import evaluate_inference, format_inference, run_inference
from .step_group import (
    FLOOR,
    FLOORS,
    FULL_CASES,
    QUICK_CASES,
    evaluate_targets,
    format_activations,
    format_breakdown,
    format_step,
    run_activations,
    run_breakdown,
    run_step,
)
from .timing import busy_seconds, environment


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
    p.add_argument("--no-recipes", action="store_true",
                   help="skip fastmlp train's recipes against the same recipes in PyTorch")
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
    p.add_argument("--no-bf16", action="store_true",
                   help="skip the bf16 group (oneDNN; skipped anyway when not installed)")
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


# --------------------------------------------------------------------------- output


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
    rec = {} if a.no_recipes else RC.run_recipes(a, say)
    rec_targets = RC.evaluate(rec) if rec else []
    half = {} if a.no_bf16 else BF.run_bf16(a, say)
    half_targets = BF.evaluate(half) if half else []
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
              f"Adam, batch 200, {est[0]['epochs']} epochs, float32; per-step time, ratio "
              "median [IQR] over interleaved rounds")
        print(format_estimator(est))
    if sparse:
        c = B.SPARSE_CASE
        rows, features = next((r["shape"] for r in sparse if "shape" in r),
                              (c["rows"], c["features"]))
        print(f"\nSparse input: MLPClassifier on {rows} x {features} CSR at "
              f"{c['density']:.1%} (TF-IDF-like), {c['hidden']} hidden units, Adam, batch 200, "
              "float32, the same X for both; interleaved fits, median over rounds")
        print(format_sparse(sparse))
    if ttas:
        print(f"\nTime to accuracy: D-{tta.RECIPE['hidden']}-10, Adam lr {tta.RECIPE['lr']:g}, "
              f"batch {tta.RECIPE['batch_size']}, seed 0; training wall time, one run each")
        print(format_tta(ttas))
    if rec:
        print("\nRecipes: `fastmlp train --dataset D` (its recipe, fastmlp/recipes.py; "
              "train_seconds and test accuracy from its JSON) beside the same recipe in "
              "PyTorch (same rows, initial weights, dropout, OneCycleLR, batch), seed 0, one "
              "run each; 'vs torch' = PyTorch's time ÷ this row's, same precision")
        print(RC.format_recipes(rec))
        print("\n".join(t["line"] for t in rec_targets))
    if half:
        print(f"\nbf16: the fused step with precision='bf16' (bfloat16 GEMM operands, float32 "
              f"accumulation, oneDNN) ÷ the same step in float32, 784-H-10, interleaved; "
              f"µs/step medians over {a.repeat} rounds, ratio median [IQR] over rounds")
        print(BF.format_bf16(half))
        print("\n".join(t["line"] for t in half_targets))
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
                       "recipes": rec, "recipe_targets": rec_targets,
                       "contention": ct, "contention_targets": ct_targets, "crossover": xo,
                       "bf16": half, "bf16_targets": half_targets,
                       "floor_libraries": libs, "seconds": seconds,
                       "foreign_cpus": foreign}, f, indent=1)
    if a.plot:
        plot(a.plot, step, ttas)
    failed = any(t["status"] == "FAIL"
                 for t in targets + inf_targets + acts + est + ct_targets + half_targets
                 + rec_targets)
    return 1 if mismatches or (a.strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
