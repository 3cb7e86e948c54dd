"""Link stage: the host side of the firmware's serial protocol (firmware/README.md) over any pyserial URL
(/dev/ttyACM0, a /dev/pts/N from the emulator, socket://host:port, loop://).

Every read has a deadline: a silent board, a wrong port or a different model raise WorkError with one
line, never hang. Binary transfers carry a CRC-32 and are retried after a CRC error or a timeout.
"""
from __future__ import annotations

import re
import socket
import time
import zlib

import serial

from .errors import UsageError, WorkError


class DeviceError(WorkError):
    """The device answered a command with an e-[...] line."""


class TransferError(WorkError):
    """A reply or a binary transfer was lost or damaged: worth a retry."""


class Device:
    def __init__(self, url: str, timeout: float = 5.0, baud: int = 115200, infer_timeout: float = 300.0,
                 retries: int = 4, chunk: int = 4096):
        """timeout: the longest wait for any reply; infer_timeout: the longest one inference may take."""
        self.url, self.timeout, self.infer_timeout, self.retries, self.chunk = url, timeout, infer_timeout, retries, chunk
        self.retried = 0  # transfers repeated after a CRC error or a timeout
        self._buf, self._info = bytearray(), None
        try:
            self.port = serial.serial_for_url(url, baudrate=baud, timeout=0.05, write_timeout=timeout)
        except (serial.SerialException, OSError, ValueError) as e:
            raise WorkError(f"cannot open {url}: {e}") from None
        if sock := getattr(self.port, "_socket", None):  # socket://: without NODELAY a round trip costs ~45 ms
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sync()
        except BaseException:
            self.port.close()
            raise

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- bytes and lines, all with deadlines ----
    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as e:
            raise WorkError(f"cannot write to {self.url}: {e}") from None

    def _fill(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise TransferError(f"no reply from {self.url} to '{what}': is the board powered, flashed with edgekit "
                                f"firmware, and is this its port?")
        try:
            self._buf += self.port.read(self.port.in_waiting or 1)
        except (serial.SerialException, OSError) as e:
            raise WorkError(f"cannot read from {self.url}: {e}") from None

    def _line(self, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while (i := self._buf.find(b"\n")) < 0:
            self._fill(deadline, what)
        line = bytes(self._buf[:i]).rstrip(b"\r").decode(errors="replace")
        del self._buf[:i + 1]
        return line

    def _raw(self, n: int, timeout: float, what: str) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self._buf) < n:
            self._fill(deadline, what)
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _reply(self, cmd: str, timeout: float | None = None) -> list[str]:
        lines = []
        while (line := self._line(timeout or self.timeout, cmd)) != "m-ready":
            if line:
                lines.append(line)
        if errors := [ln for ln in lines if ln.startswith("e-[")]:
            raise DeviceError(f"{self.url} refused '{cmd}': {errors[0]}")
        return lines

    def command(self, cmd: str, timeout: float | None = None) -> list[str]:
        """Send one protocol command; return the reply lines before m-ready. An e-[...] line raises DeviceError."""
        if len(cmd) > 80 or "%" in cmd:
            raise UsageError(f"command '{cmd[:20]}...' is over 80 characters or holds %: the protocol forbids it")
        self._write(cmd.encode() + b"%")
        return self._reply(cmd, timeout)

    def sync(self) -> None:
        """End any half-sent command or binary load, wait for m-ready, drop whatever else was pending."""
        self.port.reset_input_buffer()
        self._buf.clear()
        self._write(b"%")
        deadline = time.monotonic() + self.timeout
        while self._line(max(deadline - time.monotonic(), 0), "%") != "m-ready":
            pass
        while self.port.read(4096) and time.monotonic() < deadline:  # a chatty wrong port must not hold us
            pass
        self._buf.clear()

    def _retry(self, fn, what: str):
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except TransferError as e:
                last = e
            if attempt < self.retries:
                self.retried += 1
                self.sync()
        raise WorkError(f"{what} on {self.url} failed {self.retries + 1} times ({last}): check the cable and baud rate")

    # ---- the protocol ----
    def info(self) -> dict:
        """name, hash, board, input/output/arena bytes, layers, counter (its unit), per_us, timer."""
        line = next((ln for ln in self.command("ek-info") if ln.startswith("m-ek-info-")), None)
        if not line:
            raise WorkError(f"{self.url} gave no m-ek-info line: is it running edgekit firmware?")
        info = dict(kv.split("=", 1) for kv in line[len("m-ek-info-"):].split() if "=" in kv)
        for k in ("input", "output", "arena", "layers", "per_us"):
            info[k] = int(info[k])
        self._info = info
        return info

    @property
    def counter(self) -> str:
        """'instructions' (QEMU icount), 'cycles' (silicon) or 'ns' (Linux port): label every figure with it."""
        return (self._info or self.info())["counter"]

    def check_model(self, expected_hash: str) -> dict:
        info = self.info()
        if not info["hash"] or not expected_hash.lower().startswith(info["hash"]):
            raise WorkError(f"{self.url} runs model '{info['name']}' (hash {info['hash']}), not the expected "
                            f"{expected_hash[:16]}: flash this build first (edgekit flash BUILD_DIR)")
        return info

    def load_input(self, data: bytes) -> None:
        """Binary input load in CRC-checked chunks; a damaged or lost chunk is sent again."""
        size = (self._info or self.info())["input"]
        if len(data) != size:
            raise UsageError(f"input is {len(data)} bytes, the model on {self.url} takes {size}")
        for off in range(0, size, self.chunk):
            part = data[off:off + self.chunk]
            self._retry(lambda: self._load(part, off), f"binary load at offset {off}")

    def _load(self, part: bytes, off: int) -> None:
        cmd = f"ek-load {len(part)} {zlib.crc32(part):08x} {off}"
        self._write(cmd.encode() + b"%")
        if not (line := self._line(self.timeout, cmd)).startswith("m-ek-load-ready-"):
            raise DeviceError(f"{self.url} refused '{cmd}': {line}")
        self._write(part)
        try:
            self._reply(cmd, self.timeout + len(part) / 2000)  # QEMU's UART takes in as little as ~5 KiB/s
        except DeviceError as e:
            raise TransferError(str(e)) from None

    def read_output(self) -> bytes:
        """The last inference's raw output bytes, CRC-checked (re-read on a mismatch)."""
        return self._retry(self._read, "output read")

    def _read(self) -> bytes:
        self._write(b"ek-read%")
        line = self._line(self.timeout, "ek-read")
        if not (m := re.fullmatch(r"m-ek-read-(\d+)-([0-9a-f]{8})", line)):
            self._reply("ek-read")  # raises DeviceError on e-[...]
            raise TransferError(f"unexpected reply to ek-read: {line[:60]}")
        n, crc = int(m.group(1)), int(m.group(2), 16)
        data = self._raw(n, self.timeout + n / 20000, "ek-read")
        self._reply("ek-read")
        if zlib.crc32(data) != crc:
            raise TransferError(f"output CRC {zlib.crc32(data):08x} != {crc:08x}")
        return data

    def measure(self, runs: int) -> list[int]:
        """Counter units (see .counter) for each of `runs` back-to-back inferences on the loaded input."""
        if runs < 1:
            raise UsageError("runs must be at least 1")
        counts = [int(ln[10:]) for ln in self.command(f"ek-time {runs}", self.infer_timeout) if ln.startswith("m-ek-time-")]
        if len(counts) != runs:
            raise WorkError(f"{self.url} reported {len(counts)} of {runs} timed runs")
        return counts

    def infer(self, data: bytes | None = None) -> bytes:
        """Optionally load `data`, run one inference, return the raw output."""
        if data is not None:
            self.load_input(data)
        self.measure(1)
        return self.read_output()

    def profile(self) -> list[tuple[str, int]]:
        """(layer name, counter units) for each layer of one inference, through the model's layer hook."""
        lines = self.command("ek-profile", self.infer_timeout)
        return [(m.group(3), int(m.group(2))) for ln in lines if (m := re.fullmatch(r"m-ek-layer-(\d+)-(\d+)-(.*)", ln))]
