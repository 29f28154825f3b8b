"""The contract's table (fastmlp.backends.contract) is what every backend implements, what
its checked face takes, and what docs/kernels.md documents: names, parameter order, defaults."""
import ast
import inspect
import re

import pytest
from conftest import REPO

import fastmlp
from fastmlp.backends.contract import (
    KERNELS,
    TRAIN_STEP_PARAMS,
    TRAIN_STEP_RUN_PARAMS,
    kernel,
)


def _table(params):
    """[(name, default or inspect.Parameter.empty)] of a table entry's parameters."""
    out = []
    for p in params:
        name, eq, default = p.partition("=")
        out.append((name, ast.literal_eval(default) if eq else inspect.Parameter.empty))
    return out


def _signature(f, drop_self=False):
    f = getattr(f, "py_func", f)   # a Numba dispatcher's Python function
    ps = list(inspect.signature(f).parameters.values())
    ps = ps[1:] if drop_self else ps
    return [(p.name, p.default) for p in ps if p.kind is not p.KEYWORD_ONLY]


@pytest.mark.parametrize("k", KERNELS, ids=[k.name for k in KERNELS])
def test_every_backend_has_the_kernel_with_the_contract_signature(backend, k):
    be = fastmlp.get_backend(backend)
    assert _signature(getattr(be.raw, k.name)) == _table(k.params)
    assert _signature(getattr(be, k.name)) == _table(k.params)   # the checked face


def test_train_step_signatures(backend):
    T = fastmlp.get_backend(backend).raw.TrainStep
    assert _signature(T.run, drop_self=True) == _table(TRAIN_STEP_RUN_PARAMS)
    try:
        init = _signature(T.__init__, drop_self=True)
    except (ValueError, TypeError):
        init = None
    if init is None or init[:1] == [("args", inspect.Parameter.empty)]:
        # a Cython cdef class: its __init__ is not introspectable, its docstring says it
        doc = " ".join(T.__doc__.split())
        assert "TrainStep(" + ", ".join(TRAIN_STEP_PARAMS) + ")" in doc
    else:
        assert init == _table(TRAIN_STEP_PARAMS)


def test_docs_list_every_kernel_as_the_table_does():
    doc = (REPO / "docs" / "kernels.md").read_text()
    for k in KERNELS:
        assert f"`{k.name}({', '.join(k.params)})`" in doc, k.name
    assert "TrainStep(" + ", ".join(TRAIN_STEP_PARAMS[:9]) in " ".join(doc.split())
    assert f"run({', '.join(TRAIN_STEP_RUN_PARAMS)})" in doc


def test_table_lookup():
    assert kernel("activation_backward").writes == ("dH",)
    with pytest.raises(KeyError):
        kernel("conv2d")
    assert all(re.fullmatch(r"\w+(=.+)?", p) for k in KERNELS for p in k.params)
