"""The Jetson build (edgekit.cuda) and its runner (edgekit/runners/tvm_runner.py).

No GPU here: the builds are checked by content (aarch64 ELF, CUDA kernels, fatbin when nvcc
exists), and the runner is exercised on an x86 llvm build of the same model with --device cpu.
"""
import json
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pytest

import jetson_support as js
from edgekit import compiler, cuda, target
from edgekit.runners import TVM_RUNNER

HAVE_NVCC = shutil.which("nvcc") is not None
EM_AARCH64 = 183
FATBIN_MAGIC = 0xBA55ED50


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return js.write(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture(scope="module")
def orin(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("orin")
    return out, cuda.build_cuda(compiler.import_onnx(tiny), target.get("jetson-orin-nano"), out, name="tiny")


def _is_aarch64_elf(path) -> bool:
    head = path.read_bytes()[:20]
    return head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == EM_AARCH64


def test_target_takes_host_and_arch_from_the_board_file():
    tgt = cuda.tvm_target(target.get("jetson-orin-nano"))
    assert tgt.kind.name == "cuda" and str(tgt.attrs["arch"]) == "sm_87"
    assert str(tgt.host.attrs["mtriple"]) == "aarch64-linux-gnu"
    assert str(tgt.host.attrs["mcpu"]) == target.get("jetson-orin-nano").section("tvm")["host"]["mcpu"]


def test_orin_build_has_aarch64_library_and_cuda_kernels(orin):
    out, res = orin
    art = res["artifact"]
    assert res["arch"] == "sm_87"
    lib = out / art["library"]
    assert _is_aarch64_elf(lib)
    src = (out / art["cuda_source"]).read_text()
    assert "__global__" in src and 'extern "C"' in src
    assert b"__global__" in lib.read_bytes()  # TVM embeds the source for load-time compilation
    meta = json.loads((out / art["meta"]).read_text())
    assert meta["inputs"][0]["shape"] == list(js.SHAPE) and meta["outputs"][0]["shape"] == [1, js.CLASSES]
    script = out / art["build_script"]
    assert script.stat().st_mode & 0o111 and "sm_87" in script.read_text()
    assert (out / art["runner"]).read_bytes() == TVM_RUNNER.read_bytes()


@pytest.mark.skipif(not HAVE_NVCC, reason="nvcc not installed: the CUDA kernels cannot be compiled ahead here")
def test_orin_kernels_compiled_ahead_with_nvcc(orin):
    out, res = orin
    assert res["cuda_aot"] is True, res["cuda_aot_reason"]
    fatbin = (out / res["artifact"]["cuda_fatbin"]).read_bytes()
    assert int.from_bytes(fatbin[:4], "little") == FATBIN_MAGIC
    # the written-out board step works too (nvcc here stands in for the board's)
    (out / "kernels.fatbin").unlink()
    subprocess.run(["sh", str(out / "build_on_device.sh")], check=True, capture_output=True, timeout=120)
    assert (out / "kernels.fatbin").read_bytes()[:4] == fatbin[:4]


def test_without_nvcc_the_source_and_build_step_are_shipped(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(cuda, "nvcc_archs", lambda: None)  # what nvcc_archs() says on a machine without nvcc
    res = cuda.build_cuda(compiler.import_onnx(tiny), target.get("jetson-orin-nano"), tmp_path)
    assert res["cuda_aot"] is False and "nvcc" in res["cuda_aot_reason"]
    assert "cuda_fatbin" not in res["artifact"] and (tmp_path / "build_on_device.sh").is_file()


def test_jetson_nano_sm53_is_left_to_the_board(tiny, tmp_path):
    res = cuda.build_cuda(compiler.import_onnx(tiny), target.get("jetson-nano"), tmp_path)
    assert res["arch"] == "sm_53" and _is_aarch64_elf(tmp_path / "model.so")
    assert res["cuda_aot"] is False  # CUDA 13 dropped sm_53; without nvcc there is nothing to try
    if HAVE_NVCC and "sm_53" not in cuda.nvcc_archs():
        assert "sm_53" in res["cuda_aot_reason"]
    assert "sm_53" in (tmp_path / "build_on_device.sh").read_text()


@pytest.fixture(scope="module")
def runner(tiny, tmp_path_factory):
    lib = js.build_x86(tiny, tmp_path_factory.mktemp("x86"))
    proc = subprocess.Popen([sys.executable, str(TVM_RUNNER), str(lib), "--device", "cpu"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    port = js.Pipe(proc)
    boot = [port.readline().strip() for _ in range(3)]
    assert boot == [b"m-timestamp-mode-performance", b"m-init-done", b"m-ready"]
    yield js.Client(port)
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0  # EOF on stdin ends the runner


def test_runner_matches_onnx_runtime(runner, tiny):
    x = np.random.default_rng(3).standard_normal(js.SHAPE).astype(np.float32)
    np.testing.assert_allclose(runner.infer(x), js.reference(tiny, x).ravel(), rtol=1e-5, atol=1e-5)
    results = runner.cmd("results")[0].decode()
    assert results.startswith("m-results-[") and len(results.split(",")) == js.CLASSES


def test_runner_speaks_the_firmware_protocol(runner):
    assert runner.cmd("name") == [b"m-name-dut-[x86-test]", b"m-ready"]
    info = runner.cmd("ek-info")[0].decode()
    assert info.startswith("m-ek-info-name=tiny hash=0123abcd board=x86-test input=768 output=20 ")
    assert "counter=ns per_us=1000" in info
    assert runner.cmd("") == [b"m-ready"]
    assert runner.cmd("db load 4") == [b"m-[Expecting 4 bytes]", b"m-ready"]
    assert runner.cmd("db 0a0b") == [b"m-ready"]
    assert runner.cmd("db 0c0d") == [b"m-load-done", b"m-ready"]
    assert runner.cmd("db print 4") == [b"m-buffer-0a-0b-0c-0d", b"m-ready"]
    assert runner.cmd("db 00")[0].startswith(b"e-[db: no load in progress")
    times = runner.cmd("ek-time 3")
    assert len(times) == 6 and times[0].startswith(b"m-ek-input-") and all(t.startswith(b"m-ek-time-") for t in times[1:4])
    assert times[4].startswith(b"m-ek-end-") and runner.cmd("ek-sync 42")[0] == b"m-ek-sync-42"
    laps = [int(l.rsplit(b"-", 1)[1]) for l in runner.cmd("infer 2 0") if l.startswith(b"m-lap-us-")]
    assert len(laps) == 2 and laps[1] >= laps[0]


def test_runner_refuses_bad_input_and_keeps_serving(runner):
    raw = bytes(768)
    bad = runner.cmd(f"ek-load 768 {zlib.crc32(raw) ^ 1:08x}", raw)
    assert bad[1].startswith(b"e-[damaged ek-load: crc mismatch")
    runner.port.write(b"ek-info 0badc0de%")  # a wrong command CRC
    runner._flush()
    refusal = runner.port.readline()
    assert refusal == b"e-[damaged command: crc mismatch, send it again]\r\n"
    assert runner.port.readline() == f"m-ek-end-{zlib.crc32(refusal):08x}\r\n".encode()
    assert runner.port.readline() == b"m-ready\r\n"
    assert runner.cmd("ek-load 769 0")[0].startswith(b"e-[ek-load: use ek-load N CRC32HEX")
    assert runner.cmd("infer 0")[0] == b"e-[Inference iterations must be >0]"
    assert runner.cmd("bogus") == [b"e-[Unknown command: bogus]", b"m-ready"]
    assert runner.cmd("x" * 81)[0] == b"e-[Command too long: at most 80 characters]"
    assert runner.cmd("name")[-1] == b"m-ready"


def test_runner_serves_tvm_cuda_compile_hook_from_the_prebuilt_fatbin(tmp_path):
    """What a Jetson load does first (no GPU needed): TVM's runtime asks the hook to compile the source."""
    import hashlib
    import importlib.util

    import tvm_ffi

    spec = importlib.util.spec_from_file_location("tvm_runner", TVM_RUNNER)
    tvm_runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tvm_runner)
    source, blob = "extern \"C\" __global__ void k() {}", b"\x50\xed\x55\xba fake fatbin"
    (tmp_path / "kernels.fatbin").write_bytes(blob)
    original = tvm_ffi.get_global_func("tvm_callback_cuda_compile", allow_missing=True)
    try:
        tvm_runner._use_prebuilt_kernels(tmp_path / "kernels.fatbin", hashlib.sha256(source.encode()).hexdigest())
        assert bytes(tvm_ffi.get_global_func("tvm_callback_cuda_compile")(source)) == blob
    finally:
        if original is not None:
            tvm_ffi.register_global_func("tvm_callback_cuda_compile", original, override=True)
