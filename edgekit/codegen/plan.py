"""Static memory planner: buffers with lifetimes -> offsets in one arena. Pure Python, no TVM."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Buffer:
    size: int    # bytes
    first: int   # index of the step that writes it first
    last: int    # index of the step that reads it last (inclusive)


@dataclass
class Plan:
    offsets: list
    arena_bytes: int
    lower_bound: int  # most bytes live at one step: no arena can be smaller


def align_up(n: int, a: int) -> int:
    return -(-n // a) * a


def lower_bound(buffers) -> int:
    if not buffers:
        return 0
    steps = range(min(b.first for b in buffers), max(b.last for b in buffers) + 1)
    return max(sum(b.size for b in buffers if b.first <= t <= b.last) for t in steps)


# Placement orders tried; the smallest arena wins (ties: the first). Largest first is TFLite Micro's strategy;
# it can strand a large short-lived buffer (a model's input, live at step 0 only) under a neighbour's, which
# placing in order of first use, or by size x lifetime, avoids (VWW: 258,048 B largest first, 227,392 B so).
ORDERS = (lambda b, i: (-b.size, b.first, i),                    # largest first
          lambda b, i: (b.first, -b.size, i),                    # in order of first use
          lambda b, i: (-b.size * (b.last - b.first + 1), i))    # most bytes x steps first


def _first_fit(live, size: int, start: int, align: int) -> int:
    off = start
    for lo, hi in sorted(live):  # first gap that fits, scanning upward
        if off + size <= lo:
            break
        off = max(off, align_up(hi, align))
    return off


def _place(buffers, order, align: int, overlaps=()) -> list:
    """Each buffer, in `order`, at the lowest aligned offset that does not collide with an already placed
    buffer whose lifetime overlaps, or that overlaps one as `overlaps` allows: (low, high, gap) says buffer
    low may share memory with buffer high when it starts at least gap bytes below it (an in-place kernel)."""
    offsets, placed = [0] * len(buffers), []
    for i in order:
        b = buffers[i]
        live = {j: (offsets[j], offsets[j] + buffers[j].size) for j in placed
                if buffers[j].first <= b.last and b.first <= buffers[j].last}
        off = _first_fit(live.values(), b.size, 0, align)
        for low, high, gap in overlaps:
            other = high if i == low else low if i == high else None
            if other not in live:
                continue
            rest = [span for j, span in live.items() if j != other]
            if i == low:  # at most offsets[high] - gap: the lowest fit, if that is low enough
                cand = _first_fit(rest, b.size, 0, align)
                ok = cand + gap <= offsets[high]
            else:  # at least offsets[low] + gap
                cand = _first_fit(rest, b.size, align_up(offsets[low] + gap, align), align)
                ok = True
            if ok and cand < off:
                off = cand
        offsets[i] = off
        placed.append(i)
    return offsets


def plan(buffers, align: int = 16, overlaps=()) -> Plan:
    """Greedy first-fit placement under each of ORDERS; the smallest arena wins. overlaps: see _place."""
    best = None
    for key in ORDERS:
        offsets = _place(buffers, sorted(range(len(buffers)), key=lambda i: key(buffers[i], i)), align, overlaps)
        arena = align_up(max((offsets[i] + buffers[i].size for i in range(len(buffers))), default=0), align)
        if best is None or arena < best.arena_bytes:
            best = Plan(offsets, arena, 0)
    best.lower_bound = lower_bound(buffers)
    return best
