"""The command line: thin wrappers over library functions. TensorFlow and TVM are imported only by the
commands that need them, so `edgekit --help` stays fast."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import UsageError, WorkError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Deploy MobileNets (and any ONNX model) to edge boards with Apache TVM.")

ARCH = typer.Option("v2", "--arch", help="MobileNet version: v1 or v2.")
ALPHA = typer.Option(1.0, "--alpha", help="Width multiplier, in (0, 2].")
RESOLUTION = typer.Option("224", "--resolution", help="Input size: 224, or HxW such as 160x128 (>= 32).")
CLASSES = typer.Option(1000, "--classes", help="Number of output classes.")
JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _console():
    from rich.console import Console
    return Console()


def _print_json(obj):
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def _config(arch, alpha, resolution, classes):
    from .models import ModelConfig, parse_resolution
    return ModelConfig(arch, alpha, parse_resolution(resolution), classes)


@app.command()
def targets(json_out: bool = JSON):
    """List the boards edgekit knows (one TOML file each under targets/)."""
    from . import target
    rows = [t.summary() for t in target.all_targets()]
    if json_out:
        return _print_json(rows)
    from rich.table import Table
    table = Table("target", "kind", "core", "clock", "flash", "RAM", "emulated")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["core"], f"{r['clock_hz'] / 1e6:g} MHz", _size(r["flash_bytes"]),
                      _size(r["ram_bytes"]), "yes" if r["emulated"] else "")
    _console().print(table)


def _size(n):
    if not n:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


@app.command()
def summary(arch: str = ARCH, alpha: float = ALPHA, resolution: str = RESOLUTION, classes: int = CLASSES,
            json_out: bool = JSON):
    """Per-layer MACs, parameters and activation sizes of a MobileNet."""
    from .models import count, layers
    cfg = _config(arch, alpha, resolution, classes)
    cost = count(layers(cfg))
    result = {"arch": cfg.arch, "alpha": cfg.alpha, "resolution": list(cfg.resolution), "classes": cfg.classes, **cost}
    if json_out:
        return _print_json(result)
    from rich.table import Table
    table = Table("layer", "op", "output (HxWxC)", "MACs", "params", "activation bytes",
                  title=f"MobileNet {cfg.arch.upper()} alpha {cfg.alpha:g}, {'x'.join(map(str, cfg.resolution))}, {cfg.classes} classes")
    for r in cost["layers"]:
        table.add_row(r["name"], r["op"], "x".join(map(str, r["output"])), f"{r['macs']:,}", f"{r['params']:,}",
                      f"{r['activation_bytes']:,}")
    table.add_row("total", "", "", f"{cost['macs']:,}", f"{cost['params']:,}", f"peak {cost['peak_activation_bytes']:,}",
                  style="bold")
    _console().print(table)
    _console().print(f"{cost['macs'] / 1e6:.1f} M MACs, {cost['params'] / 1e6:.3f} M params (BatchNorm folded)")


@app.command()
def build(target: str = typer.Option(..., "--target", help="Board name (see `edgekit targets`)."),
          arch: str = ARCH, alpha: float = ALPHA, resolution: str = RESOLUTION, classes: int = CLASSES,
          model: Optional[Path] = typer.Option(None, "--model", help="Your own model: .onnx, .keras or float .tflite."),
          weights: Optional[Path] = typer.Option(None, "--weights", help="Keras weights file for the MobileNet."),
          out: Optional[Path] = typer.Option(None, "--out", help="Build directory (default build/<target>-<model>)."),
          json_out: bool = JSON):
    """Compile a model for a board into one build directory."""
    from .build import build as run_build
    cfg = None if model else _config(arch, alpha, resolution, classes)
    console = _console()
    with console.status("starting") as status:
        manifest = run_build(target, cfg, model, weights, out, stage=lambda s: status.update(s))
    if json_out:
        return _print_json(manifest)
    _print_manifest(console, manifest)


def _print_manifest(console, m):
    from rich.table import Table
    table = Table("key", "value", title=f"built {m['build_dir']}", show_header=False)
    for key in ("target", "arch", "alpha", "resolution", "classes"):
        if m.get(key) is not None:
            table.add_row(key, str(m[key]))
    table.add_row("MACs", f"{m['macs']:,}")
    table.add_row("params", f"{m['params']:,}")
    for k, v in m.get("artifact", {}).items():
        table.add_row(f"artifact.{k}", str(v))
    for k, v in (m.get("memory") or {}).items():
        table.add_row(f"memory.{k}", f"{v:,}" if isinstance(v, int) else str(v))
    console.print(table)


def main():
    try:
        app()  # typer handles --help and usage errors (exit 2) itself
    except (UsageError, WorkError) as e:
        sys.stderr.write(f"edgekit: error: {e}\n")
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
