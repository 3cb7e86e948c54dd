"""Report stage: latency from the board's own counter, labelled by where it came from."""
from __future__ import annotations

import statistics

import numpy as np


def latency(dev, manifest: dict, board, source: str, runs: int, per_layer: bool = False) -> dict:
    """Median over `runs` inferences of a seeded random 8-bit image scaled to [-1, 1). Under an emulator the
    counter counts instructions (QEMU -icount), never cycles: the figures say so."""
    info = dev.info()
    # 8-bit pixel values, as a camera gives: firmware keeping its input in the model's arena (a board short
    # of RAM) serves repeated runs on one load only for inputs of at most 256 distinct values
    pixels = np.random.default_rng(0).integers(0, 256, int(info["input"]) // 4)
    dev.load_input((pixels / np.float32(127.5) - 1).astype(np.float32).tobytes())
    counts = dev.measure(runs)
    unit, med = dev.counter, statistics.median(counts)
    out = {"source": source, "unit": unit, "runs": runs, "counts": counts, unit: med}
    if "threads" in info:  # firmware older than the threads= field of ek-info has none
        out["threads"] = int(info["threads"])
    if unit == "ns":
        out["ms"] = med / 1e6
        if source == "emulator":
            out["note"] = "emulator: host time of the emulated program (qemu-user), not the board's"
    else:  # instructions (emulator) or cycles (silicon), at the board's clock
        out["ms"] = med / board.clock_hz * 1e3
        out[f"macs_per_{unit[:-1]}"] = manifest["macs"] / med if med else None
        if unit == "instructions":
            out["note"] = (f"emulator: instruction count; ms assumes 1 instruction per cycle at "
                           f"{board.clock_hz / 1e6:g} MHz (a lower bound)")
    if per_layer:
        rows = dev.profile()
        total = sum(c for _, c in rows) or 1
        out["layers"] = [{"name": n, unit: c, "share": c / total} for n, c in rows]
    return out
