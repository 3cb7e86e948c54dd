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


def plan(buffers, align: int = 16) -> Plan:
    """Greedy by size: place the largest buffers first, each at the lowest aligned offset that does not
    collide with an already placed buffer whose lifetime overlaps (TFLite Micro's strategy)."""
    order = sorted(range(len(buffers)), key=lambda i: (-buffers[i].size, buffers[i].first, i))
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
    arena = max((offsets[i] + buffers[i].size for i in range(len(buffers))), default=0)
    return Plan(offsets, align_up(arena, align), lower_bound(buffers))
