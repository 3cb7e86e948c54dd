"""ONNX -> TVM Relax, and Relax -> compiled libraries for boards that run TVM's LLVM or CUDA output."""
from __future__ import annotations

from pathlib import Path

from .errors import UsageError


def import_onnx(model):
    """An onnx.ModelProto (or path) as a Relax IRModule with static shapes and weights bound as constants."""
    import onnx
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model))
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}}
    try:
        mod = from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
    except Exception as e:  # the importer's errors are about the user's model: unsupported ops, odd attributes
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise UsageError(f"TVM cannot import this model ({first[:200]}): replace those operators, "
                         "or export the model with plainer ones") from None
    return relax.transform.DecomposeOpsForInference()(mod)


def tvm_target(spec):
    """A TVM Target from a target file's [tvm] section value: a dict, or a tag such as 'nvidia/jetson-orin-nano'."""
    import tvm
    return tvm.target.Target(spec)


def build_library(mod, target, path: Path, cross_cc: str | None = None) -> Path:
    """Compile a Relax module with TVM's default pipeline and export it as a shared library for the board."""
    import tvm

    ex = tvm.compile(mod, tvm_target(target))
    fcompile = tvm.support.cc.cross_compiler(cross_cc) if cross_cc else None
    ex.export_library(str(path), fcompile=fcompile)
    return path
