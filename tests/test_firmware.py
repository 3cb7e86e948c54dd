"""edgekit.firmware: linker script, model config, builds for every port, memory budgets."""
import re
import shutil
import subprocess

import pytest

from edgekit import firmware, target
from edgekit.errors import UsageError

HASH = "0123456789abcdef" * 4
needs_arm = pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"),
                               reason="arm-none-eabi-gcc missing: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi")
needs_a64 = pytest.mark.skipif(not shutil.which("aarch64-linux-gnu-gcc"),
                               reason="aarch64-linux-gnu-gcc missing: apt-get install gcc-aarch64-linux-gnu")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return firmware.fake_model(tmp_path_factory.mktemp("fake"))


def test_linker_script_follows_memory_section():
    ld = firmware.linker_script(target.get("stm32f746g-disco"))
    assert "FLASH (rx) : ORIGIN = 0x08000000, LENGTH = 0x100000" in ld
    assert "RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 0x50000" in ld
    assert f". += {firmware.STACK_BYTES};" in ld


def test_model_config_maps_names():
    h = firmware.model_config("mbv2", HASH, "mps2-an386")
    assert "#define EK_MODEL_RUN edgekit_mbv2_run" in h
    assert "#define EK_MODEL_INPUT_BYTES EDGEKIT_MBV2_INPUT_BYTES" in h
    assert f'#define EK_MODEL_HASH "{HASH[:16]}"' in h


@pytest.mark.parametrize("name,hash_", [("1bad", HASH), ("a-b", HASH), ("ok", "xyz"), ("ok", "abc")])
def test_model_config_rejects_bad_input(name, hash_):
    with pytest.raises(UsageError):
        firmware.model_config(name, hash_, "b")


def test_missing_model_dir_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no model.h"):
        firmware.build_firmware(target.get("mps2-an386"), tmp_path, "fake", HASH, tmp_path / "out")


@needs_arm
@pytest.mark.parametrize("name", ["mps2-an386", "mps2-an500", "nucleo-l4r5zi", "stm32f746g-disco"])
def test_mcu_build_fits_and_starts_at_flash_origin(name, model, tmp_path):
    t = target.get(name)
    r = firmware.build_firmware(t, model, "fake", HASH, tmp_path)
    mem = r["memory"]
    assert 0 < mem["flash_bytes"] <= mem["flash_budget"] == t.section("memory")["flash"]["length"]
    assert mem["stack_bytes"] < mem["ram_bytes"] <= mem["ram_budget"]
    assert mem["arena_bytes"] == 256
    nm = subprocess.run(["arm-none-eabi-nm", str(r["firmware"])], capture_output=True, text=True, check=True).stdout
    vectors = int(re.search(r"^([0-9a-f]+) \w ek_vectors$", nm, re.M).group(1), 16)
    assert vectors == t.section("memory")["flash"]["origin"]  # the core fetches SP and reset from here


@needs_arm
def test_too_big_for_flash_names_the_overshoot(tmp_path):
    big = firmware.fake_model(tmp_path / "big", weights_bytes=3 * 2**20)
    with pytest.raises(UsageError, match=r"FLASH overflows by (\d{1},)?\d{3},\d{3} bytes.*smaller --alpha") as e:
        firmware.build_firmware(target.get("stm32f746g-disco"), big, "fake", HASH, tmp_path / "out")
    over = int(re.search(r"by ([\d,]+) bytes", str(e.value)).group(1).replace(",", ""))
    assert 2 * 2**20 < over < 2 * 2**20 + 65536  # 3 MiB of weights in 1 MiB of flash, plus the code


@needs_arm
def test_too_big_for_ram(tmp_path):
    big = firmware.fake_model(tmp_path / "big", arena_bytes=2**20)
    with pytest.raises(UsageError, match="RAM overflows by"):
        firmware.build_firmware(target.get("nucleo-l4r5zi"), big, "fake", HASH, tmp_path / "out")


@needs_arm
def test_input_moves_into_the_arena_only_when_ram_is_short(tmp_path):
    # 160 KiB input, 160 KiB arena: with the input's own buffer that overflows 320 KB of RAM, in the arena not
    t = target.get("stm32f746g-disco")
    big = firmware.fake_model(tmp_path / "big", n_in=40960)
    r = firmware.build_firmware(t, big, "fake", HASH, tmp_path / "auto")
    mem = r["memory"]
    assert mem["input_in_arena"] and mem["ram_bytes"] <= mem["ram_budget"]
    with pytest.raises(UsageError, match="RAM overflows by"):
        firmware.build_firmware(t, big, "fake", HASH, tmp_path / "own", input_in_arena=False)
    small = firmware.build_firmware(t, firmware.fake_model(tmp_path / "small"), "fake", HASH, tmp_path / "small-fw")
    assert not small["memory"]["input_in_arena"]


def test_model_config_maps_the_input_slot():
    assert "#define EK_MODEL_INPUT_BUFFER() edgekit_mbv2_input()" in firmware.model_config("mbv2", HASH, "b")


@needs_a64
def test_linux_port_builds_static_aarch64(model, tmp_path):
    r = firmware.build_firmware(target.get("rpi4"), model, "fake", HASH, tmp_path)
    head = r["firmware"].read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    assert r["memory"]["flash_budget"] is None and r["memory"]["ram_bytes"] > 0


@needs_arm
@pytest.mark.skipif(not shutil.which("qemu-system-arm"), reason="qemu-system-arm not installed")
def test_generated_model_runs_in_qemu_like_onnxruntime(tmp_path):
    """The real code generator's output, linked with the firmware, on mps2-an386."""
    pytest.importorskip("tvm")
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from edgekit import flash
    from edgekit.codegen import generate
    from edgekit.compiler import import_onnx
    from edgekit.link import Device
    rng = np.random.default_rng(0)
    w = {"w": rng.normal(0, .5, (4, 3, 3, 3)), "lo": np.zeros(()), "hi": np.full((), 6.0), "wf": rng.normal(0, .5, (5, 4))}
    n = helper.make_node
    g = helper.make_graph([n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), n("Clip", ["c", "lo", "hi"], ["r"]),
                           n("GlobalAveragePool", ["r"], ["p"]), n("Flatten", ["p"], ["f"]),
                           n("Gemm", ["f", "wf"], ["y"], transB=1)],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                          [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()])
    onnx_model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    generate(import_onnx(onnx_model), tmp_path / "model", "tiny", mcpu="cortex-m4")
    t = target.get("mps2-an386")
    elf = firmware.build_firmware(t, tmp_path / "model", "tiny", HASH, tmp_path / "fw")["firmware"]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(onnx_model.SerializeToString()).run(None, {"x": x})[0].ravel()
    with flash.emulate(t, elf) as url, Device(url) as dev:
        np.testing.assert_allclose(np.frombuffer(dev.infer(x.tobytes()), np.float32), ref, rtol=1e-5, atol=1e-6)
        assert len(dev.profile()) == dev.info()["layers"] > 1
