"""Inference contenders: `predict_proba` of one 784-256-10 float32 net on a batch of rows, in
fastmlp (each backend, the public call: validation included), scikit-learn, PyTorch and
onnxruntime, all with the same weights, and the check that holds each to the reference.

Design: `contenders(rows)` builds every contender as a zero-argument closure returning the
probabilities, grouped by the thread pool it uses (for timing.interleave); optional peers
that are missing are listed with the reason instead.  `check(fns, rows)` compares each
closure's probabilities with the NumPy reference backend's before anything is timed.
"""
import numpy as np

from ..model import MLP
from .cases import COMPILED, C, D, Unavailable, batch, need
from .timing import interleave, ratio, times

H = 256
ROWS = (1, 10_000)
RTOL = 1e-5            # float32 probabilities: relative to the largest, here 1
ORT_NAME, ORT_1T = "onnxruntime", "onnxruntime 1 thread"


def _model(backend, seed=0):
    return MLP((D, H, C), seed=seed, backend=backend)


def _inputs(rows, seed=0):
    return batch(rows, D, C, np.float32, seed + 1)[0]


def fastmlp_proba(backend, rows, seed=0):
    """MLP.predict_proba (the public call) on `rows` rows."""
    model, X = _model(backend, seed), _inputs(rows, seed)
    model.predict_proba(X)            # compiles (numba) and fills this thread's buffers
    return lambda: model.predict_proba(X)


def sklearn_proba(rows, seed=0):
    """sklearn.neural_network.MLPClassifier.predict_proba with fastmlp's weights."""
    need("sklearn")
    import warnings

    from sklearn.neural_network import MLPClassifier
    model, X = _model("numpy", seed), _inputs(rows, seed)
    clf = MLPClassifier((H,), max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # one epoch: ConvergenceWarning
        clf.fit(_inputs(C, seed), np.arange(C))
    clf.coefs_ = [W.copy() for W in model.weights]
    clf.intercepts_ = [b.copy() for b in model.biases]
    return lambda: clf.predict_proba(X)


def torch_proba(rows, seed=0):
    """softmax(net(X)) under torch.inference_mode(), from and to NumPy."""
    torch = need("torch")
    from .peers import _torch_net
    model, X = _model("numpy", seed), _inputs(rows, seed)
    net = _torch_net(torch, D, H, C, init=list(zip(model.weights, model.biases))).eval()

    def proba():
        with torch.inference_mode():
            return torch.softmax(net(torch.from_numpy(X)), dim=1).numpy()
    return proba


def ort_proba(rows, seed=0, threads=None):
    """onnxruntime on fastmlp's own export (MLP.to_onnx): `sess.run(['probabilities'], ...)`,
    default SessionOptions, or `threads` intra-op threads."""
    need("onnx")
    ort = need("onnxruntime")
    model, X = _model("numpy", seed), _inputs(rows, seed)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.to_onnx().SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    return lambda: sess.run(["probabilities"], {"X": X})[0]


def contenders(rows, backends=("cython", "numba", "numpy")):
    """(groups, skipped): groups of (name, closure) by thread pool -- fastmlp's compiled
    backends (SciPy's OpenBLAS), NumPy's OpenBLAS (the reference, scikit-learn), PyTorch,
    onnxruntime (default, and one thread) -- and {name: reason} for peers not installed."""
    from ..backends import available_backends
    have = available_backends()
    scipy_blas = [(f"fastmlp {b}", fastmlp_proba(b, rows)) for b in backends
                  if b in have and b != "numpy"]
    numpy_blas = [("fastmlp numpy", fastmlp_proba("numpy", rows))] if "numpy" in backends \
        else []
    groups, skipped = [g for g in (scipy_blas, numpy_blas) if g], {}
    for name, build in (("sklearn", sklearn_proba), ("torch", torch_proba),
                        (ORT_NAME, ort_proba), (ORT_1T, lambda r: ort_proba(r, threads=1))):
        try:
            fn = build(rows)
        except Unavailable as exc:
            skipped[name] = str(exc)
            continue
        if name == "sklearn" and numpy_blas:
            numpy_blas.append((name, fn))
        else:
            groups.append([(name, fn)])
    return groups, skipped


def check(groups, rows):
    """{name: message} for each contender whose probabilities differ from the reference's
    (the NumPy backend's predict_proba on the same weights and rows) by more than RTOL."""
    want = fastmlp_proba("numpy", rows)()
    bad = {}
    for group in groups:
        for name, fn in group:
            got = np.asarray(fn())
            if got.shape != want.shape or not np.allclose(got, want, rtol=RTOL, atol=RTOL):
                err = np.abs(got - want).max() if got.shape == want.shape else got.shape
                bad[name] = f"probabilities differ from the reference's: max |diff| {err}"
    return bad


def flops(rows):
    return 2 * rows * (D * H + H * C)


__all__ = ["ROWS", "contenders", "check", "flops", "Unavailable"]


# (rows, peer, limit): single-row latency <= onnxruntime's (the peer's time / fastmlp's >= 1),
# 10 000-row throughput >= 1.5x scikit-learn's, for the cython and numba backends
INFERENCE_TARGETS = ((1, ORT_NAME, 1.0), (10_000, "sklearn", 1.5))


INF_PEERS = ("sklearn", "torch", ORT_NAME)


def run_inference(a, say):
    """predict_proba of each contender on 1 and 10 000 rows, checked, then interleaved."""
    out = []
    for rows in ROWS:
        groups, skipped = contenders(rows)
        mismatch = check(groups, rows)
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
            vs = "".join(f"{times(row.get('vs ' + p)):>17}" for p in INF_PEERS)
            lines.append(f"{head}{name:<22}{row['median_s'] * 1e6:10.1f}"
                         f"{row['rows_per_s']:12.0f}{vs}")
            head = " " * 8
        lines += [f"{'':>8}{name:<22}skipped: {why}" for name, why in r["skipped"].items()]
    return "\n".join(lines)
