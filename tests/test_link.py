"""edgekit.link and edgekit.flash: fault injection between host and QEMU, silent and wrong ports, model
hash checks, the Linux port under qemu-aarch64 and over TCP, and emulator clean-up."""
import os
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest

from edgekit import firmware, flash, target
from edgekit.errors import UsageError, WorkError
from edgekit.link import Device
from fault_proxy import FaultProxy

HASH = "5eed" * 16
needs_qemu = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                reason="arm-none-eabi-gcc and qemu-system-arm needed")


def reference(x):
    s = np.float32(0)
    for v in x * np.float32(0.5):
        s = np.float32(s + v)
    return s * np.arange(1, 5, dtype=np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return firmware.fake_model(tmp_path_factory.mktemp("fake"))


@pytest.fixture(scope="module")
def elf(model, tmp_path_factory):
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("arm-none-eabi-gcc and qemu-system-arm needed")
    return firmware.build_firmware(target.get("mps2-an386"), model, "fake", HASH, tmp_path_factory.mktemp("fw"))["firmware"]


class Aimed(FaultProxy):
    """One fault, aimed: on its way `way` ("in": to the device), the byte `skip` bytes after the first `trigger`
    (once `arm` has passed) is dropped (xor None) or xor-ed."""

    def __init__(self, device_pty: str, way: str, trigger: bytes, skip: int, xor: int | None, arm: bytes = b""):
        self.aim, self.seen, self.armed, self.countdown, self.fired = (way, trigger, skip, xor, arm), b"", not arm, -1, False
        super().__init__(device_pty, rate=0)

    def damage(self, data: bytes, way: str) -> bytes:
        want, trigger, skip, xor, arm = self.aim
        if way != want or self.fired:
            return data
        out = bytearray()
        for b in data:
            if self.countdown == 0:
                self.countdown, self.fired = -1, True
                if xor is None:
                    continue
                b ^= xor
            elif self.countdown > 0:
                self.countdown -= 1
            out.append(b)
            self.seen = (self.seen + bytes([b]))[-64:]
            self.armed = self.armed or self.seen.endswith(arm)
            if self.armed and self.countdown == -1 and not self.fired and self.seen.endswith(trigger):
                self.countdown = skip
        return bytes(out)


@needs_qemu
@pytest.mark.parametrize("aim", [
    ("in", b"%", 9, None, b"ek-load"),              # a payload byte lost
    ("in", b"%", 9, 0x5A, b"ek-load"),              # a payload byte damaged
    ("out", b"\n", 2, 0x5A, b"m-ek-read-"),         # an output byte damaged
    ("in", b"ek-load ", 13, 0x01, b""),             # ek-load 128 CRC 0 -> offset 1: the chunk would land elsewhere
    ("out", b"input=", 0, 0x01, b""),               # ek-info input=256 -> 356: must not be believed, nor kept
    ("out", b"m-ek-time-", 0, 0x40, b""),           # a count digit -> a letter: no bare ValueError
    ("out", b"m-ek-end-", 12, 0x20, b"m-ek-time-"),  # the m-ready after ek-time: no wait for the inference timeout
    ("in", b"ek-time 1 ", 17, None, b""),           # ek-time's % lost: the device never runs it
])
def test_aimed_fault_is_detected_and_retried(elf, aim):
    x = np.random.default_rng(3).standard_normal(64).astype(np.float32)
    with flash.emulate(target.get("mps2-an386"), elf) as url, Aimed(url, *aim) as proxy:
        with Device(proxy.url, timeout=1, infer_timeout=60, chunk=128) as dev:
            t0 = time.monotonic()
            assert dev.info()["input"] == 256
            np.testing.assert_array_equal(np.frombuffer(dev.infer(x.tobytes()), np.float32), reference(x))
            assert proxy.fired and dev.retried <= 1 and time.monotonic() - t0 < 10
            np.testing.assert_array_equal(np.frombuffer(dev.infer(), np.float32), reference(x))  # and on it goes


def test_silent_port_raises_work_error():
    master, slave = os.openpty()  # nobody answers on the other side
    try:
        with pytest.raises(WorkError, match="no reply from"):
            Device(os.ttyname(slave), timeout=1)
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("url", ["/dev/edgekit-no-such-port", "loop://"])
def test_wrong_port_raises_work_error(url):
    with pytest.raises(WorkError):
        Device(url, timeout=1)


@needs_qemu
def test_hash_check(elf):
    with flash.emulate(target.get("mps2-an386"), elf) as url, Device(url, timeout=3) as dev:
        assert dev.check_model(HASH)["name"] == "fake"
        with pytest.raises(WorkError, match="runs model 'fake' .* not the expected ffffffff"):
            dev.check_model("f" * 64)
        with pytest.raises(UsageError, match="takes 256"):
            dev.load_input(b"123")


def children() -> set[int]:
    pids = set()
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                pids.add(int(p))
        except OSError:
            pass
    return pids


@needs_qemu
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_emulator_always_ends(elf, exc):
    before = children()
    with pytest.raises(exc):
        with flash.emulate(target.get("mps2-an386"), elf):
            qemu = children() - before
            assert qemu
            raise exc
    assert not (children() & qemu)


def test_flash_board_needs_pyocd(monkeypatch, tmp_path):
    monkeypatch.setattr(flash.shutil, "which", lambda exe: None)
    with pytest.raises(UsageError, match="pip install pyocd"):
        flash.flash_board(target.get("nucleo-l4r5zi"), tmp_path / "x.elf")
    with pytest.raises(UsageError, match="emulate"):
        flash.flash_board(target.get("mps2-an386"), tmp_path / "x.elf")


@pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")),
                    reason="aarch64 cross gcc and qemu-user needed (apt-get install gcc-aarch64-linux-gnu qemu-user)")
def test_linux_port_under_qemu_aarch64(model, tmp_path):
    t = target.get("rpi4")
    binary = firmware.build_firmware(t, model, "fake", HASH, tmp_path)["firmware"]
    x = np.random.default_rng(4).standard_normal(64).astype(np.float32)
    with flash.emulate(t, binary) as url, Device(url, timeout=5) as dev:
        assert dev.check_model(HASH)["board"] == "rpi4" and dev.counter == "ns"
        np.testing.assert_array_equal(np.frombuffer(dev.infer(x.tobytes()), np.float32), reference(x))
        assert len(dev.measure(3)) == 3 and [n for n, _ in dev.profile()] == ["scale", "sum", "dense"]


def test_linux_port_over_tcp(model, tmp_path):
    (tmp_path / "ek_model_config.h").write_text(firmware.model_config("fake", HASH, "host"))
    srcs, incs = firmware.port_sources("linux")
    prog = firmware.compile_c("gcc", srcs + sorted(firmware.COMMON.glob("*.c")) + sorted(model.glob("*.c")),
                              [tmp_path, model, firmware.COMMON, *incs], ["-O1"], tmp_path / "fw")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(prog), "--tcp", str(port)], stderr=subprocess.PIPE)
    try:
        for _ in range(100):  # until it listens
            try:
                dev = Device(f"socket://127.0.0.1:{port}", timeout=2)
                break
            except WorkError:
                if proc.poll() is not None:
                    pytest.fail(proc.stderr.read().decode())
        x = np.arange(64, dtype=np.float32)
        with dev:
            np.testing.assert_array_equal(np.frombuffer(dev.infer(x.tobytes()), np.float32), reference(x))
        with Device(f"socket://127.0.0.1:{port}", timeout=2) as again:  # the next client is served too
            assert again.info()["counter"] == "ns"
    finally:
        proc.kill()
        proc.wait()


@needs_qemu
def test_noisy_line_never_corrupts_and_always_recovers(elf):
    """The short version of `make soak`: random drops, flips and insertions both ways (0.3% of bytes)."""
    from fault_proxy import drive
    with flash.emulate(target.get("mps2-an386"), elf) as url:
        n = drive(url, rate=0.003, seed=7, faults=300, n_in=64, reference=reference)
    assert n["faults"] >= 300 and n["exact"] >= 20, n
    assert n["silent"] == n["exception"] == n["stuck"] == 0, n
