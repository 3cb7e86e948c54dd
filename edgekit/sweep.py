"""`edgekit sweep`: the MobileNet trade-off (width multiplier alpha x resolution) measured on the board. Each
point is trained (or its cached model reused), built, deployed, and measured: accuracy on the device over
labelled test images, latency, flash and RAM against the board's budget. Points are kept as they finish, so an
interrupted sweep resumes where it stopped."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import UsageError


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:10]


CALIBRATION_IMAGES = 100


def _calibration(dataset: str, res: int, path: Path) -> Path:
    """Real training images, preprocessed as for training, to calibrate int8 quantization on (NHWC .npy)."""
    from . import datasets
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, datasets.preprocess(datasets.load(dataset, "train").x[:CALIBRATION_IMAGES], (res, res)))
    return path


def _exported(model: Path) -> Path:
    """The Keras model's ONNX export, made once and kept beside it: tf2onnx does not always write the same
    graph for the same model (a shape constant more or less), and a resumed sweep must build what it built."""
    import onnx
    from .export import user_onnx
    path = model.with_suffix(".onnx")
    if not path.is_file() or path.stat().st_mtime_ns < model.stat().st_mtime_ns:  # none yet, or a retrained model
        onnx.save(user_onnx(model), str(path.with_suffix(".onnx.part")))
        path.with_suffix(".onnx.part").replace(path)
    return path


def point(target: str, arch: str, alpha: float, res: int, dataset: str, epochs: int, out: Path,
          limit: int, train_limit: int | None, quantize: str | None = None, runs: int = 3,
          stage: Callable[[str], None] = lambda s: None) -> dict:
    """One alpha x resolution point (int8 with quantize="int8"), from its cached result if it has one."""
    from . import validate as v
    from .build import build
    from .models import ModelConfig
    from .train import metadata, train
    label = f"a{alpha:g} r{res}" + (f" {quantize}" if quantize else "")
    tag = f"{arch}-a{alpha:g}-r{res}"
    done = out / "points" / f"{tag}{'-' + quantize if quantize else ''}-{_key(target, dataset, epochs, limit, train_limit)}.json"
    if done.is_file():
        return json.loads(done.read_text())
    model = out / "models" / f"{tag}-{_key(str(dataset), epochs, train_limit)}.keras"
    if not model.is_file():
        stage(f"{label}: train")
        train(ModelConfig(arch, alpha, (res, res), 1), dataset, epochs, model, train_limit)
    meta = metadata(model)
    result = {"label": label, "arch": arch, "alpha": alpha, "resolution": res, "quantize": quantize,
              "model": str(model), "host_top1": meta["test_accuracy"]}
    stage(f"{label}: build for {target}")
    calibration = _calibration(dataset, res, model.with_suffix(".calibration.npy")) if quantize else None
    try:
        manifest = build(target, model=model if quantize else _exported(model),
                         out=out / "builds" / f"{target}-{tag}{'-' + quantize if quantize else ''}",
                         check_budget=False, quantize=quantize, calibration=calibration)
    except UsageError as e:  # e.g. the linker finds the board's memory too small
        result.update(fits=False, reason=str(e))
    else:
        mem = manifest.get("memory") or {}
        over = [k for k in ("flash", "ram", "weights_region")
                if mem.get(f"{k}_budget") and (mem.get(f"{k}_bytes") or 0) > mem[f"{k}_budget"]]
        result.update(macs=manifest["macs"], params=manifest["params"], flash_bytes=mem.get("flash_bytes"),
                      weights_bytes=mem.get("weights_bytes"), ram_bytes=mem.get("ram_bytes"), arena_bytes=mem.get("arena_bytes"), fits=not over,
                      build=manifest["build_dir"])
        if over:
            result["reason"] = "over the board's " + " and ".join(over)
    if result["fits"]:
        build_dir = Path(result["build"])
        x, y, classes = v.dataset_inputs(manifest, dataset, limit)
        val, lat = v.on_board(build_dir, x, y, classes, runs,
                              stage=lambda s: stage(f"{label}: {s} on {target} over {len(y)} images"))
        acc = val["accuracy"]
        result.update(accuracy=acc["device_top1"], reference_top1=acc["reference_top1"], agreement=acc["agreement"],
                      images=acc["images"], latency_unit=lat["unit"], latency=lat[lat["unit"]], latency_ms=lat["ms"],
                      latency_source=val["source"])
    else:
        result["accuracy"] = result["host_top1"]  # no device figure: the model's own held-out accuracy, greyed out
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result, indent=1) + "\n")
    return result


def sweep(target: str, arch: str, alphas: list[float], resolutions: list[int], dataset: str, epochs: int = 3,
          out: Path = Path("sweep"), limit: int = 200, train_limit: int | None = None, quantize: str | None = None,
          progress: Callable[[int, int, str], None] = lambda done, total, what: None) -> dict:
    """Every alpha x resolution point (see `point`), then sweep.json, sweep.md and the plots in `out` (named
    sweep-int8.json and so on for an int8 sweep, so float and int8 sweeps can share `out` and its models)."""
    from . import target as targets
    from .models import ModelConfig
    board = targets.get(target)
    if quantize not in (None, "int8"):
        raise UsageError(f"--quantize {quantize} is not supported: use --quantize int8")
    if not board.emulator:
        raise UsageError(f"{target} has no emulator: sweep measures on emulated boards (e.g. mps2-an386)")
    for a in alphas:
        for r in resolutions:
            ModelConfig(arch, a, (r, r), 2)  # bad values fail now, not after hours of training
    out = Path(out)
    grid = [(a, r) for a in alphas for r in resolutions]
    points = []
    for i, (a, r) in enumerate(grid):
        progress(i, len(grid), f"a{a:g} r{r}")
        points.append(point(target, arch, a, r, dataset, epochs, out, limit, train_limit, quantize,
                            stage=lambda s, i=i: progress(i, len(grid), s)))
    progress(len(grid), len(grid), "plots")
    return write(out, {"target": target, "arch": arch, "dataset": str(dataset), "epochs": epochs,
                       "quantize": quantize or "float32", "points": points})


def write(out: Path, result: dict) -> dict:
    from . import plots
    points = result["points"]
    unit = next((p["latency_unit"] for p in points if p.get("latency_unit")), "instructions")
    source = next((p["latency_source"] for p in points if p.get("latency_source")), "device")
    label = f"latency ({unit}, {'EMULATOR' if source == 'emulator' else 'device'})"
    tag = "" if result["quantize"] == "float32" else f"-{result['quantize']}"
    figs = [plots.pareto(points, "latency", label, out / f"accuracy_latency{tag}.png"),
            plots.pareto([{**p, "ram_kib": p["ram_bytes"] / 1024 if p.get("ram_bytes") else None} for p in points],
                         "ram_kib", "RAM (KiB)", out / f"accuracy_ram{tag}.png")]
    md = [f"# MobileNet {result['arch']} ({result['quantize']}) on {result['target']}: alpha x resolution", "",
          f"Trained on {result['dataset']} for {result['epochs']} epochs. top-1 (device): on the board over the "
          f"labelled test images sent (agreement: with the host reference on the same images); {label}.", "",
          "| alpha | resolution | MACs | params | top-1 (device) | top-1 (Keras, float, all test images) | agreement | " + unit + " | RAM | flash | weights | fits |",
          "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for p in points:
        def f(k, fmt="{:,}"):
            return fmt.format(p[k]) if p.get(k) is not None else "-"
        md.append(f"| {p['alpha']:g} | {p['resolution']} | {f('macs')} | {f('params')} | "
                  f"{f('accuracy', '{:.4f}') if p['fits'] else '-'} | {f('host_top1', '{:.4f}')} | {f('agreement', '{:.2f}')} | "
                  f"{f('latency', '{:,.0f}')} | {f('ram_bytes')} | {f('flash_bytes')} | {f('weights_bytes')} | "
                  f"{'yes' if p['fits'] else 'no: ' + p.get('reason', '')[:60]} |")
    md += ["", f"![accuracy against latency](accuracy_latency{tag}.png)", "",
           f"![accuracy against RAM](accuracy_ram{tag}.png)", ""]
    (out / f"sweep{tag}.md").write_text("\n".join(md))
    result = {**result, "figures": [str(f) for f in figs], "report": str(out / f"sweep{tag}.md")}
    (out / f"sweep{tag}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
