"""MLPerf Tiny: what the official runner (mlcommons/tiny, benchmark/runner) sends and expects, for `edgekit build
--mlperf`; a client that speaks to a board as the runner does; and a thin adapter that lets the unmodified runner
find a board's emulator (`python -m edgekit.mlperf BUILD_DIR --runner DIR -- RUNNER_ARGS`).

Sources of each fact: firmware/README.md, "MLPerf Tiny". The runner loads a dataset file's bytes as they are
(`db load N`, then `db` lines of 31 bytes as hex); the board's porting layer turns them into the model's input,
and `results` prints the dequantized scores with three decimals.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UsageError, WorkError

RUNNER_CHUNK = 31  # bytes per `db` line (device_under_test.py: 31 without a power board, 26 with one)
# the reference DUT entry of the runner's devices.yaml (l4r5zi: the ST-LINK of a NUCLEO-L4R5ZI)
REFERENCE_DUT_USB = (0x0483, 0x374B)


@dataclass(frozen=True)
class Benchmark:
    name: str
    raw: str                  # the dtype of the runner's dataset files: uint8 pixels, int8 or float32 features
    pixel_scale: float = 1.0  # uint8 pixels: the real value a pixel p stands for is p * pixel_scale
    score: str = "scores"     # "scores": the dequantized outputs; "mse": one reconstruction error (AD)


BENCHMARKS = {
    # person_detection/submitter_implemented.cpp subtracts 128; training rescales pixels by 1/255 (test_vww.py),
    # so the reference model's input is scale 1/255, zero point -128, where p - 128 is exact
    "vww01": Benchmark("vww01", "uint8", pixel_scale=1 / 255),
    # image_classification/submitter_implemented.cpp subtracts 128; model_converter.py calibrates on raw 0..255 pixels
    "ic01": Benchmark("ic01", "uint8", pixel_scale=1.0),
    # keyword_spotting/submitter_implemented.cpp copies the int8 features into the int8 input as they are
    "kws01": Benchmark("kws01", "int8"),
    # anomaly_detection/submitter_implemented.cpp quantizes float32 features, reports the output's mean squared
    # error against them
    "ad01": Benchmark("ad01", "float32", score="mse"),
}
CTYPES = {"int8": "int8_t", "float32": "float"}


def _count(spec: dict) -> int:
    return int(np.prod(spec["shape"]))


def declare(name: str, inp: dict, out: dict) -> dict:
    """The manifest's `mlperf` object for a build's input/output objects: what the runner sends, how the firmware
    converts it, what `results` reports. A model the benchmark cannot feed is a UsageError."""
    if name not in BENCHMARKS:
        raise UsageError(f"--mlperf {name} is not an MLPerf Tiny benchmark: use one of {', '.join(BENCHMARKS)}")
    b = BENCHMARKS[name]
    for what, spec in (("input", inp), ("output", out)):
        if spec["dtype"] not in CTYPES:
            raise UsageError(f"--mlperf needs an int8 or float32 model {what}, not {spec['dtype']}")
    if b.raw == "int8" and inp["dtype"] != "int8":
        raise UsageError(f"--mlperf {name} sends int8 features: the model needs an int8 input (--quantize int8)")
    if b.score == "mse" and _count(out) != _count(inp):
        raise UsageError(f"--mlperf {name} scores the reconstruction error: the output must have the input's size")
    n = _count(inp)
    raw = {"dtype": b.raw, "layout": "HWC" if b.raw == "uint8" else "flat", "elements": n,
           "bytes": n * np.dtype(b.raw).itemsize}
    if b.raw == "uint8":
        conversion = (f"pixel p -> real p * {b.pixel_scale:.9g}, quantized by the input's scale and zero point"
                      if inp["dtype"] == "int8" else f"pixel p -> float p * {b.pixel_scale:.9g}")
    elif b.raw == "int8":
        conversion = "int8 features copied into the int8 input"
    else:
        conversion = ("float32 features quantized by the input's scale and zero point" if inp["dtype"] == "int8"
                      else "float32 features copied into the float input")
    if inp.get("layout") == "NCHW" and b.raw == "uint8":
        conversion += ", HWC -> CHW"
    return {"benchmark": name, "raw_input": raw, "conversion": conversion,
            "results": "mean squared error of the dequantized output against the float input, %0.3f"
            if b.score == "mse" else "dequantized output scores, %0.3f"}


def pixel_table(name: str, inp: dict) -> np.ndarray:
    """What each uint8 pixel becomes in the model's input: TFLite's quantization (value / scale in float32, round
    half away from zero, + zero point, clamp) of the real value the pixel stands for, or that float itself."""
    real = np.arange(256, dtype=np.float32) * np.float32(BENCHMARKS[name].pixel_scale)
    if inp["dtype"] == "float32":
        return real
    q = real / np.float32(inp["scale"])
    q = np.sign(q) * np.floor(np.abs(q) + np.float32(0.5))
    return np.clip(q + inp["zero_point"], -128, 127).astype(np.int8)


def to_model_input(raw: bytes, manifest: dict) -> np.ndarray:
    """The model's input the firmware makes of the runner's raw bytes (the host's mirror of ek_io_convert)."""
    m, inp = manifest["mlperf"], manifest["input"]
    b = BENCHMARKS[m["benchmark"]]
    x = np.frombuffer(raw, b.raw)
    if b.raw == "uint8":
        x = pixel_table(m["benchmark"], inp)[x]
    elif b.raw == "float32" and inp["dtype"] == "int8":
        q = x / np.float32(inp["scale"])
        x = np.clip(np.sign(q) * np.floor(np.abs(q) + np.float32(0.5)) + inp["zero_point"], -128, 127)
    x = x.astype(inp["dtype"])
    if inp.get("layout") == "NCHW" and b.raw == "uint8":
        c = inp["shape"][1]
        x = x.reshape(-1, c).T
    return x.reshape(inp["shape"])


def config_lines(inp: dict | None, out: dict | None, mlperf: dict | None = None) -> list[str]:
    """ek_model_config.h lines declaring the model's input/output types (for `results`) and, for an --mlperf
    build, the runner's raw input and its conversion (firmware/common/ek_io.c)."""
    lines = []
    for key, spec in (("INPUT", inp), ("OUTPUT", out)):
        if not spec or spec["dtype"] not in CTYPES:
            continue
        int8 = spec["dtype"] == "int8"
        lines += [f"#define EK_{key}_INT8 {int(int8)}", f"#define EK_{key}_CTYPE {CTYPES[spec['dtype']]}",
                  f"#define EK_{key}_COUNT {_count(spec)}u"]
        if int8:
            lines += [f"#define EK_{key}_SCALE {float(np.float32(spec['scale'])):.9g}f",
                      f"#define EK_{key}_ZERO_POINT ({int(spec['zero_point'])})"]
    if mlperf:
        name, raw = mlperf["benchmark"], mlperf["raw_input"]
        lines += [f'#define EK_MLPERF_MODEL "{name}"', f"#define EK_MLPERF_RAW_BYTES {raw['bytes']}u",
                  f"#define EK_MLPERF_RAW_U8 {int(raw['dtype'] == 'uint8')}",
                  f"#define EK_MLPERF_RAW_I8 {int(raw['dtype'] == 'int8')}",
                  f"#define EK_MLPERF_RAW_F32 {int(raw['dtype'] == 'float32')}",
                  f"#define EK_MLPERF_SCORE_MSE {int(BENCHMARKS[name].score == 'mse')}",
                  # the runner sends HWC pixels: an NCHW model's input is transposed (its channel count)
                  f"#define EK_MLPERF_TO_CHW {inp['shape'][1] if inp.get('layout') == 'NCHW' and raw['dtype'] == 'uint8' else 0}u"]
        if raw["dtype"] == "uint8":
            table = pixel_table(name, inp)
            text = ", ".join(f"{v:.9g}f" if table.dtype.kind == "f" else str(int(v)) for v in table)
            lines.append(f"#define EK_MLPERF_PIXEL_TABLE {text}")
    return lines


def scores(values) -> str:
    """`results`' text for scores, as th_results prints them (%0.3f)."""
    return "m-results-[" + ",".join(f"{float(np.float32(v)):.3f}" for v in values) + "]"


def dequantize(output: np.ndarray, spec: dict) -> np.ndarray:
    """The float32 scores of a raw output row, as the firmware computes them."""
    if spec["dtype"] != "int8":
        return output.astype(np.float32)
    return ((output.astype(np.int32) - spec["zero_point"]).astype(np.float32) * np.float32(spec["scale"]))


# ---- a client that speaks exactly as the runner does ----
class RunnerClient:
    """The runner's side of the protocol: each command ends with %, every reply line within `timeout` seconds
    (serial_device.py waits 5 s per line), the reply ends with m-ready. No CRCs: these are the standard commands."""

    def __init__(self, url: str, timeout: float = 5.0, baud: int = 115200):
        import serial
        self.timeout = timeout
        self.port = serial.serial_for_url(url, baudrate=baud, timeout=0.05)
        self._buf = bytearray()

    def close(self) -> None:
        self.port.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _line(self, cmd: str) -> str:
        deadline = time.monotonic() + self.timeout
        while (i := self._buf.find(b"\n")) < 0:
            if time.monotonic() > deadline:
                raise WorkError(f"no response to command {cmd!r} within {self.timeout} s")
            self._buf += self.port.read(self.port.in_waiting or 1)
        line = self._buf[:i].decode().strip("\r\0")
        del self._buf[:i + 1]
        return line

    def command(self, cmd: str) -> list[str]:
        """The reply's lines before m-ready (errors included: the runner does not treat them apart)."""
        self.port.write(cmd.encode() + b"%")
        lines = []
        while (line := self._line(cmd)) != "m-ready":
            if line:
                lines.append(line)
        return lines

    def name(self) -> str:
        return next(m.group(1) for ln in self.command("name") if (m := re.match(r"^m-name-dut-\[([^]]+)]$", ln)))

    def model(self) -> str:
        return next(m.group(1) for ln in self.command("profile") if (m := re.match(r"^m-model-\[([^]]+)]$", ln)))

    def load(self, data: bytes) -> list[str]:
        """db load N, then db lines of 31 bytes; the reply to the last one (m-load-done when the board took it)."""
        reply = self.command(f"db load {len(data)}")
        for i in range(0, len(data), RUNNER_CHUNK):
            reply = self.command("db " + data[i:i + RUNNER_CHUNK].hex())
        return reply

    def infer(self, n: int, warmups: int) -> dict:
        """infer N W: {'results': [...], 'elapsed_us': T1 - T0, 'lines': the reply}, as script.py gathers them."""
        lines = self.command(f"infer {n} {warmups}")
        laps = [int(m.group(1)) for ln in lines if (m := re.match(r"^m-lap-us-([0-9]+)$", ln))]
        res = [parse_results(ln) for ln in lines if ln.startswith("m-results-[")]
        return {"results": res[0] if res else None, "elapsed_us": laps[1] - laps[0] if len(laps) == 2 else None,
                "lines": lines}


def parse_results(line: str) -> list[float]:
    m = re.match(r"^m-results-\[([^]]+)\]$", line)
    if not m:
        raise WorkError(f"not a results line: {line!r}")
    return [float(x) for x in m.group(1).split(",") if x.strip()]


def median_throughput(windows: list[tuple[int, int]]) -> float:
    """The runner's performance figure: the median over windows of inferences / elapsed seconds, each window
    (N, elapsed microseconds between the m-lap-us- lines) one `infer N W` on one loaded file."""
    return float(np.median([n / (us / 1e6) for n, us in windows]))


# ---- the adapter: the unmodified runner against a board's emulator ----
# Loaded by the runner's Python (as sitecustomize) from PYTHONPATH: the runner finds its DUT among the USB serial
# ports by VID/PID (device_manager.py), which a pty has not; this lists the emulator's pty as that DUT.
SHIM = '''\
import os
import serial.tools.list_ports as _lp
from serial.tools.list_ports_common import ListPortInfo as _Info

_comports = _lp.comports


def _with_emulator(*args, **kwargs):
    port = _Info(os.environ["EDGEKIT_MLPERF_PORT"], skip_link_detection=True)
    port.vid, port.pid = int(os.environ["EDGEKIT_MLPERF_VID"], 0), int(os.environ["EDGEKIT_MLPERF_PID"], 0)
    port.description = "edgekit emulator"
    return [p for p in _comports(*args, **kwargs) if p.device != port.device] + [port]


_lp.comports = _with_emulator
try:  # the runner also scans USB for power monitors; without libusb there is none to find
    import usb.core as _usb
    _find = _usb.find

    def _find_or_none(*args, **kwargs):
        try:
            return _find(*args, **kwargs)
        except _usb.NoBackendError:
            return [] if kwargs.get("find_all") else None
    _usb.find = _find_or_none
except ImportError:
    pass
'''


def runner_env(port: str, shim_dir: Path, vid: int = REFERENCE_DUT_USB[0], pid: int = REFERENCE_DUT_USB[1]) -> dict:
    """The environment in which the runner's main.py sees `port` as a USB serial DUT with vid:pid."""
    (Path(shim_dir) / "sitecustomize.py").write_text(SHIM)
    path = os.pathsep.join(p for p in (str(shim_dir), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "EDGEKIT_MLPERF_PORT": port,
            "EDGEKIT_MLPERF_VID": hex(vid), "EDGEKIT_MLPERF_PID": hex(pid)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgekit.mlperf", description="Run the official MLPerf Tiny runner "
                                 "(benchmark/runner/main.py, unmodified) against an --mlperf build in its board's "
                                 "emulator. Arguments after -- go to the runner (e.g. -m p -s DATASETS).")
    ap.add_argument("build_dir", type=Path)
    ap.add_argument("--runner", type=Path, required=True, help="the runner's directory (mlcommons/tiny benchmark/runner)")
    ap.add_argument("--python", default=sys.executable, help="the Python that has the runner's requirements")
    ap.add_argument("--usb", default="0x0483:0x374B", help="VID:PID of the devices.yaml DUT entry to pose as")
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)  # the runner's own arguments follow --
    a = ap.parse_args(argv[:cut])
    a.runner_args = argv[cut + 1:]
    from . import board as boards, target as targets
    from .flash import emulate

    manifest, build_dir = boards.load_build(a.build_dir)
    if "mlperf" not in manifest:
        raise UsageError(f"{build_dir} was built without --mlperf: rebuild it with --mlperf vww01|ic01|kws01|ad01")
    if not (a.runner / "main.py").is_file():
        raise UsageError(f"{a.runner} holds no main.py: give the runner's directory (mlcommons/tiny benchmark/runner)")
    try:
        vid, pid = (int(v, 16) for v in a.usb.split(":"))
    except ValueError:
        raise UsageError(f"--usb {a.usb} is not VID:PID in hex: e.g. --usb 0x0483:0x374B") from None
    with emulate(targets.get(manifest["target"]), boards.program(build_dir, manifest)) as url, \
            tempfile.TemporaryDirectory(prefix="edgekit-mlperf-") as shim:
        print(f"edgekit: {manifest['target']} emulator on {url} (EMULATOR: m-lap-us- counts virtual time, "
              "1 instruction = 1 ns; figures are instruction counts, not cycles)", file=sys.stderr)
        return subprocess.run([a.python, "main.py", *a.runner_args], cwd=a.runner,
                              env=runner_env(url, Path(shim), vid, pid)).returncode


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (UsageError, WorkError) as e:
        print(f"edgekit: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
