"""Models shaped like real deployments (the MLPerf Tiny reference networks and edgekit's MobileNets), written
as their authors would: Keras layers, then TFLite's converter or ONNX. Used by tests/test_corpus.py and
benchmarks/corpus.py. Weights are seeded random, BatchNorm statistics too, so folding them is exercised."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def ds_cnn():
    """Keyword spotting DS-CNN (MLPerf Tiny KWS): 49x10 MFCC input, a 10x4 stride-2 stem, 4 separable blocks."""
    import keras
    from keras import layers as L
    x = inp = keras.Input((49, 10, 1))
    x = L.Conv2D(64, (10, 4), strides=2, padding="same")(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.Dropout(0.2)(x)
    for _ in range(4):
        x = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(x)))
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(64, 1)(x)))
    x = L.AveragePooling2D((25, 5))(L.Dropout(0.4)(x))
    return keras.Model(inp, L.Dense(12, activation="softmax")(L.Flatten()(x)))


def resnet8():
    """Image classification ResNet-8 (MLPerf Tiny IC): 32x32x3, three residual stacks with adds."""
    import keras
    from keras import layers as L

    def stack(x, filters, stride):
        y = L.ReLU()(L.BatchNormalization()(L.Conv2D(filters, 3, strides=stride, padding="same")(x)))
        y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same")(y))
        if stride != 1:
            x = L.Conv2D(filters, 1, strides=stride)(x)
        return L.ReLU()(L.Add()([x, y]))

    x = inp = keras.Input((32, 32, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(x)))
    x = stack(stack(stack(x, 16, 1), 32, 2), 64, 2)
    x = L.Flatten()(L.AveragePooling2D(8)(x))
    return keras.Model(inp, L.Dense(10, activation="softmax")(x))


def fc_autoencoder():
    """Anomaly detection FC autoencoder (MLPerf Tiny AD): 640 inputs, 128-wide layers, an 8-wide bottleneck."""
    import keras
    from keras import layers as L
    x = inp = keras.Input((640,))
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = L.ReLU()(L.BatchNormalization()(L.Dense(units)(x)))
    return keras.Model(inp, L.Dense(640)(x))


def mobilenet(arch: str, alpha: float, res: int, classes: int):
    from edgekit.models import ModelConfig
    from edgekit.models.keras import build
    return build(ModelConfig(arch, alpha, (res, res), classes))


MODELS = {
    "ds_cnn": ds_cnn,
    "resnet8": resnet8,
    "fc_autoencoder": fc_autoencoder,
    "vww_v1": lambda: mobilenet("v1", 0.25, 96, 2),
    "mobilenet_v2": lambda: mobilenet("v2", 0.35, 96, 10),
}


def _randomize_batchnorm(model, seed: int) -> None:
    """Keras starts BatchNorm at the identity; trained models never are, and folding must be exercised. The
    moving statistics are near those of each layer's input on random data, as training leaves them: with
    arbitrary ones the signal fades through the layers and every input gives about the same output, which
    hides errors (and an int8 output, in steps of 1/256, does not change at all)."""
    import keras
    from keras import layers as L
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (16, *model.inputs[0].shape[1:])).astype(np.float32)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            feed = keras.Model(model.input, layer.input)(x).numpy()
            axes, n = tuple(range(feed.ndim - 1)), layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), feed.mean(axes),
                               feed.var(axes) * rng.uniform(0.8, 1.25, n) + 1e-3])


def make(name: str, seed: int = 0):
    import keras
    keras.utils.set_random_seed(seed)
    model = MODELS[name]()
    if not name.startswith(("vww", "mobilenet")):  # edgekit's own MobileNets calibrate BatchNorm themselves
        _randomize_batchnorm(model, seed)
    return model


def write(name: str, out: Path, formats=("tflite", "onnx")) -> dict:
    """The model `name` as files in `out`: {format: path}. TFLite goes through TensorFlow's converter as a
    user's training script would; ONNX through tf2onnx, as a user exporting from Keras would."""
    import tensorflow as tf
    from edgekit.export import keras_to_onnx
    import onnx
    model, files = make(name), {}
    out.mkdir(parents=True, exist_ok=True)
    if "tflite" in formats:
        files["tflite"] = out / f"{name}.tflite"
        files["tflite"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    if "tflite_drq" in formats:  # dynamic-range quantized: int8 weights that tf2onnx dequantizes in the graph
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        files["tflite_drq"] = out / f"{name}_drq.tflite"
        files["tflite_drq"].write_bytes(conv.convert())
    if "tflite_int8" in formats:  # full-integer, int8 in and out, as MLPerf Tiny's reference models ship
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        rng = np.random.default_rng(0)
        shape = (1, *model.inputs[0].shape[1:])
        conv.representative_dataset = lambda: ([rng.uniform(-1, 1, shape).astype(np.float32)] for _ in range(8))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
        files["tflite_int8"] = out / f"{name}_int8.tflite"
        files["tflite_int8"].write_bytes(conv.convert())
    if "onnx" in formats:
        files["onnx"] = out / f"{name}.onnx"
        onnx.save(keras_to_onnx(model), str(files["onnx"]))
    return files
