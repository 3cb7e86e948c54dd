"""Helpers for the int8 tests: Keras -> full-integer TFLite, smooth test inputs, TFLite's reference
interpreter, and edgekit's generated C for a TFLite file loaded on this machine."""
import ctypes
import os
import subprocess
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def block_noise(shape, rng, amplitude: float, block: int = 4) -> np.ndarray:
    """Smooth float inputs: uniform noise on a coarse grid, repeated in blocks over H and W (NHWC)."""
    n, h, w, c = shape if len(shape) == 4 else (shape[0], 1, 1, int(np.prod(shape[1:])))
    coarse = rng.uniform(-amplitude, amplitude, (n, -(-h // block), -(-w // block), c))
    x = coarse.repeat(block, 1).repeat(block, 2)[:, :h, :w]
    return x.reshape(shape).astype(np.float32)


def to_tflite(model, path: Path, calibration: np.ndarray, float_io: bool = False) -> Path:
    """Full-integer post-training quantization with TensorFlow's converter (int8 in/out unless float_io)."""
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[None]] for x in calibration)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not float_io:
        conv.inference_input_type = conv.inference_output_type = tf.int8
    Path(path).write_bytes(conv.convert())
    return Path(path)


def quantized_inputs(path: Path, floats: np.ndarray) -> np.ndarray:
    """Float inputs in the model's input dtype (quantized with its input scale and zero point)."""
    from edgekit.int8.tflite import read
    _, inp, _ = read(path)
    if inp.dtype == "float32":
        return floats.astype(np.float32)
    return np.clip(np.round(floats / inp.s) + inp.zp, -128, 127).astype(inp.dtype)


def reference(path: Path, xs: np.ndarray) -> np.ndarray:
    import tensorflow as tf
    it = tf.lite.Interpreter(model_path=str(path),
                             experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    outs = []
    for x in xs:
        it.set_tensor(i, x[None])
        it.invoke()
        outs.append(it.get_tensor(o)[0].copy())
    return np.stack(outs)


class HostModel:
    """edgekit's generated C for a TFLite file, compiled into a shared library and run through ctypes."""

    def __init__(self, tflite: Path, out_dir: Path, name: str = "m", micro: str | None = None, tuned=None):
        from edgekit.codegen import generate
        from edgekit.int8.tflite import to_relax
        mod, self.inp, self.out = to_relax(tflite, micro)
        self.dir, self.name = Path(out_dir), name
        self.info = generate(mod, self.dir, name, tuned=tuned)
        lib = self.dir / f"lib{name}.so"
        r = subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", str(lib),
                            "model.c", "kernels.c", "shim.c", "-lm"], cwd=self.dir, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        self.lib = ctypes.CDLL(str(lib))

    def __call__(self, xs: np.ndarray) -> np.ndarray:
        outs = []
        for x in xs:
            x = np.ascontiguousarray(x, dtype=self.inp.dtype)
            y = np.zeros(self.out.shape, self.out.dtype)
            rc = getattr(self.lib, f"edgekit_{self.name}_run")(x.ctypes.data_as(ctypes.c_void_p),
                                                               y.ctypes.data_as(ctypes.c_void_p))
            assert rc == 0
            outs.append(y[0])
        return np.stack(outs)
