"""TFLite's fixed-point requantization, as build-time Python and as TE/TIR integer expressions.

Facts from tensorflow/lite/kernels/internal/quantization_util.cc (QuantizeMultiplier) and common.h
(MultiplyByQuantizedMultiplier, default double rounding: gemmlowp's SaturatingRoundingDoublingHighMul,
then RoundingDivideByPOT, which rounds half away from zero)."""
from __future__ import annotations

import math

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def round_away(x: float) -> int:
    """std::round / TfLiteRound: half away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """A real multiplier as (q, shift), real ~= q * 2^(shift - 31), q in [2^30, 2^31): QuantizeMultiplier."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = round_away(q * (1 << 31))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:  # every bit would be shifted out
        return 0, 0
    return q_fixed, shift


# ---- TIR expressions (int32 in, int32 out); te.* operands may be PrimExprs or Python ints ----

def _tir():
    from tvm import tirx
    return tirx


def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul: the high 32 bits of 2ab, rounded. gemmlowp adds a sign-dependent
    nudge (2^30, or 1 - 2^30 when ab < 0) and divides by 2^31 truncating; both cases equal
    floor((ab + 2^30) / 2^31), which names ab once: deep requantizations stay small expressions."""
    t = _tir()
    b64 = t.IntImm("int64", b) if isinstance(b, int) else b.astype("int64")
    high = ((a.astype("int64") * b64 + t.const(1 << 30, "int64")) >> t.const(31, "int64")).astype("int32")
    if isinstance(b, int) and b != INT32_MIN:  # the one overflow is a == b == INT32_MIN
        return high
    return t.Select(t.all(a == INT32_MIN, b == INT32_MIN), t.const(INT32_MAX, "int32"), high)


def rdbpot(x, exponent):
    """RoundingDivideByPOT: x / 2^exponent rounded half away from zero. gemmlowp's form, (x >> e) + (the
    remainder exceeds half, less one when x < 0), is (x + 2^(e-1) - [x < 0]) >> e for e >= 1."""
    t = _tir()
    if isinstance(exponent, int):
        if exponent == 0:
            return x
        return (x + t.const((1 << (exponent - 1)) - 1, "int32") + t.Select(x < 0, 0, 1)) >> exponent
    half = (t.const(1, "int32") << exponent) >> 1
    neg = t.Select(t.all(x < 0, exponent > 0), t.const(1, "int32"), t.const(0, "int32"))
    return (x + half - neg) >> exponent


def mbqm(x, mult, shift):
    """MultiplyByQuantizedMultiplier(x, mult, shift): x * mult * 2^(shift - 31), TFLite's double rounding.
    mult, shift: Python ints (per tensor) or int32 expressions (per channel, from const tensors)."""
    t = _tir()
    if isinstance(shift, int):
        left, right = max(shift, 0), max(-shift, 0)
        return rdbpot(srdhm(x * (1 << left), mult), right)
    zero = t.const(0, "int32")
    left, right = t.max(shift, zero), t.max(-shift, zero)
    return rdbpot(srdhm(x * (t.const(1, "int32") << left), mult), right)


def mbqm_right(x, mult, shift):
    """mbqm for shift <= -1 (multipliers below 0.5, the usual case): no left shift, and the sign test of
    the high product read off the int64 sum before its shift, so the C computes that product once."""
    t = _tir()
    p = x.astype("int64") * mult.astype("int64") + t.const(1 << 30, "int64")
    right = -shift
    neg = t.Select(p < t.const(0, "int64"), t.const(1, "int32"), t.const(0, "int32"))
    return ((p >> t.const(31, "int64")).astype("int32") + ((t.const(1, "int32") << right) >> 1) - neg) >> right


def clamp(x, lo: int, hi: int):
    t = _tir()
    return t.min(t.max(x, t.const(lo, "int32")), t.const(hi, "int32"))
