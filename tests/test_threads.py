"""Parallel kernels for Linux boards: TVM's C kernels split across threads.c's pthread pool match ONNX
Runtime at 1, 2 and 3 threads; MCU builds stay serial; the Linux runner takes --threads and reports it."""
import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("tvm")
from onnx import helper  # noqa: E402

from test_codegen import _onnx_graph, small_cnn  # noqa: E402  (pytest puts tests/ on sys.path)

HASH = "0123456789abcdef" * 4


def conv_net():
    """Big enough that the default thresholds make the convolutions parallel, not the 10-way classifier."""
    n = helper.make_node
    return _onnx_graph([
        n("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        n("Clip", ["c1", "lo", "hi"], ["r1"]),
        n("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=16),
        n("Clip", ["c2", "lo", "hi"], ["r2"]),
        n("Conv", ["r2", "w3"], ["c3"]),
        n("GlobalAveragePool", ["c3"], ["g"]),
        n("Flatten", ["g"], ["f"]),
        n("Gemm", ["f", "wf"], ["y"], transB=1),
    ], [1, 3, 24, 24], [1, 10], {"w1": [16, 3, 3, 3], "w2": [16, 1, 3, 3], "w3": [24, 16, 1, 1], "wf": [10, 24],
                                 "lo": np.zeros((), np.float32), "hi": np.full((), 6.0, np.float32)})


def _generate(model, d, name, **kw):
    from edgekit.codegen import generate
    from edgekit.compiler import import_onnx
    return generate(import_onnx(model), d, name, **kw)


def _check_threads(model, info, d):
    import onnxruntime as ort
    name = info["name"]
    lib_path = d / f"lib{name}.so"
    r = subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-pthread", "-o",
                        str(lib_path), "model.c", "kernels.c", "shim.c", "threads.c", "-lm"],
                       cwd=d, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lib = ctypes.CDLL(str(lib_path))
    sess = ort.InferenceSession(model.SerializeToString())
    rng = np.random.default_rng(0)
    for n in (1, 2, 3):  # 3: more threads than this machine's cores, and tasks of uneven size
        assert lib.edgekit_set_threads(n) == n and lib.edgekit_threads() == n
        for _ in range(5):
            x = rng.standard_normal(info["input_shape"]).astype(np.float32)
            ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            out = np.full(info["output_shape"], np.nan, np.float32)
            run = getattr(lib, f"edgekit_{name}_run")
            assert run(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p)) == 0
            assert np.abs(out - ref).max() <= 1e-4, (n, np.abs(out - ref).max())


def test_heavy_kernels_parallel_and_match_ort(tmp_path):
    model = conv_net()
    info = _generate(model, tmp_path, "convnet", threads=True)
    par = {layer["name"]: layer["parallel_extent"] for layer in info["layers"]}
    assert all(v >= 8 for k, v in par.items() if k.startswith("fused_conv2d")), par
    assert not any(v for k, v in par.items() if "matmul" in k), par  # 10 outputs: not worth a launch
    _check_threads(model, info, tmp_path)


def test_every_kernel_split_matches_ort(tmp_path, monkeypatch):
    # thresholds off: every kernel split, some loops shorter than the thread count (the 5-way classifier)
    from edgekit.codegen import lower
    monkeypatch.setattr(lower, "PARALLEL_MIN_FLOPS", 0)
    model = small_cnn()
    info = _generate(model, tmp_path, "cnnpar", threads=True)
    assert all(layer["parallel_extent"] for layer in info["layers"])
    _check_threads(model, info, tmp_path)


def test_parallel_slices_cover_each_iteration_once_and_shrink_to_one(tmp_path):
    """par_task's slices of a parallel loop, at 1-8 threads: every iteration runs exactly once, no slice is
    larger than a share of the whole, and the last are one iteration each, so the join waits little."""
    from edgekit.codegen.emit import PARALLEL_CALL, PARALLEL_DECLS
    from edgekit.codegen.threads import THREADS_C
    src = tmp_path / "slices.c"
    prelude = "#include <stddef.h>\n#include <stdint.h>\ntypedef struct { int64_t v; } TVMFFIAny;\n"
    src.write_text(prelude + PARALLEL_DECLS + PARALLEL_CALL + r"""
static int hits[4096], slices[4096][2], nslices;
static int32_t count(void *self, void *args, int32_t num_args, void *result) {
  const int64_t *r = self;
  (void)args; (void)num_args; (void)result;
  int k = __atomic_fetch_add(&nslices, 1, __ATOMIC_RELAXED);
  slices[k][0] = (int)r[0]; slices[k][1] = (int)r[1];
  for (int64_t i = r[0]; i < r[1]; i++) __atomic_fetch_add(&hits[i], 1, __ATOMIC_RELAXED);
  return 0;
}
int run(int threads, int extent, int *hit, int *slice) {
  edgekit_set_threads(threads); nslices = 0;
  for (int i = 0; i < extent; i++) hits[i] = 0;
  int rc = par_run(count, 0, 0, extent);
  for (int i = 0; i < extent; i++) hit[i] = hits[i];
  for (int k = 0; k < nslices; k++) { slice[2 * k] = slices[k][0]; slice[2 * k + 1] = slices[k][1]; }
  return rc ? -1 : nslices;
}
""")
    (tmp_path / "threads.c").write_text(THREADS_C)
    lib = tmp_path / "libslices.so"
    # -Bsymbolic: threads.c's pool, not TVM's TVMBackendParallelLaunch (loaded in this process), serves par_run
    r = subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-pthread", "-Wl,-Bsymbolic", "-o",
                        str(lib), str(src), str(tmp_path / "threads.c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    run = ctypes.CDLL(str(lib)).run
    for threads in (1, 2, 3, 8):
        for extent in (1, 2, 3, 7, 64, 1000, 4096):
            hit, slice_ = np.zeros(extent, np.int32), np.zeros(2 * 4096, np.int32)
            n = run(threads, extent, hit.ctypes.data_as(ctypes.c_void_p), slice_.ctypes.data_as(ctypes.c_void_p))
            assert n > 0 and (hit == 1).all(), (threads, extent, np.flatnonzero(hit != 1)[:5])
            sizes = [hi - lo for lo, hi in sorted(slice_[:2 * n].reshape(n, 2).tolist())]
            assert max(sizes) <= max(1, extent // (2 * threads)), (threads, extent, sizes)
            assert extent < 2 * threads or sizes[-1] == 1, (threads, extent, sizes)


def test_mcu_build_has_no_threads(tmp_path):
    _generate(conv_net(), tmp_path, "convnet", mcpu="cortex-m4")
    assert not (tmp_path / "threads.c").exists()
    text = "".join(p.read_text() for p in tmp_path.glob("*.[ch]"))
    for word in ("par_run", "ek_lo", "TVMBackendParallelLaunch", "pthread"):
        assert word not in text, word


def _runner(target_name, model_dir, name, out):
    from edgekit import firmware, target
    return firmware.build_firmware(target.get(target_name), model_dir, name, HASH, out)["firmware"]


def _info(binary, *args, prefix=()):
    from edgekit.link import frame
    r = subprocess.run([*prefix, str(binary), *args], input=frame("ek-info").encode() + b"%", capture_output=True,
                       timeout=60)
    return r.returncode, dict(kv.split("=", 1) for kv in r.stdout.decode().split() if "=" in kv)


def test_linux_runner_threads_flag(tmp_path):
    from edgekit import firmware
    d = tmp_path / "model"
    _generate(conv_net(), d, "convnet", threads=True)
    binary = _runner("host", d, "convnet", tmp_path / "fw")
    assert _info(binary, "--threads", "3")[1]["threads"] == "3"
    assert _info(binary)[1]["threads"] == str(os.cpu_count())  # host.toml: cores = 0, no cap
    assert _info(binary, "--threads", "0")[0] == 2  # a usage error
    fake = _runner("host", firmware.fake_model(tmp_path / "fake"), "fake", tmp_path / "fakefw")
    assert _info(fake, "--threads", "2")[1]["threads"] == "1"  # no pool in the model: single-threaded


def test_cli_threads_reach_the_runner(tmp_path):
    # `edgekit flash/validate/bench/run --threads N` -> board.connect -> the runner's command line
    from edgekit import board, flash
    from edgekit.errors import UsageError
    from edgekit.link import Device
    assert board.runner_args({"target": "rpi4"}, None) == []
    assert board.runner_args({"target": "rpi4"}, 3) == ["--threads", "3"]
    for manifest, n in [({"target": "mps2-an386"}, 2), ({"target": "rpi4"}, 0)]:
        with pytest.raises(UsageError):
            board.runner_args(manifest, n)
    _generate(conv_net(), tmp_path / "model", "convnet", threads=True)
    binary = _runner("host", tmp_path / "model", "convnet", tmp_path / "fw")
    with flash.run_local(binary, args=board.runner_args({"target": "host"}, 3)) as url, Device(url) as dev:
        assert dev.info()["threads"] == "3"


@pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")),
                    reason="apt-get install gcc-aarch64-linux-gnu qemu-user")
def test_rpi4_runner_parallel_in_qemu(tmp_path):
    """The static aarch64 runner (-static -pthread) under qemu-aarch64 with 2 threads, against ONNX Runtime."""
    import onnxruntime as ort
    from edgekit import flash, target
    from edgekit.link import Device
    model = conv_net()
    _generate(model, tmp_path / "model", "convnet", mcpu="cortex-a72", threads=True)
    binary = _runner("rpi4", tmp_path / "model", "convnet", tmp_path / "fw")
    qemu = target.get("rpi4").section("emulator")["command"]
    assert _info(binary, "--threads", "2", prefix=qemu)[1]["threads"] == "2"
    x = np.random.default_rng(1).standard_normal((1, 3, 24, 24)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0].ravel()
    with flash.emulate(target.get("rpi4"), binary) as url, Device(url) as dev:
        assert dev.info()["threads"] == str(min(os.cpu_count(), 4))  # default: online CPUs, capped at cores = 4
        np.testing.assert_allclose(np.frombuffer(dev.infer(x.tobytes()), np.float32), ref, rtol=1e-5, atol=1e-5)


def test_llvm_kernels_link_and_run_parallel(tmp_path, monkeypatch):
    """TVM's LLVM backend (benchmarks/kernels_llvm_vs_c.py): its closures launch on threads.c's pool."""
    import onnxruntime as ort
    import tvm
    from edgekit.codegen import emit
    monkeypatch.setattr(emit, "ALIGN", 64)
    model = conv_net()
    llvm = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}
    info = _generate(model, tmp_path, "convnet", threads=True, llvm=llvm)
    assert not (tmp_path / "kernels.c").exists()
    assert b"__TVMBackendParallelLaunch" in (tmp_path / "kernels.o").read_bytes()  # parallel closures inside
    r = subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-pthread", "-o", "lib.so", "model.c", "shim.c", "threads.c",
                        "kernels.o", "-lm"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lib = ctypes.CDLL(str(tmp_path / "lib.so"))

    def aligned(shape):  # TVM's kernels assume 64-byte aligned tensors
        raw = np.zeros(int(np.prod(shape)) + 16, np.float32)
        off = (-raw.ctypes.data % 64) // 4
        return raw[off:off + int(np.prod(shape))].reshape(shape)
    x, out = aligned(info["input_shape"]), aligned(info["output_shape"])
    x[...] = np.random.default_rng(3).standard_normal(x.shape)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    for n in (1, 2):
        assert lib.edgekit_set_threads(n) == n
        out[...] = np.nan
        assert lib.edgekit_convnet_run(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p)) == 0
        assert np.abs(out - ref).max() <= 1e-4


class _Timed:
    """A device that records what it was asked to time."""
    def __init__(self, counter, first):
        self.counter, self.first, self.asked = counter, first, []

    def measure(self, runs):
        self.asked.append(runs)
        return [self.first] * runs


@pytest.mark.parametrize("counter, first, asked", [
    ("ns", 2_000_000, [1, 50]),           # a 2 ms inference: 100 ms of untimed runs, as the pool and cores wake
    ("ns", 40_000, [1, 50]),              # a fast one: at most 50 runs
    ("ns", 300_000_000, [1]),             # one already past 100 ms: that run is enough
    ("cycles", 5_000_000, [1]),           # an MCU's caches: one run
    ("instructions", 5_000_000, []),      # an emulator counts exactly: none
])
def test_bench_warms_up_before_timing(counter, first, asked):
    from edgekit.report import warm_up
    dev = _Timed(counter, first)
    warm_up(dev)
    assert dev.asked == asked
