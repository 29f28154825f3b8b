"""bfloat16: the conversion kernel and the bf16 fused TrainStep of every compiled backend
against the reference's emulation (operands rounded to nearest even, float32 products and
sums), and what a bf16 step refuses.

Tolerances: the conversion is exact (Within(0)).  A bf16 step agrees with the emulation to
BF16_STEP (relative, with the floor of testing.Rel): the products are float32 GEMMs in another
summation order, and an operand that lands on a rounding boundary can round the other way.
The same steps in float32 differ from the emulation by 1e-3 to 2e-2 (checked below), so the
tolerance tells a bf16 step from a float32 one.
"""
import numpy as np
import scipy.sparse
import pytest
from helpers import check_against_reference, train_step_arrays, train_steps

import fastmlp
from fastmlp.backends import onednn, reference
from fastmlp.testing import Rel, Within

needs_onednn = pytest.mark.skipif(not onednn.available(),
                                  reason=f"oneDNN is not installed ({onednn.EXTRA})")
BF16_STEP = Rel(rtol=1e-4)

SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, -np.nan,
                    np.finfo(np.float32).max, -np.finfo(np.float32).max,
                    np.finfo(np.float32).tiny, 1e-45, -1e-45, 3.4e38, 1e-40], np.float32)


def _bits(u32):
    return np.array(u32, np.uint32).view(np.float32)


def test_reference_rounds_to_nearest_even():
    # 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: even (1.0); 1 + 3·2^-8: up
    x = _bits([0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF, 0x7F7FFFFF, 0xFF800000,
               0x7FC00001, 0xFF812345, 0x00008000, 0x00018000])
    got = reference.to_bf16(x, np.empty(x.shape, np.uint16))
    assert got.tolist() == [0x3F80, 0x3F82, 0x3F81, 0x3F80, 0x7F80, 0xFF80,
                            0x7FC0, 0xFFC1, 0x0000, 0x0002]
    assert np.isnan(reference.from_bf16(got[6:8])).all()
    assert reference.round_bf16(np.float32([3.0]))[0] == 3.0


def test_reference_agrees_with_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(10000).astype(np.float32) * 10.0 ** rng.integers(
        -40, 38, 10000), SPECIAL]).astype(np.float32)
    want = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    got = reference.to_bf16(x, np.empty(x.shape, np.uint16))
    finite = np.isfinite(x)
    np.testing.assert_array_equal(got[finite], want[finite])
    assert np.isnan(reference.from_bf16(got[~np.isfinite(x) & np.isnan(x)])).all()


@pytest.mark.parametrize("shape", [(0,), (1,), (17,), (3, 5), (2, 3, 4), (4097,)])
def test_to_bf16(backend, shape):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 100).astype(np.float32)
    if x.size >= SPECIAL.size:
        x.reshape(-1)[:SPECIAL.size] = SPECIAL
    # every tie between two bf16 values, and the values next to it
    if x.size > 4000:
        ties = (rng.integers(0, 1 << 15, 1000, dtype=np.uint32) << 16) | 0x8000
        x.reshape(-1)[-3000:] = np.concatenate([ties, ties + 1, ties - 1]).view(np.float32)
    out = np.full(shape, 7, np.uint16)
    check_against_reference(backend, "to_bf16", [x, out], outputs=[1], returns=1,
                            tol=Within(0))


def test_to_bf16_refuses(backend):
    be = fastmlp.get_backend(backend)
    if backend == "numpy":
        pytest.skip("the reference is permissive")
    x = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="float32"):
        be.to_bf16(x.astype(np.float64), np.empty((3, 4), np.uint16))
    with pytest.raises(TypeError, match="uint16"):
        be.to_bf16(x, np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match="shape"):
        be.to_bf16(x, np.empty((4, 3), np.uint16))
    with pytest.raises(ValueError, match="C-contiguous"):
        be.to_bf16(np.ones((4, 6), np.float32)[:, ::2], np.empty((4, 3), np.uint16))


# (layer sizes, workspace rows, batch rows), as in test_train_step: one layer, one class,
# odd sizes over 3 layers, a partial batch, a batch of 1, MNIST-sized, a wide hidden layer
NETS = [((3, 2), 4, 4), ((5, 1, 1), 3, 1), ((7, 13, 5, 3), 9, 9), ((7, 13, 5, 3), 9, 4),
        ((6, 4, 2), 1, 1), ((784, 256, 10), 128, 100), ((100, 300, 10), 64, 61)]
NET_IDS = ["1layer", "H1C1", "3layers", "partial", "N1", "mnist", "wide"]
OPTS = {"sgd-wd": ("sgd", {"weight_decay": 1e-2}), "momentum": ("sgd", {"momentum": 0.9}),
        "nesterov-wd": ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}),
        "adam-wd": ("adam", {"weight_decay": 1e-2})}


def _case(sizes, n_max, m, opt, seed=8, output="softmax", weighted=False):
    optimizer, hyper = OPTS[opt]
    rng = np.random.default_rng(seed)
    arrays, outputs = train_step_arrays(rng, sizes, n_max, np.float32, optimizer,
                                        hyper.get("momentum", 0))
    X = rng.standard_normal((m, sizes[0])).astype(np.float32)
    if output == "softmax":
        y = rng.integers(0, sizes[-1], m)
    elif output == "logistic":
        y = (rng.random((m, sizes[-1])) < 0.5).astype(np.float32)
    else:
        y = rng.standard_normal((m, sizes[-1])).astype(np.float32)
    sw = rng.uniform(0.1, 2.0, m).astype(np.float32) if weighted else None
    return optimizer, hyper, arrays, outputs, X, y, sw


@needs_onednn
@pytest.mark.parametrize("net", NETS, ids=NET_IDS)
@pytest.mark.parametrize("opt", list(OPTS))
def test_bf16_train_step(compiled_backend, net, opt):
    """Three bf16 steps = the reference's emulation: losses, parameters, optimizer state."""
    sizes, n_max, m = net
    optimizer, hyper, arrays, outputs, X, y, sw = _case(sizes, n_max, m, opt, weighted=True)
    kw = dict(n_layers=len(sizes) - 1, optimizer=optimizer,
              hyper=dict(hyper, precision="bf16"), lr=0.05, steps=3)
    check_against_reference(compiled_backend, train_steps, [X, y, sw] + arrays, kw,
                            outputs=[3 + k for k in outputs], returns="values", tol=BF16_STEP)


@needs_onednn
@pytest.mark.parametrize("activation", ["identity", "relu", "tanh", "logistic"])
@pytest.mark.parametrize("output", ["softmax", "logistic", "identity"])
def test_bf16_train_step_family(compiled_backend, activation, output):
    sizes, n_max, m = (7, 13, 5, 3), 9, 6
    optimizer, hyper, arrays, outputs, X, y, sw = _case(sizes, n_max, m, "momentum", 12,
                                                        output, True)
    kw = dict(n_layers=3, optimizer=optimizer,
              hyper=dict(hyper, precision="bf16", activation=activation, output=output),
              lr=0.02, steps=3)
    check_against_reference(compiled_backend, train_steps, [X, y, sw] + arrays, kw,
                            outputs=[3 + k for k in outputs], returns="values", tol=BF16_STEP)


def test_the_tolerance_tells_bf16_from_float32():
    """The reference's bf16 steps against its float32 ones: outside BF16_STEP, so a compiled
    step that ran in float32 would fail test_bf16_train_step."""
    sizes, n_max, m = (784, 256, 10), 128, 100
    optimizer, hyper, arrays, outputs, X, y, sw = _case(sizes, n_max, m, "momentum")
    runs = []
    for precision in (None, "bf16"):
        a = [x.copy() for x in arrays]
        train_steps(reference, X, y, sw, *a, n_layers=2, optimizer=optimizer,
                    hyper=dict(hyper, precision=precision), lr=0.05, steps=3)
        runs.append(a)
    with pytest.raises(AssertionError):
        BF16_STEP.check(runs[0][0], runs[1][0], np.float32, "W0")


@needs_onednn
def test_bf16_step_takes_bf16_bits_or_float32(compiled_backend):
    """A uint16 X (bf16 bits) trains exactly as the float32 X it was rounded from."""
    sizes, n_max, m = (20, 16, 4), 8, 8
    optimizer, hyper, arrays, outputs, X, y, sw = _case(sizes, n_max, m, "adam-wd")
    X16 = reference.to_bf16(X, np.empty(X.shape, np.uint16))
    kw = dict(n_layers=2, optimizer=optimizer, hyper=dict(hyper, precision="bf16"),
              lr=0.05, steps=2)
    results = []
    for x in (X, X16):
        a = [v.copy() for v in arrays]
        results.append((train_steps(compiled_backend.raw, x, y, None, *a, **kw), a))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    for k in outputs:
        np.testing.assert_array_equal(results[0][1][k], results[1][1][k])


def _step(raw, arrays, sizes, optimizer="sgd", **kw):
    L = len(sizes) - 1
    W, b, dW, db = (list(arrays[k * L:(k + 1) * L]) for k in range(4))
    acts, deltas = list(arrays[4 * L:5 * L]), [None] + list(arrays[5 * L:6 * L - 1])
    return raw.TrainStep(W, b, dW, db, acts, deltas, arrays[6 * L - 1], [None] * 2 * L,
                         optimizer, **kw), W


@needs_onednn
def test_bf16_step_sync_rereads_changed_weights(compiled_backend):
    sizes = (6, 5, 3)
    rng = np.random.default_rng(3)
    arrays, _ = train_step_arrays(rng, sizes, 4, np.float32, "sgd", 0)
    X, y = rng.standard_normal((4, 6)).astype(np.float32), rng.integers(0, 3, 4)
    ref, Wr = _step(reference, [a.copy() for a in arrays], sizes, precision="bf16")
    got, Wg = _step(compiled_backend.raw, arrays, sizes, precision="bf16")
    for W in (Wr[0], Wg[0]):
        W *= 2   # changed outside the step
    got.sync()
    assert got.run(X, y, None, 0.1, 1) == pytest.approx(ref.run(X, y, None, 0.1, 1), rel=1e-5)
    BF16_STEP.check(Wg[0], Wr[0], np.float32, "W0")


def test_bf16_step_refusals(backend):
    sizes = (6, 5, 3)
    rng = np.random.default_rng(3)
    raw = fastmlp.get_backend(backend).raw
    arrays, _ = train_step_arrays(rng, sizes, 4, np.float64, "sgd", 0)
    with pytest.raises(TypeError, match="float32"):
        _step(raw, arrays, sizes, precision="bf16")
    with pytest.raises(ValueError, match="precision"):
        _step(raw, arrays, sizes, precision="fp8")


@needs_onednn
def test_bf16_step_refuses_sparse_input(compiled_backend):
    from fastmlp.backends.csr import as_csr
    sizes = (6, 5, 3)
    arrays, _ = train_step_arrays(np.random.default_rng(3), sizes, 4, np.float32, "sgd", 0)
    step, _ = _step(compiled_backend.raw, arrays, sizes, precision="bf16")
    X = as_csr(scipy.sparse.csr_matrix(np.eye(4, 6, dtype=np.float32)), np.float32)
    with pytest.raises(TypeError, match="dense"):
        step.run(X, np.zeros(4, np.int64), None, 0.1, 1)


def test_without_onednn_bf16_names_the_extra(compiled_backend, monkeypatch):
    monkeypatch.setattr(onednn, "_loaded", ImportError(f"oneDNN is not installed ({onednn.EXTRA})"))
    arrays, _ = train_step_arrays(np.random.default_rng(3), (6, 5, 3), 4, np.float32, "sgd", 0)
    with pytest.raises(ImportError, match=r"fastmlp\[onednn\]"):
        _step(compiled_backend.raw, arrays, (6, 5, 3), precision="bf16")
    step, _ = _step(compiled_backend.raw, arrays, (6, 5, 3))   # full precision still works
    assert np.isfinite(step.run(np.ones((4, 6), np.float32), np.zeros(4, np.int64), None,
                                0.1, 1))
