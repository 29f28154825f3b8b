"""Bad calls to the compiled backends raise TypeError/ValueError naming the argument, and
unusual but valid inputs (memory-mapped, read-only, small label dtypes, zero rows, NaN/inf
values, huge logits) simply work.

The calls run in a child process so that a crash (segfault, abort) fails the test instead of
killing the test run.
"""
import json
import subprocess
import sys
import textwrap

import pytest

# (case id, expression using `be` and the child's helpers, expected exception or "ok",
#  text in the message)
CASES = [
    ("int X", "be.linear_forward(i(4, 3), f(3, 2), f(2), f(4, 2))", "TypeError", "X"),
    ("float16 W", "be.linear_forward(f(4, 3), f(3, 2).astype('f2'), f(2), f(4, 2))",
     "TypeError", "W"),
    ("mixed dtypes", "be.linear_forward(f(4, 3), d(3, 2), f(2), f(4, 2))", "TypeError", "W"),
    ("list input", "be.linear_forward([[1.0]], f(1, 1), f(1), f(1, 1))", "TypeError", "X"),
    ("inner dim", "be.linear_forward(f(4, 3), f(5, 2), f(2), f(4, 2))", "ValueError", "W"),
    ("bias shape", "be.linear_forward(f(4, 3), f(3, 2), f(3), f(4, 2))", "ValueError", "b"),
    ("out shape", "be.linear_forward(f(4, 3), f(3, 2), f(2), f(2, 4))", "ValueError", "out"),
    ("1-D X", "be.linear_forward(f(3), f(3, 2), f(2), f(1, 2))", "ValueError", "X"),
    ("Fortran X", "be.linear_forward(np.asfortranarray(f(4, 3)), f(3, 2), f(2), f(4, 2))",
     "ValueError", "C-contiguous"),
    ("strided out", "be.linear_forward(f(4, 3), f(3, 2), f(2), f(4, 4)[:, ::2])",
     "ValueError", "out"),
    ("read-only out", "be.linear_forward(f(4, 3), f(3, 2), f(2), ro(f(4, 2)))",
     "ValueError", "out"),
    ("backward dW shape", "be.linear_backward(f(4, 2), f(4, 3), f(3, 2), f(2, 3), f(2))",
     "ValueError", "dW"),
    ("backward dX shape", "be.linear_backward(f(4, 2), f(4, 3), f(3, 2), f(3, 2), f(2), f(3, 4))",
     "ValueError", "dX"),
    ("backward rows", "be.linear_backward(f(5, 2), f(4, 3), f(3, 2), f(3, 2), f(2))",
     "ValueError", "X"),
    ("activation shapes", "be.activation_backward(f(4, 2), f(2, 4))", "ValueError", "H"),
    ("unknown activation", "be.activation_backward(f(4, 2), f(4, 2), 'gelu')", "ValueError",
     "activation"),
    ("unknown forward activation", "be.linear_forward(f(4, 3), f(3, 2), f(2), f(4, 2), 'swish')",
     "ValueError", "activation"),
    ("logistic targets shape", "be.logistic_xent_grad(f(4, 3), f(4, 2), f(4, 3))", "ValueError",
     "Y"),
    ("squared targets dtype", "be.squared_error_grad(f(4, 3), d(4, 3), f(4, 3))", "TypeError",
     "Y"),
    ("poisson targets list", "be.poisson_grad(f(4, 3), [[1.0] * 3] * 4, f(4, 3))", "TypeError",
     "Y"),
    ("value loss weights", "be.squared_error_grad(f(4, 3), f(4, 3), f(4, 3), -np.ones(4))",
     "ValueError", "sample_weight"),
    ("label too big", "be.softmax_xent_grad(f(4, 3), np.array([0, 1, 2, 3]), f(4, 3))",
     "ValueError", "y"),
    ("negative label", "be.softmax_xent_grad(f(4, 3), np.array([0, -1, 2, 1]), f(4, 3))",
     "ValueError", "y"),
    ("float labels", "be.softmax_xent_grad(f(4, 3), np.zeros(4), f(4, 3))", "TypeError", "y"),
    ("label count", "be.softmax_xent_grad(f(4, 3), np.zeros(3, int), f(4, 3))",
     "ValueError", "y"),
    ("empty Z", "be.softmax_xent_grad(f(0, 3), np.zeros(0, int), f(0, 3))", "ValueError", "Z"),
    ("weights shape", "be.softmax_xent_grad(f(4, 3), np.zeros(4, int), f(4, 3), np.ones(3))",
     "ValueError", "sample_weight"),
    ("negative weight",
     "be.softmax_xent_grad(f(4, 3), np.zeros(4, int), f(4, 3), np.array([1., -1, 1, 1]))",
     "ValueError", "sample_weight"),
    ("zero weights", "be.softmax_xent_grad(f(4, 3), np.zeros(4, int), f(4, 3), np.zeros(4))",
     "ValueError", "sample_weight"),
    ("sgd grad shape", "be.sgd_update(f(3, 2), f(2, 3), 0.1)", "ValueError", "dW"),
    ("sgd nan lr", "be.sgd_update(f(3, 2), f(3, 2), float('nan'))", "ValueError", "lr"),
    ("sgd negative lr", "be.sgd_update(f(3, 2), f(3, 2), -1.0)", "ValueError", "lr"),
    ("sgd string lr", "be.sgd_update(f(3, 2), f(3, 2), '0.1')", "TypeError", "lr"),
    ("sgd inf decay", "be.sgd_update(f(3, 2), f(3, 2), 0.1, float('inf'))", "ValueError",
     "weight_decay"),
    ("momentum without velocity", "be.sgd_update(f(3, 2), f(3, 2), 0.1, momentum=0.9)",
     "ValueError", "velocity"),
    ("velocity dtype", "be.sgd_update(f(3, 2), f(3, 2), 0.1, velocity=d(3, 2), momentum=0.9)",
     "TypeError", "velocity"),
    ("adam step 0", "be.adam_update(f(3), f(3), f(3), f(3), 0, 0.1)", "ValueError", "step"),
    ("adam float step", "be.adam_update(f(3), f(3), f(3), f(3), 1.5, 0.1)", "TypeError", "step"),
    ("adam beta1 = 1", "be.adam_update(f(3), f(3), f(3), f(3), 1, 0.1, beta1=1.0)",
     "ValueError", "beta1"),
    ("adam m shape", "be.adam_update(f(3), f(3), f(4), f(3), 1, 0.1)", "ValueError", "m"),
    ("adam eps 0", "be.adam_update(f(3), f(3), f(3), f(3), 1, 0.1, eps=0.0)", "ValueError",
     "eps"),
    # the sparse kernels: a CSR X as data (nnz,), indices (nnz,) int64, indptr (N+1,) int64
    ("csr int32 indices", "be.csr_linear_forward(f(3), np.array([0, 1, 2], 'i4'), "
     "np.array([0, 1, 3]), f(4, 2), f(2), f(2, 2))", "TypeError", "indices"),
    ("csr index too big", "be.csr_linear_forward(f(3), np.array([0, 4, 2]), np.array([0, 1, 3]), "
     "f(4, 2), f(2), f(2, 2))", "ValueError", "column indices"),
    ("csr negative index", "be.csr_linear_backward(f(2, 2), f(3), np.array([0, -1, 2]), "
     "np.array([0, 1, 3]), f(4, 2), f(2))", "ValueError", "column indices"),
    ("csr decreasing indptr", "be.csr_linear_forward(f(3), np.array([0, 1, 2]), "
     "np.array([0, 2, 1]), f(4, 2), f(2), f(2, 2))", "ValueError", "indptr"),
    ("csr indptr past data", "be.csr_linear_forward(f(3), np.array([0, 1, 2]), "
     "np.array([0, 1, 4]), f(4, 2), f(2), f(2, 2))", "ValueError", "indptr"),
    ("csr out rows", "be.csr_linear_forward(f(3), np.array([0, 1, 2]), np.array([0, 1, 3]), "
     "f(4, 2), f(2), f(3, 2))", "ValueError", "out"),
    ("csr indices length", "be.csr_linear_forward(f(3), np.array([0, 1]), np.array([0, 1, 3]), "
     "f(4, 2), f(2), f(2, 2))", "ValueError", "indices"),
    ("gather row out of range", "be.csr_gather_rows(f(3), np.array([0, 1, 2]), "
     "np.array([0, 1, 3]), np.array([2]), f(3), np.zeros(3, 'i8'), np.zeros(2, 'i8'))",
     "ValueError", "rows"),
    ("gather buffer too small", "be.csr_gather_rows(f(3), np.array([0, 1, 2]), "
     "np.array([0, 1, 3]), np.array([1]), f(1), np.zeros(1, 'i8'), np.zeros(2, 'i8'))",
     "ValueError", "room"),
    ("dense gather row out of range", "be.gather_rows(f(4, 3), np.array([4]), f(1, 3))",
     "ValueError", "rows"),
    ("dense gather strided X", "be.gather_rows(f(4, 6)[:, ::2], np.array([1]), f(1, 3))",
     "ValueError", "C-contiguous"),
    ("dense gather mean alone", "be.gather_rows(f(4, 3), np.array([1]), f(1, 3), f(3))",
     "ValueError", "both"),
    ("dense gather scale shape", "be.gather_rows(f(4, 3), np.array([1]), f(1, 3), f(3), f(4))",
     "ValueError", "scale"),
    ("dense gather out rows", "be.gather_rows(f(4, 3), np.array([1, 2]), f(1, 3))",
     "ValueError", "out"),
    ("dense gather into X", "be.gather_rows(x := f(4, 3), np.array([1]), x[:1])",
     "ValueError", "overlap"),
    ("bits gather with mean", "be.gather_rows(np.zeros((4, 3), 'u2'), np.array([1]), "
     "np.zeros((1, 3), 'u2'), f(3), f(3))", "ValueError", "no mean"),
    ("bits gather into floats", "be.gather_rows(np.zeros((4, 3), 'u2'), np.array([1]), f(1, 3))",
     "TypeError", "out"),
    # object arrays, strings, mixed dtypes, other ranks and layouts
    ("object X", "be.linear_forward(f(4, 3).astype(object), f(3, 2), f(2), f(4, 2))",
     "TypeError", "X"),
    ("object labels", "be.softmax_xent_grad(f(4, 3), np.zeros(4, object), f(4, 3))",
     "TypeError", "y"),
    ("string labels", "be.softmax_xent_grad(f(4, 3), np.array(list('abcd')), f(4, 3))",
     "TypeError", "y"),
    ("bool labels", "be.softmax_xent_grad(f(4, 3), np.ones(4, bool), f(4, 3))", "TypeError", "y"),
    ("mixed dtypes backward", "be.linear_backward(f(4, 2), d(4, 3), f(3, 2), f(3, 2), f(2))",
     "TypeError", "X"),
    ("mixed dtypes out", "be.linear_forward(f(4, 3), f(3, 2), f(2), d(4, 2))", "TypeError", "out"),
    ("mixed dtypes activation", "be.activation_backward(f(4, 2), d(4, 2))", "TypeError", "H"),
    ("mixed dtypes dZ", "be.softmax_xent_grad(f(4, 3), np.zeros(4, int), d(4, 3))",
     "TypeError", "dZ"),
    ("3-D X", "be.linear_forward(f(2, 4, 3), f(3, 2), f(2), f(4, 2))", "ValueError", "X"),
    ("1-D W", "be.linear_forward(f(4, 3), f(3), f(2), f(4, 2))", "ValueError", "W"),
    ("strided X rows", "be.linear_forward(f(8, 3)[::2], f(3, 2), f(2), f(4, 2))",
     "ValueError", "C-contiguous"),
    ("reversed X", "be.linear_forward(f(4, 3)[::-1], f(3, 2), f(2), f(4, 2))",
     "ValueError", "C-contiguous"),
    ("Fortran Z", "be.softmax_xent_grad(np.asfortranarray(f(4, 3)), np.zeros(4, int), f(4, 3))",
     "ValueError", "C-contiguous"),
    ("read-only dX", "be.linear_backward(f(4, 2), f(4, 3), f(3, 2), f(3, 2), f(2), ro(f(4, 3)))",
     "ValueError", "dX"),
    ("read-only W in update", "be.sgd_update(ro(f(3, 2)), f(3, 2), 0.1)", "ValueError", "W"),
    ("read-only velocity",
     "be.sgd_update(f(3, 2), f(3, 2), 0.1, velocity=ro(f(3, 2)), momentum=0.9)",
     "ValueError", "velocity"),
    # non-finite or out-of-range hyper-parameters and weights
    ("sgd nan momentum", "be.sgd_update(f(3), f(3), 0.1, velocity=f(3), momentum=float('nan'))",
     "ValueError", "momentum"),
    ("sgd momentum 1.5", "be.sgd_update(f(3), f(3), 0.1, velocity=f(3), momentum=1.5)",
     "ValueError", "momentum"),
    ("sgd negative decay", "be.sgd_update(f(3), f(3), 0.1, -0.1)", "ValueError", "weight_decay"),
    ("adam inf lr", "be.adam_update(f(3), f(3), f(3), f(3), 1, float('inf'))", "ValueError", "lr"),
    ("adam nan beta2", "be.adam_update(f(3), f(3), f(3), f(3), 1, 0.1, beta2=float('nan'))",
     "ValueError", "beta2"),
    ("adam inf eps", "be.adam_update(f(3), f(3), f(3), f(3), 1, 0.1, eps=float('inf'))",
     "ValueError", "eps"),
    ("adam bool step", "be.adam_update(f(3), f(3), f(3), f(3), True, 0.1)", "TypeError", "step"),
    ("nan weight", "be.softmax_xent_grad(f(4, 3), np.zeros(4, int), f(4, 3), "
     "np.array([1, np.nan, 1, 1]))", "ValueError", "sample_weight"),
    ("inf weight", "be.softmax_xent_grad(f(4, 3), np.zeros(4, int), f(4, 3), "
     "np.array([1, np.inf, 1, 1]))", "ValueError", "sample_weight"),
    ("string weights", "be.softmax_xent_grad(f(4, 3), np.zeros(4, int), f(4, 3), "
     "np.array(list('abcd')))", "TypeError", "sample_weight"),
    # inputs that must simply work (checked by `expect` in the child)
    ("memmap inputs", "expect(np.array_equal(be.linear_forward(mm(r(4, 3)), mm(r(3, 2)), "
     "mm(r(2)), f(4, 2)), be.linear_forward(r(4, 3), r(3, 2), r(2), f(4, 2))))", "ok", ""),
    ("np.load mmap inputs", "expect(np.array_equal(be.linear_backward(npl(r(4, 2)), "
     "npl(r(4, 3)), npl(r(3, 2)), f(3, 2), f(2), f(4, 3)), "
     "be.linear_backward(r(4, 2), r(4, 3), r(3, 2), f(3, 2), f(2), f(4, 3))))", "ok", ""),
    ("memmap labels and logits", "expect(be.softmax_xent_grad(mm(r(4, 3)), "
     "mm(np.array([0, 2, 1, 0])), f(4, 3)) == be.softmax_xent_grad(r(4, 3), "
     "np.array([0, 2, 1, 0]), f(4, 3)))", "ok", ""),
    ("read-only update inputs", "expect(np.array_equal(be.adam_update(r(5), ro(r(5)), f(5), "
     "f(5), 1, 0.1), be.adam_update(r(5), r(5), f(5), f(5), 1, 0.1)))", "ok", ""),
    ("uint8 and int32 labels", "expect(be.softmax_xent_grad(r(4, 3), np.array([0, 2, 1, 0], "
     "'u1'), f(4, 3)) == be.softmax_xent_grad(r(4, 3), np.array([0, 2, 1, 0], 'i4'), "
     "f(4, 3)))", "ok", ""),
    ("zero rows", "expect(be.linear_forward(f(0, 3), f(3, 2), f(2), f(0, 2)).shape == (0, 2))",
     "ok", ""),
    ("NaN and inf X propagate", "expect(np.array_equal(np.isfinite(be.linear_forward("
     "nonfinite(), f(3, 2), f(2), f(4, 2))), [[0, 0], [0, 0], [1, 1], [1, 1]]))", "ok", ""),
    ("1e4 logits", "expect(np.isfinite(be.softmax_xent_grad(1e4 * r(4, 3), "
     "np.array([0, 2, 1, 0]), f(4, 3))))", "ok", ""),
]

CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import fastmlp
    be = fastmlp.get_backend(sys.argv[1])
    f = lambda *s: np.ones(s, np.float32)
    d = lambda *s: np.ones(s, np.float64)
    i = lambda *s: np.ones(s, np.int64)
    r = lambda *s: np.random.default_rng(0).standard_normal(s).astype(np.float32)
    def ro(a):
        a.flags.writeable = False
        return a
    def mm(a):  # a read-only np.memmap holding a copy of a
        path = f"mm{next(counter)}.dat"
        np.ascontiguousarray(a).tofile(path)
        return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)
    def npl(a):  # np.load(mmap_mode="r") of a copy of a
        path = f"npl{next(counter)}.npy"
        np.save(path, a)
        return np.load(path, mmap_mode="r")
    def nonfinite():  # rows 0 and 1 hold NaN and inf
        a = f(4, 3)
        a[0, 1], a[1, 2] = np.nan, np.inf
        return a
    def expect(ok):
        if not ok:
            raise AssertionError("wrong result")
    counter = iter(range(10 ** 6))
    results = {}
    for case_id, expr in json.loads(sys.stdin.read()):
        try:
            eval(expr)
            results[case_id] = ["ok", ""]
        except Exception as exc:
            results[case_id] = [type(exc).__name__, str(exc)]
    print(json.dumps(results))
""")


@pytest.fixture(scope="module", params=["numba", "cython"])
def outcomes(request, tmp_path_factory):
    # cwd elsewhere: `python -c` puts the working directory first on sys.path, and the source
    # checkout there has no compiled extension
    proc = subprocess.run([sys.executable, "-c", CHILD, request.param],
                          cwd=tmp_path_factory.mktemp("child"),
                          input=json.dumps([(c[0], c[1]) for c in CASES]),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"child crashed ({proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_call_raises_clear_error(outcomes, case):
    case_id, _, exc_name, text = case
    got_name, message = outcomes[case_id]
    assert got_name == exc_name, f"{case_id}: expected {exc_name}, got {got_name}: {message}"
    assert text in message, f"{case_id}: message {message!r} does not name {text!r}"
