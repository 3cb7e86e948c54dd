"""Everything that goes in becomes one ONNX model with an NCHW float input: edgekit's MobileNets (Keras),
or a user's .onnx, .keras or float .tflite file."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError

OPSET = 13
MODEL_SUFFIXES = (".onnx", ".keras", ".h5", ".tflite")
WEIGHTS_SUFFIXES = (".h5", ".keras")


def _quiet_tensorflow():
    """Import TensorFlow with its C++ start-up chatter (absl, oneDNN) kept off the user's stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def check_file(path: Path, what: str, suffixes: tuple[str, ...]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} file '{path}' does not exist: check the path")
    if not path.name.endswith(suffixes):
        raise UsageError(f"{what} file '{path}' has an unknown type: use {', '.join(suffixes)}")
    return path


def keras_to_onnx(model):
    """A Keras model with one fixed-size input as ONNX with input 'input' and output 'output'; an NHWC image
    input becomes NCHW."""
    _quiet_tensorflow()
    import tensorflow as tf
    import tf2onnx

    shape = tuple(model.inputs[0].shape)
    if len(model.inputs) != 1 or len(shape) < 2 or None in shape[1:]:
        raise UsageError(f"model input shape {shape} is not one fixed-size tensor: export it with a fixed size")
    spec = [tf.TensorSpec((1, *shape[1:]), tf.float32, name="input")]
    # from_function, not from_keras: from_keras loses output names of Sequential models under Keras 3
    fn = tf.function(lambda x: model(x, training=False))
    onnx_model, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=OPSET,
                                                  inputs_as_nchw=["input"] if len(shape) == 4 else None)
    return _rename_output(onnx_model, "output")


def _rename_output(model, name: str):
    old = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    model.graph.output[0].name = name
    return model


def load_weights(model, weights: Path):
    """Load a Keras weights file strictly: Keras 3 only warns about layers it skips, edgekit refuses."""
    import warnings
    import numpy as np

    weights = check_file(weights, "weights", WEIGHTS_SUFFIXES)
    kernels = [v for v in model.weights if "kernel" in v.path]
    before = [v.numpy().copy() for v in kernels]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.load_weights(str(weights))
        untouched = [v.path for v, b in zip(kernels, before) if np.array_equal(v.numpy(), b)]
        if untouched:
            raise ValueError(f"{len(untouched)} kernels not in the file, e.g. {untouched[0]}")
    except Exception as e:  # Keras raises ValueError, OSError, KeyError, warnings... for foreign or broken files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"weights file '{weights}' does not fit this model ({first[:160]}): "
                         "use weights saved for the same --arch, --alpha and --classes") from None


def mobilenet_onnx(cfg, weights: Path | None = None):
    """edgekit's MobileNet for `cfg` as ONNX: seeded, BatchNorm-calibrated random weights, or `weights`."""
    _quiet_tensorflow()
    from .models.keras import build

    model = build(cfg, calibrate=weights is None)
    if weights is not None:
        load_weights(model, weights)
    return keras_to_onnx(model)


def user_onnx(path: Path):
    """A user's model file as a checked ONNX model with a static NCHW float input."""
    path = check_file(path, "model", MODEL_SUFFIXES)
    try:
        if path.suffix == ".onnx":
            import onnx
            model = onnx.load(str(path))
            onnx.checker.check_model(model)
        elif path.suffix in (".keras", ".h5"):  # .h5: the legacy full-model format many training scripts write
            _quiet_tensorflow()
            import keras
            return keras_to_onnx(keras.models.load_model(str(path), compile=False))
        else:
            _quiet_tensorflow()
            import tf2onnx
            model, _ = tf2onnx.convert.from_tflite(str(path), opset=OPSET)
            if len(model.graph.input[0].type.tensor_type.shape.dim) == 4:  # NHWC image: convert again as NCHW
                model, _ = tf2onnx.convert.from_tflite(str(path), opset=OPSET, inputs_as_nchw=[model.graph.input[0].name])
    except UsageError:
        raise
    except Exception as e:  # parsers raise many types for corrupt files; the user needs the file name
        raise UsageError(f"model file '{path}' could not be read ({type(e).__name__}): "
                         "check that it is a valid, float32 model") from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise UsageError(f"model file '{path}' has {len(inputs)} inputs: edgekit deploys single-input models")
    shape = inputs[0].type.tensor_type.shape
    if shape.dim and shape.dim[0].dim_value <= 0:  # a free batch dimension: edgekit runs batch 1
        shape.dim[0].dim_value = 1
    dims = [d.dim_value for d in shape.dim]
    if not dims or any(d <= 0 for d in dims):
        raise UsageError(f"model file '{path}' has a dynamic input shape: export it with a fixed shape")
    if inputs[0].type.tensor_type.elem_type != 1:
        raise UsageError(f"model file '{path}' does not take float32 input: quantized models are not supported yet")
    return model
