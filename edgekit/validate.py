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
    full = tuple(spec["shape"])
    shape = full[1:] if full and full[0] == 1 else full  # one input: without the batch axis, if it has one
    dtype = np.dtype(spec.get("dtype", "float32"))
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
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    # a zero row has no direction: it agrees only with an identical row (an ArgMax output of class 0)
    cos = np.where(norms > 0, (r * g).sum(1) / np.maximum(norms, 1e-30), (r == g).all(1).astype(np.float64))
    m = {"max_abs_err": float(np.abs(r - g).max()), "rmse": float(np.sqrt(((r - g) ** 2).mean())),
         "cosine": float(cos.min()), "top1_agreement": float((r.argmax(1) == g.argmax(1)).mean()),
         "output_scale": float(scale)}
    m["passed"] = bool(m["max_abs_err"] <= TOLERANCE["max_abs_err"] * scale and m["cosine"] >= TOLERANCE["cosine"]
                       and m["top1_agreement"] >= TOLERANCE["top1_agreement"] and np.isfinite(g).all())
    m["tolerance"] = {**TOLERANCE, "max_abs_err": TOLERANCE["max_abs_err"] * scale}
    return m


def reference(onnx_path: Path, inputs: np.ndarray) -> np.ndarray:
    """ONNX Runtime's outputs, one flat row per input (the board sends its output flat, whatever its shape)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    # basic = constant folding only: the full level fuses DequantizeLinear(int8) + MatMul into MatMulNBits,
    # which quantizes activations too, and would be an approximate reference
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    return np.stack([sess.run(None, {inp.name: x.reshape(inp.shape)})[0].reshape(-1) for x in inputs])


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
    (inp,), o = it.get_input_details(), it.get_output_details()[0]["index"]
    outs = []
    for x in inputs:
        it.set_tensor(inp["index"], x.reshape(inp["shape"]))
        it.invoke()
        outs.append(it.get_tensor(o).reshape(-1).copy())
    return np.stack(outs)


def run(dev, build_dir: Path, inputs: np.ndarray, manifest: dict | None = None, outputs: Path | None = None,
        labels: np.ndarray | None = None, classes: list | None = None, progress=lambda done, total: None) -> dict:
    """Send each input through the board (binary, CRC-checked), compare with the build's reference.
    outputs: also write the board's raw outputs there (.npy, the output dtype, one row per input).
    labels: also the accuracy of board and reference (the MLPerf Tiny accuracy mode); it passes only if they
    agree on every image."""
    manifest = manifest or {}
    dtype = np.dtype(manifest.get("output", {}).get("dtype", "float32"))
    got = []
    for i, x in enumerate(inputs):
        got.append(np.frombuffer(dev.infer(np.ascontiguousarray(x).tobytes()), dtype=dtype))
        progress(i + 1, len(inputs))
    got = np.stack(got)
    if outputs is not None:
        shape = manifest.get("output", {}).get("shape")
        np.save(outputs, got.reshape(len(got), *shape[1:]) if shape else got)
    if manifest.get("reference") == "tflite":
        ref = tflite_reference(Path(build_dir) / "model.tflite", inputs)
        result = {**exact_metrics(ref.reshape(got.shape), got), "reference": "tflite"}
    else:
        ref = reference(Path(build_dir) / "model.onnx", inputs)
        result = metrics(ref.reshape(got.shape), got)
    result.update(inputs=len(inputs), warnings=input_blind(inputs, got))
    if labels is not None:
        result["accuracy"] = accuracy(got, ref, labels, classes)
        result["passed"] = result["passed"] and result["accuracy"]["agreement"] == 1.0
    return result



def on_board(build_dir: Path, inputs: np.ndarray, labels: np.ndarray | None = None, classes: list | None = None,
             runs: int = 3, port: str | None = None, host: str | None = None, threads: int | None = None,
             stage=lambda s: None) -> tuple[dict, dict]:
    """Validate and bench in one session with the build's board (its emulator without port or host), keeping both
    results in the build directory for `edgekit report`: (validation, latency)."""
    from . import board as boards, report, target as targets
    with boards.connect(build_dir, port, host, threads=threads) as (manifest, dev, source):
        stage("validate")
        val = {**run(dev, build_dir, inputs, manifest, labels=labels, classes=classes), "source": source}
        stage("bench")
        lat = report.latency(dev, manifest, targets.get(manifest["target"]), source, runs)
    report.record(build_dir, "validation", val)
    report.record(build_dir, "bench", lat)
    return val, lat

def accuracy(got: np.ndarray, ref: np.ndarray, labels: np.ndarray, classes: list | None = None) -> dict:
    """Top-1 of the board and of the reference, their agreement, and the board's confusion matrix
    (rows: true class, columns: predicted)."""
    n = got.shape[1] if got.ndim == 2 else int(np.prod(got.shape[1:]))
    if labels.max() >= n:
        raise UsageError(f"the dataset has class {int(labels.max())}, the model outputs {n} scores: "
                         "validate with the dataset it was trained on")
    pd, pr = got.reshape(len(got), -1).argmax(1), ref.reshape(len(ref), -1).argmax(1)
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (labels, pd), 1)
    return {"device_top1": float((pd == labels).mean()), "reference_top1": float((pr == labels).mean()),
            "agreement": float((pd == pr).mean()), "images": len(labels), "confusion": confusion.tolist(),
            "classes": list(classes) if classes else [str(i) for i in range(n)]}


def dataset_inputs(manifest: dict, spec: str, limit: int | None) -> tuple:
    """The first `limit` test images of a dataset, preprocessed as `edgekit train` does, in the build's input
    shape and layout: (inputs, labels, class names)."""
    from . import datasets
    if limit is not None and limit < 1:
        raise UsageError("--limit must be at least 1")
    spec_in = manifest.get("input") or {"shape": manifest["input_shape"], "layout": "NCHW", "dtype": "float32"}
    shape, layout = spec_in["shape"], spec_in.get("layout", "NCHW")
    size, channels = (shape[2:4], shape[1]) if layout == "NCHW" else (shape[1:3], shape[-1])
    if len(shape) != 4 or channels != 3:
        raise UsageError(f"the model takes {shape} ({layout}), not an RGB image: --dataset applies to image classifiers")
    data = datasets.load(spec, "test").take(limit)
    x = datasets.preprocess(data.x, tuple(size), layout)
    dtype = np.dtype(spec_in.get("dtype", "float32"))
    if dtype.kind != "f":  # the quantized input, as TFLite's QUANTIZE computes it from the same float image
        info = np.iinfo(dtype)
        v = x / spec_in["scale"]  # rounded half away from zero, as TFLite's QUANTIZE
        x = np.clip(np.trunc(v + np.copysign(0.5, v)) + spec_in["zero_point"], info.min, info.max).astype(dtype)
    return x, data.y, data.classes


def input_blind(inputs: np.ndarray, outputs: np.ndarray) -> list[str]:
    """A warning when distinct inputs all gave the same output bytes: a model (or a miscompilation) that
    ignores its input must not pass quietly, even where the reference agrees (a saturated classifier)."""
    if len(np.unique(inputs.reshape(len(inputs), -1), axis=0)) < 2:
        return []
    if len(np.unique(outputs.reshape(len(outputs), -1), axis=0)) > 1:
        return []
    return [f"{len(inputs)} distinct inputs gave identical outputs: the model on the board may ignore its input "
            "(validate with real inputs: --npy)"]
