"""Full-integer post-training quantization with TensorFlow's TFLite converter (int8 input and output), so
that TFLite's interpreter stays the reference for the result."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import UsageError, warn

CALIBRATION_IMAGES = 32
SEED = 1234


def calibration_images(shape: tuple, path: Path | None) -> np.ndarray:
    """(N, H, W, C) float32 images: the file's (NHWC, one or N), or seeded random ones with a warning."""
    if path is None:
        warn("calibrating int8 on seeded random images: accuracy needs real ones (--calibration FILE.npy)")
        return np.random.default_rng(SEED).uniform(-1, 1, (CALIBRATION_IMAGES, *shape)).astype(np.float32)
    try:
        x = np.load(path)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read calibration images from {path} ({e}): give a .npy array") from None
    x = x[None] if x.shape == tuple(shape) else x
    if x.shape[1:] != tuple(shape):
        raise UsageError(f"calibration images in {path} have shape {x.shape}: the model takes NHWC {tuple(shape)} "
                         "(or N of them)")
    return x.astype(np.float32)


def quantize_keras(model, calibration: Path | None) -> bytes:
    """A Keras model with one NHWC float input as a full-integer TFLite flatbuffer (int8 in and out)."""
    import tensorflow as tf
    shape = tuple(model.inputs[0].shape[1:])
    if None in shape:
        raise UsageError(f"model input shape {shape} is not fixed: export it with a fixed size")
    images = calibration_images(shape, calibration)
    conv = tf.lite.TFLiteConverter.from_keras_model(_batch_one(model, shape))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[None]] for x in images)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    with _stdout_to_stderr():  # Keras' export prints "Saved artifact ...": --json output must stay clean
        return conv.convert()


@contextlib.contextmanager
def _stdout_to_stderr():
    """Both Python's and C's stdout to file descriptor 2 (which the CLI keeps off the terminal unless --verbose)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with open(os.dup(2), "w") as fd2, contextlib.redirect_stdout(fd2):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _batch_one(model, shape):
    """The model with its batch fixed to 1: with a free batch, the converter turns reshapes into SHAPE and
    STRIDED_SLICE arithmetic."""
    import keras
    if model.inputs[0].shape[0] == 1:
        return model
    fixed = keras.models.clone_model(model, input_tensors=keras.Input(shape, batch_size=1))
    fixed.set_weights(model.get_weights())
    return fixed
