"""ONNX export of fastmlp's MLP and of scikit-learn-style MLP estimators, and a skl2onnx
converter so that pipelines holding fastmlp's estimators convert with `skl2onnx.to_onnx`.

Design: `_Spec` is everything the graph needs -- the layers, the hidden activation, the output
layer and the class labels -- read either from an `MLP` (`spec_of_model`) or from a fitted
estimator through scikit-learn's attributes only (`coefs_`, `intercepts_`, `activation`,
`out_activation_`, `classes_`: `spec_of_estimator`), so sklearn's own MLPClassifier and
MLPRegressor, their subclasses and fastmlp's estimators all export alike.  `_emit` writes the
nodes through three callbacks (add a node, add an initializer, make a unique name); the
standalone builder (`build`, onnx.helper only) and the skl2onnx converter (`_convert`) each
supply their own.  Opset 18; every op has float and double kernels in onnxruntime (ZipMap,
which skl2onnx adds for classifiers, takes float only: `_parse_classifier` casts first).

An MLP with standardize=True gets its input standardisation as the graph's first nodes:
Sub input_mean, Div input_scale (as MLP._standardized computes it), before the first MatMul.
An MLP with batch_norm=True exports its inference layers, the running estimates folded into
W and b (MLP.inference_params), as predict runs them.

Outputs: classifiers `label` (N,) (classes_[argmax], or (N, K) 0/1 for logistic outputs of
more than one unit / an MLP's logistic output) and `probabilities`; regressors `variable`
(N, K).  Labels are taken from the logits (argmax, z > 0), as fastmlp predicts.

`import fastmlp.onnx` registers the converter with skl2onnx when skl2onnx is installed;
`register(*classes)` adds other sklearn-compatible MLP classes.  Needs the `onnx` extra.
"""
import os

import numpy as np

EXTRA = "pip install 'fastmlp[onnx]' (onnx, skl2onnx, onnxruntime)"
OPSET = 18
HIDDEN_OPS = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid", "identity": None}


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(f"ONNX export needs the onnx package: {EXTRA} ({exc})") from None
    return onnx


class _Spec:
    """What the graph needs.  task: 'multiclass' (softmax), 'binary' (one logistic unit,
    probabilities [1 - p, p]), 'multilabel' (K logistic units), 'regression' (identity or
    exp output); classes: labels to gather (None: the class index / the 0/1 matrix);
    input_mean, input_scale: (n_features,) arrays, X -> (X - input_mean) / input_scale before
    the first layer, or None."""

    def __init__(self, coefs, intercepts, activation, output, task, classes=None,
                 input_mean=None, input_scale=None):
        if activation not in HIDDEN_OPS:
            raise ValueError(f"cannot export hidden activation {activation!r}; "
                             f"ONNX export knows {tuple(HIDDEN_OPS)}")
        self.coefs, self.intercepts = list(coefs), list(intercepts)
        self.activation, self.output, self.task = activation, output, task
        self.classes = classes
        self.input_mean, self.input_scale = input_mean, input_scale
        self.n_features = self.coefs[0].shape[0]
        self.n_units = self.coefs[-1].shape[1]
        self.dtype = np.dtype(self.coefs[0].dtype)

    @property
    def n_proba(self):
        return 2 if self.task == "binary" else self.n_units

    def label_type(self):
        """'int64' or 'string': the label output's element type."""
        if self.classes is None or self.classes.dtype.kind in "iub":
            return "int64"
        return "string"


def spec_of_model(model):
    """The _Spec of a fastmlp.MLP (its own predict semantics: class index, 0/1 matrix)."""
    task = {"softmax": "multiclass", "logistic": "multilabel"}.get(model.output, "regression")
    mean, scale = model._input_stats() if model.standardize else (None, None)
    weights, biases = model.inference_params()   # batch norm folded into the layers
    return _Spec(weights, biases, model.activation, model.output, task,
                 input_mean=mean, input_scale=scale)


def spec_of_estimator(est):
    """The _Spec of a fitted sklearn-style MLP estimator, from scikit-learn's attributes."""
    try:
        coefs, intercepts, out = est.coefs_, est.intercepts_, est.out_activation_
    except AttributeError:
        raise ValueError(f"{type(est).__name__} is not fitted: it needs coefs_, intercepts_ "
                         f"and out_activation_ to export") from None
    if out in ("identity", "exp"):
        return _Spec(coefs, intercepts, est.activation, out, "regression")
    if out == "softmax":
        task = "multiclass"
    elif out == "logistic":
        task = "binary" if coefs[-1].shape[1] == 1 else "multilabel"
    else:
        raise ValueError(f"cannot export out_activation_={out!r}")
    classes = None if task == "multilabel" else _class_labels(est.classes_)
    return _Spec(coefs, intercepts, est.activation, out, task, classes)


def _class_labels(classes):
    """classes_ as an int64 or string array for the label Gather."""
    cl = np.asarray(classes)
    if cl.dtype.kind in "iub":
        return cl.astype(np.int64)
    if cl.dtype.kind == "f":
        if not np.all(cl == np.round(cl)):
            raise ValueError(f"cannot export non-integral float class labels {cl[:5]}")
        return cl.astype(np.int64)
    return np.array([str(c) for c in cl], dtype=object)


def _emit(spec, x, label, proba, dtype, node, init, uniq):
    """Write the network from input `x` to outputs `label` and `proba` (for regression,
    `proba` names the predictions and `label` is unused).  node(op, inputs, outputs,
    **attrs); init(name, array); uniq(prefix) -> a new name."""
    h, last = x, len(spec.coefs) - 1
    if spec.input_mean is not None:
        mean, scale, centred, h = uniq("input_mean"), uniq("input_scale"), uniq("xc"), uniq("xs")
        init(mean, np.asarray(spec.input_mean, dtype))
        init(scale, np.asarray(spec.input_scale, dtype))
        node("Sub", [x, mean], [centred])
        node("Div", [centred, scale], [h])
    for i, (W, b) in enumerate(zip(spec.coefs, spec.intercepts)):
        wn, bn, mm, z = uniq(f"W{i}"), uniq(f"b{i}"), uniq(f"mm{i}"), uniq(f"z{i}")
        init(wn, np.asarray(W, dtype))
        init(bn, np.asarray(b, dtype))       # (fan_out,): broadcasts over the rows
        node("MatMul", [h, wn], [mm])
        node("Add", [mm, bn], [z])
        h = z
        if i < last and HIDDEN_OPS[spec.activation]:
            h = uniq(f"h{i}")
            node(HIDDEN_OPS[spec.activation], [z], [h])
    if spec.task == "regression":
        node("Exp" if spec.output == "exp" else "Identity", [h], [proba])
        return
    if spec.task == "multiclass":
        node("Softmax", [h], [proba], axis=-1)
        index = uniq("argmax")
        node("ArgMax", [h], [index], axis=1, keepdims=0)
    else:
        p, zero, positive = uniq("p"), uniq("zero"), uniq("positive")
        node("Sigmoid", [h], [p if spec.task == "binary" else proba])
        init(zero, np.array(0, dtype))
        node("Greater", [h, zero], [positive])
        if spec.task == "multilabel":
            node("Cast", [positive], [label], to=7)          # TensorProto.INT64
            return
        one, q, flat, index = uniq("one"), uniq("q"), uniq("flat"), uniq("index")
        init(one, np.array(1, dtype))
        node("Sub", [one, p], [q])
        node("Concat", [q, p], [proba], axis=1)
        axes = uniq("axes")
        init(axes, np.array([1], np.int64))
        node("Squeeze", [positive, axes], [flat])
        node("Cast", [flat], [index], to=7)
    if spec.classes is None:
        node("Identity", [index], [label])
    else:
        cl = uniq("classes")
        init(cl, spec.classes)
        node("Gather", [cl, index], [label], axis=0)


def build(spec, dtype=None, opset=OPSET, input_name="X"):
    """A checked onnx.ModelProto of `spec` with input `input_name` (N, n_features) of `dtype`
    (default: the parameters' dtype, float32 or float64)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper
    dtype = np.dtype(spec.dtype if dtype is None else dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"ONNX export supports float32 and float64, not {dtype}")
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    nodes, inits, used = [], [], {}

    def uniq(prefix):
        used[prefix] = used.get(prefix, -1) + 1
        return f"{prefix}_{used[prefix]}" if used[prefix] else prefix

    def node(op, ins, outs, **attrs):
        nodes.append(helper.make_node(op, ins, outs, name=uniq(op), **attrs))

    def init(name, arr):
        if arr.dtype == object:
            inits.append(helper.make_tensor(name, TensorProto.STRING, arr.shape,
                                            [s.encode("utf-8") for s in arr]))
        else:
            inits.append(numpy_helper.from_array(arr, name))

    n = "N"
    inputs = [helper.make_tensor_value_info(input_name, elem, [n, spec.n_features])]
    if spec.task == "regression":
        _emit(spec, input_name, None, "variable", dtype, node, init, uniq)
        outputs = [helper.make_tensor_value_info("variable", elem, [n, spec.n_units])]
    else:
        _emit(spec, input_name, "label", "probabilities", dtype, node, init, uniq)
        lt = TensorProto.INT64 if spec.label_type() == "int64" else TensorProto.STRING
        shape = [n, spec.n_units] if spec.task == "multilabel" else [n]
        outputs = [helper.make_tensor_value_info("label", lt, shape),
                   helper.make_tensor_value_info("probabilities", elem, [n, spec.n_proba])]
    graph = helper.make_graph(nodes, "fastmlp_mlp", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="fastmlp")
    model.ir_version = min(model.ir_version, 10)   # loadable by older onnxruntime builds too
    onnx.checker.check_model(model, full_check=True)
    return model


def _write(model, path):
    if path is not None:
        with open(os.fspath(path), "wb") as f:
            f.write(model.SerializeToString())
    return model


def model_to_onnx(model, path=None, dtype=None, opset=OPSET):
    """MLP.to_onnx: input `X` (N, n_features); outputs as MLP.predict / predict_proba
    (softmax: `label` (N,) class index, `probabilities` (N, C); logistic: `label` (N, K) 0/1,
    `probabilities` (N, K); identity / exp: `variable` (N, K)).  Writes `path` when given;
    returns the onnx.ModelProto."""
    return _write(build(spec_of_model(model), dtype, opset), path)


def estimator_to_onnx(est, path=None, dtype=None, opset=OPSET):
    """A fitted sklearn-style MLP estimator (fastmlp's or scikit-learn's, or a subclass) to
    ONNX: input `X`; classifiers `label` (N,) from classes_ ((N, K) 0/1 for multilabel) and
    `probabilities` as predict_proba; regressors `variable` (N, n_outputs).  dtype defaults
    to the coefficients' dtype.  Writes `path` when given; returns the onnx.ModelProto."""
    return _write(build(spec_of_estimator(est), dtype, opset), path)


# --------------------------------------------------------------------------- skl2onnx

def _shape_calculator(operator):
    from skl2onnx.common.data_types import (DoubleTensorType, FloatTensorType,
                                            Int64TensorType, StringTensorType)
    from skl2onnx.common.utils import check_input_and_output_types
    check_input_and_output_types(operator, good_input_types=[FloatTensorType, DoubleTensorType])
    spec = spec_of_estimator(operator.raw_operator)
    tensor = type(operator.inputs[0].type)              # keeps the input's precision
    n = operator.inputs[0].get_first_dimension()
    if spec.task == "regression":
        operator.outputs[0].type = tensor([n, spec.n_units])
        return
    if spec.task == "multilabel":
        operator.outputs[0].type = Int64TensorType([n, spec.n_units])
    else:
        label = Int64TensorType if spec.label_type() == "int64" else StringTensorType
        operator.outputs[0].type = label([n])
    operator.outputs[1].type = tensor([n, spec.n_proba])


def _convert(scope, operator, container):
    from onnx import TensorProto, numpy_helper
    from skl2onnx.common.data_types import DoubleTensorType
    spec = spec_of_estimator(operator.raw_operator)
    dtype = np.float64 if isinstance(operator.inputs[0].type, DoubleTensorType) else np.float32

    def node(op, ins, outs, **attrs):
        container.add_node(op, ins, outs, name=scope.get_unique_operator_name(op), **attrs)

    def init(name, arr):
        if arr.dtype == object:
            container.add_initializer(name, TensorProto.STRING, list(arr.shape),
                                      [s.encode("utf-8") for s in arr])
        else:
            container.add_initializer(name, None, None, numpy_helper.from_array(arr, name))

    outs = [v.full_name for v in operator.outputs]
    label, proba = (None, outs[0]) if spec.task == "regression" else outs[:2]
    _emit(spec, operator.inputs[0].full_name, label, proba, dtype, node, init,
          scope.get_unique_variable_name)


def _parse_classifier(scope, model, inputs, custom_parsers=None):
    """skl2onnx's classifier parser, except that with double input and ZipMap the
    probabilities are cast to float first (ai.onnx.ml ZipMap takes tensor(float) only)."""
    from skl2onnx._parse import (_apply_zipmap, _parse_sklearn_classifier,
                                 _parse_sklearn_simple_model)
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    options = scope.get_options(model, dict(zipmap=True))
    if not isinstance(inputs[0].type, DoubleTensorType) or options["zipmap"] is False:
        return _parse_sklearn_classifier(scope, model, inputs, custom_parsers=custom_parsers)
    if options.get("output_class_labels", False):
        raise RuntimeError("output_class_labels is not compatible with zipmap")
    label, proba = _parse_sklearn_simple_model(scope, model, inputs,
                                               custom_parsers=custom_parsers)
    cast = scope.declare_local_operator("SklearnCast")
    cast.inputs.append(proba)
    proba32 = scope.declare_local_variable("probabilities_f32", FloatTensorType())
    cast.outputs.append(proba32)
    return _apply_zipmap(options["zipmap"], scope, model, FloatTensorType(), [label, proba32])


def register(*classes):
    """Register the converter with skl2onnx for fastmlp's estimators and for `classes`
    (sklearn-compatible MLP estimators: classifiers are told from regressors by
    ClassifierMixin).  Idempotent; ImportError without skl2onnx."""
    try:
        from skl2onnx import update_registered_converter
    except ImportError as exc:
        raise ImportError(f"the skl2onnx converter needs skl2onnx: {EXTRA} ({exc})") from None
    from sklearn.base import ClassifierMixin

    from . import estimators
    own = [getattr(estimators, name) for name in ("MLPClassifier", "MLPRegressor")
           if hasattr(estimators, name)]
    for cls in own + list(classes):
        alias = f"Fastmlp{cls.__module__.replace('.', '_')}_{cls.__qualname__}"
        if issubclass(cls, ClassifierMixin):
            update_registered_converter(
                cls, alias, _shape_calculator, _convert, parser=_parse_classifier,
                options={"zipmap": [True, False, "columns"],
                         "output_class_labels": [False, True], "nocl": [True, False]})
        else:
            update_registered_converter(cls, alias, _shape_calculator, _convert)


try:   # the converter is there whenever this module is imported and skl2onnx is installed
    register()
except ImportError:
    pass
