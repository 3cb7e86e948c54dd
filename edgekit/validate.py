"""Validate stage: the board's outputs against the build's reference: ONNX Runtime on model.onnx, or for int8
builds TFLite's reference interpreter on model.tflite, which they must match exactly."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UsageError

# Float32 kernels differ from ONNX Runtime only by summation order: errors are ~1e-6 of the output scale.
TOLERANCE = {"max_abs_err": 1e-4, "cosine": 0.9999, "top1_agreement": 1.0}
SEED = 1234


def make_inputs(spec: dict, count: int = 0, npy: Path | None = None) -> np.ndarray:
    """Inputs for the manifest's `input` object (shape with batch, dtype): `count` seeded random ones, or
    those of a .npy file ((N, *shape) or one `shape`; the model's dtype, any for float models). Float inputs
    are uniform in [-1, 1); int8 ones smooth block noise at several amplitudes, which keeps a classifier's
    softmax out of saturation (uniform noise would hide errors upstream)."""
    shape, dtype = tuple(spec["shape"][1:]), np.dtype(spec.get("dtype", "float32"))
    if npy is None:
        if count < 1:
            raise UsageError("--inputs must be at least 1")
        rng = np.random.default_rng(SEED)
        if dtype.kind == "f":
            return rng.uniform(-1, 1, (count, *shape)).astype(dtype)
        return np.stack([_block_noise(shape, rng, (0.25, 0.5, 1.0)[i % 3], dtype) for i in range(count)])
    try:
        x = np.load(npy)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read inputs from {npy} ({e}): give a .npy array") from None
    x = x.reshape(1, *shape) if x.shape == tuple(shape) else x
    if x.shape[1:] != tuple(shape):
        raise UsageError(f"inputs in {npy} have shape {x.shape}, the model takes {tuple(shape)} (or N of them)")
    if dtype.kind != "f" and x.dtype != dtype:
        raise UsageError(f"inputs in {npy} are {x.dtype}, the model takes {dtype}: convert them (the manifest's "
                         "input object gives its scale and zero point)")
    return x.astype(dtype)


def _block_noise(shape, rng, amplitude: float, dtype, block: int = 4) -> np.ndarray:
    """Integer noise on a coarse grid, repeated in blocks over the two spatial axes (NHWC image or any)."""
    info = np.iinfo(dtype)
    mid, half = (info.min + info.max) / 2, (info.max - info.min) / 2
    if len(shape) != 3:
        return np.round(mid + half * amplitude * rng.uniform(-1, 1, shape)).astype(dtype)
    h, w, c = shape
    coarse = rng.uniform(-1, 1, (-(-h // block), -(-w // block), c))
    x = coarse.repeat(block, 0).repeat(block, 1)[:h, :w]
    return np.round(mid + half * amplitude * x).astype(dtype)


def exact_metrics(ref: np.ndarray, got: np.ndarray) -> dict:
    """Quantized outputs: errors counted in quantized steps; only an exact match passes."""
    m = metrics(ref.astype(np.float64), got.astype(np.float64))
    m["passed"] = bool(m["max_abs_err"] == 0)
    m["tolerance"] = {"max_abs_err": 0}
    m["unit"] = "quantized steps"
    return m


def metrics(ref: np.ndarray, got: np.ndarray) -> dict:
    """ref and got: (N, ...) outputs. Scale-relative absolute error keeps the tolerance meaningful for any model."""
    r, g = ref.reshape(len(ref), -1).astype(np.float64), got.reshape(len(got), -1).astype(np.float64)
    scale = max(np.abs(r).max(), 1e-12)
    cos = (r * g).sum(1) / np.maximum(np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1), 1e-30)
    m = {"max_abs_err": float(np.abs(r - g).max()), "rmse": float(np.sqrt(((r - g) ** 2).mean())),
         "cosine": float(cos.min()), "top1_agreement": float((r.argmax(1) == g.argmax(1)).mean()),
         "output_scale": float(scale)}
    m["passed"] = bool(m["max_abs_err"] <= TOLERANCE["max_abs_err"] * scale and m["cosine"] >= TOLERANCE["cosine"]
                       and m["top1_agreement"] >= TOLERANCE["top1_agreement"] and np.isfinite(g).all())
    m["tolerance"] = {**TOLERANCE, "max_abs_err": TOLERANCE["max_abs_err"] * scale}
    return m


def reference(onnx_path: Path, inputs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.stack([sess.run(None, {name: x[None]})[0][0] for x in inputs])


def tflite_reference(path: Path, inputs: np.ndarray) -> np.ndarray:
    """TFLite's interpreter with its reference kernels (not XNNPACK), one input at a time."""
    from .export import _quiet_tensorflow
    _quiet_tensorflow()
    import warnings
    import tensorflow as tf
    with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(model_path=str(path),
                                 experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    outs = []
    for x in inputs:
        it.set_tensor(i, x[None])
        it.invoke()
        outs.append(it.get_tensor(o)[0].copy())
    return np.stack(outs)


def run(dev, build_dir: Path, inputs: np.ndarray, manifest: dict | None = None, outputs: Path | None = None) -> dict:
    """Send each input through the board (binary, CRC-checked), compare with the build's reference.
    outputs: also write the board's raw outputs there (.npy, the output dtype, one row per input)."""
    manifest = manifest or {}
    dtype = np.dtype(manifest.get("output", {}).get("dtype", "float32"))
    got = np.stack([np.frombuffer(dev.infer(np.ascontiguousarray(x).tobytes()), dtype=dtype) for x in inputs])
    if outputs is not None:
        shape = manifest.get("output", {}).get("shape")
        np.save(outputs, got.reshape(len(got), *shape[1:]) if shape else got)
    if manifest.get("reference") == "tflite":
        ref = tflite_reference(Path(build_dir) / "model.tflite", inputs)
        return {**exact_metrics(ref.reshape(got.shape), got), "inputs": len(inputs), "reference": "tflite"}
    ref = reference(Path(build_dir) / "model.onnx", inputs)
    return {**metrics(ref.reshape(got.shape), got), "inputs": len(inputs)}
