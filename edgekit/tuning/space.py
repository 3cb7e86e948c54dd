"""The search space: one schedule template for every kernel built around one reduction (convolutions of any
kind, matmuls, pools), written so that gcc or clang vectorizes and keeps the accumulators in registers.
Its free choices (tile sizes, which loops unroll) are MetaSchedule sampling instructions, so the search
mutates them and the database stores them as a trace. Kernels without a reduction keep codegen's schedule."""
from __future__ import annotations

import math

from ..codegen.lower import UNSWITCH

VERSION = "5"  # of this template: records hold its traces, so a changed template starts a new database

MAX_INNER = 64        # innermost tile (the loop gcc vectorizes): at most 4 AVX-512 / 16 NEON vectors of float32
MAX_REGISTER_TILE = 16  # the other register-tile axes (unrolled): their product times the inner tile is the
                        # accumulator count, which must stay near the register file


def seeds(board) -> list[tuple[int, int, int]]:
    """Where the search starts: (vector width, accumulators over a block of unpadded pixels that the tile must divide,
    accumulators of any other kernel) in floats, for seed_tiles; the first is also the schedule of a Linux board's
    kernels that have no record. From the board's tvm.vector_floats (float32 lanes per SIMD register; 1 where there
    is none), tvm.vector_registers and tvm.spare_registers (what a tile leaves free for its operands: 2 on x86,
    whose FMA reads a weight from memory, 4 by default): all of the register file in accumulators but the spare
    ones, or but four in any other kernel; then half of it, and a narrow guess for a machine with fewer or narrower
    registers than the board says. Host, AVX2 (16 registers), V2 1.0 224, seeds only: 14 accumulators rather than 12
    let a 14x14 or 7x7 map take 7 pixels by 2 vectors instead of 2x2 by 2 or 7 by 1, and its pointwise layers ran in
    0.6-0.85 x the time (layers summed: 0.85 x at 1 thread, 0.81 x at 2); its stem, padded, 1.34 x. With 32 AVX-512
    registers, 28 and 16 did as well (224, layers summed: 4.9 ms each; 8: 5.9 ms). Pointwise layers now tile
    flattened pixels with a tail (_flatten_pixels) within the other kernels' budget: 6 pixels by 2 vectors."""
    v = int(board.data["tvm"].get("vector_floats", 1))
    r = int(board.data["tvm"].get("vector_registers", 32))
    s = int(board.data["tvm"].get("spare_registers", 4))
    return [(v, (r - s) * v, (r - 4) * v), (v, r // 2 * v, r // 2 * v), (4, 32, 32)] if v > 1 else \
        [(1, 8, 8), (4, 16, 16)]


def reduction_block(sch):
    """The one reduction block of a fused kernel, or None (no reduction, or several: softmax, layer norm)."""
    from ..codegen.lower import _is_reduction, _reduces_one_element
    root = sch.get_sblock("root")
    found = [b for b in sch.get_child_blocks(root) if _is_reduction(sch, b)]
    if len(found) != 1 or _reduces_one_element(sch, found[0]):
        return None
    return found[0]


def tunable(func) -> bool:
    """Whether the tuning covers this kernel: an int8 micro-kernel convolution's (int8.fast.blocks, measured one
    by one), or one this template schedules (at a point of its space; `seeded` checks each seed again)."""
    from tvm import s_tir
    from ..int8 import fast
    return fast.is_micro(func) or _schedules(s_tir.Schedule(func, seed=1), None)


def _schedules(sch, seed) -> bool:
    """Applies the template to sch; False where it cannot: no single reduction, or a kernel its steps do not
    fit (TVM's ScheduleError). Such a kernel keeps codegen's schedule."""
    from tvm.s_tir.schedule import ScheduleError
    if reduction_block(sch) is None:
        return False
    try:
        schedule(sch, seed)
    except ScheduleError:
        return False
    return True


def seed_tiles(extents: list[int], vector: int, registers: int, flat: bool = False) -> list[int]:
    """The register tile a vectorizing compiler does well with, for spatial loops of these extents (innermost
    last): whole vectors of the innermost axis (at most two) by rows, a tile of the two axes before it (a
    block of pixels), that fit in `registers` floats of accumulators and do the most multiply-adds per load
    (rows x vectors over rows + vectors), the wider first; the others 1. Rows from one axis alone would be
    one where its extent has no small divisor (7 pixels): a vector load per multiply-add, 3-4x slower.
    flat: the axis before the innermost is a flattened block of pixels (_flatten_pixels), which a tile need not
    divide; but its tail tile is at least half a tile (a 1-pixel tail of a 7x7 map cost more than 6-pixel tiles
    gained: 1.06 x 7-pixel tiles' time).
    Where the search starts, not where it must end."""
    def divisors(n, cap):
        return [d for d in range(1, min(n, cap) + 1) if n % d == 0]
    tiles = [1] * len(extents)
    if not extents:
        return tiles
    inner = [d for d in divisors(extents[-1], 2 * vector) if d % vector == 0 or d >= extents[-1]] or \
        divisors(extents[-1], 2 * vector)
    ys = divisors(extents[-3], MAX_REGISTER_TILE) if len(extents) > 2 else [1]
    xs = divisors(extents[-2], MAX_REGISTER_TILE) if len(extents) > 1 else [1]
    if flat:
        p = extents[-2]
        ys, xs = [1], [x for x in range(1, min(p, MAX_REGISTER_TILE) + 1) if p % x == 0 or 2 * (p % x) >= x]
    vecs = lambda c: -(-c // vector)  # noqa: E731
    fits = [(y, x, c) for y in ys for x in xs for c in inner if y * x * c <= max(registers, c)]
    y, x, c = max(fits, key=lambda t: (t[0] * t[1] * vecs(t[2]) / (t[0] * t[1] + vecs(t[2])), t[2], t[1]))
    for i, t in zip((-3, -2, -1), (y, x, c)):
        if len(extents) >= -i:
            tiles[i] = t
    return tiles


def seed_channel_tile(h: int, w: int, channels: int, unit_stride: bool, seed: tuple[int, int, int]) -> int:
    """The output-channel tile `schedule` gives an unpadded 1x1 convolution over an h x w output map at `seed`,
    which its packed weights follow (compiler.for_board): its pixels flattened where the stride is 1."""
    if unit_stride and h > 1 and w > 1:
        return seed_tiles([h * w, channels], seed[0], seed[2], flat=True)[-1]
    return seed_tiles([h, w, channels], seed[0], seed[1])[-1]


def seeded(func, seed: tuple[int, int, int]):
    """The template at one seed's tiles, as a Schedule (its trace is the record): the same every time, the
    padding's sampled place included. None where the template cannot schedule func (_schedules)."""
    import tvm
    from tvm.s_tir import Schedule
    sch = Schedule(tvm.IRModule({"main": func}), seed=1)
    return sch if _schedules(sch, seed) else None


def schedule(sch, seed: tuple[int, int, int] | None = None) -> None:
    """Tile the reduction's spatial loops in two levels, the outer ones first, then the reduction loops,
    then the inner tile (the register tile: its accumulators live across the reduction); compute the
    epilogue (bias, activation, padding of the next layer) per outer tile, while the tile is in cache.
    The outer loops are fused into one, marked parallel: codegen splits it across threads, a tile per task.
    seed (a `seeds` entry): fix the tiles at seed_tiles' choice, the search's start."""
    from ..codegen.lower import _is_reduction
    root = sch.get_sblock("root")
    red = reduction_block(sch)
    if sch.get(red).name_hint in {sch.get(b).name_hint for b in sch.get_output_blocks(root)}:
        # a kernel's output may alias its inputs as far as the C compiler knows, so accumulating there costs a
        # load and a store per step: a local tile (below), copied out once per outer tile, stays in registers
        sch.cache_write(red, 0, "local")
    outs = {sch.get(b).name_hint for b in sch.get_output_blocks(root)}
    pads, feeds = [], {sch.get(b).name_hint for b in sch.get_producers(red)}
    for b in sch.get_child_blocks(root):  # bias, activation: computed in place
        if sch.get(b).name_hint in outs or _is_reduction(sch, b):
            continue
        if _is_padding(sch.get(b)) and sch.get(b).name_hint in feeds:  # a branch per load would stop vectorizing:
            pads.append(b)                                         # padded per tile instead, below
            continue
        try:
            sch.compute_inline(b)
        except Exception:  # noqa: BLE001 (TVM's own error types: the block stays)
            pass
    flat = not pads and _flatten_pixels(sch, red, 1)  # NHWC: pixels tiled with a tail (below)
    flat_nchw = not pads and not flat and _flatten_pixels(sch, red, 2)  # NCHW: the pixels are the innermost axis
    block = sch.get(red)
    loops = sch.get_loops(red)
    kinds = [iv.iter_type for iv in block.iter_vars]
    spatial = [lp for lp, k in zip(loops, kinds) if k == 0 and int(sch.get(lp).extent) > 1]
    reduce = [lp for lp, k in zip(loops, kinds) if k != 0]
    unit = [lp for lp, k in zip(loops, kinds) if k == 0 and int(sch.get(lp).extent) == 1]
    reads_data = _indexes_data(block, loops)
    # the extra accumulators pay where they hold more pixels of an unpadded map (pointwise layers); a padded
    # kernel's loads check bounds, and a matrix-vector product reads each weight once whatever its tile (more
    # accumulators would only leave fewer tiles for the threads)
    pixels = not pads and any(reads_data.get(lp) for lp in spatial)
    tail = flat and len(spatial) > 1  # the pixels before the output channels (of more than one)
    extents = [int(sch.get(lp).extent) for lp in spatial]
    # flattened pixels tile with a tail, so a block needs no spare register to reach the tile's width (x86's
    # FMA reading a weight from memory): all the registers but four, as in other kernels
    fixed = seed_tiles(extents, seed[0], seed[1] if pixels and not flat else seed[2], tail) if seed else \
        [None] * len(spatial)
    outer, inner = [], []
    for i, lp in enumerate(spatial):
        last = i == len(spatial) - 1
        if tail and i == len(spatial) - 2:  # the pixels: any tile, the tail computed under a branch
            sizes = list(range(1, min(extents[i], MAX_REGISTER_TILE) + 1))
            n = sch.sample_categorical(sizes, [1 / len(sizes)] * len(sizes),
                                       decision=None if fixed[i] is None else sizes.index(fixed[i]))
            lo, li = sch.split(lp, [None, n])
            outer.append((lo, True))
            inner.append(li)
            continue
        decision = None if fixed[i] is None else [extents[i] // fixed[i], fixed[i]]
        o, n = sch.sample_perfect_tile(lp, n=2, max_innermost_factor=MAX_INNER if last else MAX_REGISTER_TILE,
                                       decision=decision)
        lo, li = sch.split(lp, [o, n])
        outer.append((lo, reads_data.get(lp, True)))
        inner.append(li)
    outer = _outer_order(sch, block, outer, seed is not None)
    sch.reorder(*unit, *outer, *reduce, *inner)
    for li in inner[:-1]:
        sch.unroll(li)
    if outer:
        for c in sch.get_consumers(red):
            # only an epilogue of the reduction's own shape (flattened ones were checked there): TVM 0.27 moves
            # a padding consumer (the next layer's zero border) under the tile too, and its border elements are
            # then never written
            same = flat or flat_nchw or _shape(sch.get(c).writes[0]) == _shape(sch.get(red).writes[0])
            if sch.get(c).name_hint in outs and same:
                sch.reverse_compute_at(c, outer[-1], preserve_unit_loops=False)
    if sch.get(red).name_hint not in outs:  # the accumulators: a C array on the stack, not an arena workspace
        sch.set_scope(red, 0, "local")
    if outer:  # every outer tile is a task (before decompose_reduction: TVM's parallel check wants the block whole)
        outer = [sch.fuse(*outer) if len(outer) > 1 else outer[0]]
        sch.parallel(outer[0])
    for b in pads:  # where to pad is the search's choice: per tile, or once for more tiles
        sch.set_scope(b, 0, "local")
        sch.compute_at(b, sch.sample_compute_location(b), preserve_unit_loops=False)
    # initialise the register tile once, above the reduction loops
    sch.decompose_reduction(red, reduce[0] if reduce else inner[0])
    if tail:  # the tail tile's branches, hoisted out of the reduction (codegen.lower.unswitch_loop)
        long = [lp for lp in reduce if int(sch.get(lp).extent) > 1]
        if long:
            sch.annotate(long[0], UNSWITCH, 1)


def _outer_order(sch, block, outer, seeded: bool) -> list:
    """The outer loops in one of two orders, the search's choice: those that move over the data first (a data
    tile, padded, then serves every output-channel block), or those over the weights first (a block of weights
    then serves every data tile). Whichever operand the inner loops walk whole is read again for each outer
    tile, from cache if it fits: the likelier choice, and the seeds', reads the larger operand once (late
    MobileNet layers: a 7x7 map against 1-2 MB of pointwise weights)."""
    data = [lo for lo, d in outer if d]
    weights = [lo for lo, d in outer if not d]
    if not data or not weights or len(block.reads) < 2:
        return data + weights
    size = lambda r: math.prod(int(d) for d in r.source.shape) * r.source.dtype.itemsize  # noqa: E731
    weights_first = int(size(block.reads[1]) > size(block.reads[0]))
    choice = sch.sample_categorical([0, 1], [0.25, 0.75] if weights_first else [0.75, 0.25],
                                    decision=weights_first if seeded else None)
    return weights + data if int(sch.get(choice)) else data + weights


def _flatten_pixels(sch, red, axis: int) -> bool:
    """A 1x1, stride-1 convolution reads each output pixel's own input pixel: the map's two axes (h, w: 1 and 2 in
    NHWC, 2 and 3 in NCHW) become one axis of h*w pixels, in the reduction, its output and the epilogue that
    consumes it. In NHWC a tile of pixels then need not divide a row (6 pixels of a 14-wide map: 12 accumulators
    where divisors allow 7 x 2 vectors, 14, or 2x2 x 2, 8); in NCHW the pixels are one long innermost loop. The
    epilogue's region under a tile stays exact: a loop fused over h and w instead left it a bounding box of whole
    rows, which wrote pixels of other tiles from accumulators never computed there. Addresses stay affine: pixel
    p is at p * channels (NHWC) or c * h * w + p (NCHW). Returns whether it did."""
    from tvm.sym import Analyzer
    from tvm.tirx import IndexMap
    block = sch.get(red)
    out, data = _shape(block.writes[0]), block.reads[0]
    ivs = block.iter_vars
    hw = (axis, axis + 1)
    if len(out) != 4 or len(ivs) < 5 or min(out[i] for i in hw) < 2 or \
            _shape(data)[axis:axis + 2] != out[axis:axis + 2]:
        return False
    names = [iv.var for iv in ivs[:4]]
    window = ivs[4:-1] if axis == 1 else ivs[5:]  # the reduction's loops but the input channels' (last or first)
    if any(iv.iter_type != 0 for iv in ivs[:4]) or any(iv.iter_type == 0 for iv in ivs[4:]) or \
            any(int(iv.dom.extent) != 1 for iv in window):
        return False
    ana = Analyzer()  # the 1x1 window's own loops (extent 1) are 0
    for iv in window:
        ana.bind(iv.var, 0)
    # the write is indexed by the four spatial iter vars in order, the data read at (h, w) exactly, and in NCHW
    # at the input channels
    if any(not r.min.same_as(v) for r, v in zip(block.writes[0].region, names)) or \
            not all(ana.can_prove_equal(data.region[i].min, names[i]) for i in hw) or \
            (axis == 2 and not data.region[1].min.same_as(ivs[4].var)):
        return False
    consumers = sch.get_consumers(red)  # elementwise epilogues: each reads the pixel it writes
    if any(_shape(sch.get(c).writes[0]) != out or len(sch.get(c).iter_vars) != 4 or
           any(r.source.same_as(block.writes[0].source) and
               any(not a.min.same_as(iv.var) for a, iv in zip(r.region, sch.get(c).iter_vars))
               for r in sch.get(c).reads) for c in consumers):
        return False
    w = out[axis + 1]
    if axis == 1:
        flat, iters = lambda n, y, x, o: (n, y * w + x, o), lambda n, y, x, o, *r: (n, y * w + x, o, *r)
    else:
        flat, iters = lambda n, o, y, x: (n, o, y * w + x), lambda n, o, y, x, *r: (n, o, y * w + x, *r)
    sch.transform_layout(red, ("write", 0), flat)
    sch.transform_block_layout(red, IndexMap.from_func(iters, ndim=len(ivs)))  # the reduction's iter vars
    for c in consumers:
        sch.transform_block_layout(c, flat)
    return True


def _shape(region) -> list:
    return [int(d) for d in region.source.shape]


def _is_padding(block) -> bool:
    """A copy into a larger buffer (zero padding): its loads need a bounds branch."""
    return len(block.reads) == 1 and _shape(block.writes[0]) != _shape(block.reads[0])


def _indexes_data(block, loops) -> dict:
    """For each loop of the block: whether its variable indexes the block's first input (the data; a
    convolution's output channels do not, a depthwise one's do)."""
    from tvm.tirx.analysis import undefined_vars
    names = {v.name for r in block.reads[:1] for rng in r.region for v in undefined_vars(rng.min)}
    return {lp: iv.var.name in names for lp, iv in zip(loops, block.iter_vars)}

