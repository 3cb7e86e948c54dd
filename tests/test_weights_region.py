"""Weights in a board's [memory] weights region (MPS2's PSRAM) instead of its code flash."""
import re
import shutil
import subprocess

import numpy as np
import pytest

from edgekit import firmware, target
from edgekit.errors import UsageError

HASH = "5eed0000" * 8
MiB = 2**20
needs_arm = pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"),
                               reason="arm-none-eabi-gcc missing: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi")
needs_qemu = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                reason="arm-none-eabi-gcc and qemu-system-arm needed")
# a weight array declaration as the generator and fake_model write it: tagged with the placement macro
TAGGED = re.compile(r"^static const \w+ (\w+)\[\d+\][^=\n]* EDGEKIT_WEIGHTS_ATTR = ", re.M)
DEFAULT = "#ifndef EDGEKIT_WEIGHTS_ATTR\n#define EDGEKIT_WEIGHTS_ATTR\n#endif\n"


@pytest.mark.parametrize("name,origin", [("mps2-an386", 0x21000000), ("mps2-an500", 0x60000000),
                                         ("stm32f746g-disco", None), ("nucleo-l4r5zi", None)])
def test_linker_script_has_the_region_only_when_declared(name, origin):
    ld = firmware.linker_script(target.get(name))
    if origin is None:
        assert "WEIGHTS" not in ld and firmware.WEIGHTS_SECTION not in ld
    else:
        assert f"WEIGHTS (r) : ORIGIN = {origin:#010x}, LENGTH = 0x1000000" in ld
        # a loaded section, not NOLOAD: QEMU's -kernel must put the weights there
        assert re.search(rf"^  {re.escape(firmware.WEIGHTS_SECTION)} : {{.*}} > WEIGHTS$", ld, re.M)


def test_fake_model_tags_its_weights_like_the_generator(tmp_path):
    pytest.importorskip("tvm")
    from onnx import TensorProto, helper, numpy_helper
    from edgekit.codegen import generate
    from edgekit.compiler import import_onnx
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    generate(import_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])), tmp_path / "gen", "gen")
    gen = (tmp_path / "gen" / "model.c").read_text()
    fake = (firmware.fake_model(tmp_path / "fake") / "model.c").read_text()
    for src in (gen, fake):
        assert DEFAULT in src  # empty by default: the C library drops into any project
    arrays = re.findall(r"^static const \w+ (w_\w+)\[", gen, re.M)
    assert arrays and TAGGED.findall(gen) == arrays
    assert TAGGED.findall(fake) == ["weights"]
    assert not re.search(r"static const (int64_t s_|DLTensor|TVMFFIAny).*EDGEKIT_WEIGHTS_ATTR", gen)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """6 MiB of weights: more than mps2's 4 MiB code memory, less than its 16 MiB PSRAM."""
    return firmware.fake_model(tmp_path_factory.mktemp("big"), weights_bytes=6 * MiB)


def section_of(elf, symbol):
    out = subprocess.run(["arm-none-eabi-objdump", "-t", str(elf)], capture_output=True, text=True, check=True).stdout
    return re.search(rf"^\w+ .{{7}} (\S+)\s+\w+ {symbol}$", out, re.M).group(1)


@needs_qemu
@pytest.mark.parametrize("name", ["mps2-an386", "mps2-an500"])
def test_weights_beyond_flash_run_from_psram(name, big, tmp_path):
    from edgekit import flash
    from edgekit.link import Device
    t = target.get(name)
    r = firmware.build_firmware(t, big, "fake", HASH, tmp_path)
    mem = r["memory"]
    assert 0 < mem["flash_bytes"] < 4 * MiB == mem["flash_budget"]
    assert 6 * MiB <= mem["weights_region_bytes"] <= mem["weights_region_budget"] == 16 * MiB
    assert section_of(r["firmware"], "weights") == firmware.WEIGHTS_SECTION
    x = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    s = np.float32(0)
    for v in x * np.float32(0.5):  # the fake model in float32, summing in the firmware's order
        s = np.float32(s + v)
    with flash.emulate(t, r["firmware"]) as url, Device(url, timeout=5) as dev:
        out = np.frombuffer(dev.infer(x.tobytes()), np.float32)
    np.testing.assert_array_equal(out, s * np.arange(1, 5, dtype=np.float32))  # weights[0] = 2 read from PSRAM


@needs_arm
def test_weights_over_the_region_name_it(tmp_path):
    huge = firmware.fake_model(tmp_path / "huge", weights_bytes=17 * MiB)
    with pytest.raises(UsageError, match=r"WEIGHTS overflows by (\d{1,3},)*\d{3} bytes.*weights memory") as e:
        firmware.build_firmware(target.get("mps2-an386"), huge, "fake", HASH, tmp_path / "out")
    assert "FLASH" not in str(e.value)


@needs_arm
def test_without_a_region_weights_stay_in_flash(tmp_path):
    r = firmware.build_firmware(target.get("stm32f746g-disco"), firmware.fake_model(tmp_path / "m", weights_bytes=MiB // 2),
                                "fake", HASH, tmp_path / "out")
    mem = r["memory"]
    assert mem["weights_region_bytes"] is None and mem["weights_region_budget"] is None
    assert mem["flash_bytes"] > MiB // 2 and section_of(r["firmware"], "weights") == ".text"


def test_build_checks_the_weights_budget(monkeypatch, tmp_path):
    import edgekit.codegen
    from edgekit import build
    info = {"arena_bytes": 16, "arena_lower_bound": 16, "weights_bytes": 20 * MiB, "layers": []}
    mem = {"flash_bytes": MiB, "flash_budget": 4 * MiB, "ram_bytes": MiB, "ram_budget": 4 * MiB,
           "weights_region_bytes": 20 * MiB, "weights_region_budget": 16 * MiB}
    monkeypatch.setattr(edgekit.codegen, "generate", lambda *a, **k: info)
    monkeypatch.setattr(firmware, "build_firmware", lambda *a, **k: {"firmware": tmp_path / "fw.elf", "memory": mem})
    with pytest.raises(UsageError, match=rf"weights memory on mps2-an386 \({4 * MiB:,} B over its {16 * MiB:,} B\)"):
        io = {"shape": [1, 4], "dtype": "float32"}
        build._build_c(tmp_path, target.get("mps2-an386"), None, "model",
                       {"model_sha256": HASH, "input": io, "output": io}, lambda s: None, True)
