"""Everything that goes in becomes one ONNX model with an NCHW float input: edgekit's MobileNets (Keras),
or a user's .onnx, .keras or float .tflite file."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError

OPSET = 13
MODEL_SUFFIXES = (".onnx", ".keras", ".tflite")


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def check_file(path: Path, what: str, suffixes: tuple[str, ...]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} file '{path}' does not exist: check the path")
    if not path.name.endswith(suffixes):
        raise UsageError(f"{what} file '{path}' has an unknown type: use {', '.join(suffixes)}")
    return path


def keras_to_onnx(model):
    """A Keras model with one NHWC image input as ONNX with an NCHW input named 'input'."""
    _quiet_tensorflow()
    import tensorflow as tf
    import tf2onnx

    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or None in shape[1:]:
        raise UsageError(f"model input shape {shape} is not a fixed NHWC image: give it a fixed size")
    spec = [tf.TensorSpec((1, *shape[1:]), tf.float32, name="input")]
    onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET, inputs_as_nchw=["input"])
    return onnx_model


def load_weights(model, weights: Path):
    weights = check_file(weights, "weights", (".h5", ".weights.h5", ".keras"))
    try:
        model.load_weights(str(weights))
    except Exception as e:  # Keras raises ValueError, OSError, KeyError... for foreign or broken files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
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
        elif path.suffix == ".keras":
            _quiet_tensorflow()
            import keras
            return keras_to_onnx(keras.models.load_model(str(path), compile=False))
        else:
            _quiet_tensorflow()
            import tf2onnx
            model, _ = tf2onnx.convert.from_tflite(str(path), opset=OPSET)
    except UsageError:
        raise
    except Exception as e:  # parsers raise many types for corrupt files; the user needs the file name
        raise UsageError(f"model file '{path}' could not be read ({type(e).__name__}): "
                         "check that it is a valid, float32 model") from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise UsageError(f"model file '{path}' has {len(inputs)} inputs: edgekit deploys single-input models")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if not dims or any(d <= 0 for d in dims):
        raise UsageError(f"model file '{path}' has a dynamic input shape: export it with a fixed shape")
    if inputs[0].type.tensor_type.elem_type != 1:
        raise UsageError(f"model file '{path}' does not take float32 input: quantized models are not supported yet")
    return model
