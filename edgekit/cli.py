"""The command line: thin wrappers over library functions. TensorFlow and TVM are imported only by the
commands that need them, so `edgekit --help` stays fast."""
from __future__ import annotations

import json
import signal
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Optional

import typer

from .errors import PENDING_SIGNALS, SIGNALS, UsageError, WorkError, interrupt

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Deploy MobileNets (and any ONNX model) to edge boards with Apache TVM. "
                       "Library warnings (TensorFlow, TVM, tf2onnx) are hidden unless --verbose is given.")

ARCH = typer.Option("v2", "--arch", help="MobileNet version: v1 or v2.")
ALPHA = typer.Option(1.0, "--alpha", help="Width multiplier, in (0, 2].")
RESOLUTION = typer.Option("224", "--resolution", help="Input size: 224, or HxW such as 160x128 (>= 32).")
CLASSES = typer.Option(1000, "--classes", help="Number of output classes.")
JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
TARGET = typer.Option(..., "--target", help="Board name (see `edgekit targets`).")
MODEL = typer.Option(None, "--model", help="Your own model: .onnx, .keras, .h5 (Keras full model), or .tflite "
                                          "(float or int8).")
WEIGHTS = typer.Option(None, "--weights", help="Keras weights file for the MobileNet.")
OUT = typer.Option(None, "--out", help="Build directory (default build/<target>-<model>).")
QUANTIZE = typer.Option(None, "--quantize", help="int8: full-integer post-training quantization (TFLite converter).")
CALIBRATION = typer.Option(None, "--calibration", help="With --quantize: NHWC float images (.npy) to calibrate on.")
PORT = typer.Option(None, "--port", help="Serial link URL: /dev/ttyACM0, /dev/pts/N, socket://HOST:PORT.")
HOST = typer.Option(None, "--host", help="USER@ADDR of a Linux board reached over SSH.")
NO_TUNING = typer.Option(False, "--no-tuning", help="Ignore the target's tuning records.")
DB = typer.Option(None, "--db", help="Tuning database directory (default $XDG_CACHE_HOME/edgekit/tuning/<target>; "
                  "a build without --db also applies the records edgekit ships).")
MLPERF = typer.Option(None, "--mlperf", help="vww01|ic01|kws01|ad01: firmware the official MLPerf Tiny runner drives "
                      "(takes the benchmark's raw input, reports that model name).")


def _check_tuning(no_tuning: bool, db: Optional[Path]) -> None:
    """A build's --db must name a database (edgekit tune --db writes one); --no-tuning takes none."""
    if no_tuning and db is not None:
        raise UsageError("--no-tuning and --db exclude each other: build without records, or with those in --db")
    if db is not None and not db.is_dir():
        raise UsageError(f"--db {db}: no tuning database there (edgekit tune --db {db} writes one)")


def _console(stderr: bool = False):
    from rich.console import Console
    return Console(stderr=stderr)


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
        table.add_row(r["name"], r["kind"], r["core"], f"{r['clock_hz'] / 1e6:g} MHz" if r["clock_hz"] else "-", _size(r["flash_bytes"]),
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
def build(target: str = TARGET, arch: str = ARCH, alpha: float = ALPHA, resolution: str = RESOLUTION,
          classes: int = CLASSES, model: Optional[Path] = MODEL, weights: Optional[Path] = WEIGHTS,
          quantize: Optional[str] = QUANTIZE, calibration: Optional[Path] = CALIBRATION,
          mlperf: Optional[str] = MLPERF, out: Optional[Path] = OUT,
          no_tuning: bool = NO_TUNING, db: Optional[Path] = DB,
          json_out: bool = JSON):
    """Compile a model for a board into one build directory (with the kernels `edgekit tune` measured best)."""
    from .build import build as run_build
    cfg = None if model else _config(arch, alpha, resolution, classes)
    _check_tuning(no_tuning, db)
    console = _console()
    with console.status("starting") as status:
        manifest = run_build(target, cfg, model, weights, out, stage=lambda s: status.update(s), quantize=quantize,
                             calibration=calibration, mlperf=mlperf, tuning=not no_tuning, db=db)
    if json_out:
        return _print_json(manifest)
    _print_manifest(console, manifest)


@app.command()
def tune(target: str = TARGET, arch: str = ARCH, alpha: float = ALPHA, resolution: str = RESOLUTION,
         classes: int = CLASSES, model: Optional[Path] = MODEL, weights: Optional[Path] = WEIGHTS,
         quantize: Optional[str] = QUANTIZE, calibration: Optional[Path] = CALIBRATION,
         minutes: Optional[float] = typer.Option(None, "--minutes", help="Stop after this long."),
         trials: Optional[int] = typer.Option(None, "--trials", help="Stop after this many candidates in all "
                                              "(default: 64 per kernel)."),
         db: Optional[Path] = DB,
         port: Optional[str] = PORT, host: Optional[str] = HOST,
         tracker: Optional[str] = typer.Option(None, "--tracker", help="HOST:PORT of a TVM RPC tracker whose boards "
                                               "(rpc_server --key KEY) measure the candidates."),
         key: Optional[str] = typer.Option(None, "--key", help="With --tracker: the boards' key."),
         json_out: bool = JSON):
    """Search faster schedules for a model's kernels, measured on the board (here, behind an RPC tracker, or on
    the emulator), into the target's tuning database; `edgekit build` then uses them."""
    from .tuning import tune_model
    cfg = None if model else _config(arch, alpha, resolution, classes)
    with _tune_progress(json_out) as (stage, progress):
        result = tune_model(target, cfg, model, weights, quantize, calibration, trials=trials, minutes=minutes,
                            db=db, port=port, host=host, tracker=tracker, key=key, stage=stage, progress=progress)
    if json_out:
        return _print_json(result)
    _print_tuning(_console(), result)


@contextmanager
def _tune_progress(quiet: bool):
    """A bar of trials (or of time, with --minutes) showing the best latency so far and the kernel in hand."""
    if quiet:
        yield (lambda s: None), None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                   TimeRemainingColumn(), console=_console(stderr=True), transient=True)

    def progress(e):
        by_time = e["seconds_left"] is not None
        done, total = (e["seconds"], e["seconds"] + max(e["seconds_left"], 0)) if by_time else (e["trials"], e["total"])
        best = f"{e['best'] * 1e3:.3f} ms" if e["best"] is not None and e["unit"] == "s" else \
            (f"{e['best']:,.0f} {e['unit']}" if e["best"] is not None else "-")
        bar.update(task, completed=done, total=total, description=f"tuning {e['trials']} trials",
                   info=f"{e['kernel']}: best {best}")

    with bar:
        task = bar.add_task("starting", total=None, info="")
        yield (lambda s: bar.update(task, description=s)), progress


def _print_tuning(console, r):
    from rich.table import Table
    unit = r["unit"]
    fmt = (lambda v: f"{v * 1e3:.4f}") if unit == "s" else (lambda v: f"{v:,.0f}")
    table = Table("kernel", "calls", f"untuned ({'ms' if unit == 's' else unit})", "tuned", "speed-up",
                  "share", "schedule", title=f"{r['trials']} trials in {r['seconds']:.0f} s on {r['target']} "
                                             f"({r['source']})")
    for k in r["kernels"]:
        u, t = k["untuned"], k["tuned"]
        table.add_row(k["kernel"], str(k["calls"]), fmt(u) if u else "-", fmt(t) if t else "-",
                      f"{u / t:.1f}x" if u and t else "-", f"{k['share']:.1%}", k["schedule"])
    console.print(table)
    console.print(f"database: {r['database']}")


BUILD_DIR = typer.Argument(..., help="A directory made by `edgekit build`.")
THREADS = typer.Option(None, "--threads", help="Linux boards: threads the runner's kernels use (default: all cores).")


@app.command()
def flash(build_dir: Path = BUILD_DIR, port: Optional[str] = PORT, host: Optional[str] = HOST,
          emulate: bool = typer.Option(False, "--emulate", help="Boot it in the board's emulator and check it."),
          threads: Optional[int] = THREADS):
    """Put a build on its board (pyocd, SSH) or boot it in the emulator, and check the model it reports."""
    from . import board as boards
    from . import target
    manifest, _ = boards.load_build(build_dir)
    tgt = target.get(manifest["target"])
    if host and (emulate or port):
        raise UsageError("--host copies the build over SSH: drop --emulate and --port")
    if host:
        url = boards.install(build_dir, host, threads=threads)
        return _console().print(f"{tgt.name} at {host} runs the build's runner on {url}: "
                                f"validate with --port {url} (or --host {host})")
    if not emulate:  # a real board: program it, then (given its port) check what it runs
        from .flash import flash_board
        elf = boards.program(build_dir, manifest)
        flash_board(tgt, elf)
        if not port:
            return _console().print(f"flashed {elf} to {tgt.name}: validate it with --port URL")
    with boards.connect(build_dir, None if emulate else port, None, threads=threads) as (_, dev, source):
        info = dev.info()
    _console().print(f"{tgt.name} ({source}) runs model {info['name']} hash {info['hash']}: "
                     f"input {info['input']:,} B, output {info['output']:,} B, arena {info['arena']:,} B")


@app.command()
def validate(build_dir: Path = BUILD_DIR, port: Optional[str] = PORT, host: Optional[str] = HOST,
             inputs: int = typer.Option(5, "--inputs", help="Number of seeded random inputs."),
             npy: Optional[Path] = typer.Option(None, "--npy", help="Inputs from a .npy file (the manifest's input "
                                                "shape and dtype, one or N) instead."),
             dataset: Optional[str] = typer.Option(None, "--dataset", help="Labelled test images instead: "
                                                   "fashion-mnist, a folder of class subfolders, or an .npz (x, y)."),
             limit: Optional[int] = typer.Option(200, "--limit", help="With --dataset: the first N test images."),
             outputs: Optional[Path] = typer.Option(None, "--outputs", help="Write the board's raw outputs here "
                                                    "(.npy, the output dtype, one row per input)."),
             threads: Optional[int] = THREADS, json_out: bool = JSON):
    """Compare the board's outputs with the build's reference (ONNX Runtime, or TFLite for int8 builds), and
    with --dataset their accuracy on labelled images."""
    from . import board as boards
    from . import report, validate as v
    manifest, _ = boards.load_build(build_dir)
    if dataset and npy:
        raise UsageError("give --npy or --dataset, not both")
    labels = classes = None
    if dataset:
        x, labels, classes = v.dataset_inputs(manifest, dataset, limit)
    else:
        x = v.make_inputs(_input_spec(manifest), inputs, npy)
    with boards.connect(build_dir, port, host, threads=threads) as (manifest, dev, source), _bar(len(x)) as step:
        val = v.run(dev, build_dir, x, manifest, outputs, labels, classes, step)
        result = {**_contract(manifest), "validation": {**val, "source": source}}
    report.record(build_dir, "validation", result["validation"])
    _warn(result["validation"])
    if "accuracy" in result["validation"]:
        result["accuracy"] = result["validation"]["accuracy"]
    _show(result, json_out, _print_validation)
    if not result["validation"]["passed"]:
        raise WorkError(f"validation failed on {manifest['target']} ({source}): outputs differ from {_ref(manifest)}")


def _input_spec(manifest: dict) -> dict:
    """The manifest's input object (builds older than it: their float32 input_shape)."""
    return manifest.get("input") or {"shape": manifest["input_shape"], "dtype": "float32"}


def _ref(manifest: dict) -> str:
    return "TFLite's reference interpreter" if manifest.get("reference") == "tflite" else "ONNX Runtime"


@app.command()
def bench(build_dir: Path = BUILD_DIR, port: Optional[str] = PORT, host: Optional[str] = HOST,
          runs: int = typer.Option(5, "--runs", help="Inferences to time (the median is reported)."),
          per_layer: bool = typer.Option(False, "--per-layer", help="Also time each kernel."),
          threads: Optional[int] = THREADS, json_out: bool = JSON):
    """On-device latency from the board's own counter (instructions under an emulator)."""
    from . import board as boards
    from . import report, target
    if runs < 1:
        raise UsageError("--runs must be at least 1")
    with boards.connect(build_dir, port, host, threads=threads) as (manifest, dev, source):
        result = {**_contract(manifest),
                  "latency": report.latency(dev, manifest, target.get(manifest["target"]), source, runs, per_layer)}
    report.record(build_dir, "bench", result["latency"])
    _show(result, json_out, _print_latency)


@app.command()
def run(target: str = TARGET, arch: str = ARCH, alpha: float = ALPHA, resolution: str = RESOLUTION,
        classes: int = CLASSES, model: Optional[Path] = MODEL, weights: Optional[Path] = WEIGHTS,
        quantize: Optional[str] = QUANTIZE, calibration: Optional[Path] = CALIBRATION,
        out: Optional[Path] = OUT, port: Optional[str] = PORT, host: Optional[str] = HOST,
        inputs: int = typer.Option(3, "--inputs", help="Random inputs to validate with."),
        runs: int = typer.Option(3, "--runs", help="Inferences to time."), threads: Optional[int] = THREADS,
        no_tuning: bool = NO_TUNING, db: Optional[Path] = DB, json_out: bool = JSON):
    """Build, flash (or emulate), validate and bench in one go."""
    from . import board as boards
    from . import validate as v
    from . import target as targets
    from .build import build as run_build
    if inputs < 1 or runs < 1:
        raise UsageError("--inputs and --runs must be at least 1")
    cfg = None if model else _config(arch, alpha, resolution, classes)
    _check_tuning(no_tuning, db)
    board = targets.get(target)
    boards.check_reachable(board, port, host)
    boards.runner_args({"target": target}, threads)
    with _console().status("starting") as status:
        manifest = run_build(target, cfg, model, weights, out, stage=lambda s: status.update(s), quantize=quantize,
                             calibration=calibration, tuning=not no_tuning, db=db)
        build_dir = Path(manifest["build_dir"])
        status.update("start the board" + (" emulator" if not (port or host) else ""))
        val, lat = v.on_board(build_dir, v.make_inputs(_input_spec(manifest), inputs), runs=runs, port=port,
                              host=host, threads=threads, stage=status.update)
    result = {**manifest, "validation": val, "latency": lat}
    _warn(val)
    _show(result, json_out, lambda c, r: (_print_manifest(c, r), _print_validation(c, r), _print_latency(c, r)))
    if not val["passed"]:
        raise WorkError(f"validation failed on {target} ({val['source']}): outputs differ from {_ref(manifest)}")


@app.command("report")
def report_cmd(build_dir: Path = BUILD_DIR,
               out: Optional[Path] = typer.Option(None, "--out", help="Where report.md and its PNGs go (default BUILD_DIR/report)."),
               json_out: bool = JSON):
    """report.md with figures (latency per layer, arena memory map, memory budget, confusion matrix) from a build
    directory and the validate/bench results kept in it."""
    from .report import write
    result = write(build_dir, out)
    if json_out:
        return _print_json(result)
    for m in result["missing"]:
        sys.stderr.write(f"edgekit: note: no {m}\n")
    _console().print(f"wrote {result['report']} with {len(result['figures'])} figures")


DATASET = typer.Option(..., "--dataset", help="fashion-mnist, a folder with one subfolder per class, or an .npz (x, y).")


@app.command()
def train(arch: str = typer.Option(..., "--arch", help="MobileNet version: v1 or v2."),
          alpha: float = typer.Option(..., "--alpha", help="Width multiplier, in (0, 2]."),
          resolution: str = typer.Option(..., "--resolution", help="Input size, 32 or more."),
          dataset: str = DATASET, epochs: int = typer.Option(3, "--epochs", help="Passes over the training images."),
          limit: Optional[int] = typer.Option(None, "--limit", help="Train on the first N training images only."),
          out: Path = typer.Option(Path("model.keras"), "--out", help="The trained model (.keras)."),
          json_out: bool = JSON):
    """Train edgekit's MobileNet on labelled images (seeded); save it with its class names and accuracy."""
    from rich.progress import Progress
    from .train import train as run_train
    cfg = _config(arch, alpha, resolution, 1)  # the dataset sets the classes
    with Progress(console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task("loading images", total=epochs)
        result = run_train(cfg, dataset, epochs, out, limit, progress=lambda e, n, logs: bar.update(
            task, completed=e, description=f"epoch {e}/{n}: loss {logs.get('loss', 0):.3f}, "
                                          f"accuracy {logs.get('accuracy', 0):.3f}"))
    if json_out:
        return _print_json(result)
    _console().print(f"saved {result['model']}: {result['arch']} alpha {result['alpha']:g} "
                     f"{'x'.join(map(str, result['resolution']))}, {len(result['classes'])} classes, "
                     f"held-out top-1 {result['test_accuracy']:.4f} on {result['test_images']:,} images")


def _floats(text: str, what: str, kind=float) -> list:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{what} '{text}' is not a comma-separated list of numbers, e.g. 0.25,0.5") from None


@app.command("sweep")
def sweep_cmd(target: str = TARGET, arch: str = typer.Option("v1", "--arch", help="MobileNet version: v1 or v2."),
              alpha: str = typer.Option("0.25,0.5,0.75,1.0", "--alpha", help="Width multipliers, comma-separated."),
              resolution: str = typer.Option("32,48", "--resolution", help="Resolutions, comma-separated (>= 32)."),
              dataset: str = DATASET, epochs: int = typer.Option(3, "--epochs", help="Training epochs per point."),
              limit: int = typer.Option(200, "--limit", help="Labelled test images measured on the board per point."),
              train_limit: Optional[int] = typer.Option(None, "--train-limit", help="Train on the first N images only."),
              quantize: Optional[str] = QUANTIZE,
              out: Path = typer.Option(Path("sweep"), "--out", help="Directory for models, builds, sweep.json/md, plots."),
              json_out: bool = JSON):
    """Train, build, deploy and measure every alpha x resolution point; tables and Pareto plots. Resumable."""
    from rich.progress import Progress
    from .sweep import sweep
    alphas, resolutions = _floats(alpha, "--alpha"), _floats(resolution, "--resolution", int)
    with Progress(console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task("sweep", total=len(alphas) * len(resolutions))
        result = sweep(target, arch, alphas, resolutions, dataset, epochs, out, limit, train_limit, quantize,
                       progress=lambda done, total, what: bar.update(task, completed=done, description=what))
    if json_out:
        return _print_json(result)
    sys.stdout.write(Path(result["report"]).read_text())
    _console().print(f"wrote {result['report']} (and .json beside it) and {len(result['figures'])} plots")


def _contract(m: dict) -> dict:
    return {k: m.get(k) for k in ("target", "arch", "alpha", "resolution", "macs", "params", "artifact", "memory")}


@contextmanager
def _bar(total: int, what: str = "inferences"):
    """A progress bar (on stderr, gone when done) for loops over the board; yields step(done, total)."""
    from rich.progress import Progress
    with Progress(console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda done, n: bar.update(task, completed=done, description=f"{what} {done}/{n}")


def _warn(result):
    from .errors import warn
    for w in result.get("warnings", []):
        warn(w)


def _show(result, json_out, table):
    if json_out:
        return _print_json(result)
    table(_console(), result)


def _print_validation(console, r):
    from rich.table import Table
    v = r["validation"]
    table = Table("metric", "value", "tolerance", title=f"validation on {r['target']} ({v['source']}), "
                  f"{v['inputs']} inputs: {'PASSED' if v['passed'] else 'FAILED'}")
    for k in ("max_abs_err", "rmse", "cosine", "top1_agreement"):
        tol = v["tolerance"].get(k)
        table.add_row(k, f"{v[k]:.3g}", "" if tol is None else (f"<= {tol:.3g}" if k == "max_abs_err" else f">= {tol:g}"))
    if acc := v.get("accuracy"):
        table.add_row("device top-1", f"{acc['device_top1']:.4f}", "")
        table.add_row("reference top-1", f"{acc['reference_top1']:.4f}", "")
        table.add_row("agreement", f"{acc['agreement']:.4f}", ">= 1")
    console.print(table)


def _print_latency(console, r):
    lat = r["latency"]
    unit = lat["unit"]
    label = "EMULATOR" if lat["source"] == "emulator" else "device"
    console.print(f"latency on {r['target']} ({label}): median {lat[unit]:,.0f} {unit} over {lat['runs']} runs, "
                  f"{lat['ms']:.3f} ms" + (f" on {lat['threads']} threads" if lat.get("threads", 1) > 1 else "") +
                  (f" ({lat['note']})" if "note" in lat else ""))
    per = [k for k in lat if k.startswith("macs_per_")]
    if per and lat[per[0]]:
        console.print(f"{r['macs']:,} MACs: {lat[per[0]]:.3f} {per[0].replace('_', ' ')}")
    if "layers" in lat:
        from rich.table import Table
        table = Table("layer", unit, "share", title=f"per layer ({label})")
        for row in lat["layers"]:
            table.add_row(row["name"], f"{row[unit]:,}", f"{row['share']:.1%}")
        console.print(table)


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


@contextmanager
def _library_output_hidden():
    """TensorFlow, TVM and tf2onnx print warnings and INFO lines from C++ straight to file descriptor 2, and
    Python warnings through sys.stderr: while edgekit works, fd 2 goes to a scratch file and library
    warnings are ignored; edgekit's own lines (and any traceback) still reach the real stderr."""
    import logging
    import os
    import tempfile
    import warnings
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.simplefilter("ignore")
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    sys.stderr.flush()
    real = os.dup(2)
    saved_stderr = sys.stderr
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        sys.stderr = open(real, "w", buffering=1, closefd=False)
        try:
            yield
        finally:
            sys.stderr.flush()
            sys.stderr = saved_stderr
            os.dup2(real, 2)
            os.close(real)


def _interrupted(signum, frame):
    """SIGTERM and SIGHUP (timeout, CI runners, docker stop, a closed terminal) take Ctrl-C's path: every
    `finally` then ends the emulator, runner or ssh and removes temporary and half-written directories.
    Where raising it would break a library called back from C++ (_unsafe_to_raise), the signal is recorded
    and re-delivered every 50 ms until the work has left it (errors.PENDING_SIGNALS says more). Once
    raised, further signals are ignored, so the clean-up runs to the end."""
    if signum not in PENDING_SIGNALS:
        PENDING_SIGNALS.append(signum)
    if _unsafe_to_raise(frame):
        _redeliver(signum)
        return
    interrupt()


def _unsafe_to_raise(frame) -> bool:
    """Whether an import is under way inside the work (an exception inside a C extension's initialisation,
    protobuf's under onnx, aborts the process), or the innermost frame that is TVM's or edgekit's is TVM's.
    edgekit code that TVM calls back (the tuning's builder and runners) ends its own processes on
    KeyboardInterrupt, which TVM passes on. An import outside edgekit's innermost frame is not the work's: a
    caller that runs edgekit from inside an import (pytest-xdist's workers) would never see the signal raised."""
    own = str(Path(__file__).parent) + "/"
    tvm = tuple(str(Path(m.__file__).parent) + "/" for name in ("tvm", "tvm_ffi")
                if (m := sys.modules.get(name)) is not None and getattr(m, "__file__", None))
    innermost = None
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith("<frozen importlib") and innermost is None:
            return True
        if innermost is None and name.startswith(own):
            innermost = "edgekit"
        elif innermost is None and tvm and name.startswith(tvm):
            innermost = "tvm"
        frame = frame.f_back
    return innermost == "tvm"


_redelivery: list = []  # the thread that re-delivers a deferred signal, once started


def _redeliver(signum: int) -> None:
    import _thread
    import threading
    import time

    def again():
        while PENDING_SIGNALS and signal.getsignal(signum) is _interrupted:  # until raised (SIG_IGN) or reset
            time.sleep(0.05)
            _thread.interrupt_main(signum)
    if not (_redelivery and _redelivery[0].is_alive()):
        _redelivery[:] = [threading.Thread(target=again, daemon=True, name="edgekit-signal")]
        _redelivery[0].start()


def main():
    for s in SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:  # keep what nohup or a background shell job ignores
            signal.signal(s, _interrupted)
    verbose = "--verbose" in sys.argv[1:]  # anywhere on the line, for every command
    if verbose:
        sys.argv.remove("--verbose")
    with nullcontext() if verbose else _library_output_hidden():
        try:
            try:
                app()  # typer handles --help and usage errors (exit 2) itself
            except SystemExit as e:
                if PENDING_SIGNALS and not e.code:  # a library swallowed the interrupt: it still ends the run
                    sys.exit(130)
                raise
        except (UsageError, WorkError) as e:
            sys.stderr.write(f"edgekit: error: {e}\n")
            sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
