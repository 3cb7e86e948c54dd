"""ONNX -> TVM Relax: the one module every board's back end (codegen for C, cuda for Jetson) starts from."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UsageError


def import_onnx(model):
    """An onnx.ModelProto (or path) as a Relax IRModule with static shapes and weights bound as constants."""
    import onnx
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model))
    model = _fold_scale_shift(_fold_pads(_fold_shapes(model)))
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}}
    try:
        mod = from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
    except Exception as e:  # the importer's errors are about the user's model: unsupported ops, odd attributes
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise UsageError(f"TVM cannot import this model ({first[:200]}): replace those operators, "
                         "or export the model with plainer ones") from None
    return relax.transform.DecomposeOpsForInference()(mod)


def for_board(mod, board):
    """The module in the board's own layout (its TOML's tvm.layout): every convolution NHWC with HWIO weights,
    so each kernel's innermost loop runs over channels, contiguous in its input, weights and output, which gcc
    vectorizes; the model's input and output keep their ONNX layout (TVM inserts the transposes). Boards with
    SIMD (tvm.vector_floats) also read a classifier's and 1x1 convolutions' weights packed in tiles
    (_packed_weights)."""
    from tvm import relax
    layout = board.data["tvm"].get("layout")
    if layout is None:
        return mod
    if layout != "NHWC":
        raise UsageError(f"targets/{board.name}.toml: tvm.layout {layout!r} is not supported (NHWC, or none)")
    mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})(_scalar_clamps_as_ops(mod))
    vector = int(board.data["tvm"].get("vector_floats", 1))
    return _packed_weights(mod, board) if vector > 1 else mod


def _packed_weights(mod, board):
    """Each float matmul by a constant matrix W [K, N] (a classifier) reads W packed as [N/t, K, t], N padded with
    zero columns to whole tiles of t: a kernel's register tile of output columns then streams its weights from
    one contiguous run, where over W it would take a few floats from each row, N floats apart. A classifier's
    weights are read once per inference, so this is where its time goes (1000 classes on host: 1.8x faster).
    A 1x1 convolution of a 1x1 map (MobileNet V1's classifier) is such a matmul too.
    t: two vectors (the seed's innermost tile, space.seed_tiles), or one where that pads less; no packing for
    fewer than two tiles or a padding of over 1/16 of N. The extra columns are sliced off after.
    Every other 1x1 convolution (a larger map: MobileNet's pointwise layers) becomes pointwise_packed, t the
    board's first seed tile of its output channels: no transpose after, as its output is NHWC already (V2 1.0's
    late layers, 0.6-1.6 MB of weights: HWIO rows 1.3-5 KB apart, which the prefetcher did not follow)."""
    import tvm
    from tvm import relax
    from tvm.ir.expr import Constant
    from tvm.relax.expr_functor import mutator
    from .tuning.space import seed_channel_tile, seeds
    vector = int(board.data["tvm"]["vector_floats"])
    matmul_op, conv_op = tvm.ir.Op.get("relax.matmul"), tvm.ir.Op.get("relax.nn.conv2d")

    def tile(n):
        return next((t for t in (2 * vector, vector) if n >= 2 * t and -n % t <= n / 16), None)

    def packed(x, lead, w):
        """x [*lead, K] times w [K, N] over w packed, as [*lead, N]."""
        (k, n), t = w.shape, tile(w.shape[1])
        blocks, m = -(-n // t), int(np.prod(lead, dtype=np.int64))
        wp = pack_weights(w.astype(np.float32), t)
        y = relax.op.matmul(relax.op.reshape(x, [1, m, k]), relax.const(wp))  # [blocks, m, t]
        if m > 1:
            y = relax.op.permute_dims(y, [1, 0, 2])
        y = relax.op.reshape(y, [m, blocks * t])
        if blocks * t != n:
            y = relax.op.strided_slice(y, axes=[1], begin=[0], end=[n])
        return relax.op.reshape(y, [*lead, n])

    @mutator
    class Pack(relax.PyExprMutator):
        def constant(self, e):
            """e's value when it is a float32 constant (or a variable bound to one), else None."""
            bound = self.lookup_binding(e) if isinstance(e, relax.Var) else None
            e = e if bound is None else bound
            return e.value.numpy() if isinstance(e, Constant) and str(e.ty.dtype) == "float32" else None

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (call.op.same_as(matmul_op) or call.op.same_as(conv_op)):
                return call
            x, w = call.args
            shape, w = getattr(x.ty, "shape", None), self.constant(w)
            if shape is None or w is None or str(x.ty.dtype) != "float32":
                return call
            shape = [int(d) for d in shape.values]
            if call.op.same_as(matmul_op) and w.ndim == 2 and tile(w.shape[1]):
                return packed(x, shape[:-1], w)
            a = call.attrs
            if not (call.op.same_as(conv_op) and w.shape[:2] == (1, 1) and int(a.groups) == 1
                    and (a.data_layout, a.kernel_layout, a.out_layout) == ("NHWC", "HWIO", "NHWC")
                    and not any(int(p) for p in a.padding)):
                return call
            if shape[1:3] == [1, 1] and tile(w.shape[3]):
                y = packed(relax.op.reshape(x, [shape[0], shape[3]]), shape[:1], w.reshape(w.shape[2:]))
                return relax.op.reshape(y, [shape[0], 1, 1, w.shape[3]])
            strides = [int(s) for s in a.strides]
            t = seed_channel_tile((shape[1] - 1) // strides[0] + 1, (shape[2] - 1) // strides[1] + 1, w.shape[3],
                                  strides == [1, 1], seeds(board)[0])
            if t % vector or t == w.shape[3]:  # no whole vectors, or one tile: the weights are read in order already
                return call
            return self.builder_.call_te(pointwise_packed, x, relax.const(pack_weights(w[0, 0], t)), w.shape[3],
                                         strides, primfunc_name_hint="conv2d_packed")

    mod = relax.transform.FoldConstant()(mod)  # a Gemm's transposed weights, a convolution's HWIO ones: constants now
    pack_ = Pack(mod)
    main = pack_.visit_expr(mod["main"])
    out = pack_.builder_.get()  # with the packed convolutions' PrimFuncs
    out["main"] = main
    return relax.transform.DeadCodeElimination()(out)


def pack_weights(w, t: int):
    """Weights [K, N] as [N/t, K, t], N padded with zero columns to whole tiles of t."""
    (k, n), blocks = w.shape, -(-w.shape[1] // t)
    wp = np.zeros((k, blocks * t), w.dtype)
    wp[:, :n] = w
    return np.ascontiguousarray(wp.reshape(k, blocks, t).transpose(1, 0, 2))


def pointwise_packed(x, wp, channels: int, strides):
    """A 1x1 convolution, NHWC, over weights packed as [O/t, I, t] (`pack_weights`), written NHWC:
    out[n, h, w, o] = sum_i x[n, h*sh, w*sw, i] * wp[o // t, i, o % t]. A register tile of t output channels
    streams its weights from one contiguous run; columns past `channels` are padding, never read."""
    from tvm import te
    n, h, w, k = (int(d) for d in x.shape)
    t = int(wp.shape[2])
    sh, sw = strides
    i = te.reduce_axis((0, k), "rc")
    return te.compute((n, (h - 1) // sh + 1, (w - 1) // sw + 1, channels),
                      lambda b, y, z, o: te.sum(x[b, y * sh, z * sw, i] * wp[o // t, i, o % t], axis=i),
                      name="conv2d_packed")


def _scalar_clamps_as_ops(mod):
    """TVM's ONNX importer writes Clip (ReLU6) as call_tir of TE's maximum and minimum against a scalar, which
    ConvertLayout cannot see into: it would wrap each in two transposes. Calls whose PrimFunc is exactly that
    become relax.maximum / relax.minimum, which it moves to any layout."""
    import tvm
    from tvm import relax, te, topi
    from tvm.relax.expr_functor import mutator
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def same(func, ref) -> bool:
        try:
            tvm.ir.assert_structural_equal(func, ref.without_attr("global_symbol"), map_free_vars=True)
            return True
        except ValueError:
            return False

    @mutator
    class Rewrite(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not call.op.same_as(call_tir) or len(call.args[1].fields) != 2:
                return call
            x, s = call.args[1].fields
            if getattr(s.ty, "ndim", -1) != 0 or getattr(x.ty, "shape", None) is None:
                return call
            a = te.placeholder(list(x.ty.shape.values), x.ty.dtype, "a")
            b = te.placeholder((), s.ty.dtype, "b")
            for clamp, op in ((topi.maximum, relax.op.maximum), (topi.minimum, relax.op.minimum)):
                if same(mod[call.args[0]], te.create_prim_func([a, b, clamp(a, b)])):
                    return op(x, s)
            return call

    out = tvm.IRModule(mod.functions, attrs=mod.attrs)
    out["main"] = Rewrite(mod).visit_expr(mod["main"])
    return relax.transform.DeadCodeElimination()(out)


def _fold_pads(model):
    """A zero Pad of the spatial axes that only feeds Convs becomes their padding (tf2onnx writes one before each
    stride-2 convolution, where TensorFlow pads asymmetrically): one kernel less, and no pad for a board's layout
    conversion to go around (ConvertLayout does not move Pads, so each would cost two transposes)."""
    import onnx
    from onnx import numpy_helper
    model = onnx.ModelProto.FromString(model.SerializeToString())  # the caller's model stays as it was
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    attr = lambda node, name, default=None: next(  # noqa: E731
        (onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)
    for pad in list(g.node):
        if pad.op_type != "Pad" or len(pad.input) not in (2, 3) or pad.input[1] not in consts:
            continue
        value = pad.input[2] if len(pad.input) == 3 and pad.input[2] else None
        convs = consumers.get(pad.output[0], [])
        pads = [int(v) for v in consts[pad.input[1]]]
        rank = len(pads) // 2
        if attr(pad, "mode", b"constant") != b"constant" or (value is not None and (
                value not in consts or float(consts[value]) != 0)) or rank < 3 or min(pads) < 0 \
                or any(pads[i] or pads[rank + i] for i in (0, 1)) or pad.output[0] in {o.name for o in g.output} \
                or not convs or any(c.op_type != "Conv" or c.input[0] != pad.output[0] for c in convs) \
                or any(attr(c, "auto_pad", b"NOTSET") != b"NOTSET" for c in convs):
            continue
        for c in convs:
            have = list(attr(c, "pads", [0] * (2 * rank - 4)))
            merged = [have[i] + pads[2 + i] for i in range(rank - 2)] + \
                     [have[rank - 2 + i] + pads[rank + 2 + i] for i in range(rank - 2)]
            for a in [a for a in c.attribute if a.name == "pads"]:
                c.attribute.remove(a)
            c.attribute.append(onnx.helper.make_attribute("pads", merged))
            c.input[0] = pad.input[0]
        g.node.remove(pad)
    return model


def _fold_scale_shift(model):
    """A constant per-channel Mul or Add right after a Conv (the BatchNorm that tf2onnx leaves after each
    depthwise convolution, as x * scale + shift) goes into the Conv's weights and bias: W * s, b * s + a. Each
    folds only where the Conv's output has no other reader, so nothing else sees the unscaled values."""
    import onnx
    from onnx import numpy_helper
    model = onnx.ModelProto.FromString(model.SerializeToString())  # the caller's model stays as it was
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    outputs = {o.name for o in g.output}

    def per_channel(name, channels, rank):
        """The constant as a vector over the output channels (axis 1), or None where it is not one."""
        arr = consts.get(name)
        if arr is None or arr.dtype.kind != "f" or arr.ndim > rank:
            return None
        shape = (1,) * (rank - arr.ndim) + arr.shape
        if shape[1] not in (1, channels) or any(d != 1 for i, d in enumerate(shape) if i != 1):
            return None
        return np.broadcast_to(arr.reshape(-1), (channels,)).astype(np.float64)

    for conv in [n for n in g.node if n.op_type == "Conv"]:
        w = consts.get(conv.input[1])
        if w is None or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in consts):
            continue
        w = w.astype(np.float64)
        b = consts[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] else np.zeros(len(w))
        folded = False
        while True:
            readers = [n for n in g.node if conv.output[0] in n.input]
            if conv.output[0] in outputs or len(readers) != 1 or readers[0].op_type not in ("Mul", "Add"):
                break
            op = readers[0]
            other = op.input[1] if op.input[0] == conv.output[0] else op.input[0]
            v = per_channel(other, len(w), w.ndim)
            if v is None:
                break
            if op.op_type == "Mul":
                w, b = w * v.reshape(-1, *[1] * (w.ndim - 1)), b * v
            else:
                b = b + v
            conv.output[0] = op.output[0]  # the Conv now computes what the Mul or Add did
            g.node.remove(op)
            folded = True
        if folded:
            dtype = consts[conv.input[1]].dtype
            names = [f"{conv.output[0]}/folded_weights", f"{conv.output[0]}/folded_bias"]
            g.initializer.extend(numpy_helper.from_array(a.astype(dtype), n) for a, n in zip((w, b), names))
            del conv.input[1:]
            conv.input.extend(names)
    # constants no longer read go (those listed as graph inputs, as old ONNX files do, stay: they are inputs)
    used = {i for n in g.node for i in n.input} | outputs | {i.name for i in g.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    return model


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
