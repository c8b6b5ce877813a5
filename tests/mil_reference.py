"""Independent references for checking imgpipe's Core ML executor (tests only).

`run` is a slow NumPy interpreter of a parsed Program, written from the MIL op definitions: it shares nothing with
the ONNX translation except the parsed program and rounds every fp16 output right after its op. The Keras helpers
build "Keras on the package's weights", with the weights read back through coremltools' own pyMIL loader, so
compression error and executor error can be told apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from imgpipe.exporters.coreml.mil.program import Program


def run(program: Program, planar: np.ndarray, emulate_fp16: bool) -> np.ndarray:
    env = {program.inputs[0].name: planar.astype(np.float32)}
    for op in program.ops:
        if op.type == "classify":
            return env[op.inputs["probabilities"][0]]
        args = {
            k: [program.constant(a) if program.constant(a) is not None else env[a] for a in v]
            for k, v in op.inputs.items()
        }
        kwargs = {k: (v if k == "values" else v[0]) for k, v in args.items()}
        out = kwargs["x"] if op.type == "cast" and not emulate_fp16 else OPS[op.type](**kwargs)
        out = np.asarray(out, dtype=np.float32)
        if emulate_fp16 and op.outputs[0].dtype == "fp16":
            out = out.astype(np.float16).astype(np.float32)
        env[op.outputs[0].name] = out
    raise AssertionError("no classify op")


def _f(x):
    return np.asarray(x, dtype=np.float32)


def _pads(pad_type, spatial, kernel, strides, dilations, pad):
    pad_type = str(pad_type)
    if pad_type == "custom":
        return [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(len(spatial))]
    if pad_type == "valid":
        return [(0, 0)] * len(spatial)
    out = []
    for n, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((int(np.ceil(n / s)) - 1) * s + (k - 1) * d + 1 - n, 0)
        begin = total // 2 if pad_type == "same" else total - total // 2
        out.append((begin, total - begin))
    return out


def conv(x, weight, bias=None, strides=(1, 1), pad_type="valid", pad=(0, 0, 0, 0), dilations=(1, 1), groups=1):
    x, weight = _f(x), _f(weight)
    cout, cin_g, kh, kw = weight.shape
    pads = _pads(pad_type, x.shape[2:], (kh, kw), strides, dilations, pad)
    xp = np.pad(x, [(0, 0), (0, 0), *pads])
    dh, dw = int(dilations[0]), int(dilations[1])
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    win = win[:, :, :: int(strides[0]), :: int(strides[1]), ::dh, ::dw]
    n, c, oh, ow = win.shape[:4]
    g = int(groups)
    win = win.reshape(n, g, c // g, oh, ow, kh, kw)
    w = weight.reshape(g, cout // g, cin_g, kh, kw)
    out = np.einsum("ngchwij,gocij->ngohw", win, w, optimize=True).reshape(n, cout, oh, ow)
    return out if bias is None else out + _f(bias).reshape(1, -1, 1, 1)


def pad(x, pad, mode="constant", constant_val=0.0):
    pairs = np.asarray(pad).reshape(-1, 2)
    full = [(0, 0)] * (x.ndim - len(pairs)) + [tuple(p) for p in pairs]
    if str(mode) == "constant":
        return np.pad(x, full, constant_values=float(constant_val))
    return np.pad(x, full, mode={"reflect": "reflect", "replicate": "edge"}[str(mode)])


def linear(x, weight, bias=None):
    out = _f(x) @ _f(weight).T
    return out if bias is None else out + _f(bias)


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=int(axis), keepdims=True))
    return e / e.sum(axis=int(axis), keepdims=True)


def cast(x, dtype):
    return _f(x).astype(np.float16) if str(dtype) == "fp16" else _f(x)


OPS = {
    "add": lambda x, y: _f(x) + _f(y),
    "sub": lambda x, y: _f(x) - _f(y),
    "mul": lambda x, y: _f(x) * _f(y),
    "real_div": lambda x, y: _f(x) / _f(y),
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": lambda x: 1 / (1 + np.exp(-_f(x))),
    "sigmoid_hard": lambda x, alpha=0.2, beta=0.5: np.clip(float(alpha) * _f(x) + float(beta), 0, 1),
    "clip": lambda x, alpha, beta: np.clip(x, float(alpha), float(beta)),
    "cast": cast,
    "conv": conv,
    "pad": pad,
    "transpose": lambda x, perm: np.transpose(x, [int(p) for p in perm]),
    "reshape": lambda x, shape: np.reshape(x, [int(s) for s in shape]),
    "reduce_mean": lambda x, axes, keep_dims=False: np.mean(
        _f(x), axis=tuple(int(a) for a in axes), keepdims=bool(keep_dims)
    ),
    "linear": linear,
    "softmax": softmax,
}


def package_layer_weights(package: Path) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(op type, dense weight, bias) of each conv / linear op in program order, dequantized by pyMIL."""
    from coremltools.converters.mil.frontend.milproto.load import load
    from coremltools.models import MLModel

    mlmodel = MLModel(str(package), skip_model_load=True)
    spec = mlmodel.get_spec()
    program = load(spec, spec.specificationVersion, mlmodel.weights_dir)
    mine = None
    out = []
    for op in program.functions["main"].operations:
        if op.op_type not in ("conv", "linear"):
            continue
        values = []
        for var in (op.weight, op.bias):
            if var is None:
                values.append(None)
                continue
            try:
                value = var.val if var.val is not None else var.op.materialized_val_inference()
            except AttributeError:  # pyMIL cannot expand a constexpr fed by another constexpr (iOS18 scaled lut)
                mine = mine or _coreml_mil_constants(package)
                value = mine[var.name]
            values.append(np.asarray(value, dtype=np.float32))
        out.append((op.op_type, values[0], values[1]))
    return out


def _coreml_mil_constants(package: Path) -> dict:
    from imgpipe.exporters.coreml.package import open_package

    return open_package(package)[1].constants


def keras_with_package_weights(model, package: Path):
    """Clone `model` and give each Conv/DepthwiseConv (in layer order) and the final Dense the package's weights.
    coremltools folds BatchNormalization into the conv, so a conv's following BN becomes "+ bias" only. Meant for
    fp16-derived packages (all compressed variants are)."""
    import tf_keras as keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    convs = [layer for layer in clone.layers if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D)]
    shipped = package_layer_weights(package)
    conv_weights = [(w, b) for kind, w, b in shipped if kind == "conv"]
    linear = [(w, b) for kind, w, b in shipped if kind == "linear"]
    if len(conv_weights) != len(convs) or len(linear) != 1:
        raise AssertionError(f"{len(conv_weights)} conv ops for {len(convs)} conv layers, {len(linear)} linear ops")
    for layer, (weight, bias) in zip(convs, conv_weights):
        _set_conv(layer, weight, bias)
    dense_w, dense_b = linear[0]
    clone.layers[-1].set_weights([dense_w.T, dense_b if dense_b is not None else np.zeros(dense_w.shape[0])])
    return clone


def _set_conv(layer, weight: np.ndarray, bias: np.ndarray | None) -> None:
    import tf_keras as keras

    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
    kernel = weight.transpose(2, 3, 0, 1) if depthwise else weight.transpose(2, 3, 1, 0)
    keras_shape = layer.get_weights()[0].shape
    if kernel.shape != keras_shape:
        raise AssertionError(f"{layer.name}: package kernel {kernel.shape} vs Keras {keras_shape}")
    bias = np.zeros(kernel.shape[-2] if depthwise else kernel.shape[-1], np.float32) if bias is None else bias
    if layer.use_bias:
        # MobileNetV3's squeeze-excite convs: coremltools moves their bias into a separate add or merges the
        # hard-sigmoid's "+3" into it, so the package's conv bias is not the layer's. Biases are never compressed
        # (too small for the weight threshold); keep Keras's, rounded to fp16 like the shipped ones.
        layer.set_weights([kernel, layer.get_weights()[1].astype(np.float16).astype(np.float32)])
        return
    layer.set_weights([kernel])
    bn = layer.outbound_nodes[0].outbound_layer
    if not isinstance(bn, keras.layers.BatchNormalization):
        if np.any(bias):
            raise AssertionError(f"{layer.name}: package has a bias but Keras has neither bias nor BN")
        return
    bn.set_weights([np.ones_like(bias), bias, np.zeros_like(bias), np.full_like(bias, 1.0 - bn.epsilon)])
