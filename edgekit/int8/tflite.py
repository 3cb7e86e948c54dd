"""A full-integer TFLite file -> a Relax IRModule of edgekit's int8 TE kernels (kernels.py), NHWC.

The graph is read from the flatbuffer with the schema module TensorFlow ships (no extra dependency).
Per-operator quantization parameters are derived as TFLite's Prepare functions do (kernel_util.cc,
add.cc, reduce.cc, activations.cc), so the kernels reproduce its reference interpreter bit for bit."""
from __future__ import annotations

import ctypes
import ctypes.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from . import fast, kernels as K
from .fixedpoint import quantize_multiplier, round_away

SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D", "ADD", "MEAN",
             "PAD", "RESHAPE", "SOFTMAX", "QUANTIZE", "DEQUANTIZE")
DTYPES = {0: "float32", 2: "int32", 3: "uint8", 4: "int64", 9: "int8", 7: "int16"}  # schema TensorType


def _schema():
    from ..export import _quiet_tensorflow
    _quiet_tensorflow()
    from tensorflow.lite.python import schema_py_generated as fb
    return fb


@dataclass
class T:
    """One tensor of the TFLite graph."""
    index: int
    shape: tuple
    dtype: str
    scale: np.ndarray          # empty when not quantized
    zero_point: np.ndarray
    data: np.ndarray | None    # constants only

    @property
    def s(self) -> float:      # per-tensor scale (float32, as TFLite stores it)
        return float(self.scale[0])

    @property
    def zp(self) -> int:
        return int(self.zero_point[0]) if self.zero_point.size else 0


@dataclass
class Op:
    name: str
    inputs: list               # T or None (an omitted optional input)
    outputs: list
    options: object            # the schema's options table, or None


def read(path: Path) -> tuple[list, T, T]:
    """(operators in order, graph input, graph output) of a single-subgraph, single-input/output model."""
    fb = _schema()
    buf = Path(path).read_bytes()
    try:
        model = fb.Model.GetRootAs(buf, 0)
        sg = model.Subgraphs(0)
    except Exception as e:  # noqa: BLE001 (flatbuffers raises anything on garbage)
        raise UsageError(f"model file '{path}' is not a TFLite flatbuffer ({type(e).__name__})") from None
    if model.SubgraphsLength() != 1 or sg.InputsLength() != 1 or sg.OutputsLength() != 1:
        raise UsageError(f"model file '{path}' must have one subgraph with one input and one output")
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}

    def tensor(i):
        t = sg.Tensors(i)
        q = t.Quantization()
        scale = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else np.zeros(0, np.float32)
        zp = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else np.zeros(0, np.int64)
        if t.Type() not in DTYPES:
            raise UsageError(f"model file '{path}' has a tensor of TFLite type {t.Type()}: not supported")
        dtype, b = DTYPES[t.Type()], model.Buffers(t.Buffer())
        raw = b.DataAsNumpy() if b.DataLength() else (np.frombuffer(buf, np.uint8, b.Size(), b.Offset())
                                                      if b.Offset() > 1 else None)
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        data = None if raw is None or isinstance(raw, int) else np.frombuffer(raw.tobytes(), dtype).reshape(shape)
        return T(i, shape, dtype, np.asarray(scale, np.float32), np.asarray(zp, np.int64), data)

    tensors = {i: tensor(i) for i in range(sg.TensorsLength())}
    graph = [sg.Operators(k) for k in range(sg.OperatorsLength())]
    codes = [model.OperatorCodes(op.OpcodeIndex()) for op in graph]
    kinds = [names.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), "CUSTOM") for c in codes]
    skip = _shape_arithmetic(graph, kinds, tensors)
    ops = []
    for k, (op, name) in enumerate(zip(graph, kinds)):
        if k in skip:
            continue
        if name not in SUPPORTED:
            raise UsageError(f"operator {name} in '{Path(path).name}' is not supported by edgekit's int8 path "
                             f"(supported: {', '.join(SUPPORTED)})")
        table = op.BuiltinOptions()
        options = None
        if table is not None:
            cls = getattr(fb, {"CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
                               "FULLY_CONNECTED": "FullyConnectedOptions", "AVERAGE_POOL_2D": "Pool2DOptions",
                               "MAX_POOL_2D": "Pool2DOptions", "ADD": "AddOptions", "MEAN": "ReducerOptions",
                               "SOFTMAX": "SoftmaxOptions"}.get(name, ""), None)
            if cls is not None:
                options = cls()
                options.Init(table.Bytes, table.Pos)
        ops.append(Op(name, [tensors[i] if i >= 0 else None for i in op.InputsAsNumpy()],
                      [tensors[i] for i in op.OutputsAsNumpy()], options))
    return ops, tensors[sg.Inputs(0)], tensors[sg.Outputs(0)]


def _shape_arithmetic(graph, kinds: list[str], tensors) -> set[int]:
    """Indices of the operators that only compute a RESHAPE's new shape (SHAPE, STRIDED_SLICE, PACK: what the
    converter emits for a model whose batch was left free). RESHAPE takes its output tensor's static shape
    (batch 1), so they need not run. Such an operator writes int32 tensors read only by others of them or as
    a RESHAPE's second input."""
    readers = {}
    for k, op in enumerate(graph):
        for slot, i in enumerate(op.InputsAsNumpy()):
            readers.setdefault(int(i), []).append((k, slot))
    dead = set()
    for k in reversed(range(len(graph))):  # readers come after writers
        outs = [int(i) for i in graph[k].OutputsAsNumpy()]
        if kinds[k] != "RESHAPE" and all(tensors[i].dtype == "int32" and readers.get(i) and all(
                r in dead or (slot == 1 and kinds[r] == "RESHAPE") for r, slot in readers[i]) for i in outs):
            dead.add(k)
    return dead


# ---- quantization parameters as TFLite's Prepare functions derive them ----

def act_range(act: int, out: T) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: fused NONE / RELU / RELU_N1_TO_1 / RELU6 on the int8 output."""
    def q(f):  # the float division is float32 in TFLite
        return out.zp + round_away(float(np.float32(f) / np.float32(out.s)))
    lo, hi = {0: (-128, 127), 1: (q(0), 127), 2: (q(-1), q(1)), 3: (q(0), q(6))}.get(act, (None, None))
    if lo is None:
        raise UsageError(f"fused activation {act} is not supported (NONE, RELU, RELU_N1_TO_1, RELU6 are)")
    return max(lo, -128), min(hi, 127)


def _padding(padding: int, size: int, k: int, stride: int, dilation: int = 1) -> tuple[int, int, int]:
    """(output size, pad before, pad after) for TFLite's SAME (0) / VALID (1): ComputePaddingHeightWidth."""
    eff = (k - 1) * dilation + 1
    out = (size + stride - 1) // stride if padding == 0 else (size - eff + stride) // stride
    total = max((out - 1) * stride + eff - size, 0)
    return out, total // 2, total - total // 2


def _multipliers(scales) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(s)) for s in scales]
    return np.array([p[0] for p in pairs], np.int32), np.array([p[1] for p in pairs], np.int32)


def exact_scale(e: float) -> tuple[int, int, int]:
    """A double e in (0, 2^31) as (m_hi, m_lo, rshift): e == (m_hi * 2^31 + m_lo) * 2^-(rshift + 31), exactly,
    with m_hi, m_lo < 2^31 (so |acc| * m_hi and |acc| * m_lo fit int64) and rshift >= 1."""
    mant, exp = math.frexp(e)            # e = mant * 2^exp, mant in [0.5, 1)
    m = int(mant * (1 << 62))             # exact: 53 significant bits
    rshift = 62 - exp - 31
    if not 1 <= rshift <= 62:
        raise UsageError(f"a FULLY_CONNECTED rescale of {e:g} is out of the supported range")
    return m >> 31, m & ((1 << 31) - 1), rshift


def _check_int8(op: Op):
    for t in [*op.inputs[:1], *op.outputs]:
        if t.dtype != "int8" or not t.scale.size:
            raise UsageError(f"{op.name} on a {t.dtype} tensor: edgekit's int8 path takes full-integer "
                             "quantized models (int8 activations)")


def libm_expf():
    """The C library's expf, which TFLite's softmax table uses (numpy's exp may round differently)."""
    f = ctypes.CDLL(ctypes.util.find_library("m")).expf
    f.restype, f.argtypes = ctypes.c_float, [ctypes.c_float]
    return f


def mean_multiplier(n: int, scale_in: float, scale_out: float) -> tuple[int, int]:
    """QuantizeMultiplier(in / out scale) with 1/n folded in: the multiplier shifted left by up to
    floor(log2 n) bits (at most 32, and no further than a total shift of -31), divided by n truncating
    (reference_ops::QuantizedMeanOrSum in TF 2.21; checked bit-exact against its interpreter)."""
    mult, shift = quantize_multiplier(float(scale_in) / float(scale_out))
    k = min(n.bit_length() - 1, 32, 31 + shift)
    return (mult << k) // n, shift - k


class Importer:
    def __init__(self, bb, micro: str | None = None):
        from tvm import relax
        self.bb, self.relax, self.env, self.micro = bb, relax, {}, micro

    def const(self, arr):
        return self.relax.const(np.ascontiguousarray(arr))

    def scale(self, t: T):
        """t's scale as a one-element float32 constant (exact in the generated C)."""
        return self.const(np.array([t.s], np.float32))

    def emit(self, fn, args, out: T, name: str, **kw):
        v = self.bb.emit_te(fn, *args, primfunc_name_hint=name, name_hint=f"t{out.index}", **kw)
        self.env[out.index] = v
        return v

    def emit_micro(self, fn, mark, args, out: T, name: str, **kw):
        """emit, fn's PrimFunc marked (fast.mark) for codegen to schedule over the micro-kernels."""
        from tvm import te
        ts = [te.placeholder(tuple(int(d) for d in a.ty.shape.values), str(a.ty.dtype), f"in{i}")
              for i, a in enumerate(args)]
        y = fn(*ts, **kw)
        gv = self.bb.add_func(mark(te.create_prim_func([*ts, y])), name)
        v = self.bb.emit(self.relax.call_tir(gv, args, self.relax.TensorType(out.shape, out.dtype)),
                         name_hint=f"t{out.index}")
        self.env[out.index] = v
        return v

    def reshape(self, x: T, shape):
        """x's value viewed as `shape` (no binding when the shape is already that)."""
        v = self.env[x.index]
        if tuple(shape) == tuple(x.shape):
            return v
        return self.bb.emit(self.relax.op.reshape(v, tuple(shape)), name_hint=f"t{x.index}_r")

    def bind(self, v, out: T):
        """Bind a kernel's result v to TFLite tensor `out`, reshaped to its shape if it differs."""
        if tuple(int(d) for d in v.ty.shape.values) != tuple(out.shape):
            v = self.bb.emit(self.relax.op.reshape(v, out.shape), name_hint=f"t{out.index}")
        self.env[out.index] = v

    def conv(self, op: Op, depthwise: bool):
        x, w, b = op.inputs[:3]
        out, o = op.outputs[0], op.options
        _check_int8(op)
        if w.zero_point.size and np.any(w.zero_point):
            raise UsageError(f"{op.name} with asymmetric (nonzero zero point) weights is not supported")
        kh, kw = w.shape[1], w.shape[2]
        dil = (o.DilationHFactor(), o.DilationWFactor())
        oh, top, bottom = _padding(o.Padding(), x.shape[1], kh, o.StrideH(), dil[0])
        ow, left, right = _padding(o.Padding(), x.shape[2], kw, o.StrideW(), dil[1])
        cout = w.shape[3] if depthwise else w.shape[0]
        wsum = w.data.astype(np.int64).sum(axis=(0, 1, 2)) if depthwise else \
            w.data.astype(np.int64).reshape(cout, -1).sum(axis=1)
        bias = (b.data.astype(np.int64) if b is not None else np.zeros(cout, np.int64)) - x.zp * wsum
        ws = np.broadcast_to(w.scale, (cout,))
        # PopulateConvolutionQuantizationParams: double(input) * double(filter[c]) / double(output)
        mult, shift = _multipliers([float(x.s) * float(s) / float(out.s) for s in ws])
        # |acc + bias| <= 128 sum|w| + |bias| per channel (int8 inputs)
        wabs = np.abs(w.data.astype(np.int64))
        bound = 128 * (wabs.sum(axis=(0, 1, 2)) if depthwise else wabs.reshape(cout, -1).sum(axis=1)) + np.abs(bias)
        micro_kw = {"small_sum": bool((bound < 1 << 30).all())} if self.micro else {}
        right_only = bool((shift <= -1).all())
        if self.micro and right_only:  # the micro-kernel takes the right shift and its rounding half
            shift = np.stack([-shift, (1 << -shift) >> 1]).astype(np.int32)
        stride, pads = (o.StrideH(), o.StrideW()), (top, left, bottom, right)
        args = [self.env[x.index], self.const(w.data), self.const(bias.astype(np.int32)), self.const(mult),
                self.const(shift)]
        act = act_range(o.FusedActivationFunction(), out)
        if self.micro and not depthwise and not any(pads) and dil == (1, 1) and fast.dot_step(x.shape[3]):
            return self.emit_micro(fast.conv2d, fast.mark(self.micro, False, stride), args, out, "conv2d",
                                   stride=stride, zp_out=out.zp, act=act, right_only=right_only, **micro_kw)
        kw = dict(stride=stride, dilation=dil, pads=pads, zp_in=x.zp, zp_out=out.zp, act=act, depthwise=depthwise,
                  right_only=right_only, **micro_kw)
        name = "depthwise_conv2d" if depthwise else "conv2d"
        if self.micro:
            return self.emit_micro(fast.direct_conv2d, fast.mark(self.micro, True, stride, pads), args, out, name, **kw)
        if not depthwise:  # output channels innermost in memory, as the float path's HWIO: CPUs vectorize over them
            args[1] = self.const(w.data.transpose(1, 2, 3, 0))
        return self.emit(K.conv2d, args, out, name, hwio=not depthwise, **kw)

    def fully_connected(self, op: Op):
        x, w, b = op.inputs[:3]
        out, o = op.outputs[0], op.options
        _check_int8(op)
        k, n_out = w.shape[1], w.shape[0]
        flat = self.reshape(x, (int(np.prod(x.shape)) // k, k))
        bias = (b.data.astype(np.int64) if b is not None else np.zeros(n_out, np.int64)) - \
            x.zp * w.data.astype(np.int64).sum(axis=1)
        ko = self.micro is None  # CPUs: outputs innermost in memory, as for conv (MCUs: one output at a time)
        consts = [flat, self.const(w.data.T if ko else w.data), self.const(bias.astype(np.int32))]
        act = act_range(o.FusedActivationFunction(), out)
        if w.scale.size > 1:  # per channel: FullyConnectedPerChannel rounds acc * E[c] in double
            parts = [exact_scale(float(x.s) * float(s) / float(out.s)) for s in w.scale]
            v = self.bb.emit_te(K.fully_connected_exact, *consts, *(self.const(np.array(c, dt)) for c, dt in
                                zip(zip(*parts), (np.int64, np.int64, np.int32))), zp_out=out.zp, act=act, ko=ko,
                                primfunc_name_hint="fully_connected", name_hint=f"t{out.index}_fc")
        else:  # GetQuantizedConvolutionMultipler: the input x filter product in float32, then double
            mult, shift = _multipliers([float(np.float32(x.s) * np.float32(w.s)) / float(out.s)])
            v = self.bb.emit_te(K.fully_connected, *consts, self.const(mult), self.const(shift), zp_out=out.zp,
                                act=act, ko=ko, primfunc_name_hint="fully_connected", name_hint=f"t{out.index}_fc")
        self.bind(v, out)

    def pool(self, op: Op, fn, name):
        x, out, o = op.inputs[0], op.outputs[0], op.options
        _check_int8(op)
        if (x.s, x.zp) != (out.s, out.zp):
            raise UsageError(f"{op.name} with different input and output quantization is not supported")
        _, top, bottom = _padding(o.Padding(), x.shape[1], o.FilterHeight(), o.StrideH())
        _, left, right = _padding(o.Padding(), x.shape[2], o.FilterWidth(), o.StrideW())
        return self.emit(fn, [self.env[x.index]], out, name, size=(o.FilterHeight(), o.FilterWidth()),
                         stride=(o.StrideH(), o.StrideW()), pads=(top, left, bottom, right),
                         act=act_range(o.FusedActivationFunction(), out))

    def add(self, op: Op):
        a, b = op.inputs[:2]
        out = op.outputs[0]
        _check_int8(op)
        if a.shape != b.shape:
            raise UsageError(f"ADD of shapes {a.shape} and {b.shape}: broadcasting is not supported yet")
        left_shift = 20
        twice_max = 2 * max(a.s, b.s)
        return self.emit(K.add, [self.env[a.index], self.env[b.index]], out, "add", zp_a=a.zp, zp_b=b.zp,
                         zp_out=out.zp, left_shift=left_shift, ma=quantize_multiplier(a.s / twice_max),
                         mb=quantize_multiplier(b.s / twice_max),
                         mo=quantize_multiplier(twice_max / ((1 << left_shift) * out.s)),
                         act=act_range(op.options.FusedActivationFunction() if op.options else 0, out))

    def mean(self, op: Op):
        x, axes, out = op.inputs[0], op.inputs[1], op.outputs[0]
        _check_int8(op)
        axes = sorted(int(a) % 4 for a in axes.data.ravel())
        if len(x.shape) != 4 or axes != [1, 2]:
            raise UsageError(f"MEAN over axes {axes} of a {len(x.shape)}-D tensor: only H and W of NHWC are supported")
        m, sh = mean_multiplier(x.shape[1] * x.shape[2], x.s, out.s)
        v = self.bb.emit_te(K.mean, self.env[x.index], zp_in=x.zp, zp_out=out.zp, mult=m, shift=sh,
                            primfunc_name_hint="mean", name_hint=f"t{out.index}_m")
        self.bind(v, out)

    def pad(self, op: Op):
        x, pads, out = op.inputs[0], op.inputs[1].data, op.outputs[0]
        _check_int8(op)
        if len(x.shape) != 4 or pads[0].any() or pads[3].any():
            raise UsageError("PAD of anything but H and W of an NHWC tensor is not supported")
        value = op.inputs[2].data.item() if len(op.inputs) > 2 and op.inputs[2] is not None else out.zp
        return self.emit(K.pad, [self.env[x.index]], out, "pad",
                         pads=(int(pads[1][0]), int(pads[2][0]), int(pads[1][1]), int(pads[2][1])), value=int(value))

    def softmax(self, op: Op):
        x, out = op.inputs[0], op.outputs[0]
        _check_int8(op)
        beta = op.options.Beta() if op.options else 1.0
        expf, f = libm_expf(), np.float32
        scale = f(-f(x.s) * f(beta))  # PopulateSoftmaxLookupTable
        table = np.array([expf(f(scale * f(255 - i))) for i in range(256)], np.float32)
        d = x.shape[-1]
        flat = self.reshape(x, (int(np.prod(x.shape)) // d, d))
        v = self.bb.emit_te(K.softmax, flat, self.const(table), self.scale(out), zp_out=out.zp,
                            primfunc_name_hint="softmax", name_hint=f"t{out.index}_s")
        self.bind(v, out)

    def quantize(self, op: Op):
        x, out = op.inputs[0], op.outputs[0]
        if out.dtype != "int8":
            raise UsageError(f"QUANTIZE to {out.dtype} is not supported (int8 is)")
        if x.dtype == "float32":
            return self.emit(K.quantize, [self.env[x.index], self.scale(out)], out, "quantize", zp=out.zp)
        _check_int8(op)
        m, s = quantize_multiplier(float(x.s) / float(out.s))
        return self.emit(K.requantize, [self.env[x.index]], out, "requantize", zp_in=x.zp, zp_out=out.zp,
                         mult=m, shift=s)

    def dequantize(self, op: Op):
        x, out = op.inputs[0], op.outputs[0]
        if x.dtype != "int8" or out.dtype != "float32":
            raise UsageError(f"DEQUANTIZE from {x.dtype} to {out.dtype} is not supported (int8 to float32 is)")
        return self.emit(K.dequantize, [self.env[x.index], self.scale(x)], out, "dequantize", zp=x.zp)

    def run(self, op: Op):
        match op.name:
            case "CONV_2D" | "DEPTHWISE_CONV_2D":
                self.conv(op, op.name == "DEPTHWISE_CONV_2D")
            case "FULLY_CONNECTED":
                self.fully_connected(op)
            case "AVERAGE_POOL_2D":
                self.pool(op, K.avg_pool, "avg_pool")
            case "MAX_POOL_2D":
                self.pool(op, K.max_pool, "max_pool")
            case "RESHAPE":
                self.bind(self.env[op.inputs[0].index], op.outputs[0])
            case _:
                getattr(self, op.name.lower())(op)


def to_relax(path: Path, micro: str | None = None):
    """(IRModule with main(input) -> output, graph input T, graph output T).
    micro: "dsp" or "portable": convolutions over edgekit's C micro-kernels (fast.py), for microcontrollers;
    None: TE computes only, scheduled by codegen."""
    from tvm import relax
    ops, inp, out = read(path)
    if len(inp.shape) == 0 or inp.shape[0] != 1:
        raise UsageError(f"model input shape {inp.shape}: edgekit runs batch-1 models")
    bb = relax.BlockBuilder()
    x = relax.Var("input", relax.TensorType(inp.shape, inp.dtype))
    imp = Importer(bb, micro)
    imp.env[inp.index] = x
    with bb.function("main", [x]):
        with bb.dataflow():
            for op in ops:
                imp.run(op)
            y = bb.emit_output(imp.env[out.index])
        bb.emit_func_output(y)
    return bb.get(), inp, out


def is_quantized(path: Path) -> bool:
    """Whether a TFLite file computes in int8 (some activation tensor is int8), as opposed to float."""
    fb = _schema()
    try:
        model = fb.Model.GetRootAs(Path(path).read_bytes(), 0)
        sg = model.Subgraphs(0)

        def constant(t):  # weights: a buffer with data (inline, or past the flatbuffer in large files)
            b = model.Buffers(t.Buffer()) if t.Buffer() > 0 else None
            return b is not None and (b.DataLength() > 0 or getattr(b, "Offset", lambda: 0)() > 1)
        # int8 weights alone make a dynamic-range ("hybrid") model, which computes in float
        return any(t.Type() == 9 and not constant(t) for t in map(sg.Tensors, range(sg.TensorsLength())))
    except Exception:  # noqa: BLE001 (not a flatbuffer: the float path reports the file as unreadable)
        return False


def io(t: T, layout: str = "NHWC") -> dict:
    """The manifest's input/output object for a graph tensor."""
    d = {"shape": list(t.shape), "layout": layout, "dtype": t.dtype}
    if t.scale.size:
        d.update(scale=float(t.s), zero_point=t.zp)
    return d


def cost(ops) -> dict:
    """MACs of the convolutions and fully connected layers; params: elements of their weights and biases."""
    macs = params = 0
    for op in ops:
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w, out = op.inputs[1], op.outputs[0]
            per_out = int(np.prod(w.shape[1:3])) if op.name == "DEPTHWISE_CONV_2D" else int(np.prod(w.shape[1:]))
            macs += int(np.prod(out.shape)) * per_out
            params += sum(int(np.prod(t.shape)) for t in op.inputs[1:3] if t is not None)
    return {"macs": macs, "params": params}
