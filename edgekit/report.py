"""Report stage: latency from the board's own counter, labelled by where it came from; the results kept in a
build directory; `edgekit report`'s markdown and figures, made from build directories alone."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np


def latency(dev, manifest: dict, board, source: str, runs: int, per_layer: bool = False) -> dict:
    """Median over `runs` inferences of a seeded random 8-bit image, scaled to [-1, 1) for a float input or
    shifted to [-128, 128) for an int8 one. Under an emulator the counter counts instructions (QEMU -icount),
    never cycles: the figures say so."""
    info = dev.info()
    dtype = np.dtype(manifest.get("input", {}).get("dtype", "float32"))
    # 8-bit pixel values, as a camera gives: firmware keeping its input in the model's arena (a board short
    # of RAM) serves repeated runs on one load only for inputs of at most 256 distinct values
    pixels = np.random.default_rng(0).integers(0, 256, int(info["input"]) // dtype.itemsize)
    x = pixels - 128 if dtype.kind == "i" else pixels / np.float32(127.5) - 1
    dev.load_input(x.astype(dtype).tobytes())
    warm_up(dev)
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


WARM_UP_NS = 100_000_000  # Linux boards: untimed inferences for this long first (at most WARM_UP_RUNS)
WARM_UP_RUNS = 50


def warm_up(dev) -> None:
    """Untimed inferences before the timed ones, as ONNX Runtime and XNNPACK figures are taken: caches fill and,
    on a Linux board, the thread pool's workers and idle cores wake (here the first ~50 ms of a fresh runner's
    2-thread inferences ran up to 3x slower). An emulator's instruction counts need none; an MCU's cycles, one
    (its caches)."""
    if dev.counter == "instructions":
        return
    first = dev.measure(1)[0]
    if dev.counter == "ns" and first < WARM_UP_NS:
        dev.measure(min(WARM_UP_RUNS, -(-WARM_UP_NS // max(first, 1))))


def record(build_dir: Path, kind: str, result: dict) -> None:
    """Keep a validate or bench result in the build directory (`<kind>.json`) for `edgekit report`."""
    path = Path(build_dir) / f"{kind}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write(build_dir: Path, out: Path | None = None) -> dict:
    """report.md and its PNGs for a build directory, from its manifest, arena plan (c/plan.json) and the
    results validate and bench kept there. Returns {"report": path, "figures": [paths], "missing": [...]}."""
    from . import plots
    from .board import load_build
    manifest, build_dir = load_build(build_dir)
    out = Path(out) if out else build_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    plan, bench, val = _load(build_dir / "c" / "plan.json"), _load(build_dir / "bench.json"), _load(build_dir / "validation.json")
    mem = manifest.get("memory") or {}
    title = f"{manifest['target']}: " + (f"MobileNet {manifest['arch']} alpha {manifest['alpha']:g}, "
                                         f"{'x'.join(map(str, manifest['resolution']))}" if manifest["arch"] != "custom"
                                         else manifest.get("model_source", "custom model"))
    md = [f"# {title}", "", f"{manifest['macs']:,} MACs, {manifest['params']:,} parameters.", ""]
    figures, missing = [], []

    if bench and bench.get("layers"):
        unit, label = bench["unit"], "EMULATOR" if bench["source"] == "emulator" else "device"
        layers = [{**row, "flops": (plan["layers"][i]["flops"] if plan and i < len(plan["layers"]) else None)}
                  for i, row in enumerate(bench["layers"])]
        figures.append(plots.layer_latency(layers, unit, label, out / "latency.png"))
        md += ["## Latency", "", f"Median {bench[unit]:,.0f} {unit} ({label}) over {bench['runs']} runs, "
               f"{bench['ms']:.3f} ms" + (f" ({bench['note']})" if bench.get("note") else "") + ".", "",
               "![latency per layer](latency.png)", ""]
    else:
        missing.append("per-layer latency: run `edgekit bench BUILD --per-layer` first")
    if plan:
        figures.append(plots.memory_map(plan, out / "memory_map.png"))
        md += ["## Arena", "", f"{plan['arena_bytes']:,} B arena for a lower bound of {plan['lower_bound']:,} B "
               f"(the most bytes live at one step), {len(plan['buffers'])} buffers.", "", "![arena memory map](memory_map.png)", ""]
    rows = [(what, mem[f"{key}_bytes"], mem.get(f"{key}_budget")) for key, what in
            (("flash", "flash"), ("ram", "RAM"), ("arena", "arena"), ("weights", "weights")) if mem.get(f"{key}_bytes")]
    if rows:
        figures.append(plots.budget(rows, out / "memory.png"))
        md += ["## Memory", "", "| | bytes | board budget |", "| --- | ---: | ---: |",
               *[f"| {w} | {u:,} | {f'{c:,}' if c else '-'} |" for w, u, c in rows], "", "![memory](memory.png)", ""]
    if val:
        md += ["## Validation", "", f"{val['inputs']} inputs on {val['source']}: max_abs_err {val['max_abs_err']:.3g}, "
               f"cosine {val['cosine']:.6f}, {'passed' if val['passed'] else 'FAILED'}.", ""]
        if acc := val.get("accuracy"):
            figures.append(plots.confusion(acc["confusion"], acc["classes"], out / "confusion.png"))
            md += [f"Top-1 on the device {acc['device_top1']:.4f}, reference {acc['reference_top1']:.4f}, agreement "
                   f"{acc['agreement']:.4f}, over {acc['images']} labelled images.", "", "![confusion matrix](confusion.png)", ""]
    else:
        missing.append("validation: run `edgekit validate BUILD` (with --dataset for accuracy) first")
    (out / "report.md").write_text("\n".join(md))
    return {"report": str(out / "report.md"), "figures": [str(f) for f in figures], "missing": missing}
