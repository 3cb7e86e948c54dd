"""The Cortex-M tuning runner: candidates measured in QEMU, exactly repeatable, failures as results, no QEMU left."""
import json
import shutil
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

pytestmark = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                reason="needs arm-none-eabi-gcc and qemu-system-arm (make test installs them)")
TARGET = "mps2-an386"


def emulators():
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.name().startswith("qemu-system"):
                found.append(p)
        except psutil.NoSuchProcess:  # a compiler of the firmware that ended meanwhile
            pass
    return found


@pytest.fixture(scope="module")
def conv_func():
    """A 3x3 conv + ReLU kernel, unscheduled."""
    from onnx import TensorProto, helper, numpy_helper
    from edgekit.codegen import lower
    from edgekit.compiler import import_onnx
    w = np.random.default_rng(0).normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["c"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
                          [numpy_helper.from_array(w, "w")])
    mod = lower._fuse(import_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])))
    (func,) = [f for gv, f in mod.functions.items() if gv.name_hint != "main"]
    return func


@pytest.fixture(scope="module")
def conv(conv_func):
    """That kernel: (scheduled for MCUs, TVM's default schedule, its argument infos)."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from edgekit.codegen import lower
    func = conv_func
    target = {"kind": "c", "mcpu": "cortex-m4"}
    return (lower.build_kernel(lower.shrink(func)[0], "__tvm_ffi_main", target),
            lower.build_kernel(func, "__tvm_ffi_main", target), ArgInfo.from_prim_func(func))


def candidate(tmp_path, name, kernel=None, source=None):
    """The builder's artifact for a Cortex-M candidate."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"source": source or kernel.source, "symbol": "__tvm_ffi_main",
                                "workspace_bytes": kernel.workspace_bytes if kernel else 0,
                                "helpers": kernel.helpers if kernel else ""}))
    return path


@pytest.fixture(scope="module")
def results(conv, tmp_path_factory):
    from tvm.s_tir.meta_schedule.runner import RunnerInput
    from edgekit.tuning.firmware_runner import FirmwareRunner
    shrunk, default, args_info = conv
    d = tmp_path_factory.mktemp("candidates")
    paths = [candidate(d, "a", shrunk), candidate(d, "b", shrunk), candidate(d, "default", default),
             candidate(d, "broken", source="int32_t __tvm_ffi_main(void) { this is not C }")]
    futures = FirmwareRunner(TARGET, jobs=2, runs=2).run([RunnerInput(str(p), "cpu", args_info) for p in paths])
    assert all(f.done() for f in futures)
    return [(None if r.run_secs is None else [float(x) for x in r.run_secs], r.error_msg)
            for r in (f.result() for f in futures)]


def test_counts_repeat_exactly_and_tell_schedules_apart(results):
    (a, err_a), (b, err_b), (default, err_default), _ = results
    assert err_a is None and err_b is None and err_default is None
    assert len(a) == 1 and a[0] > 0
    assert a == b  # instruction counts, the same on two emulators
    assert default[0] != a[0]
    assert not emulators()


def test_a_candidate_that_does_not_compile_is_an_error_result(results):
    secs, err = results[3]
    assert secs is None and "firmware build failed" in err


def test_measure_matches_the_runner(conv, results):
    from edgekit.tuning.firmware_runner import measure
    shrunk, _, args_info = conv
    args = [(tuple(int(d) for d in a.shape), str(a.dtype)) for a in args_info]
    assert measure(TARGET, shrunk.source, "__tvm_ffi_main", shrunk.workspace_bytes, shrunk.helpers, args, runs=1) \
        == results[0][0][0]


def test_sigterm_kills_every_emulator(conv, tmp_path):
    """SIGTERM (or Ctrl-C: the CLI makes both KeyboardInterrupt) while kernels that never end are running."""
    import os
    import signal
    import threading
    from tvm.s_tir.meta_schedule.runner import RunnerInput
    from edgekit.cli import SIGNALS, _interrupted
    from edgekit.errors import PENDING_SIGNALS
    from edgekit.tuning.firmware_runner import FirmwareRunner
    *_, args_info = conv
    forever = "int32_t __tvm_ffi_main(void *a, void *b, int32_t c, void *d) { for (;;) {} }"
    inputs = [RunnerInput(str(candidate(tmp_path, f"hang{i}", source=forever)), "cpu", args_info) for i in range(3)]

    def terminate_once_emulating():  # the signal goes whatever happens here: without it the run never ends
        try:
            deadline = time.monotonic() + 30
            while not emulators() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # past the boot, into the endless kernel
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
    saved = {s: signal.getsignal(s) for s in SIGNALS}
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        threading.Thread(target=terminate_once_emulating, daemon=True).start()
        start = time.monotonic()
        with pytest.raises((KeyboardInterrupt, RuntimeError)):  # TVM's FFI makes it a RuntimeError on the way out
            FirmwareRunner(TARGET, jobs=2).run(inputs)
        assert time.monotonic() - start < 30 and not emulators()
    finally:
        PENDING_SIGNALS.clear()  # what the CLI's handler recorded: this process goes on
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_a_candidate_that_would_grow_the_arena_is_a_build_error(conv_func, tmp_path):
    """MCU tiles live in the arena: a candidate whose workspace exceeds what is free at its layer (tuning's
    workspace_limits) is refused, so a tuned build's arena stays the untuned one's."""
    import tvm
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from edgekit import target
    from edgekit.tuning import c_target, signature
    from edgekit.tuning.measure import CandidateBuilder
    board = target.get(TARGET)
    inp = BuilderInput(tvm.IRModule({"main": conv_func}), tvm.target.Target(c_target(board)))  # TVM's default: a workspace
    need = json.loads(Path(CandidateBuilder(board, tmp_path, 1).build([inp])[0].artifact_path).read_text())
    assert need["workspace_bytes"] > 0
    for limit, ok in ((need["workspace_bytes"] - 1, False), (need["workspace_bytes"], True)):
        (tmp_path / str(limit)).mkdir()
        (res,) = CandidateBuilder(board, tmp_path / str(limit), 1, limits={signature(conv_func): limit}).build([inp])
        assert (res.error_msg is None) == ok and (ok or "grow the arena" in res.error_msg), res.error_msg


class FlashedQemu:
    """pyocd's part for a board on the bench: each flash restarts "the board" (QEMU) on the new firmware, its UART
    served on a fixed TCP port, which is the board's serial port."""

    def __init__(self):
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.tcp = sock.getsockname()[1]
        self.url, self.proc, self.flashed = f"socket://127.0.0.1:{self.tcp}", None, 0

    def flash(self, board, elf):
        import socket
        import subprocess
        self.close()
        self.proc = subprocess.Popen([*board.emulator["command"], "-kernel", str(elf), "-nographic", "-monitor", "none",
                                      "-serial", f"tcp:127.0.0.1:{self.tcp},server=on,wait=off"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:  # listening: the board is up
            try:
                socket.create_connection(("127.0.0.1", self.tcp), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and self.proc.poll() is None
                time.sleep(0.05)
        self.flashed += 1

    def close(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()


def test_on_a_board_at_a_serial_port_each_candidate_is_flashed_and_measured(conv, results, monkeypatch, tmp_path):
    """--port: the firmware runner flashes each candidate (flash.flash_board, pyocd on a real board; QEMU behind
    a TCP port here) and reads the board's own counter over the port, one candidate at a time."""
    from tvm.s_tir.meta_schedule.runner import RunnerInput
    from edgekit.tuning.firmware_runner import FirmwareRunner
    shrunk, default, args_info = conv
    board = FlashedQemu()
    monkeypatch.setattr("edgekit.flash.flash_board", board.flash)
    try:
        paths = [candidate(tmp_path, "a", shrunk), candidate(tmp_path, "default", default)]
        futures = FirmwareRunner(TARGET, jobs=2, port=board.url).run([RunnerInput(str(p), "cpu", args_info)
                                                                      for p in paths])
        got = [f.result() for f in futures]
    finally:
        board.close()
    assert board.flashed == 2 and all(r.error_msg is None for r in got), [r.error_msg for r in got]
    # without the emulator's SysTick alignment the count is the board's own: within one 40-instruction tick
    for r, (emulated, _) in zip(got, [results[0], results[2]]):
        assert abs(float(r.run_secs[0]) - emulated[0]) <= 40
