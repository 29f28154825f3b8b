"""The bf16 group of `fastmlp bench`: the fused step with precision="bf16" against the same
step in float32, interleaved in one run, and Fashion-MNIST trained both ways beside PyTorch's
bf16 autocast; the issue's targets on both.

Timing: timing.py (rounds, ratios taken in the same round); cases: cases.fastmlp_steps.
Skipped, with the reason, when oneDNN is not installed (`pip install "fastmlp[onednn]"`).
"""
import time
import types

import numpy as np

from ..backends import onednn, reference
from . import cases as B
from . import tta
from .cases import COMPILED
from .timing import interleave, ratio

STEPS_PER_CALL = 16
# (optimizer, N, H, limit): bf16 step time ÷ the float32 step's, same backend, same round
STEP_TARGETS = (("sgd", 128, 256, 0.55), ("sgd", 512, 1024, 0.45))
STEP_CASES = (("sgd", 128, 256), ("sgd", 512, 1024), ("adam", 128, 256))
# Fashion-MNIST 784-256-10, Adam, 10 epochs, seed 0 (tta.RECIPE)
ACC_BAND, TIME_VS_FP32, TIME_VS_TORCH = 0.003, 0.6, 0.3


def run_bf16(a, say):
    """{"engine", "steps": [...], "tta": {...}} or {"skipped": reason}."""
    try:
        engine = onednn.load()
    except ImportError as exc:
        return {"skipped": str(exc)}
    out = {"engine": engine.describe(), "cpu_bf16": list(onednn.cpu_bf16()), "steps": []}
    for opt, n, h in STEP_CASES:
        say(f"  bf16 step {opt} N={n} H={h}")
        groups = [[(f"{b} {p}", B.fastmlp_steps(b, opt, n, h, STEPS_PER_CALL,
                                                 precision=None if p == "fp32" else p))
                   for p in ("fp32", "bf16")] for b in COMPILED]
        floors = [("fp32 floor", B.gemm_floor(n, h, blas="openblas")),
                  ("bf16 floor", bf16_floor(n, h))]
        best = interleave(groups + [[f] for f in floors], a.repeat, a.settle)
        rows = {"floors": {"fp32_us": float(np.median(best["fp32 floor"])) * 1e6,
                           "bf16_us": float(np.median(best["bf16 floor"])) * 1e6,
                           "ratio": ratio(best, "bf16 floor", "fp32 floor")}}
        for b in COMPILED:
            rows[b] = {"fp32_us": float(np.median(best[f"{b} fp32"])) / STEPS_PER_CALL * 1e6,
                       "bf16_us": float(np.median(best[f"{b} bf16"])) / STEPS_PER_CALL * 1e6,
                       "ratio": ratio(best, f"{b} bf16", f"{b} fp32")}
        out["steps"].append({"optimizer": opt, "n": n, "h": h, "rounds": a.repeat,
                             "backends": rows})
    out["tta"] = _tta(a, say)
    return out


def bf16_floor(n, h, seed=0):
    """The step's five products (cases.gemm_floor's) through oneDNN's gemm_bf16bf16f32 on
    bfloat16 operands of the same layouts, float32 outputs: what the bf16 step's GEMMs take
    alone.  Returns a closure; one call has been made."""
    rng = np.random.default_rng(seed)

    def half(a):   # random bf16 bits laid out as a (C- or F-contiguous)
        x = rng.standard_normal(a.shape).astype(np.float32)
        x = x if a.flags.c_contiguous else np.asfortranarray(x)
        return reference.to_bf16(x, np.empty_like(x, dtype=np.uint16))
    prods = [(half(A), half(Bm), out) for A, Bm, out in
             B._floor_products(n, h, B.D, B.C, np.float32, seed).values()]
    engine = types.SimpleNamespace(sgemm=onednn.load().gemm_bf16)
    floor = B._provider_floor(prods, engine, np.float32)
    floor()
    return floor


def _tta(a, say):
    if a.quick:
        return {"skipped": "not in --quick"}
    try:
        data = tta.dataset("fashion-mnist")
    except B.Unavailable as exc:
        return {"skipped": str(exc)}
    epochs, runs = tta.TTA_EPOCHS["fashion-mnist"], {}
    for name, contender, precision in (("cython fp32", "cython", None),
                                       ("cython bf16", "cython", "bf16"),
                                       ("numba fp32", "numba", None),
                                       ("numba bf16", "numba", "bf16"),
                                       ("torch bf16 autocast", "torch", "bf16")):
        say(f"  bf16 time to accuracy fashion-mnist {epochs} epochs: {name}")
        time.sleep(a.settle)
        try:
            runs[name] = tta.time_to_accuracy(contender, data, epochs, precision=precision)
        except B.Unavailable as exc:
            runs[name] = {"skipped": str(exc)}
    return {"epochs": epochs, "recipe": dict(tta.RECIPE), "runs": runs}


def evaluate(res):
    """One dict per target: status PASS, FAIL or SKIP, and a line."""
    if "skipped" in res:
        return [{"status": "SKIP", "line": f"SKIP  bf16: {res['skipped']}"}]
    out, by_case = [], {(s["optimizer"], s["n"], s["h"]): s for s in res["steps"]}
    for opt, n, h, limit in STEP_TARGETS:
        s = by_case.get((opt, n, h))
        for b in COMPILED:
            what = f"{b:<7}bf16 step {opt} N={n} H={h}"
            if s is None:
                out.append({"status": "SKIP", "line": f"SKIP  {what}: not run"})
                continue
            q1, v, q3 = s["backends"][b]["ratio"]
            ok = v <= limit
            out.append({"status": "PASS" if ok else "FAIL", "value": v, "iqr": (q1, q3),
                        "line": f"{'PASS' if ok else 'FAIL'}  {what}: {v:.3f}× the float32 "
                                f"step [{q1:.2f}-{q3:.2f}] (target ≤ {limit:.2f})"})
    runs = res["tta"].get("runs", {})
    torch = runs.get("torch bf16 autocast", {})
    for b in COMPILED:
        full, half = runs.get(f"{b} fp32", {}), runs.get(f"{b} bf16", {})
        if "seconds" not in full or "seconds" not in half:
            why = res["tta"].get("skipped") or full.get("skipped") or half.get("skipped")
            out.append({"status": "SKIP", "line": f"SKIP  {b} bf16 Fashion-MNIST: {why}"})
            continue
        gap, t_full = abs(half["accuracy"] - full["accuracy"]), half["seconds"] / full["seconds"]
        checks = [("test accuracy within 0.003 of fp32", gap <= ACC_BAND,
                   f"{half['accuracy']:.4f} vs {full['accuracy']:.4f}"),
                  (f"wall time ≤ {TIME_VS_FP32}× fp32's", t_full <= TIME_VS_FP32,
                   f"{half['seconds']:.2f} s vs {full['seconds']:.2f} s = {t_full:.2f}×")]
        if "seconds" in torch:
            t_torch = half["seconds"] / torch["seconds"]
            checks.append((f"wall time ≤ {TIME_VS_TORCH}× PyTorch bf16 autocast's",
                           t_torch <= TIME_VS_TORCH,
                           f"{torch['seconds']:.2f} s = {t_torch:.2f}×"))
        for label, ok, got in checks:
            out.append({"status": "PASS" if ok else "FAIL",
                        "line": f"{'PASS' if ok else 'FAIL'}  {b} bf16 Fashion-MNIST {label}: "
                                f"{got}"})
    return out


def format_bf16(res):
    if "skipped" in res:
        return f"skipped: {res['skipped']}"
    lines = [f"engine: {res['engine']}; CPU bf16: {', '.join(res['cpu_bf16']) or 'none'}",
             "floors: the step's five GEMMs alone, through openblas32's sgemm (fp32 column) and "
             "oneDNN's gemm_bf16bf16f32 (bf16 column): the ratio the GEMMs allow",
             f"{'case':<22}{'backend':<9}{'fp32 µs':>10}{'bf16 µs':>10}{'bf16 ÷ fp32':>24}"]
    for s in res["steps"]:
        for b, r in s["backends"].items():
            q1, v, q3 = r["ratio"]
            lines.append(f"{s['optimizer'] + ' N=' + str(s['n']) + ' H=' + str(s['h']):<22}"
                         f"{b:<9}{r['fp32_us']:10.0f}{r['bf16_us']:10.0f}"
                         f"{f'{v:.3f} [{q1:.2f}-{q3:.2f}]':>24}")
    t = res.get("tta", {})
    if "runs" in t:
        lines.append(f"Fashion-MNIST 784-{t['recipe']['hidden']}-10, Adam lr "
                     f"{t['recipe']['lr']:g}, batch {t['recipe']['batch_size']}, "
                     f"{t['epochs']} epochs, seed 0:")
        for name, r in t["runs"].items():
            lines.append(f"  {name:<22}" + (f"skipped: {r['skipped']}" if "skipped" in r else
                                            f"{r['seconds']:7.2f} s  test acc "
                                            f"{r['accuracy']:.4f}"))
    elif t:
        lines.append(f"Fashion-MNIST: skipped: {t['skipped']}")
    return "\n".join(lines)
