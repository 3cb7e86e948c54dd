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


def _place(buffers, order, align: int) -> list:
    """Each buffer, in `order`, at the lowest aligned offset that does not collide with an already placed
    buffer whose lifetime overlaps."""
    offsets, placed = [0] * len(buffers), []
    for i in order:
        b = buffers[i]
        live = sorted((offsets[j], offsets[j] + buffers[j].size) for j in placed
                      if buffers[j].first <= b.last and b.first <= buffers[j].last)
        off = 0
        for lo, hi in live:  # first gap that fits, scanning upward
            if off + b.size <= lo:
                break
            off = max(off, align_up(hi, align))
        offsets[i] = off
        placed.append(i)
    return offsets


def plan(buffers, align: int = 16) -> Plan:
    """Greedy first-fit placement under each of ORDERS; the smallest arena wins."""
    best = None
    for key in ORDERS:
        offsets = _place(buffers, sorted(range(len(buffers)), key=lambda i: key(buffers[i], i)), align)
        arena = align_up(max((offsets[i] + buffers[i].size for i in range(len(buffers))), default=0), align)
        if best is None or arena < best.arena_bytes:
            best = Plan(offsets, arena, 0)
    best.lower_bound = lower_bound(buffers)
    return best
