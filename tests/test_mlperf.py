"""MLPerf Tiny: an int8 VWW-shaped --mlperf vww01 build on the emulated Cortex-M4, driven by a client that sends what
the official runner sends (name, profile, db load N, db lines of 31 bytes, infer N W, results); its scores equal
TFLite's reference interpreter on the same pixels, converted as the firmware converts them. One build, one boot."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_edgekit
from edgekit import flash, mlperf, target
from edgekit.errors import UsageError
from edgekit.link import Device
from int8_support import reference

VWW = ["--arch", "v1", "--alpha", "0.25", "--resolution", "96", "--classes", "2", "--quantize", "int8"]
needs_qemu = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                reason="needs arm-none-eabi-gcc and qemu-system-arm (make test installs them)")


@pytest.fixture(scope="module")
def vww(tmp_path_factory):
    """The build takes edgekit's shipped records only (an empty user cache): the tests below check them too."""
    d = tmp_path_factory.mktemp("mlperf")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(d / "empty-cache"))
        r = run_edgekit("build", "--target", "mps2-an386", *VWW, "--mlperf", "vww01", "--out", d / "b", "--json")
    assert r.returncode == 0, r.stderr
    return d / "b", json.loads(r.stdout)


@pytest.fixture(scope="module")
def board(vww):
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("needs arm-none-eabi-gcc and qemu-system-arm")
    build, m = vww
    with flash.emulate(target.get("mps2-an386"), build / m["artifact"]["firmware"]) as url:
        with mlperf.RunnerClient(url) as client:
            yield url, client


def images(n: int, seed: int = 5) -> list[np.ndarray]:
    """Smooth uint8 RGB images (8x8 blocks of noise over a gradient): they move a classifier, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, 96)[None, :, None]
    return [np.clip(ramp * (i % 2) + rng.integers(0, 256, (12, 12, 3)).repeat(8, 0).repeat(8, 1) * (0.5 + i / n),
                    0, 255).astype(np.uint8) for i in range(n)]


def test_manifest_declares_the_runners_input(vww):
    _, m = vww
    assert m["mlperf"]["benchmark"] == "vww01"
    assert m["mlperf"]["raw_input"] == {"dtype": "uint8", "layout": "HWC", "elements": 96 * 96 * 3, "bytes": 27648}
    assert m["input"]["dtype"] == "int8" and m["input"]["layout"] == "NHWC"


@needs_qemu
def test_a_runner_session_scores_as_tflite(vww, board):
    build, m = vww
    url, client = board
    assert client.name() == "mps2-an386"
    assert client.command("profile") == ["m-profile-[ULPMark for tinyML Firmware V0.0.1]", "m-model-[vww01]"]
    pics = images(2)
    xs = np.stack([mlperf.to_model_input(p.tobytes(), m)[0] for p in pics])
    ref = reference(build / "model.tflite", xs)
    assert len(np.unique(ref, axis=0)) > 1  # the images move the classifier
    for pic, want in zip(pics, ref):
        assert client.load(pic.tobytes()) == ["m-load-done"]
        assert client.command("db print 8 5") == ["m-buffer-" + "-".join(f"{b:02x}" for b in pic.tobytes()[5:13])]
        run = client.infer(1, 0)  # accuracy mode: infer 1 0 per file
        text = mlperf.scores(mlperf.dequantize(want, m["output"]))
        assert run["lines"][-1] == text and client.command("results") == [text]
        assert run["results"] == mlperf.parse_results(text) and run["elapsed_us"] > 0
    # the same input, bit for bit, through edgekit's own CRC-checked link
    client.close()
    with Device(url, timeout=5) as dev:
        assert np.frombuffer(dev.read_output(), np.int8).tolist() == ref[-1].tolist()
        dev.load_input(xs[0].tobytes())  # ek-load writes the model's input directly
        assert np.frombuffer(dev.infer(), np.int8).tolist() == ref[0].tolist()
    client.port.open()


@needs_qemu
def test_performance_window_and_the_size_refusal(vww, board):
    _, m = vww
    _, client = board
    pic = images(1, seed=9)[0].tobytes()
    assert client.load(pic) == ["m-load-done"]
    run = client.infer(3, 1)
    assert [ln.split("-")[1] for ln in run["lines"]] == ["warmup", "warmup", "infer", "lap", "lap", "infer", "results"]
    assert mlperf.median_throughput([(3, run["elapsed_us"])]) > 0
    good = client.command("results")
    assert client.command("db load 100") == ["e-[db load: N must be 27648, the input's size in bytes]"]
    assert client.command(f"db load {len(pic)}") == [f"m-[Expecting {len(pic)} bytes]"]
    assert client.command("db " + pic[:31].hex()) == []
    assert client.command("infer 1 0") == ["e-[db load incomplete: 31 of 27648 bytes, send the rest or db load again]"]
    assert client.command("results") == good  # the last complete run's scores stay


@pytest.mark.parametrize("name", ["mps2-an386", "mps2-an500", "mps2-an385"])  # benchmarks/int8_cortexm.py's
def test_shipped_records_apply_to_the_int8_vww_model(vww, name, tmp_path, monkeypatch):
    """edgekit ships tuning records for `make bench`'s int8 VWW on each board it measures (register blocks
    counted on the emulator): with an empty user cache, every kernel the tune covers takes one, the fixture's
    mps2-an386 build applied them all, and the runner tests above find that build bit-exact with TFLite."""
    from edgekit.build import int8_micro
    from edgekit.compiler import for_board
    from edgekit.int8 import fast, tflite
    from edgekit.tuning import MICRO_BLOCK, _annotation, shipped_dir, tasks, tuned_for
    build, m = vww
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    board = target.get(name)
    mod = for_board(tflite.to_relax(build / "model.tflite", int8_micro(board))[0], board)
    tuned = tuned_for(board)
    assert tuned.path == shipped_dir(board.name)
    kernels = [f for _, f, _ in tasks(mod)]
    records = [tuned.record(f) for f in kernels]
    assert all(records), f"a kernel of the int8 VWW model has no shipped record on {name}: re-tune it (README, Tuning)"
    blocks = [b for _, rec, _ in records if (b := _annotation(rec.trace, MICRO_BLOCK)) is not None]
    assert len(blocks) == sum(map(fast.is_micro, kernels)) >= 15
    if name == m["target"]:
        assert m["tuning"] == {"database": str(shipped_dir(board.name)), "kernels_tuned": len(kernels),
                               "kernels": m["tuning"]["kernels"]}


def test_pixels_convert_as_the_reference_ports_do():
    """VWW: the reference model's input (scale 1/255, zero point -128) makes the conversion p - 128 exactly, as
    person_detection's th_load_tensor does; IC's (scale 1, -128) too; a float input takes the real value."""
    p = np.arange(256)
    vww = mlperf.pixel_table("vww01", {"dtype": "int8", "scale": np.float32(1 / 255), "zero_point": -128})
    assert vww.tolist() == (p - 128).tolist()
    ic = mlperf.pixel_table("ic01", {"dtype": "int8", "scale": 1.0, "zero_point": -128})
    assert ic.tolist() == (p - 128).tolist()
    assert mlperf.pixel_table("vww01", {"dtype": "float32"})[255] == np.float32(1.0)
    nchw = {"dtype": "float32", "layout": "NCHW", "shape": [1, 3, 2, 2]}
    m = {"mlperf": {"benchmark": "ic01"}, "input": nchw}
    x = mlperf.to_model_input(bytes(range(12)), m)
    assert x[0, 1].ravel().tolist() == [1, 4, 7, 10]  # HWC pixels into channel planes


def test_benchmarks_refuse_models_they_cannot_feed():
    f32 = {"dtype": "float32", "shape": [1, 490], "layout": "NHWC"}
    with pytest.raises(UsageError, match="int8 input"):
        mlperf.declare("kws01", f32, {"dtype": "float32", "shape": [1, 12]})
    with pytest.raises(UsageError, match="not an MLPerf Tiny benchmark"):
        mlperf.declare("vww02", f32, f32)
    with pytest.raises(UsageError, match="output must have the input's size"):
        mlperf.declare("ad01", f32, {"dtype": "float32", "shape": [1, 2]})
    ad = mlperf.declare("ad01", {"dtype": "int8", "shape": [1, 640], "scale": 0.1, "zero_point": 3},
                        {"dtype": "int8", "shape": [1, 640], "scale": 0.2, "zero_point": 0})
    assert ad["raw_input"]["bytes"] == 2560 and "mean squared error" in ad["results"]
    r = run_edgekit("build", "--target", "mps2-an386", "--mlperf", "vww02")
    assert r.returncode == 2 and "vww01" in r.stderr and "Traceback" not in r.stderr


def test_median_throughput_is_the_runners():
    assert mlperf.median_throughput([(20, 2_000_000), (20, 1_000_000), (20, 4_000_000)]) == 10.0


def test_adapter_lists_the_emulator_as_the_runners_dut(tmp_path):
    """The runner's port scan (serial.tools.list_ports.comports, by VID/PID) finds the emulator's pty."""
    env = mlperf.runner_env("/dev/pts/77", tmp_path)
    code = ("from serial.tools import list_ports\n"
            "print([(p.device, hex(p.vid), hex(p.pid)) for p in list_ports.comports(True) if p.vid])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "('/dev/pts/77', '0x483', '0x374b')" in out
    assert os.environ.get("EDGEKIT_MLPERF_PORT") is None


@needs_qemu
def test_the_adapter_runs_a_runner_against_the_emulator(vww, tmp_path):
    """python -m edgekit.mlperf boots the build and runs the runner's main.py, which finds the pty by VID/PID as
    the official runner's port scan does (a stand-in main.py: the official runner is not installed here)."""
    build, _ = vww
    (tmp_path / "main.py").write_text(
        "import sys, serial\nfrom serial.tools import list_ports\n"
        "dut = next(p for p in list_ports.comports(True) if p.vid == 0x0483 and p.pid == 0x374B)\n"
        "port = serial.Serial(dut.device, 115200, timeout=0.1)\nport.write(b'profile%')\nbuf = b''\n"
        "while b'm-ready' not in buf:\n    buf += port.read(64)\nprint(sys.argv[1:], buf.decode().split())\n")
    r = subprocess.run([sys.executable, "-m", "edgekit.mlperf", build, "--runner", tmp_path, "--", "-m", "p"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "['-m', 'p']" in r.stdout and "'m-model-[vww01]'" in r.stdout and "EMULATOR" in r.stderr
