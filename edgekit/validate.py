"""Validate stage: the board's outputs against ONNX Runtime on the build's model.onnx."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UsageError

# Float32 kernels differ from ONNX Runtime only by summation order: errors are ~1e-6 of the output scale.
TOLERANCE = {"max_abs_err": 1e-4, "cosine": 0.9999, "top1_agreement": 1.0}
SEED = 1234


def make_inputs(shape: tuple[int, ...], count: int = 0, npy: Path | None = None) -> np.ndarray:
    """`count` seeded random inputs in [-1, 1), or those of a .npy file: (N, *shape) or one `shape`."""
    if npy is None:
        if count < 1:
            raise UsageError("--inputs must be at least 1")
        return np.random.default_rng(SEED).uniform(-1, 1, (count, *shape)).astype(np.float32)
    try:
        x = np.load(npy)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read inputs from {npy} ({e}): give a .npy array") from None
    x = x.reshape(1, *shape) if x.shape == tuple(shape) else x
    if x.shape[1:] != tuple(shape):
        raise UsageError(f"inputs in {npy} have shape {x.shape}, the model takes {tuple(shape)} (or N of them)")
    return x.astype(np.float32)


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
    """ONNX Runtime's outputs, one flat row per input (the board sends its output flat, whatever its shape)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    # basic = constant folding only: the full level fuses DequantizeLinear(int8) + MatMul into MatMulNBits,
    # which quantizes activations too, and would be an approximate reference
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    return np.stack([sess.run(None, {inp.name: x.reshape(inp.shape)})[0].reshape(-1) for x in inputs])


def run(dev, build_dir: Path, inputs: np.ndarray, labels: np.ndarray | None = None, classes: list | None = None,
        progress=lambda done, total: None) -> dict:
    """Send each input through the board (binary, CRC-checked), compare with ONNX Runtime. With `labels`, also
    the accuracy of both (the MLPerf Tiny accuracy mode): it passes only if they agree on every image."""
    outs = []
    for i, x in enumerate(inputs):
        outs.append(np.frombuffer(dev.infer(np.ascontiguousarray(x).tobytes()), dtype=np.float32))
        progress(i + 1, len(inputs))
    got = np.stack(outs)
    ref = reference(Path(build_dir) / "model.onnx", inputs)
    result = {**metrics(ref.reshape(got.shape), got), "inputs": len(inputs), "warnings": input_blind(inputs, got)}
    if labels is not None:
        result["accuracy"] = accuracy(got, ref, labels, classes)
        result["passed"] = result["passed"] and result["accuracy"]["agreement"] == 1.0
    return result


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
    shape = manifest["input_shape"]
    if len(shape) != 4 or shape[1] != 3:
        raise UsageError(f"the model takes {shape}, not an NCHW RGB image: --dataset applies to image classifiers")
    data = datasets.load(spec, "test").take(limit)
    return datasets.preprocess(data.x, tuple(shape[2:]), "NCHW"), data.y, data.classes


def input_blind(inputs: np.ndarray, outputs: np.ndarray) -> list[str]:
    """A warning when distinct inputs all gave the same output bytes: a model (or a miscompilation) that
    ignores its input must not pass quietly, even where the reference agrees (a saturated classifier)."""
    if len(np.unique(inputs.reshape(len(inputs), -1), axis=0)) < 2:
        return []
    if len(np.unique(outputs.reshape(len(outputs), -1), axis=0)) > 1:
        return []
    return [f"{len(inputs)} distinct inputs gave identical outputs: the model on the board may ignore its input "
            "(validate with real inputs: --npy)"]
