"""SSH deployment (edgekit.remote) against a real OpenSSH server on loopback.

The fixture starts Debian's sshd (package openssh-server) on a free port with a throwaway host
key and client key; the "board" is this machine, so the runner is tvm_runner.py on an x86 llvm
build of a tiny model (--device cpu), reached through the URL that remote.start() yields.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import serial

import jetson_support as js
from conftest import run_edgekit
from edgekit import cuda, remote
from edgekit.errors import UsageError, WorkError
from edgekit.runners import TVM_RUNNER

SSHD = Path("/usr/sbin/sshd")
HOST = "root@127.0.0.1" if os.geteuid() == 0 else f"{os.environ.get('USER', 'root')}@127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A private sshd; yields the ssh options that reach it (and only it)."""
    if not SSHD.exists() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server/client missing: apt-get install openssh-server openssh-client")
    if not Path("/run/sshd").is_dir():  # sshd's privilege separation dir, made by its init script normally
        if os.geteuid() != 0:
            pytest.skip("/run/sshd missing and not root to create it")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    d = tmp_path_factory.mktemp("sshd")
    _keygen(d / "host_key")
    _keygen(d / "client_key")
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    (d / "sshd_config").write_text(
        f"HostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nPidFile none\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin yes\nListenAddress 127.0.0.1\nAllowTcpForwarding yes\n"
        "Subsystem sftp internal-sftp\n")
    port = _free_port()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text()}")
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "wb"))
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (d / "sshd.log").read_text()
            time.sleep(0.05)
    # -F none: the tester's own ~/.ssh/config must not change what is tested
    options = ["-F", "none", "-o", f"Port={port}", "-i", str(d / "client_key"), "-o", "IdentitiesOnly=yes",
               "-o", f"UserKnownHostsFile={d / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes"]
    yield {"options": options, "dir": d, "port": port}
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def board_dir(sshd, tmp_path_factory):
    """The tiny model's x86 build, deployed with its runner; the remote (here: local) directory."""
    tiny = js.write(tmp_path_factory.mktemp("tiny") / "tiny.onnx")
    lib = js.build_x86(tiny, tmp_path_factory.mktemp("x86"))
    shutil.copy(TVM_RUNNER, lib.parent / "tvm_runner.py")  # laid out as cuda.build_cuda() leaves a build
    remote_dir = str(tmp_path_factory.mktemp("board") / "run")
    remote.deploy(HOST, cuda.deploy_files(lib.parent, ARTIFACT), remote_dir, options=sshd["options"])
    return {"dir": remote_dir, "onnx": tiny}


ARTIFACT = {"library": "model.so", "meta": "model.json", "runner": "tvm_runner.py", "onnx": "model.onnx"}
ARGV = cuda.runner_argv(ARTIFACT, python=sys.executable) + ["--device", "cpu"]


def _runner_alive(remote_dir: str) -> bool:
    """Is a tvm_runner.py running in remote_dir (the board is this machine)?"""
    for proc in Path("/proc").iterdir():
        try:
            if b"tvm_runner.py" in (proc / "cmdline").read_bytes() and (proc / "cwd").resolve() == Path(remote_dir):
                return True
        except OSError:  # not a process, or it ended while we looked
            continue
    return False


def _wait_gone(remote_dir: str) -> None:
    deadline = time.monotonic() + 10
    while _runner_alive(remote_dir):
        assert time.monotonic() < deadline, "the runner outlived its ssh session"
        time.sleep(0.1)


def test_deploy_copies_files_with_modes(board_dir):
    d = Path(board_dir["dir"])
    assert (d / "tvm_runner.py").read_bytes() == TVM_RUNNER.read_bytes()
    assert (d / "model.so").stat().st_size > 0 and (d / "model.json").is_file()
    assert not (d / "model.onnx").exists()  # the reference model stays on the host


@pytest.mark.parametrize("mode", ["stdio", "tcp"])
def test_start_runs_the_model_through_the_yielded_url(sshd, board_dir, mode):
    x = np.random.default_rng(7).standard_normal(js.SHAPE).astype(np.float32)
    ref = js.reference(board_dir["onnx"], x).ravel()
    with remote.start(HOST, board_dir["dir"], ARGV, mode=mode, remote_port=_free_port(),
                      options=sshd["options"]) as url:
        assert url.startswith("/dev/pts/" if mode == "stdio" else "socket://127.0.0.1:")
        for _ in range(2):  # the port can be opened again, like a serial port
            with serial.serial_for_url(url, timeout=10) as port:
                client = js.Client(port)
                assert client.cmd("name") == [b"m-name-dut-[x86-test]", b"m-ready"]
                every = bytes(range(256))  # ^C, ^D, XON/XOFF, CR, LF...: the link must pass them all 1:1
                done = client.cmd(f"ek-load 256 {zlib.crc32(every):08x} 0", every)
                assert done[1] == f"m-ek-load-done-{zlib.crc32(every):08x}".encode()
                np.testing.assert_allclose(client.infer(x), ref, rtol=1e-5, atol=1e-5)
    _wait_gone(board_dir["dir"])


def test_edgekit_link_drives_the_runner_over_ssh(sshd, board_dir):
    """The host side that validate/bench use (edgekit.link) against the Jetson runner's URL."""
    from edgekit import link

    x = np.random.default_rng(8).standard_normal(js.SHAPE).astype(np.float32)
    with remote.start(HOST, board_dir["dir"], ARGV, options=sshd["options"]) as url:
        with link.Device(url) as dev:
            assert dev.info()["counter"] == "ns"
            out = np.frombuffer(dev.infer(x.tobytes()), np.float32)
            assert len(dev.measure(3)) == 3
    np.testing.assert_allclose(out, js.reference(board_dir["onnx"], x).ravel(), rtol=1e-5, atol=1e-5)


def test_ctrl_c_ends_ssh_and_the_runner(sshd, board_dir):
    with pytest.raises(KeyboardInterrupt):
        with remote.start(HOST, board_dir["dir"], ARGV, options=sshd["options"]):
            assert _runner_alive(board_dir["dir"])
            raise KeyboardInterrupt
    _wait_gone(board_dir["dir"])


def test_runner_that_fails_to_start_is_a_work_error(sshd, board_dir):
    with pytest.raises(WorkError, match="missing.so not found"):
        with remote.start(HOST, board_dir["dir"], [sys.executable, "tvm_runner.py", "missing.so"],
                          options=sshd["options"]):
            pass


def test_missing_local_file_is_a_usage_error(sshd, tmp_path):
    with pytest.raises(UsageError, match="not found"):
        remote.deploy(HOST, [tmp_path / "model.so"], "x", options=sshd["options"])


def test_auth_failure_says_how_to_fix_it(sshd, tmp_path):
    _keygen(tmp_path / "stranger")
    opts = [o if o != str(sshd["dir"] / "client_key") else str(tmp_path / "stranger") for o in sshd["options"]]
    with pytest.raises(UsageError, match="authentication failed.*ssh-copy-id"):
        remote.run(HOST, "true", options=opts)


def test_unreachable_host_is_a_work_error(sshd):
    opts = [o if not o.startswith("Port=") else f"Port={_free_port()}" for o in sshd["options"]]
    with pytest.raises(WorkError, match="connection refused"):
        remote.run(HOST, "true", options=opts)


def test_unsafe_remote_dir_is_refused(sshd, board_dir):
    with pytest.raises(UsageError, match="remote directory"):
        remote.deploy(HOST, [TVM_RUNNER], "a dir; rm -rf x", options=sshd["options"])


@pytest.fixture(scope="module")
def host_build(tmp_path_factory):
    """A `host` build (this machine's gcc): the loopback sshd's 'board' runs x86 binaries."""
    d = tmp_path_factory.mktemp("hostbuild")
    r = run_edgekit("build", "--target", "host", "--arch", "v1", "--alpha", "0.25", "--resolution", "32",
                    "--classes", "3", "--out", d / "b")
    assert r.returncode == 0, r.stderr
    return d / "b"


def test_cli_validates_and_flashes_a_linux_board_over_ssh(sshd, host_build, monkeypatch):
    monkeypatch.setenv("EDGEKIT_SSH_OPTIONS", " ".join(sshd["options"]))
    r = run_edgekit("validate", host_build, "--host", HOST, "--inputs", "2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["validation"]["passed"]
    r = run_edgekit("flash", host_build, "--host", HOST)
    assert r.returncode == 0, r.stderr
    url = "socket://127.0.0.1:7707"
    assert url in r.stdout
    try:
        deadline = time.monotonic() + 10
        while True:  # the runner was started in the background on the board: wait for its port
            try:
                socket.create_connection(("127.0.0.1", 7707), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        r = run_edgekit("bench", host_build, "--port", url, "--runs", "2", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["latency"]["source"] == "device"
    finally:
        pid = Path.home() / "edgekit" / host_build.name / "runner.pid"
        subprocess.run(["kill", pid.read_text().strip()], check=False)
