"""Per-layer cost: MACs (convolutions and classifier, batch 1), params (BatchNorm folded: weights plus one
bias per output channel) and activation bytes (the layer's float32 output)."""
from __future__ import annotations

from .mobilenet import Layer

DTYPE_BYTES = 4


def layer_cost(l: Layer) -> dict:
    oh, ow = l.out_hw
    if l.op == "conv":
        macs, params = oh * ow * l.cout * l.kernel * l.kernel * l.cin, l.kernel * l.kernel * l.cin * l.cout + l.cout
    elif l.op == "depthwise":
        macs, params = oh * ow * l.cout * l.kernel * l.kernel, l.kernel * l.kernel * l.cout + l.cout
    elif l.op == "dense":
        macs, params = l.cin * l.cout, l.cin * l.cout + l.cout
    else:  # add, pool: no weights; their adds are not multiply-accumulates
        macs, params = 0, 0
    return {"name": l.name, "op": l.op, "output": [oh, ow, l.cout], "macs": macs, "params": params,
            "activation_bytes": oh * ow * l.cout * DTYPE_BYTES}


def count(specs: list[Layer]) -> dict:
    rows = [layer_cost(l) for l in specs]
    h, w = specs[0].in_hw
    return {"layers": rows, "macs": sum(r["macs"] for r in rows), "params": sum(r["params"] for r in rows),
            "input_bytes": h * w * specs[0].cin * DTYPE_BYTES,
            "peak_activation_bytes": max(r["activation_bytes"] for r in rows)}


def count_onnx(model) -> dict:
    """MACs of Conv/Gemm/MatMul and the parameter count of a user's ONNX model (after shape inference): its
    initializers but the int64 ones."""
    import numpy as np
    import onnx

    model = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = [d.dim_value for d in v.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            shapes[v.name] = dims
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    shapes.update(inits)
    macs = 0
    for n in model.graph.node:
        out = shapes.get(n.output[0])
        if n.op_type == "Conv" and out and n.input[1] in shapes:
            w = shapes[n.input[1]]  # (Cout, Cin/group, kh, kw)
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("Gemm", "MatMul") and out and n.input[0] in shapes:
            macs += int(np.prod(out)) * shapes[n.input[0]][-1]
    # int64 initializers are shapes, axes and indices (ONNX's type for them), not weights
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type != onnx.TensorProto.INT64)
    return {"macs": macs, "params": params}
