"""TE computes of TFLite's int8 operators, NHWC, integer only (softmax, QUANTIZE and DEQUANTIZE aside: their
TFLite reference is float). Each mirrors the order of operations of TFLite's reference kernel
(tensorflow/lite/kernels/internal/reference/integer_ops/*.h) so that outputs match bit for bit.

Convolutions take the input's zero point folded into the bias (bias - zp_in * sum(w), done by the importer):
padding then holds zp_in, and the inner loop is a plain int8 x int8 multiply-accumulate."""
from __future__ import annotations

from tvm import te, tirx

from .fixedpoint import clamp, mbqm, mbqm_right

I32 = "int32"


def _requant(acc, bias, mult, shift, c, zp_out: int, act: tuple[int, int], per_channel: bool,
             right_only: bool = False):
    """right_only: every shift is <= -1 (the importer checks), which allows the cheaper form."""
    m, s = (mult[c], shift[c]) if per_channel else (mult[0], shift[0])
    return clamp((mbqm_right if right_only else mbqm)(acc + bias[c], m, s) + zp_out, *act).astype("int8")


def _padded(x, pads, value: int):
    """x [N, H, W, C] seen through (top, left, bottom, right) padding filled with `value`."""
    n, h, w, c = (int(d) for d in x.shape)
    top, left, bottom, right = pads
    if not any(pads):
        return x

    def f(b, i, j, k):
        inside = tirx.all(i >= top, i < top + h, j >= left, j < left + w)
        return tirx.if_then_else(inside, x[b, i - top, j - left, k], tirx.const(value, x.dtype))
    return te.compute((n, h + top + bottom, w + left + right, c), f, name="pad")


def conv2d(x, w, bias, mult, shift, *, stride, dilation, pads, zp_in: int, zp_out: int, act, depthwise: bool,
           right_only: bool = False, requant=_requant, hwio: bool = False):
    """CONV_2D (w [O, KH, KW, I], or [KH, KW, I, O] with hwio) or DEPTHWISE_CONV_2D (w [1, KH, KW, I * M]);
    bias, mult, shift per output channel (int32). reference_integer_ops::ConvPerChannel /
    DepthwiseConvPerChannel. requant: _requant or an equivalent (fast.requant)."""
    xp = _padded(x, pads, zp_in)
    n, hp, wp, cin = (int(d) for d in xp.shape)
    kh, kw = (int(d) for d in (w.shape[:2] if hwio else w.shape[1:3]))
    cout = int(w.shape[3] if depthwise or hwio else w.shape[0])
    (sh, sw), (dh, dw) = stride, dilation
    oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    if depthwise:
        mul = cout // cin
        acc = te.compute((n, oh, ow, cout), lambda b, i, j, c: te.sum(
            xp[b, i * sh + ry * dh, j * sw + rx * dw, c // mul].astype(I32) * w[0, ry, rx, c].astype(I32),
            axis=[ry, rx]), name="acc")
    else:
        rc = te.reduce_axis((0, cin), "rc")
        acc = te.compute((n, oh, ow, cout), lambda b, i, j, c: te.sum(
            xp[b, i * sh + ry * dh, j * sw + rx * dw, rc].astype(I32) *
            (w[ry, rx, rc, c] if hwio else w[c, ry, rx, rc]).astype(I32),
            axis=[ry, rx, rc]), name="acc")
    pc = int(mult.shape[0]) > 1
    return te.compute(acc.shape, lambda b, i, j, c: requant(acc[b, i, j, c], bias, mult, shift, c, zp_out, act, pc,
                                                            right_only), name="requant")


def fully_connected(x, w, bias, mult, shift, *, zp_out: int, act, ko: bool = False):
    """FULLY_CONNECTED with per-tensor weights: x [N, K], w [O, K] (or [K, O] with ko; zero point 0), bias
    folded as for conv2d; reference_integer_ops::FullyConnected (one multiplier, double rounding)."""
    acc = _fc_acc(x, w, ko)
    return te.compute(acc.shape, lambda b, o: _requant(acc[b, o], bias, mult, shift, o, zp_out, act, False),
                      name="requant")


def fully_connected_exact(x, w, bias, m_hi, m_lo, rshift, *, zp_out: int, act, ko: bool = False):
    """FULLY_CONNECTED with per-channel weights. TF 2.21's reference rounds in double: round(acc * E[c]),
    E = in * w[c] / out scale, half away from zero. E[c] = (m_hi * 2^31 + m_lo) * 2^-(rshift + 31) exactly
    (the importer splits its 53-bit mantissa), so |acc| * E is formed exactly from two int64 products and
    rounded once: round(|acc| E) = (|acc| m_hi + (|acc| m_lo >> 31) + 2^(rshift - 1)) >> rshift.
    (The reference first rounds the product to a double; the two differ only when it lies within 2^-30 or
    so of a tie without being one.)"""
    acc = _fc_acc(x, w, ko)

    def f(b, o):
        a = acc[b, o] + bias[o]
        mag = tirx.Select(a < 0, -a, a).astype("int64")
        r = ((mag * m_hi[o] + ((mag * m_lo[o]) >> 31) + (tirx.const(1, "int64") << (rshift[o].astype("int64") - 1)))
             >> rshift[o].astype("int64")).astype(I32)
        return clamp(tirx.Select(a < 0, -r, r) + zp_out, *act).astype("int8")
    return te.compute(acc.shape, f, name="requant")


def _fc_acc(x, w, ko: bool):
    n, k = (int(d) for d in x.shape)
    rk = te.reduce_axis((0, k), "rk")
    return te.compute((n, int(w.shape[1 if ko else 0])), lambda b, o: te.sum(
        x[b, rk].astype(I32) * (w[rk, o] if ko else w[o, rk]).astype(I32), axis=rk), name="acc")


def _window(x, size, stride, pads, i, j, ry, rx):
    """(inside the input, its value) at window offset (ry, rx) of output (i, j)."""
    h, w = int(x.shape[1]), int(x.shape[2])
    y, xx = i * stride[0] + ry - pads[0], j * stride[1] + rx - pads[1]
    return tirx.all(y >= 0, y < h, xx >= 0, xx < w), y, xx


def _pool_out(x, size, stride, pads):
    h, w = int(x.shape[1]), int(x.shape[2])
    return (h + pads[0] + pads[2] - size[0]) // stride[0] + 1, (w + pads[1] + pads[3] - size[1]) // stride[1] + 1


def avg_pool(x, *, size, stride, pads, act):
    """AVERAGE_POOL_2D: the mean over the window's positions inside the input, rounded half away from zero
    by integer division (reference_integer_ops::AveragePool); no rescaling (input and output share params)."""
    n, _, _, c = (int(d) for d in x.shape)
    h, w = int(x.shape[1]), int(x.shape[2])
    oh, ow = _pool_out(x, size, stride, pads)
    ry, rx = te.reduce_axis((0, size[0]), "ry"), te.reduce_axis((0, size[1]), "rx")

    def total(b, i, j, k):
        inside, y, xx = _window(x, size, stride, pads, i, j, ry, rx)
        return te.sum(tirx.if_then_else(inside, x[b, y, xx, k].astype(I32), 0), axis=[ry, rx])
    acc = te.compute((n, oh, ow, c), total, name="acc")

    def extent(o, s, p, k, dim):  # window positions inside [0, dim)
        lo = o * s - p
        return tirx.min(lo + k, dim) - tirx.max(lo, 0)

    def mean(b, i, j, k):
        cnt = extent(i, stride[0], pads[0], size[0], h) * extent(j, stride[1], pads[1], size[1], w)
        a = acc[b, i, j, k]
        q = tirx.Select(a > 0, tirx.truncdiv(a + cnt // 2, cnt), tirx.truncdiv(a - cnt // 2, cnt))
        return clamp(q, *act).astype("int8")
    return te.compute(acc.shape, mean, name="mean")


def max_pool(x, *, size, stride, pads, act):
    """MAX_POOL_2D over the window's positions inside the input, clamped to the activation range."""
    n, _, _, c = (int(d) for d in x.shape)
    oh, ow = _pool_out(x, size, stride, pads)
    ry, rx = te.reduce_axis((0, size[0]), "ry"), te.reduce_axis((0, size[1]), "rx")

    def biggest(b, i, j, k):
        inside, y, xx = _window(x, size, stride, pads, i, j, ry, rx)
        return te.max(tirx.if_then_else(inside, x[b, y, xx, k], tirx.const(-128, "int8")), axis=[ry, rx])
    m = te.compute((n, oh, ow, c), biggest, name="max")
    return te.compute(m.shape, lambda *i: clamp(m[i].astype(I32), *act).astype("int8"), name="clamp")


def add(a, b, *, zp_a: int, zp_b: int, zp_out: int, left_shift: int, ma, mb, mo, act):
    """ADD of two same-shape tensors: both rescaled to a common scale with `left_shift` bits of headroom,
    summed, rescaled to the output (reference_integer_ops::AddElementwise). ma, mb, mo: (mult, shift)."""
    def f(*i):
        sa = mbqm((a[i].astype(I32) - zp_a) * (1 << left_shift), *ma)
        sb = mbqm((b[i].astype(I32) - zp_b) * (1 << left_shift), *mb)
        return clamp(mbqm(sa + sb, *mo) + zp_out, *act).astype("int8")
    return te.compute(a.shape, f, name="add")


def _reduce_hw(x):
    n, h, w, c = (int(d) for d in x.shape)
    ry, rx = te.reduce_axis((0, h), "ry"), te.reduce_axis((0, w), "rx")
    return te.compute((n, c), lambda b, k: te.sum(x[b, ry, rx, k].astype(I32), axis=[ry, rx]), name="sum")


def mean(x, *, zp_in: int, zp_out: int, mult: int, shift: int):
    """MEAN over H and W: the sum of x - zp_in times a multiplier with 1/count folded in (the importer folds
    it as reference_ops::QuantizedMeanOrSum does), plus zp_out, clamped."""
    cnt = int(x.shape[1]) * int(x.shape[2])
    s = _reduce_hw(x)
    return te.compute(s.shape, lambda b, k: clamp(mbqm(s[b, k] - zp_in * cnt, mult, shift) + zp_out, -128, 127)
                      .astype("int8"), name="mean")


def pad(x, *, pads, value: int):
    """PAD of H and W with the output's zero point ((top, left, bottom, right))."""
    out = _padded(x, pads, value)
    return te.compute(out.shape, lambda *i: out[i], name="pad_out") if out is x else out


def requantize(x, *, zp_in: int, zp_out: int, mult: int, shift: int):
    """QUANTIZE int8 -> int8 (reference_ops::Requantize)."""
    return te.compute(x.shape, lambda *i: clamp(mbqm(x[i].astype(I32) - zp_in, mult, shift) + zp_out, -128, 127)
                      .astype("int8"), name="requantize")


def _round_away(v):
    """std::round on float32 (half away from zero); TVM's round lowers to nearbyintf (half to even)."""
    t = tirx.trunc(v)
    return tirx.Select(v - t >= 0.5, t + 1.0, tirx.Select(v - t <= -0.5, t - 1.0, t))


# Float scales come in as one-element const tensors: TVM's C printer writes float immediates with 7 digits,
# which is not exact; edgekit writes const tensors as hex floats.

def softmax(x, table, scale_out, *, zp_out: int):
    """SOFTMAX over the last axis, x [N, D]. TFLite computes int8 softmax in float32 (optimized_ops::Softmax
    with the table PopulateSoftmaxLookupTable makes: table[255 - d] = expf(-input_scale * beta * d)), so
    this kernel does the same float32 operations in the same order."""
    n, d = (int(v) for v in x.shape)
    r = te.reduce_axis((0, d), "r")
    mx = te.compute((n,), lambda b: te.max(x[b, r].astype(I32), axis=r), name="rowmax")

    def e(b, j):
        return table[255 - mx[b] + x[b, j].astype(I32)]
    r2 = te.reduce_axis((0, d), "r2")
    total = te.compute((n,), lambda b: te.sum(e(b, r2), axis=r2), name="sum_exp")
    inv = te.compute((n,), lambda b: tirx.const(1.0, "float32") / (total[b] * scale_out[0]), name="inv")
    return te.compute((n, d), lambda b, j: clamp(_round_away(e(b, j) * inv[b]).astype(I32) + zp_out, -128, 127)
                      .astype("int8"), name="softmax")


def quantize(x, scale, *, zp: int):
    """QUANTIZE float32 -> int8: round(x / scale) + zp, clamped (reference_ops::AffineQuantize)."""
    return te.compute(x.shape, lambda *i: clamp(_round_away(x[i] / scale[0]).astype(I32) + zp, -128, 127)
                      .astype("int8"), name="quantize")


def dequantize(x, scale, *, zp: int):
    """DEQUANTIZE int8 -> float32: scale * (x - zp); the reference's double product of a float scale and a
    9-bit integer is exact, so one float32 multiply rounds to the same value."""
    return te.compute(x.shape, lambda *i: (x[i].astype(I32) - zp).astype("float32") * scale[0], name="dequantize")
