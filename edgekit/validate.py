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
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.stack([sess.run(None, {name: x[None]})[0][0] for x in inputs])


def run(dev, build_dir: Path, inputs: np.ndarray) -> dict:
    """Send each input through the board (binary, CRC-checked), compare with ONNX Runtime."""
    outs = []
    for x in inputs:
        outs.append(np.frombuffer(dev.infer(np.ascontiguousarray(x).tobytes()), dtype=np.float32))
    got = np.stack(outs)
    ref = reference(Path(build_dir) / "model.onnx", inputs)
    return {**metrics(ref.reshape(got.shape), got), "inputs": len(inputs), "warnings": input_blind(inputs, got)}


def input_blind(inputs: np.ndarray, outputs: np.ndarray) -> list[str]:
    """A warning when distinct inputs all gave the same output bytes: a model (or a miscompilation) that
    ignores its input must not pass quietly, even where the reference agrees (a saturated classifier)."""
    if len(np.unique(inputs.reshape(len(inputs), -1), axis=0)) < 2:
        return []
    if len(np.unique(outputs.reshape(len(outputs), -1), axis=0)) > 1:
        return []
    return [f"{len(inputs)} distinct inputs gave identical outputs: the model on the board may ignore its input "
            "(validate with real inputs: --npy)"]
