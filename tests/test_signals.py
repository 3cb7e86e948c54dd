"""Signals and vanishing boards: SIGINT, SIGTERM and SIGHUP on edgekit leave no process, no temporary
directory and no half-written build behind; a board that goes away mid-transfer is one line and exit 1."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid

import numpy as np
import pytest

from conftest import EDGEKIT
from edgekit import firmware, flash, target

pytestmark = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                reason="arm-none-eabi-gcc and qemu-system-arm needed")


@pytest.fixture(scope="module")
def fake_build(tmp_path_factory):
    """A build directory for firmware.fake_model (64 inputs, out[i] = sum(x / 2) * (i + 1)) on mps2-an386,
    with its ONNX twin as the reference: what `edgekit build` makes, without TensorFlow or TVM."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    d = tmp_path_factory.mktemp("build")
    consts = {"half": np.float32(0.5), "axes": np.array([1], np.int64), "k": np.arange(1, 5, dtype=np.float32)}
    n = helper.make_node
    graph = helper.make_graph(
        [n("Mul", ["x", "half"], ["a"]), n("ReduceSum", ["a", "axes"], ["s"]), n("Mul", ["s", "k"], ["y"])], "fake",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(d / "model.onnx"))
    sha = hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest()
    t = target.get("mps2-an386")
    fw = firmware.build_firmware(t, firmware.fake_model(d / "c"), "fake", sha, d / "firmware")
    (d / "manifest.json").write_text(json.dumps({
        "target": t.name, "arch": "custom", "alpha": None, "resolution": [64], "macs": 0, "params": 0,
        "input_shape": [1, 64], "model_sha256": sha, "memory": fw["memory"],
        "artifact": {"onnx": "model.onnx", "firmware": "firmware/firmware.elf"}}))
    return d


def start(args, tmp_path, **kw):
    """edgekit ARGS with its own TMPDIR and a marker in its environment, which every child inherits."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    mark = uuid.uuid4().hex
    env = {**os.environ, "TMPDIR": str(tmp), "EDGEKIT_TEST_MARK": mark, "COLUMNS": "200"}
    p = subprocess.Popen([*EDGEKIT, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=tmp_path, **kw)
    p.mark, p.tmp = mark, tmp
    return p


def marked(mark: str) -> list[tuple[int, str]]:
    """(pid, name) of live processes carrying `mark` in their environment."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if f"EDGEKIT_TEST_MARK={mark}".encode() in open(f"/proc/{pid}/environ", "rb").read().split(b"\0"):
                stat = open(f"/proc/{pid}/stat").read()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":
                    found.append((int(pid), stat.split("(", 1)[1].rsplit(")", 1)[0]))
        except OSError:
            pass
    return found


def wait_for(cond, p, timeout=60):
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return got


def qemu_of(p):
    return wait_for(lambda: [pid for pid, name in marked(p.mark) if name.startswith("qemu")], p)[0]


def assert_clean_exit(p, code=None):
    out, err = p.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert p.returncode != 0 if code is None else p.returncode == code, (p.returncode, err)
    assert not marked(p.mark), marked(p.mark)  # no emulator, runner, ssh or compiler left
    # no temporary file or directory (but the session id ONNX Runtime keeps in TMPDIR on purpose, on any run)
    assert not [f for f in p.tmp.iterdir() if f.name != ".ses"], list(p.tmp.iterdir())
    return err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_mid_validate_leaves_nothing(fake_build, tmp_path, sig):
    p = start(["validate", fake_build, "--inputs", "100000"], tmp_path)
    qemu_of(p)
    time.sleep(1)  # inferences under way
    p.send_signal(sig)
    assert_clean_exit(p)


# SIGINT: test_an_interrupt_at_any_moment_of_a_build_leaves_nothing. SIGTERM once the model is exported
# (TVM at work), SIGHUP as the build starts
@pytest.mark.parametrize("sig,stage", [(signal.SIGTERM, ".*tmp*/model.onnx"), (signal.SIGHUP, ".*tmp*")])
def test_signal_mid_build_leaves_no_directory(tmp_path, sig, stage):
    p = start(["build", "--target", "mps2-an386", "--arch", "v1", "--alpha", "0.25", "--resolution", "32",
               "--classes", "2"], tmp_path)
    wait_for(lambda: list((tmp_path / "build").glob(stage)), p, timeout=120)
    p.send_signal(sig)
    assert_clean_exit(p)
    assert not (tmp_path / "build").exists()


def test_emulator_killed_mid_validate_is_one_line_then_a_rerun_works(fake_build, tmp_path):
    p = start(["validate", fake_build, "--inputs", "100000"], tmp_path)
    qemu = qemu_of(p)
    time.sleep(1)
    os.kill(qemu, signal.SIGKILL)
    err = assert_clean_exit(p, 1)
    assert len(err.strip().splitlines()) == 1 and "went away" in err, err
    again = start(["validate", fake_build, "--inputs", "3"], tmp_path)
    assert_clean_exit(again, 0)


def test_port_closed_mid_validate_is_one_line_then_a_rerun_works(fake_build, tmp_path):
    from fault_proxy import FaultProxy
    with flash.emulate(target.get("mps2-an386"), fake_build / "firmware" / "firmware.elf") as url:
        proxy = FaultProxy(url, rate=0)
        p = start(["validate", fake_build, "--port", proxy.url, "--inputs", "100000"], tmp_path)
        time.sleep(3)  # past start-up, inferences under way
        proxy.close()  # the pty goes: as when a USB adapter is pulled
        err = assert_clean_exit(p, 1)
        assert len(err.strip().splitlines()) == 1 and "went away" in err, err
        with FaultProxy(url, rate=0) as proxy:
            assert_clean_exit(start(["validate", fake_build, "--port", proxy.url, "--inputs", "3"], tmp_path), 0)


def test_an_interrupt_inside_tvm_or_an_import_waits_for_edgekits_next_checkpoint():
    """TVM's Python, called back from its C++ (constant folding builds TIR that way), turns an exception into
    its own error or swallows it, and one raised inside a C extension's import (protobuf's, under onnx)
    aborts the process before any `finally` runs: the CLI's handler records the signal there and edgekit
    raises it between steps."""
    import types
    import tvm.ir.transform
    from edgekit import cli, errors

    def frame(filename, outer=None):
        return types.SimpleNamespace(f_code=types.SimpleNamespace(co_filename=filename), f_back=outer)
    in_edgekit = frame(errors.__file__)
    in_tvm = frame(tvm.ir.transform.__file__, in_edgekit)
    in_import = frame("/usr/lib/python3.11/enum.py", frame("<frozen importlib._bootstrap>", in_edgekit))
    saved = {s: signal.getsignal(s) for s in cli.SIGNALS}
    try:
        for deferred in (in_tvm, in_import):
            cli._interrupted(signal.SIGINT, deferred)  # returns: the library goes on undisturbed
            assert errors.PENDING_SIGNALS == [signal.SIGINT]
            with pytest.raises(KeyboardInterrupt):
                errors.checkpoint()
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # the clean-up is not interrupted again
            errors.PENDING_SIGNALS.clear()
            for s, handler in saved.items():  # each case starts from handlers that are not ignoring
                signal.signal(s, handler)
        with pytest.raises(KeyboardInterrupt):  # edgekit code TVM calls back (tuning's runners) cleans up itself
            cli._interrupted(signal.SIGTERM, frame(errors.__file__, in_tvm))
    finally:
        errors.PENDING_SIGNALS.clear()
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_an_interrupt_at_any_moment_of_a_build_leaves_nothing(tmp_path):
    """Ctrl-C at 12 moments in the first 0.13 s of a build (imports of TensorFlow, onnx and protobuf's C
    extension, where an exception aborted the process with its temporary directory left behind)."""
    for i in range(12):
        work = tmp_path / str(i)
        work.mkdir()
        p = start(["build", "--target", "rpi4", "--alpha", "0.35", "--resolution", "96"], work)
        deadline = time.monotonic() + 60
        while not list((work / "build").glob(".*tmp*")) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(i * 0.011)
        p.send_signal(signal.SIGINT)
        err = assert_clean_exit(p, 130)
        assert not (work / "build").exists(), (i, err)
