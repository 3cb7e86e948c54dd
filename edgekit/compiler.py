"""ONNX -> TVM Relax: the one module every board's back end (codegen for C, cuda for Jetson) starts from."""
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

