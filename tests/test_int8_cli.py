"""Int8 end to end through the command line: --quantize int8 on the emulated Cortex-M4, an int8 .tflite
on the host, validate --npy/--outputs checked independently against TFLite's reference interpreter."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import run_edgekit
from int8_support import block_noise, reference

SMALL_V1 = ["--arch", "v1", "--alpha", "0.25", "--resolution", "48", "--classes", "3"]
needs_qemu = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                reason="needs arm-none-eabi-gcc and qemu-system-arm (make test installs them)")


@pytest.fixture(scope="module")
def v1_int8(tmp_path_factory):
    d = tmp_path_factory.mktemp("v1_int8")
    r = run_edgekit("build", "--target", "mps2-an386", *SMALL_V1, "--quantize", "int8", "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    return d / json.loads(r.stdout)["build_dir"], json.loads(r.stdout), r.stderr


def _smooth_int8(shape, n, seed=3):
    rng = np.random.default_rng(seed)
    x = np.concatenate([block_noise((n, *shape), rng, a, 3) for a in (0.3, 1.0)])
    return np.clip(np.round(x * 127), -128, 127).astype(np.int8)


def test_manifest_describes_the_int8_input_and_output(v1_int8):
    build, m, stderr = v1_int8
    assert m["input"]["shape"] == [1, 48, 48, 3] and m["input"]["layout"] == "NHWC" and m["input"]["dtype"] == "int8"
    assert m["output"]["shape"] == [1, 3] and m["output"]["dtype"] == "int8"
    assert 0 < m["input"]["scale"] and -128 <= m["input"]["zero_point"] <= 127 and m["output"]["scale"] == 1 / 256
    assert (build / m["artifact"]["tflite"]).is_file() and (build / "model.onnx").is_file()
    assert "random images" in stderr  # no --calibration: the user is told accuracy needs real images
    assert m["memory"]["arena_bytes"] <= m["memory"]["arena_lower_bound"] * 1.1


@needs_qemu
def test_validate_npy_outputs_match_tflite_independently(v1_int8, tmp_path):
    build, m, _ = v1_int8
    xs = _smooth_int8(m["input"]["shape"][1:], 3)
    np.save(tmp_path / "in.npy", xs)
    r = run_edgekit("validate", build, "--npy", tmp_path / "in.npy", "--outputs", tmp_path / "out.npy", "--json")
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)["validation"]
    assert v["passed"] and v["max_abs_err"] == 0 and v["reference"] == "tflite" and v["source"] == "emulator"
    got = np.load(tmp_path / "out.npy")
    ref = reference(build / "model.tflite", xs)
    assert got.dtype == np.int8 and got.shape == (len(xs), 3)
    np.testing.assert_array_equal(got, ref)
    assert len(np.unique(ref, axis=0)) > 1  # inputs varied enough to move the classifier


def test_int8_tflite_model_on_the_host(v1_int8, tmp_path):
    build, m, _ = v1_int8
    r = run_edgekit("run", "--target", "host", "--model", build / "model.tflite", "--inputs", "3", "--json",
                    cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["arch"] == "custom" and out["macs"] == m["macs"] and out["validation"]["max_abs_err"] == 0


def test_npy_of_the_wrong_dtype_is_a_usage_error(v1_int8, tmp_path):
    build, m, _ = v1_int8
    np.save(tmp_path / "f.npy", np.zeros(m["input"]["shape"][1:], np.float32))
    r = run_edgekit("validate", build, "--npy", tmp_path / "f.npy")
    assert r.returncode == 2 and "int8" in r.stderr and "Traceback" not in r.stderr


@needs_qemu
@pytest.mark.parametrize("target", ["mps2-an385", "mps2-an500"])
def test_int8_tflite_model_on_other_cortex_m_cores(v1_int8, target, tmp_path):
    """The same int8 model on the Cortex-M3 (portable micro-kernels, no FPU) and the Cortex-M7 (DSP), bit-exact."""
    build, m, _ = v1_int8
    xs = _smooth_int8(m["input"]["shape"][1:], 2)
    np.save(tmp_path / "in.npy", xs)
    r = run_edgekit("build", "--target", target, "--model", build / "model.tflite", "--out", tmp_path / "b", "--json")
    assert r.returncode == 0, r.stderr
    r = run_edgekit("validate", tmp_path / "b", "--npy", tmp_path / "in.npy", "--outputs", tmp_path / "out.npy")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), reference(build / "model.tflite", xs))


@needs_qemu
def test_tune_measures_register_blocks_then_build_applies_them_bit_exactly(v1_int8, tmp_path):
    """`edgekit tune` on an int8 model for the emulated Cortex-M4: the micro-kernel convolutions' register blocks
    counted in instructions; the build takes the fastest, and stays bit-exact with TFLite."""
    build, m, _ = v1_int8
    model = build / "model.tflite"
    os.environ["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    try:
        r = run_edgekit("tune", "--target", "mps2-an386", "--model", model, "--trials", "16", "--json")
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["source"] == "emulator" and res["unit"] == "instructions" and res["trials"] == 16
        blocked = [k for k in res["kernels"] if k["schedule"].startswith("block ")]
        # every measured kernel has its default block's record (the untuned count, exact), so none gets slower
        assert blocked and all(k["tuned"] <= k["untuned"] for k in blocked), r.stderr
        assert any(k["tuned"] < k["untuned"] for k in blocked)  # the heaviest kernel's 16 blocks found better
        b = run_edgekit("build", "--target", "mps2-an386", "--model", model, "--out", tmp_path / "b", "--json")
    finally:
        del os.environ["XDG_CACHE_HOME"]
    assert b.returncode == 0, b.stderr
    assert json.loads(b.stdout)["tuning"]["kernels_tuned"] == len(blocked)
    xs = _smooth_int8(m["input"]["shape"][1:], 2)
    np.save(tmp_path / "in.npy", xs)
    v = run_edgekit("validate", tmp_path / "b", "--npy", tmp_path / "in.npy", "--outputs", tmp_path / "out.npy",
                    "--json")
    assert v.returncode == 0 and json.loads(v.stdout)["validation"]["passed"], v.stdout + v.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), reference(model, xs))
