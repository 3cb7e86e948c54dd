"""Cortex-M end to end through the command line: build, emulate in QEMU, validate, bench."""
import json
import shutil

import onnx
import pytest

from conftest import run_edgekit

pytestmark = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                reason="needs arm-none-eabi-gcc and qemu-system-arm (make test installs them)")
VWW = ["--arch", "v1", "--alpha", "0.25", "--resolution", "96", "--classes", "2"]
TENSOR_LOWER_BOUND_VWW = 221_184  # the largest total of tensors live at one kernel (issue 3)


@pytest.fixture(scope="module")
def vww_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("vww")
    r = run_edgekit("run", "--target", "mps2-an386", *VWW, "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    return d, json.loads(r.stdout)


def test_run_vww_on_emulated_cortex_m4(vww_run):
    d, out = vww_run
    assert {"target", "arch", "alpha", "resolution", "macs", "params", "artifact", "memory", "validation",
            "latency"} <= set(out)
    v, lat, mem = out["validation"], out["latency"], out["memory"]
    assert v["passed"] and v["top1_agreement"] == 1.0 and v["max_abs_err"] < 1e-4 and v["cosine"] > 0.9999
    assert lat["source"] == "emulator" and lat["unit"] == "instructions" and "emulator" in lat["note"]
    assert out["macs"] / lat["instructions"] == pytest.approx(lat["macs_per_instruction"])
    assert mem["arena_bytes"] <= 1.25 * TENSOR_LOWER_BOUND_VWW and mem["arena_bytes"] >= mem["arena_lower_bound"]
    assert 0 < mem["ram_bytes"] <= mem["ram_budget"] and 0 < mem["flash_bytes"] <= mem["flash_budget"]
    assert not mem["input_in_arena"]  # 4 MB of RAM: the input keeps a buffer of its own
    # the board's PSRAM ([memory] weights) holds the weights, not its flash
    assert mem["weights_bytes"] <= mem["weights_region_bytes"] <= mem["weights_region_budget"]
    assert (d / out["build_dir"] / out["artifact"]["firmware"]).read_bytes()[:4] == b"\x7fELF"
    assert out["tuning"]["kernels_tuned"] >= 10  # make demo's model: tuned out of the box (targets/tuning/)


def test_the_c_library_stands_alone(vww_run):
    d, out = vww_run
    c = d / out["build_dir"] / out["artifact"]["c_library"]
    header = (c / "model.h").read_text()
    for macro in ("INPUT_BYTES", "OUTPUT_BYTES", "ARENA_BYTES", "WEIGHTS_BYTES"):
        assert f"EDGEKIT_MODEL_{macro}" in header
    assert "int edgekit_model_run(const void *input, void *output)" in header
    assert (c / "README.md").is_file() and "#include <tvm" not in "".join(p.read_text() for p in c.glob("*.[ch]"))


def test_v2_step_by_step_on_emulated_cortex_m7(tmp_path):
    model = ["--arch", "v2", "--alpha", "0.35", "--resolution", "48", "--classes", "10"]
    r = run_edgekit("build", "--target", "mps2-an500", *model, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    build = json.loads(r.stdout)["build_dir"]
    r = run_edgekit("flash", build, "--emulate", cwd=tmp_path)
    assert r.returncode == 0 and "model" in r.stdout, r.stderr
    r = run_edgekit("validate", build, "--inputs", "2", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["validation"]["passed"]
    r = run_edgekit("bench", build, "--runs", "2", "--per-layer", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lat = json.loads(r.stdout)["latency"]
    # instruction counts repeat to one SysTick tick (40 instructions) under -icount shift=0
    assert lat["source"] == "emulator" and len(lat["counts"]) == 2 and abs(lat["counts"][0] - lat["counts"][1]) <= 40
    layers = lat["layers"]
    assert len(layers) > 20 and sum(l["share"] for l in layers) == pytest.approx(1.0)
    # the per-layer counts add up to (nearly) one whole inference: only the hook calls lie between them
    assert sum(l["instructions"] for l in layers) == pytest.approx(lat["instructions"], rel=0.01)


def test_wrong_outputs_fail_validation_with_exit_1(vww_run, tmp_path):
    """A board computing something else: the reference model differs from what was flashed."""
    d, out = vww_run
    build = tmp_path / "b"
    shutil.copytree(d / out["build_dir"], build)
    m = onnx.load(str(build / "model.onnx"))
    conv = next(t for t in m.graph.initializer if len(t.dims) == 4)
    arr = onnx.numpy_helper.to_array(conv).copy()
    arr *= -1
    conv.CopyFrom(onnx.numpy_helper.from_array(arr, conv.name))
    onnx.save(m, str(build / "model.onnx"))  # the manifest keeps the flashed model's hash
    r = run_edgekit("validate", build, "--inputs", "2")
    assert r.returncode == 1
    assert "FAILED" in r.stdout and "max_abs_err" in r.stdout and "validation failed" in r.stderr


def test_a_different_model_on_the_port_is_refused(vww_run, tmp_path):
    from edgekit import target
    from edgekit.flash import emulate
    d, out = vww_run
    other = json.loads(run_edgekit("build", "--target", "mps2-an386", "--arch", "v1", "--alpha", "0.25",
                                   "--resolution", "32", "--classes", "2", "--json", cwd=tmp_path).stdout)
    with emulate(target.get("mps2-an386"), d / out["build_dir"] / out["artifact"]["firmware"]) as url:
        r = run_edgekit("validate", tmp_path / other["build_dir"], "--port", url)
    assert r.returncode == 1 and "not the expected" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_vww_fits_the_stm32f746g_disco_with_its_input_in_the_arena(tmp_path):
    # 320 KB of RAM: the arena (227,392 B) and a 110,592 B input buffer beside it overflow it by 28,304 B
    r = run_edgekit("build", "--target", "stm32f746g-disco", *VWW, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    mem = json.loads(r.stdout)["memory"]
    assert mem["input_in_arena"] and mem["ram_bytes"] <= mem["ram_budget"]
    # beside the arena and the stack only the core's compact input copy (a byte per float + a palette) and a little
    assert mem["ram_bytes"] <= mem["arena_bytes"] + 96 * 96 * 3 + 1024 + mem["stack_bytes"] + 4096


def test_model_too_big_for_the_board_is_refused(tmp_path):
    r = run_edgekit("build", "--target", "stm32f746g-disco", "--arch", "v1", "--alpha", "0.25", "--resolution", "128",
                    cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "overflows by" in r.stderr and "smaller --alpha" in r.stderr
    assert not (tmp_path / "build").exists()


def test_silent_port_is_a_clear_error(vww_run, tmp_path):
    import os
    d, out = vww_run
    master, slave = os.openpty()  # nobody answers on the other end
    try:
        r = run_edgekit("validate", d / out["build_dir"], "--port", os.ttyname(slave), timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
