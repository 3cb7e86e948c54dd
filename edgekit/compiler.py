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
    model = _fold_shapes(model)
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}}
    try:
        mod = from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
    except Exception as e:  # the importer's errors are about the user's model: unsupported ops, odd attributes
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise UsageError(f"TVM cannot import this model ({first[:200]}): replace those operators, "
                         "or export the model with plainer ones") from None
    return relax.transform.DecomposeOpsForInference()(mod)



def _fold_shapes(model):
    """Shape arithmetic (Shape -> Gather -> Concat -> Reshape, as torch.onnx and sometimes tf2onnx write) on a
    model whose shapes are all static, folded into constants by ONNX Runtime's basic level (constant folding and
    other rewrites that keep to standard ONNX operators): TVM's importer takes a Reshape's shape only as a constant."""
    if not any(n.op_type in ("Shape", "Size") for n in model.graph.node):
        return model
    import tempfile
    import onnx
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory() as d:
        opts.optimized_model_filepath = f"{d}/folded.onnx"
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return onnx.load(opts.optimized_model_filepath)
