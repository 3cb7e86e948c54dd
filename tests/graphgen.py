"""Random small ONNX graphs for differential testing of edgekit against ONNX Runtime.

Each graph: opset 13, one float32 input "x", one output "y", a few to a dozen nodes drawn from the operators
edgekit's users export (Conv in every shape, pools, broadcasting arithmetic, Relu/Clip, Reshape/Flatten/
Transpose anywhere, Concat, Pad, MatMul/Gemm, Softmax), weights sometimes DequantizeLinear of int8
constants as tf2onnx writes them for TFLite models, sometimes the input reshaped first as tf2onnx does for
TFLite models (issue 12's input-binding bug); with extra_ops also EXTRA_OPS (activations, reductions,
Squeeze/Unsqueeze, Slice, BatchNormalization, Shape-computed reshapes, Split). Shapes are computed here as each
node is added, so every graph is valid by construction (ORT checks it again).

All randomness goes through a `choose` object (NumpyChoices for the soak script, HypothesisChoices for the
pytest property), so hypothesis can shrink a failing graph: every option list starts with its simplest
choice, and chance() shrinks to False.

model_as_code() writes a model back as onnx.helper code, for findings and regression tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


class NumpyChoices:
    """Choices from a seeded numpy generator: graph `seed` is reproducible on any machine."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def integer(self, lo: int, hi: int) -> int:  # inclusive
        return int(self.rng.integers(lo, hi + 1))

    def pick(self, options):
        return options[self.integer(0, len(options) - 1)]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)


class HypothesisChoices:
    """Choices drawn from hypothesis' `data()` strategy, so that it can shrink them."""

    def __init__(self, data):
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))

    def pick(self, options):
        return self.data.draw(self.st.sampled_from(options))

    def chance(self, p: float) -> bool:  # shrinks towards 0, i.e. False
        return self.data.draw(self.st.integers(0, 99)) >= 100 - round(100 * p)


@dataclass(frozen=True)
class Value:
    name: str
    shape: tuple


def numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


class Graph:
    """A graph under construction: nodes, initializers, and the pool of activations ops may consume."""

    def __init__(self, choose, input_shape, max_elems: int):
        self.choose, self.max_elems = choose, max_elems
        self.weights = np.random.default_rng(choose.integer(0, 2**16))  # values need no shrinking
        self.nodes, self.inits, self.count = [], {}, 0
        self.input = Value("x", tuple(input_shape))
        self.pool = [self.input]

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, arr: np.ndarray, prefix: str = "c") -> str:
        name = self.fresh(prefix)
        self.inits[name] = arr
        return name

    def node(self, op: str, inputs, shape, pool: bool = True, **attrs) -> Value | None:
        if numel(shape) > self.max_elems or min(shape, default=1) < 1:
            return None
        out = Value(self.fresh("t"), tuple(int(d) for d in shape))
        self.nodes.append(helper.make_node(op, list(inputs), [out.name], **attrs))
        if pool:
            self.pool.append(out)
        return out

    def floats(self, shape, scale: float = 1.0) -> np.ndarray:
        return (self.weights.standard_normal(shape) * scale).astype(np.float32)

    def weight(self, shape, fan_in: int, axis: int = 0) -> str:
        """A float weight of unit gain, or (as tf2onnx writes TFLite weights) DequantizeLinear of int8 data
        with a per-tensor or per-`axis` scale."""
        w = self.floats(shape, 1 / math.sqrt(max(fan_in, 1)))
        if not self.choose.chance(0.3):
            return self.const(w, "w")
        if len(shape) > 1 and self.choose.chance(0.5):  # per channel, symmetric (TFLite's convention)
            red = tuple(i for i in range(len(shape)) if i != axis)
            scale = np.maximum(np.abs(w).max(axis=red), 1e-3) / 127
            q = np.round(w / scale.reshape([-1 if i == axis else 1 for i in range(len(shape))]))
            args = [self.const(q.astype(np.int8), "q"), self.const(scale.astype(np.float32), "s"),
                    self.const(np.zeros(scale.shape, np.int8), "z")]
            attrs = {"axis": axis}
        else:  # per tensor, with a zero point
            zero = self.choose.integer(-3, 3)
            scale = max(float(np.abs(w).max()), 1e-3) / 120
            q = np.clip(np.round(w / scale) + zero, -128, 127)
            args = [self.const(q.astype(np.int8), "q"), self.const(np.float32(scale), "s"),
                    self.const(np.int8(zero), "z")]
            attrs = {}
        out = self.fresh("dq")
        self.nodes.append(helper.make_node("DequantizeLinear", args, [out], **attrs))
        return out

    def bias(self, n: int) -> str:
        """A float bias, or DequantizeLinear of int32 (TFLite's int8 convention: no zero point)."""
        b = self.floats(n, 0.3)
        if not self.choose.chance(0.2):
            return self.const(b, "b")
        scale = np.float32(1e-3)
        args = [self.const(np.round(b / scale).astype(np.int32), "qb"), self.const(scale, "sb")]
        out = self.fresh("dqb")
        self.nodes.append(helper.make_node("DequantizeLinear", args, [out]))
        return out

    def model(self, output: Value) -> onnx.ModelProto:
        for n in self.nodes:  # the output is always "y": every graph's interface is x -> y
            n.output[:] = ["y" if o == output.name else o for o in n.output]
            n.input[:] = ["y" if i == output.name else i for i in n.input]
        return make_model(self.nodes, list(self.input.shape), list(output.shape), self.inits)


# ---- operators: each takes (graph, value) and returns the new value, or None where it does not apply ----

def _spatial_ok(x: Value) -> bool:
    return len(x.shape) in (3, 4)  # conv/pool 1-D or 2-D, NCW / NCHW


def _window(c, size: int, max_k: int = 5, dilate: bool = True):
    """A kernel extent, stride, dilation and (begin, end) pads along one axis of `size` elements."""
    k = c.integer(1, max_k)
    d = c.integer(2, 3) if dilate and c.chance(0.2) else 1
    s = c.integer(2, 3) if c.chance(0.35) else 1
    pads = (c.integer(0, 2), c.integer(0, 2)) if c.chance(0.5) else (0, 0)
    while (k - 1) * d + 1 > size + sum(pads):  # shrink the window until it fits the padded axis
        if d > 1:
            d -= 1
        else:
            k -= 1
    return k, s, d, pads


def op_relu(g, x):
    return g.node("Relu", [x.name], x.shape)


def op_clip(g, x):
    c = g.choose
    lo, hi = sorted(np.round(g.weights.uniform(-1.5, 1.5, 2), 2).astype(np.float32))
    lo, hi = (np.float32(0), np.float32(6)) if c.chance(0.4) else (lo, np.float32(hi + 0.1))
    if c.chance(0.1):  # exporters write Relu as Clip(0, inf)
        lo, hi = np.float32(0), np.float32(np.inf)
    form = c.pick(["both", "min", "max", "none"])
    ins = [x.name, g.const(lo, "lo") if form in ("both", "min") else "", g.const(hi, "hi") if form in ("both", "max") else ""]
    while ins[-1] == "":  # trailing optional inputs are left out, not named empty
        ins.pop()
    return g.node("Clip", ins, x.shape)


def op_sigmoid(g, x):
    return g.node("Sigmoid", [x.name], x.shape)


# ---- beyond issue 12's list: what exporters also write (tf2onnx, torch.onnx), at a lower rate ----

def op_unary(g, x):
    c = g.choose
    op = c.pick(["LeakyRelu", "Tanh", "HardSigmoid", "Identity", "Abs", "Neg", "Exp", "Erf", "Elu", "Softplus"])
    attrs = {"alpha": 0.1} if op == "LeakyRelu" and c.chance(0.5) else {}
    if op == "Exp":  # keep it finite
        clipped = g.node("Clip", [x.name, g.const(np.float32(-4), "lo"), g.const(np.float32(4), "hi")], x.shape, pool=False)
        return g.node(op, [clipped.name], x.shape)
    return g.node(op, [x.name], x.shape, **attrs)


def op_reduce(g, x):
    """ReduceMean (tf2onnx's GlobalAveragePooling2D), ReduceMax/Sum, keepdims or not: 0-d results too."""
    c = g.choose
    op = c.pick(["ReduceMean", "ReduceMax", "ReduceSum"])
    rank = len(x.shape)
    axes = sorted({c.integer(0, rank - 1) for _ in range(c.integer(1, rank))})
    keep = c.chance(0.5)
    ins, attrs = [x.name], {"keepdims": int(keep)}
    if op == "ReduceSum":  # opset 13: axes as an input
        ins.append(g.const(np.array(axes, np.int64), "axes"))
    elif c.chance(0.8):
        attrs["axes"] = [a - rank if c.chance(0.3) else a for a in axes]
    else:  # no axes: all of them
        axes = list(range(rank))
    shape = [1 if i in axes else d for i, d in enumerate(x.shape)] if keep else \
        [d for i, d in enumerate(x.shape) if i not in axes]
    if shape:
        return g.node(op, ins, shape, **attrs)
    out = g.node(op, ins, (), pool=False, **attrs)  # a 0-d tensor inside the graph, made 1-d again
    return g.node("Unsqueeze", [out.name, g.const(np.array([0], np.int64), "axes")], (1,))


def op_squeeze(g, x):
    c = g.choose
    ones = [i for i, d in enumerate(x.shape) if d == 1]
    if ones and c.chance(0.5):
        axes = [i for i in ones if c.chance(0.7)] or ones[:1]
        if len(axes) == len(x.shape):  # keep rank 1 at least
            axes.pop()
        if not axes:  # (empty axes would mean all of them)
            return None
        return g.node("Squeeze", [x.name, g.const(np.array(axes, np.int64), "axes")],
                      [d for i, d in enumerate(x.shape) if i not in axes])
    at = c.integer(0, len(x.shape))
    return g.node("Unsqueeze", [x.name, g.const(np.array([at], np.int64), "axes")], [*x.shape[:at], 1, *x.shape[at:]])


def op_slice(g, x):
    c = g.choose
    axes = [i for i, d in enumerate(x.shape) if d > 1]
    if not axes:
        return None
    axis = c.pick(axes)
    size = x.shape[axis]
    step = c.pick([1, 2, -1])
    start = c.integer(0, size - 1)
    if step > 0:
        end = c.pick([c.integer(start + 1, size), 1 << 30])  # past the end is clamped
    else:  # backwards; -size - 1 means down to index 0 inclusive
        end = c.integer(-1, start - 1)
        end = -size - 1 if end == -1 else end
    shape = list(x.shape)
    shape[axis] = len(range(*slice(start, end, step).indices(size)))
    ins = [x.name] + [g.const(np.array([v], np.int64), k) for k, v in (("starts", start), ("ends", end), ("axes", axis))]
    if step != 1 or c.chance(0.3):
        ins.append(g.const(np.array([step], np.int64), "steps"))
    return g.node("Slice", ins, shape)


def op_batchnorm(g, x):
    if len(x.shape) < 2:
        return None
    ch = x.shape[1]
    args = [g.floats(ch, 0.3) + 1, g.floats(ch, 0.3), g.floats(ch, 0.3), g.weights.uniform(0.5, 1.5, ch).astype(np.float32)]
    return g.node("BatchNormalization", [x.name] + [g.const(a, k) for a, k in zip(args, ("gamma", "beta", "mean", "var"))],
                  x.shape, epsilon=1e-3)


def op_shape_reshape(g, x):
    """torch's x.view(x.size(0), -1): the target shape computed from Shape at run time."""
    shape = g.node("Shape", [x.name], (len(x.shape),), pool=False)
    first = g.node("Gather", [shape.name, g.const(np.array([0], np.int64), "i")], (1,), pool=False)
    target = g.node("Concat", [first.name, g.const(np.array([-1], np.int64), "rest")], (2,), pool=False, axis=0)
    return g.node("Reshape", [x.name, target.name], (x.shape[0], numel(x.shape[1:])))


def op_masked_softmax(g, x):
    """An attention-style mask: -inf added at some positions of the last axis (never all), then Softmax."""
    c = g.choose
    n = x.shape[-1]
    mask = np.where(g.weights.random(n) < 0.3, -np.inf, 0).astype(np.float32)
    mask[c.integer(0, n - 1)] = 0
    added = g.node("Add", [x.name, g.const(mask, "mask")], x.shape, pool=False)
    return g.node("Softmax", [added.name], x.shape)


def op_split(g, x):
    """Split into two along an axis; one half used, or both rejoined in the other order."""
    c = g.choose
    axes = [i for i, d in enumerate(x.shape) if d > 1]
    if not axes:
        return None
    axis = c.pick(axes)
    first = c.integer(1, x.shape[axis] - 1)
    halves = [list(x.shape), list(x.shape)]
    halves[0][axis], halves[1][axis] = first, x.shape[axis] - first
    outs = [g.fresh("t"), g.fresh("t")]
    g.nodes.append(helper.make_node("Split", [x.name, g.const(np.array([first, x.shape[axis] - first], np.int64), "split")],
                                    outs, axis=axis))
    if c.chance(0.5):
        return g.node("Concat", outs[::-1], x.shape, axis=axis)
    k = c.integer(0, 1)
    return g.node("Relu", [outs[k]], halves[k])


def op_binary(g, x):
    """Add/Sub/Mul (or Div by a constant) with broadcasting: against a constant, another activation, or x itself."""
    c = g.choose
    op = c.pick(["Add", "Mul", "Sub", "Div"])
    partners = [v for v in g.pool if _broadcasts(x.shape, v.shape)]
    if op != "Div" and c.chance(0.5) and partners:
        other = c.pick(partners)
        ins, shape = [x.name, other.name], np.broadcast_shapes(x.shape, other.shape)
    else:
        cshape = [d if c.chance(0.5) else (c.integer(2, 3) if d == 1 and c.chance(0.15) else 1) for d in x.shape]
        cshape = cshape[c.integer(0, len(cshape)):] if c.chance(0.4) else cshape  # lower rank: broadcast from the right
        arr = g.floats(cshape) if op != "Div" else g.weights.uniform(0.5, 2.0, cshape).astype(np.float32)
        ins, shape = [x.name, g.const(arr)], np.broadcast_shapes(x.shape, tuple(cshape))
    if op != "Div" and c.chance(0.3):
        ins.reverse()
    return g.node(op, ins, shape)


def _broadcasts(a, b) -> bool:
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def op_conv(g, x):
    if not _spatial_ok(x):
        return None
    c = g.choose
    ch, spatial = x.shape[1], x.shape[2:]
    kind = c.pick(["plain", "depthwise", "grouped"])
    if kind == "depthwise":
        groups, out_ch = ch, ch * c.pick([1, 2])
    elif kind == "grouped":
        groups = c.pick([d for d in range(1, ch + 1) if ch % d == 0])
        out_ch = groups * c.integer(1, 3)
    else:
        groups, out_ch = 1, c.integer(1, 8)
    windows = [_window(c, n) for n in spatial]
    ks, ss, ds = [w[0] for w in windows], [w[1] for w in windows], [w[2] for w in windows]
    attrs = {"strides": ss, "dilations": ds}
    auto = c.pick(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]) if c.chance(0.15) else "NOTSET"
    if auto.startswith("SAME") and max(ds) > 1:  # ORT refuses dilated SAME convolutions
        auto = "NOTSET"
    if auto == "NOTSET":
        pads = [w[3][0] for w in windows] + [w[3][1] for w in windows]
        out = [(n + w[3][0] + w[3][1] - ((w[0] - 1) * w[2] + 1)) // w[1] + 1 for n, w in zip(spatial, windows)]
        attrs["pads"] = pads
    elif auto == "VALID":
        out = [(n - ((k - 1) * d + 1)) // s + 1 for n, k, s, d in zip(spatial, ks, ss, ds)]
        attrs["auto_pad"] = auto
    else:
        out = [-(-n // s) for n, s in zip(spatial, ss)]
        attrs["auto_pad"] = auto
    if c.chance(0.5):
        attrs["kernel_shape"] = ks
    if groups > 1:
        attrs["group"] = groups
    fan_in = ch // groups * numel(ks)
    ins = [x.name, g.weight((out_ch, ch // groups, *ks), fan_in)]
    if c.chance(0.6):
        ins.append(g.bias(out_ch))
    return g.node("Conv", ins, (x.shape[0], out_ch, *out), **attrs)


def op_pool(g, x):
    if not _spatial_ok(x):
        return None
    c = g.choose
    op = c.pick(["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"])
    if op.startswith("Global"):
        return g.node(op, [x.name], (*x.shape[:2], *[1] * (len(x.shape) - 2)))
    spatial = x.shape[2:]
    windows = [_window(c, n, max_k=4, dilate=op == "MaxPool") for n in spatial]
    # ONNX wants each pad smaller than the kernel
    windows = [(k, s, d, (min(p[0], k - 1), min(p[1], k - 1))) for k, s, d, p in windows]
    spans = [n + pb + pe - ((k - 1) * d + 1) for n, (k, s, d, (pb, pe)) in zip(spatial, windows)]
    if min(spans) < 0:
        return None
    # ceil_mode, except where a last window would start in the end padding: there ORT drops it, ONNX's
    # shape inference keeps it (an edge case of the spec, not of edgekit)
    ceil = c.chance(0.15) and all(-(-sp // w[1]) * w[1] < n + w[3][0] for sp, n, w in zip(spans, spatial, windows))
    out = [(-(-sp // w[1]) if ceil else sp // w[1]) + 1 for sp, w in zip(spans, windows)]
    attrs = {"kernel_shape": [w[0] for w in windows], "strides": [w[1] for w in windows],
             "pads": [w[3][0] for w in windows] + [w[3][1] for w in windows]}
    if ceil:
        attrs["ceil_mode"] = 1
    if op == "MaxPool" and any(w[2] > 1 for w in windows):
        attrs["dilations"] = [w[2] for w in windows]
    if op == "AveragePool" and c.chance(0.5):
        attrs["count_include_pad"] = 1
    return g.node(op, [x.name], (*x.shape[:2], *out), **attrs)


def _factor(c, n: int, rank: int):
    """`n` split into `rank` factors, in a random order."""
    dims = [1] * rank
    primes, m, p = [], n, 2
    while m > 1:
        while m % p == 0:
            primes.append(p)
            m //= p
        p += 1
    for q in primes:
        dims[c.integer(0, rank - 1)] *= q
    return dims


def op_reshape(g, x):
    c = g.choose
    rank = c.pick([2, 4, 3, 1])
    dims = [1, numel(x.shape)] if rank == 2 and c.chance(0.5) else _factor(c, numel(x.shape), rank)
    spec = list(dims)
    if c.chance(0.3):
        spec[c.integer(0, rank - 1)] = -1
    if c.chance(0.2):  # 0 copies the input's dimension
        i = c.integer(0, min(rank, len(x.shape)) - 1)
        if x.shape[i] == dims[i]:
            spec[i] = 0
    return g.node("Reshape", [x.name, g.const(np.array(spec, np.int64), "shape")], dims)


def op_flatten(g, x):
    axis = g.choose.integer(0, len(x.shape))
    attrs = {} if axis == 1 else {"axis": axis}
    return g.node("Flatten", [x.name], (numel(x.shape[:axis]), numel(x.shape[axis:])), **attrs)


def op_transpose(g, x):
    c = g.choose
    if c.chance(0.1):  # no perm: reverse the axes
        return g.node("Transpose", [x.name], x.shape[::-1])
    perm = list(range(len(x.shape)))
    for i in range(len(perm) - 1, 0, -1):  # Fisher-Yates through choose, so it shrinks
        j = c.integer(0, i)
        perm[i], perm[j] = perm[j], perm[i]
    return g.node("Transpose", [x.name], [x.shape[p] for p in perm], perm=perm)


def op_concat(g, x):
    c = g.choose
    axis = c.integer(0, len(x.shape) - 1)
    fits = [v for v in g.pool if len(v.shape) == len(x.shape)
            and all(a == b for i, (a, b) in enumerate(zip(v.shape, x.shape)) if i != axis)]
    parts = [x]
    for _ in range(c.integer(1, 2)):
        if c.chance(0.3):  # a constant part
            shape = list(x.shape)
            shape[axis] = c.integer(1, 3)
            parts.append(Value(g.const(g.floats(shape)), tuple(shape)))
        else:
            parts.append(c.pick(fits) if fits else x)
    if c.chance(0.3):
        parts.reverse()
    shape = list(x.shape)
    shape[axis] = sum(p.shape[axis] for p in parts)
    return g.node("Concat", [p.name for p in parts], shape, axis=axis if c.chance(0.7) else axis - len(x.shape))


def op_pad(g, x):
    c = g.choose
    mode = c.pick(["constant", "reflect", "edge"])
    rank = len(x.shape)
    begin, end = [0] * rank, [0] * rank
    axes = list(range(2, rank)) if rank > 2 and not c.chance(0.2) else list(range(rank))
    for i in axes:
        limit = x.shape[i] - 1 if mode == "reflect" else 2  # reflect needs pad < size
        begin[i], end[i] = c.integer(0, min(limit, 2)), c.integer(0, min(limit, 2))
        if mode == "constant" and c.chance(0.1) and x.shape[i] > 1:  # a negative pad crops
            begin[i] = -1
    if not any(begin + end):
        return None
    ins = [x.name, g.const(np.array(begin + end, np.int64), "pads")]
    if mode == "constant" and c.chance(0.4):
        ins.append(g.const(np.float32(round(float(g.weights.normal()), 2)), "v"))
    attrs = {} if mode == "constant" and c.chance(0.5) else {"mode": mode}
    return g.node("Pad", ins, [d + b + e for d, b, e in zip(x.shape, begin, end)], **attrs)


def op_matmul(g, x):
    """x @ W (W constant, maybe dequantized), W @ x, or x @ another activation (e.g. x's own transpose)."""
    c = g.choose
    if len(x.shape) < 2:
        return None
    k = x.shape[-1]
    form = c.pick(["weight", "activation", "weight_left"])
    if form == "weight":
        n = c.integer(1, 12)
        return g.node("MatMul", [x.name, g.weight((k, n), k, axis=1)], (*x.shape[:-1], n))
    if form == "weight_left":
        m = c.integer(1, 6)
        w = g.const(g.floats((m, x.shape[-2]), 1 / math.sqrt(x.shape[-2])), "w")
        return g.node("MatMul", [w, x.name], (*x.shape[:-2], m, x.shape[-1]))
    fits = [v for v in g.pool if len(v.shape) >= 2 and v.shape[-2] == k and _broadcasts(x.shape[:-2], v.shape[:-2])]
    if fits and c.chance(0.5):
        y = c.pick(fits)
    else:  # x times its own transpose: x feeds two nodes
        perm = list(range(len(x.shape)))
        perm[-1], perm[-2] = perm[-2], perm[-1]
        y = g.node("Transpose", [x.name], [x.shape[p] for p in perm], pool=False, perm=perm)
        if y is None:
            return None
    return g.node("MatMul", [x.name, y.name], (*np.broadcast_shapes(x.shape[:-2], y.shape[:-2]), x.shape[-2], y.shape[-1]))


def op_gemm(g, x):
    if len(x.shape) != 2:
        return None
    c = g.choose
    trans_a, trans_b = c.chance(0.2), c.chance(0.6)
    m, k = x.shape[::-1] if trans_a else x.shape
    n = c.integer(1, 12)
    ins = [x.name, g.weight((n, k) if trans_b else (k, n), k, axis=0 if trans_b else 1)]
    if c.chance(0.7):
        ins.append(g.const(g.floats(c.pick([(n,), (1, n), (m, n), (m, 1), ()]), 0.3), "b"))
    attrs = {"transA": 1} if trans_a else {}
    attrs |= {"transB": 1} if trans_b else {}
    if c.chance(0.2):
        attrs |= {"alpha": 0.5, "beta": 2.0}
    return g.node("Gemm", ins, (m, n), **attrs)


def op_softmax(g, x):
    axis = g.choose.integer(-len(x.shape), len(x.shape) - 1)
    return g.node("Softmax", [x.name], x.shape, **({} if axis == -1 else {"axis": axis}))


# simplest first: hypothesis shrinks towards the start of the list; repeats weight the convolution-net staples
OPS = [op_relu, op_binary, op_conv, op_pool, op_clip, op_reshape, op_flatten, op_transpose, op_concat, op_pad,
       op_matmul, op_gemm, op_softmax, op_sigmoid, op_conv, op_conv, op_conv, op_pool, op_binary, op_concat]
EXTRA_OPS = [op_unary, op_reduce, op_squeeze, op_slice, op_batchnorm, op_shape_reshape, op_split, op_masked_softmax]
RESHAPING = [op_reshape, op_flatten, op_transpose]


def input_shape(c):
    """Mostly NCHW images, odd sizes, often one channel, 1xN and Nx1 maps; sometimes [1, N] or [1, C, L]."""
    rank = c.pick([4, 2, 3, 4, 4, 4])
    if rank == 2:
        return (1, c.integer(1, 48))
    sizes = [1, 2, 3, 5, 7, 8, 9, 11, 13, 16]
    if rank == 3:
        return (1, c.pick([1, 2, 3, 4]), c.pick(sizes))
    return (1, c.pick([1, 3, 2, 4, 5, 8]), c.pick(sizes), c.pick(sizes))


def tflite_prologue(g):
    """What tf2onnx writes for a TFLite image model: the input reshaped, then NHWC -> NCHW."""
    c = g.choose
    h, w, ch = c.pick([5, 7, 9, 12]), c.pick([1, 3, 4, 10]), c.pick([1, 2, 3])
    g.input = Value("x", (1, h * w * ch) if c.chance(0.5) else (1, h, w, ch))
    g.pool = [g.input]
    nhwc = g.node("Reshape", ["x", g.const(np.array([1, h, w, ch], np.int64), "shape")], (1, h, w, ch))
    return g.node("Transpose", [nhwc.name], (1, ch, h, w), perm=[0, 3, 1, 2])


def random_graph(c, max_ops: int = 6, max_elems: int = 2048, extra_ops: bool = True) -> onnx.ModelProto:
    """One random graph. c: NumpyChoices or HypothesisChoices. extra_ops: also the operators beyond issue 12's
    list (EXTRA_OPS)."""
    g = Graph(c, input_shape(c), max_elems)
    x = tflite_prologue(g) if c.chance(0.15) else g.input
    steps = c.integer(1, max_ops)
    for step in range(steps):
        # mostly a chain; sometimes a branch from an earlier tensor (which then has several consumers)
        src = c.pick(g.pool) if len(g.pool) > 1 and c.chance(0.2) else x
        # the first and last steps favour Reshape/Flatten/Transpose: at the input and at the output
        ops = RESHAPING if step in (0, steps - 1) and c.chance(0.25) else OPS + (EXTRA_OPS if extra_ops else [])
        for _ in range(4):
            y = c.pick(ops)(g, src)
            if y is not None:
                x = y
                break
    if x is g.input:  # nothing applied: one node at least
        x = op_relu(g, x)
    # join an earlier tensor of the same shape into the output, so that the branch is not dead
    same = [v for v in g.pool[:-1] if v.shape == x.shape and v is not x]
    if same and c.chance(0.3):
        x = g.node("Add", [x.name, c.pick(same).name], x.shape) or x
    return g.model(x)


def graph_from_seed(seed: int, **kw) -> onnx.ModelProto:
    return random_graph(NumpyChoices(seed), **kw)


# ---- back to code ----

DTYPES = {np.dtype(np.float32): "np.float32", np.dtype(np.int64): "np.int64", np.dtype(np.int8): "np.int8",
          np.dtype(np.int32): "np.int32"}


def _array_code(arr: np.ndarray) -> str:
    dt = DTYPES.get(arr.dtype, f"np.{arr.dtype}")
    if arr.size <= 16 or arr.dtype == np.int64:
        return f"np.array({arr.tolist()!r}, {dt})"
    if arr.dtype != np.float32:
        return f"rng.integers(-128, 128, {arr.shape}).astype({dt})"
    if arr.min() > 0:  # dequantization scales
        return f"rng.uniform({float(arr.min()):.3g}, {float(arr.max()):.3g}, {arr.shape}).astype(np.float32)"
    return f"rng.standard_normal({arr.shape}).astype(np.float32)"


def model_as_code(model: onnx.ModelProto, name: str = "model") -> str:
    """onnx.helper code that builds `model`: small constants exactly, large float ones as seeded noise."""
    g = model.graph
    lines = [f"def {name}():", "    rng = np.random.default_rng(0)", "    n = helper.make_node", "    nodes = ["]
    for node in g.node:
        attrs = "".join(f", {a.name}={_attr(helper.get_attribute_value(a))!r}" for a in node.attribute)
        lines.append(f"        n({node.op_type!r}, {list(node.input)!r}, {list(node.output)!r}{attrs}),")
    lines.append("    ]")
    lines.append("    inits = {")
    for t in g.initializer:
        lines.append(f"        {t.name!r}: {_array_code(numpy_helper.to_array(t))},")
    lines.append("    }")
    shape = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    lines += [f"    return make_model(nodes, {shape(g.input[0])!r}, {shape(g.output[0])!r}, inits)"]
    return "\n".join(lines)


def _attr(v):
    return v.decode() if isinstance(v, bytes) else v


def make_model(nodes, input_shape, output_shape, inits) -> onnx.ModelProto:
    """The model model_as_code's functions build: x -> y, opset 13."""
    g = helper.make_graph(nodes, "difftest", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    return m
