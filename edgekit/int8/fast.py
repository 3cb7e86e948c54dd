"""Microcontroller forms of the int8 convolutions: TE computes whose inner products are edgekit's C
micro-kernels (microkernels.h, called through call_extern over int8 vectors contiguous in NHWC), scheduled
here with register blocking: each output pixel's input vector and each filter is loaded once per block of
pixels x channels. The result is the same integer arithmetic as kernels.conv2d, so outputs stay bit-exact.

The importer marks each convolution with its template (mark); codegen schedules it (schedule) at the register
block the tuning database measured fastest on the board, or at the default one. The scheduled kernel carries
the micro-kernel source (attribute edgekit.c_helpers, which codegen ships once) and is marked scheduled and
opaque, so nothing else reschedules it."""
from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
from tvm import te, tirx

from . import kernels as K
from .kernels import _requant

HELPERS = (Path(__file__).with_name("microkernels.h")).read_text()
I32 = "int32"


def dot_step(k: int) -> int:
    """Int8 elements per micro-kernel call over a reduction of length k (0: no micro-kernel fits)."""
    return 4 if k % 4 == 0 else 0


def _address(elem):
    """&tensor[indices] inside a TE compute (tirx.address_of takes TIR buffer loads only)."""
    import tvm
    return tvm.ir.expr.Call("tirx.address_of", [elem.asobject()], ret_ty=tvm.ir.PointerType(tvm.ir.PrimType("int8")))


def _dot(step, a, b):
    """A placeholder for the reduction's value: _accumulate_in_micro_kernel turns acc + ek_dotN(x, w) into
    ek_macN(acc, x, w), so that the accumulator is the SMLAD's own (no add, one register per accumulator)."""
    return tirx.call_pure_extern(I32, f"ek_dot{step}_s8", _address(a), _address(b))


_ACC_PLUS_DOT = re.compile(r'(acc\[[^\]]*\]) = \1 \+ T\.call_pure_extern\("int32", "ek_dot(\d)_s8", ')


def _accumulate_in_micro_kernel(func):
    """TE has no reduction whose update calls a function of the accumulator, so the scheduled function is
    rewritten in its TVMScript text (the one update statement) and parsed back."""
    import tvm.script
    src, n = _ACC_PLUS_DOT.subn(r'\1 = T.call_pure_extern("int32", "ek_mac\2_s8", \1, ', func.script())
    if n != 1:
        raise NotImplementedError(f"edgekit int8: {n} micro-kernel accumulations found, expected 1")
    return tvm.script.from_source(src)


def conv2d(x, w, bias, mult, shift, *, stride, zp_out: int, act, right_only: bool, small_sum: bool = False):
    """CONV_2D without padding, w [O, KH, KW, I] with I a multiple of 4: the reduction over I in micro-kernel
    calls (padding would need a test per element; the input zero point is folded into the bias as before)."""
    n, hp, wp, cin = (int(d) for d in x.shape)
    o, kh, kw = (int(d) for d in w.shape[:3])
    (sh, sw), step = stride, dot_step(cin)
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    ry, rx, rc = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx"), te.reduce_axis((0, cin // step), "rc")
    acc = te.compute((n, oh, ow, o), lambda b, i, j, c: te.sum(
        _dot(step, x[b, i * sh + ry, j * sw + rx, rc * step], w[c, ry, rx, rc * step]), axis=[ry, rx, rc]), name="acc")
    pc = int(mult.shape[0]) > 1
    return te.compute(acc.shape, lambda b, i, j, c: requant(acc[b, i, j, c], bias, mult, shift, c, zp_out, act, pc,
                                                            right_only, small_sum), name="requant")


def requant(acc, bias, mult, shift, c, zp_out: int, act, per_channel: bool, right_only: bool,
            small_sum: bool = False):
    """kernels._requant, its right-shift form through the micro-kernel ek_requant_right (same arithmetic),
    `shift` then holding per channel the right shift and its rounding half ([2, C], precomputed offline).
    small_sum: |acc + bias| < 2^30 for every output (the importer's bound), which allows a cheaper multiply."""
    if not right_only:
        return _requant(acc, bias, mult, shift, c, zp_out, act, per_channel)
    k = c if per_channel else 0
    fn = "ek_requant_right_small" if small_sum else "ek_requant_right"
    return tirx.call_pure_extern(I32, fn, acc + bias[c], mult[k], shift[0, k], shift[1, k], zp_out, *act).astype("int8")


def direct_conv2d(*args, small_sum: bool = False, **kw):
    """kernels.conv2d with the micro-kernel requantization (for schedule_direct)."""
    return K.conv2d(*args, **kw, requant=functools.partial(requant, small_sum=small_sum))


MICRO = "edgekit.micro"  # PrimFunc attr: scheduled by this module's templates (lower, or the tuning's blocks)


def mark(micro: str, direct: bool = False, stride=(1, 1), pads=(0, 0, 0, 0)):
    """What the importer applies to a convolution's PrimFunc: micro-kernels "dsp" (SMLAD, Cortex-M4/M7/M33) or
    "portable" (plain C); the template schedule_direct (direct=True, for kernels.conv2d) or schedule_conv (for
    conv2d here); stride and pads (top, left, bottom, right) give the in-place gap. Opaque: the Relax pipeline
    does not fuse it. The register blocks are chosen later (schedule), by the tuning database or by default."""
    if micro not in ("dsp", "portable"):
        raise ValueError(f"micro-kernels {micro!r}: dsp or portable")
    spec = {"template": "direct" if direct else "conv", "dsp": int(micro == "dsp"), "stride": list(stride),
            "pads": list(pads)}
    return lambda func: func.with_attr(MICRO, spec).with_attr("op_pattern", 8)


def is_micro(func) -> bool:
    return func.attrs is not None and MICRO in func.attrs


def _out_extents(func) -> tuple[int, int]:
    """(output width, output channels) of an NHWC convolution."""
    shape = [int(d) for d in func.params[-1].ty.shape]
    return shape[2], shape[3]


BLOCK_ACCUMULATORS = 8  # pixels x channels per block at most: the accumulators of a Cortex-M's 13 registers
DIRECT_BLOCKS = (8, 4, 2, 16, 1)  # output channels per block of the direct template, the default first


def blocks(func) -> list[tuple[int, int]]:
    """The register blocks (pixels, output channels) the template may take for this kernel, the default first:
    the tuning's search space. Pixels run along an output row (a block never spans two rows)."""
    width, channels = _out_extents(func)
    if func.attrs[MICRO]["template"] == "direct":
        return [(1, c) for c in DIRECT_BLOCKS if channels % c == 0]
    pixels = 2 if width % 2 == 0 else 1
    # no pixel pairs (an odd width): twice the channels, so each input word still serves several filters
    default = (pixels, next(c for c in (*((2,) if pixels > 1 else (4, 2)), 1) if channels % c == 0))
    rest = [(p, c) for p in (1, 2, 3, 4) for c in (1, 2, 4, 8)
            if width % p == 0 and channels % c == 0 and p * c <= BLOCK_ACCUMULATORS and (p, c) != default]
    return [default, *rest]


def schedule(func, block: tuple[int, int] | None = None):
    """A marked kernel scheduled by its template at `block` (one of blocks(func); None: the default)."""
    spec = func.attrs[MICRO]
    block = tuple(block) if block is not None else blocks(func)[0]
    if block not in blocks(func):
        raise ValueError(f"register block {block} is not one of {blocks(func)}")
    dsp, stride, pads = bool(spec["dsp"]), [int(s) for s in spec["stride"]], [int(p) for p in spec["pads"]]
    func = func.without_attr(MICRO)
    if spec["template"] == "direct":
        return schedule_direct(func, dsp, stride, pads, block[1])
    return schedule_conv(func, dsp, stride, pads, *block)


def schedule_conv(func, dsp: bool, stride, pads, pixels_block: int, channels_block: int):
    """Blocks of pixels x output channels, accumulators unrolled into registers, the reduction loops outside
    them; then marked scheduled and opaque with the micro-kernels attached."""
    from tvm import s_tir
    sch = s_tir.Schedule(func)
    rq, acc = sch.get_sblock("requant"), sch.get_sblock("acc")
    b, i, j, c = sch.get_loops(rq)
    bp, bc = pixels_block, channels_block
    jo, ji = sch.split(j, [None, bp])
    co, ci = sch.split(c, [None, bc])
    sch.reorder(jo, co, ji, ci)
    sch.compute_at(acc, co, preserve_unit_loops=True)
    own = sch.get_loops(acc)[4:]  # under b, i, jo, co: its own b, i, j, c (extents 1, 1, bp, bc), then the reductions
    sch.reorder(*own[4:], *own[2:4])
    for loop in (*own[2:4], ji, ci):
        sch.unroll(loop)
    sch.decompose_reduction(acc, own[4])
    return _finish(_accumulate_in_micro_kernel(sch.mod["main"]), dsp, stride, pads, bp)


def inplace_gap(x_shape, y_shape, stride, pads, bp: int) -> int:
    """How far below its input (NHWC) a convolution's output may start in memory, when the kernel computes
    output pixels in row-major order, bp at a time, all channels of a pixel block before the next: when it
    writes block k, output bytes up to the block's end are written, and input bytes from the first pixel of
    any window still to come (block k's included) are still needed."""
    _, h, w, cin = x_shape
    _, oh, ow, cout = y_shape
    (sh, sw), (top, left) = stride, pads[:2]
    i, j = np.divmod(np.arange(oh * ow), ow)
    j0 = j // bp * bp
    first_needed = (np.maximum(i * sh - top, 0) * w + np.maximum(j0 * sw - left, 0)) * cin
    first_needed = np.minimum.accumulate(first_needed[::-1])[::-1]  # over this block and every later one
    written = (i * ow + j0 + bp) * cout
    return max(int((written - first_needed).max()), 0)


def _finish(func, dsp: bool, stride, pads, bp: int):
    """Marked scheduled and opaque, with the micro-kernels and the in-place gap (x: the first parameter,
    the output: the last) attached."""
    x, y = ([int(d) for d in p.ty.shape] for p in (func.params[0], func.params[-1]))
    return (func.with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)
            .with_attr("edgekit.c_helpers", ("#define EK_DSP 1\n" if dsp else "") + HELPERS)
            .with_attr("edgekit.inplace_gap", inplace_gap(x, y, stride, pads, bp)))


UNROLL_MAX = 8  # window and input-channel loops this short are unrolled (a 3x3 window, an RGB input)


def schedule_direct(func, dsp: bool, stride, pads, channels_block: int):
    """kernels.conv2d (padded, depthwise, or input channels not a multiple of 4): accumulators for a block
    of output channels in registers, window loops outside them and unrolled, so the padding test runs once
    per window position and block rather than once per multiply-accumulate."""
    from tvm import s_tir
    sch = s_tir.Schedule(func)
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(blk).name_hint == "pad":
            sch.compute_inline(blk)
    rq, acc = sch.get_sblock("requant"), sch.get_sblock("acc")
    b, i, j, c = sch.get_loops(rq)
    co, ci = sch.split(c, [None, channels_block])
    sch.compute_at(acc, co, preserve_unit_loops=True)
    own = sch.get_loops(acc)[4:]  # under b, i, j, co: its own b, i, j, c (a block), then the window (and input channels)
    sch.reorder(*own[4:], own[3])
    for loop in (*[r for r in own[4:] if int(sch.get(r).extent) <= UNROLL_MAX], own[3], ci):
        sch.unroll(loop)
    sch.decompose_reduction(acc, own[4])
    return _finish(sch.mod["main"], dsp, stride, pads, 1)
