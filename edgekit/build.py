"""`edgekit build`: model in, one build directory out (written aside, then moved in place whole)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from . import __version__, target as targets
from .errors import UsageError, checkpoint, checkpointed
from .models import ModelConfig, count, count_onnx, layers

BUILD_ROOT = Path("build")


def default_dir(target: str, cfg: ModelConfig | None, model: Path | None) -> Path:
    return BUILD_ROOT / (f"{target}-{Path(model).stem}" if model else f"{target}-{cfg.tag}")


def _describe(cfg: ModelConfig | None, onnx_model, model: Path | None) -> dict:
    if model is not None:
        dims = [d.dim_value for d in onnx_model.graph.input[0].type.tensor_type.shape.dim]
        return {"arch": "custom", "alpha": None, "resolution": dims[2:], "classes": None,
                "model_source": str(model), **count_onnx(onnx_model)}
    cost = count(layers(cfg))
    return {"arch": cfg.arch, "alpha": cfg.alpha, "resolution": list(cfg.resolution), "classes": cfg.classes,
            "model_source": "edgekit", "macs": cost["macs"], "params": cost["params"]}


def build(target: str, cfg: ModelConfig | None = None, model: Path | None = None, weights: Path | None = None,
          out: Path | None = None, stage: Callable[[str], None] = lambda s: None, quantize: str | None = None,
          calibration: Path | None = None, check_budget: bool = True, mlperf: str | None = None,
          tuning: bool = True, db: Path | None = None) -> dict:
    """Build `cfg` (an edgekit MobileNet) or `model` (a user's file) for `target`; returns the manifest.
    quantize="int8": full-integer post-training quantization first (calibration: NHWC float images, .npy).
    mlperf: an MLPerf Tiny benchmark (vww01, ic01, kws01, ad01): the firmware takes the official runner's raw
    input for it and reports its name (edgekit.mlperf).
    check_budget=False keeps a build that does not fit the board (its memory report says by how much).
    tuning: apply the target's tuning records where there are some: database `db`, or by default the user's
    (tuning.database_dir) then those edgekit ships (tuning.shipped_dir)."""
    board = targets.get(target)
    check_inputs(board, model, weights, quantize, calibration, mlperf)
    stage = checkpointed(stage)
    cfg = None if model is not None else (cfg or ModelConfig())
    out = Path(out) if out else default_dir(target, cfg, model)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    new_parent = not out.parent.exists()
    try:
        tmp.mkdir(parents=True)
        mod, manifest = front_end(tmp, board, cfg, model, weights, quantize, calibration, stage)
        stage(f"compile for {board.name}")
        if board.kind == "cuda":
            from .cuda import build_cuda
            res = build_cuda(mod, board, tmp, name="model", model_hash=manifest["model_sha256"][:16])
            manifest["artifact"].update(res.pop("artifact"))
            manifest["cuda"] = res
        else:  # mcu and linux boards: edgekit's own C around TVM's kernels, no TVM runtime on the board
            tuned = None
            if tuning:
                from .tuning import tuned_for
                tuned = tuned_for(board, db)
            manifest.update(_build_c(tmp, board, mod, "model", manifest, stage, check_budget, mlperf, tuned))
        if manifest.get("quantization") == "int8":
            manifest["artifact"]["tflite"] = "model.tflite"
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        checkpoint()  # an interrupt a library swallowed on the way commits nothing
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:  # an error or Ctrl-C leaves no half-written directory, nor a build/ made just for it
        shutil.rmtree(tmp, ignore_errors=True)
        if new_parent and out.parent.exists() and not any(out.parent.iterdir()):
            out.parent.rmdir()
    return {**manifest, "build_dir": str(out)}


def check_inputs(board, model, weights, quantize, calibration, mlperf) -> None:
    from .export import MODEL_SUFFIXES, WEIGHTS_SUFFIXES, check_file
    if model is not None and weights is not None:
        raise UsageError("--weights applies to edgekit's MobileNets, not to --model files: drop one of them")
    if model is not None:
        check_file(model, "model", MODEL_SUFFIXES)
    if weights is not None:
        check_file(weights, "weights", WEIGHTS_SUFFIXES)
    if quantize not in (None, "int8"):
        raise UsageError(f"--quantize {quantize} is not supported: use --quantize int8")
    if calibration is not None and quantize is None:
        raise UsageError("--calibration applies to --quantize int8: add it, or drop --calibration")
    if quantize and model is not None and Path(model).suffix != ".keras":
        raise UsageError(f"--quantize needs a Keras model or edgekit's MobileNets, not {Path(model).suffix}: "
                         "quantize it with TFLite's converter and pass the int8 .tflite")
    if calibration is not None:
        check_file(calibration, "calibration", (".npy",))
    if mlperf is not None:
        from .mlperf import BENCHMARKS
        if mlperf not in BENCHMARKS:
            raise UsageError(f"--mlperf {mlperf} is not an MLPerf Tiny benchmark: use one of {', '.join(BENCHMARKS)}")
        if board.kind == "cuda":
            raise UsageError(f"--mlperf builds firmware that speaks to the MLPerf Tiny runner: {board.name} has none")


def front_end(d: Path, board, cfg, model, weights, quantize, calibration, stage=lambda s: None):
    """The model as the Relax module every back end compiles, and the manifest's description of it; writes
    model.onnx (and model.tflite for int8) into d. `edgekit tune` starts from the same module."""
    int8 = quantize == "int8" or (model is not None and Path(model).suffix == ".tflite" and _quantized(model))
    return (_front_int8 if int8 else _front_float)(d, board, cfg, model, weights, calibration, stage)


def _front_float(d: Path, board, cfg, model, weights, calibration, stage):
    import onnx
    from . import export

    stage("export ONNX")
    onnx_model = export.user_onnx(model) if model is not None else export.mobilenet_onnx(cfg, weights)
    onnx.save(onnx_model, str(d / "model.onnx"))
    manifest = {"target": board.name, **_describe(cfg, onnx_model, model),
                "input_shape": [d.dim_value for d in onnx_model.graph.input[0].type.tensor_type.shape.dim],
                "model_sha256": hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest(),
                "edgekit_version": __version__, "artifact": {"onnx": "model.onnx"}}
    out = onnx_model.graph.output[0].type.tensor_type
    manifest["input"] = {"shape": manifest["input_shape"], "layout": "NCHW", "dtype": "float32"}
    manifest["output"] = {"shape": [d.dim_value for d in out.shape.dim], "layout": "NCHW",
                          "dtype": str(onnx.helper.tensor_dtype_to_np_dtype(out.elem_type))}  # ArgMax: int64
    stage("import into TVM Relax")
    from . import compiler
    return compiler.import_onnx(onnx_model), manifest


def _quantized(model: Path) -> bool:
    from .int8.tflite import is_quantized
    return is_quantized(model)


def _front_int8(d: Path, board, cfg, model, weights, calibration, stage):
    """The int8 path: a full-integer TFLite file (the user's, or quantized here) is both the reference
    (model.tflite) and what is compiled, through edgekit's integer kernels; model.onnx is its QDQ form."""
    from .export import _quiet_tensorflow
    from .int8 import tflite

    if board.kind == "cuda":
        raise UsageError(f"int8 models are not supported on {board.name} yet: build the float model")
    tfl = d / "model.tflite"
    if model is not None and Path(model).suffix == ".tflite":
        shutil.copyfile(model, tfl)
    else:
        stage("quantize to int8 (TFLite converter)")
        _quiet_tensorflow()
        from .int8.ptq import quantize_keras
        if model is not None:
            import keras
            km = keras.models.load_model(str(model), compile=False)
        else:
            from .export import load_weights
            from .models.keras import build as keras_build
            km = keras_build(cfg, calibrate=weights is None)
            if weights is not None:
                load_weights(km, weights)
        tfl.write_bytes(quantize_keras(km, calibration))
    stage("export QDQ ONNX")
    import onnx
    import tf2onnx
    onnx_model, _ = tf2onnx.convert.from_tflite(str(tfl), opset=13)
    onnx.save(onnx_model, str(d / "model.onnx"))
    stage("import int8 TFLite")
    mod, inp, out = tflite.to_relax(tfl, int8_micro(board))
    ops, _, _ = tflite.read(tfl)
    about = _describe(cfg, None, None) if model is None else \
        {"arch": "custom", "alpha": None, "resolution": list(inp.shape[1:3]), "classes": None,
         "model_source": str(model), **tflite.cost(ops)}
    sha = hashlib.sha256(tfl.read_bytes()).hexdigest()
    manifest = {"target": board.name, **about, "input_shape": list(inp.shape), "input": tflite.io(inp),
                "output": tflite.io(out), "quantization": "int8", "reference": "tflite", "model_sha256": sha,
                "edgekit_version": __version__}
    return mod, manifest


def int8_micro(board) -> str | None:
    """The int8 convolutions' micro-kernels on a board (tflite.to_relax's `micro`): none on Linux boards."""
    return ("dsp" if "dsp" in board.data.get("features", []) else "portable") if board.kind == "mcu" else None


def _build_c(d: Path, board, mod, name: str, manifest: dict, stage, check_budget: bool, mlperf: str | None = None,
             tuned=None) -> dict:
    """edgekit's own C (kernels, orchestration, static arena) linked into the board's firmware. With `mlperf`, the
    firmware takes that benchmark's raw input (the manifest's `mlperf` object says what and how). tuned: the
    tuning database's schedules (tuning.Tuned), or None."""
    from .tuning import stack_bytes
    from .codegen import generate
    from .compiler import for_board
    from .firmware import build_firmware
    from .mlperf import config_lines, declare

    sha256 = manifest["model_sha256"]
    if mlperf:
        manifest["mlperf"] = declare(mlperf, manifest["input"], manifest["output"])

    c_dir = d / "c"
    try:
        info = generate(for_board(mod, board), c_dir, name, mcpu=board.core, threads=board.kind == "linux",
                        tuned=tuned, stack_bytes=stack_bytes(board))
    except NotImplementedError as e:  # a model shape the C generator does not handle yet
        raise UsageError(f"{e}: this model cannot be built for {board.name} yet") from None
    stage(f"link firmware for {board.name}")
    fw = build_firmware(board, c_dir, name, sha256[:16], d / "firmware",
                        config=config_lines(manifest["input"], manifest["output"], manifest.get("mlperf")))
    memory = {**fw["memory"], "arena_bytes": info["arena_bytes"], "arena_lower_bound": info["arena_lower_bound"],
              "weights_bytes": info["weights_bytes"]}
    for key, what in (("flash", "flash"), ("ram", "RAM"), ("weights_region", "weights memory")):
        used, budget = memory.get(f"{key}_bytes"), memory.get(f"{key}_budget")
        if check_budget and budget and used and used > budget:
            raise UsageError(f"the model needs {used:,} B of {what} on {board.name} ({used - budget:,} B over its "
                             f"{budget:,} B): try a smaller --alpha or --resolution, or a board with more {what}")
    return {"artifact": {"onnx": "model.onnx", "c_library": "c", "firmware": str(fw["firmware"].relative_to(d.resolve()))},
            "memory": memory, "layers": len(info["layers"]),
            "tuning": {"database": str(tuned.path) if tuned and tuned.path else None,
                       "kernels_tuned": info["kernels_tuned"], "kernels": info["kernels"]}}
