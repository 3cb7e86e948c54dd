"""Link stage: the host side of the firmware's serial protocol (firmware/README.md) over any pyserial URL
(/dev/ttyACM0, a /dev/pts/N from the emulator, socket://host:port, loop://).

Every read has a deadline: a silent board, a wrong port or a different model raise WorkError with one
line, never hang. Nothing read from the device is believed unless a CRC protects it: each ek-* command
carries the CRC-32 of its text, each ek-* reply ends with one over all its bytes, a run names the CRC of
the whole input it must see, and the output names the input it came from. A damaged or lost exchange
(TransferError) is sent again after a resynchronisation; a line that keeps failing raises WorkError.
"""
from __future__ import annotations

import itertools
import os
import re
import socket
import time
import zlib

import serial

from .errors import UsageError, WorkError

MIN_CHUNK = 64  # the smallest ek-load chunk a noisy line falls back to
INFO_INTS = ("input", "output", "arena", "layers", "per_us")


class DeviceError(WorkError):
    """The device answered a command with an e-[...] line."""


class TransferError(WorkError):
    """A reply or a binary transfer was lost or damaged: worth a retry."""


def frame(cmd: str) -> str:
    """An ek-* command as sent: its text, then the CRC-32 of that text."""
    return f"{cmd} {zlib.crc32(cmd.encode()):08x}" if cmd.startswith("ek-") else cmd


class Device:
    def __init__(self, url: str, timeout: float = 5.0, baud: int = 115200, infer_timeout: float = 300.0,
                 retries: int = 8, chunk: int = 4096):
        """timeout: the longest wait for any reply; infer_timeout: the longest one inference may take;
        chunk: the largest ek-load (halved after a failed one, doubled back after a good one)."""
        self.url, self.timeout, self.infer_timeout, self.retries = url, timeout, infer_timeout, retries
        self.chunk = self.max_chunk = chunk
        self.retried = 0  # exchanges repeated after a damaged or lost one
        self._buf, self._crc = bytearray(), 0  # received bytes not yet parsed; CRC of the reply so far
        self._received = 0   # bytes received in all
        self._info = None    # ek-info, from a CRC-checked reply
        self._input = None   # the input last given to load_input
        self._loaded = None  # CRC-32 of the input the device holds, as its checked replies last said
        self._pending = 0    # bytes an unfinished ek-load may still be waiting for
        self._busy = False   # a run was sent and its reply not read: the device may still be computing
        self._dirty = False  # the stream may hold stray bytes: resynchronise before the next command
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
            raise WorkError(f"cannot write to {self.url} ({e}): the board or its emulator went away") from None

    def _silent(self, what: str) -> str:
        return f"no reply from {self.url} to '{what}': is the board powered, flashed with edgekit firmware, and is this its port?"

    def _fill(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise TransferError(self._silent(what))
        try:
            data = self.port.read(self.port.in_waiting or 1)
        except (serial.SerialException, OSError) as e:
            raise WorkError(f"cannot read from {self.url} ({e}): the board or its emulator went away") from None
        self._buf += data
        self._received += len(data)

    def _take(self, n: int) -> bytes:
        """The next n received bytes, counted into the reply's CRC."""
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._crc = zlib.crc32(data, self._crc)
        return data

    def _line(self, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while (i := self._buf.find(b"\n")) < 0:
            self._fill(deadline, what)
        return self._take(i + 1)[:-1].rstrip(b"\r").decode(errors="replace")

    def _raw(self, n: int, timeout: float, what: str) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self._buf) < n:
            self._fill(deadline, what)
        return self._take(n)

    # ---- commands and replies ----
    def _send(self, cmd: str) -> None:
        text = frame(cmd)
        if len(text) > 80 or "%" in text:
            raise UsageError(f"command '{cmd[:20]}...' is over 80 characters or holds %: the protocol forbids it")
        if self._dirty:
            self.sync()
        self._write(text.encode() + b"%")
        self._crc = 0

    def _reply(self, cmd: str, timeout: float | None = None) -> list[str]:
        """An unprotected (MLPerf Tiny) reply: its lines before m-ready."""
        lines = []
        while (line := self._line(timeout or self.timeout, cmd)) != "m-ready":
            if line:
                lines.append(line)
        if errors := [ln for ln in lines if ln.startswith("e-[")]:
            raise DeviceError(f"{self.url} refused '{cmd}': {errors[0]}")
        return lines

    def _next(self, cmd: str, timeout: float) -> str | None:
        """The next line of an ek-* reply, or None at its end (m-ek-end-, checked against the CRC of every byte
        before it). A refusal is raised once the reply's CRC checks out: TransferError if it says the command
        or the input arrived damaged (send it again), DeviceError otherwise."""
        want = self._crc
        line = self._line(timeout, cmd)
        if line.startswith("e-["):
            if self._next(cmd, self.timeout) is not None:
                raise TransferError(f"damaged reply to '{cmd}': more after {line[:60]!r}")
            if line.startswith("e-[damaged input"):
                self._loaded = None  # the device's input is not the one loaded: load it again
            raise (TransferError if line.startswith("e-[damaged") else DeviceError)(f"{self.url} refused '{cmd}': {line}")
        if line.startswith("m-ek-end-"):
            if line != f"m-ek-end-{want:08x}":
                raise TransferError(f"damaged reply to '{cmd}' (CRC mismatch)")
            self._busy = False
            self._ready(cmd)
            return None
        if line == "m-ready":
            raise TransferError(f"reply to '{cmd}' ended without its CRC")
        return line

    def _ready(self, cmd: str) -> None:
        """The m-ready after a good reply; were it damaged, the reply still stands: resynchronise before the next command."""
        try:
            self._dirty |= self._line(self.timeout, cmd) != "m-ready"
        except TransferError:
            self._dirty = True

    def _expect(self, cmd: str, want: str, timeout: float) -> None:
        if (line := self._next(cmd, timeout)) != want:
            raise TransferError(f"damaged reply to '{cmd}': {line!r:.60} where {want} was due")

    def _end(self, cmd: str) -> None:
        if (line := self._next(cmd, self.timeout)) is not None:
            raise TransferError(f"damaged reply to '{cmd}': {line!r:.60} where its end was due")

    def command(self, cmd: str, timeout: float | None = None) -> list[str]:
        """Send one protocol command; return the reply lines before m-ready. An ek-* command goes with its CRC
        and its reply is checked against its own (the m-ek-end- line is dropped). A refusal raises DeviceError."""
        try:
            self._send(cmd)
            if not cmd.startswith("ek-"):
                return self._reply(cmd, timeout)
            lines = []
            while (line := self._next(cmd, timeout or self.timeout)) is not None:
                lines.append(line)
            return lines
        except TransferError:
            self._dirty = True
            raise

    def sync(self) -> None:
        """Find our place in the stream: end any half-sent command or binary load, then wait for the echo of a
        fresh token (stale replies cannot match it) and the m-ready after it."""
        deadline = time.monotonic() + (self.infer_timeout if self._busy else self.timeout)
        # spaces enough to complete a binary load the device may be waiting for (it then fails its CRC); what
        # is left of them and % make one blank or over-long command: one short reply, not one per byte
        fill, wait, received = b" " * self._pending + b"%", min(0.25, self.timeout), self._received
        for tokens in itertools.count(1):
            token = os.urandom(4).hex()
            cmd = f"ek-sync {token}"
            self._buf.clear()
            self._write(fill + frame(cmd).encode() + b"%")
            fill = b"%"
            try:
                step = time.monotonic() + wait  # then send a new token (harmless if both arrive)
                while (line := self._line(step - time.monotonic(), cmd)) != f"m-ek-sync-{token}":
                    if line.startswith("e-["):  # maybe our token command, damaged: send another now
                        raise TransferError(line)
                while self._line(self.timeout, cmd) != "m-ready":
                    pass
                break
            except TransferError:
                # none came back: the board is gone, not noisy (a line that answers, however garbled, gets longer)
                heard = self._received > received
                if time.monotonic() >= deadline + 2 * self.timeout * heard and tokens >= (8 if heard else 5):
                    raise WorkError(self._silent("ek-sync")) from None
                wait = min(2 * wait, self.timeout)
        self._pending, self._busy, self._dirty = 0, False, False

    def _retry(self, fn, what: str):
        for attempt in range(self.retries + 1):
            try:
                if attempt:
                    self.retried += 1
                    self.sync()
                return fn()
            except TransferError as e:
                last, self._dirty = e, True
        raise WorkError(f"{what} on {self.url} failed {self.retries + 1} times ({last}): check the cable and baud rate")

    # ---- the protocol ----
    def info(self) -> dict:
        """name, hash, board, input/output/arena bytes, layers, counter (its unit), per_us, timer, threads."""
        self._info = self._retry(self._read_info, "ek-info")
        return self._info

    def _read_info(self) -> dict:
        lines = self.command("ek-info")
        line = lines[0] if len(lines) == 1 else ""
        info = dict(kv.split("=", 1) for kv in line.removeprefix("m-ek-info-").split() if "=" in kv)
        if not line.startswith("m-ek-info-") or not all(info.get(k, "").isdecimal() for k in INFO_INTS) or \
                not {"name", "hash", "counter"} <= set(info):
            raise WorkError(f"{self.url} gave no valid m-ek-info line: is it running this version of edgekit firmware?")
        return {**info, **{k: int(info[k]) for k in INFO_INTS}}

    def _model(self) -> dict:
        return self._info or self.info()

    @property
    def counter(self) -> str:
        """'instructions' (QEMU icount), 'cycles' (silicon) or 'ns' (Linux port): label every figure with it."""
        return self._model()["counter"]

    def check_model(self, expected_hash: str) -> dict:
        info = self.info()
        if not info["hash"] or not expected_hash.lower().startswith(info["hash"]):
            raise WorkError(f"{self.url} runs model '{info['name']}' (hash {info['hash']}), not the expected "
                            f"{expected_hash[:16]}: flash this build first (edgekit flash BUILD_DIR)")
        return info

    def load_input(self, data: bytes) -> None:
        """Binary input load in CRC-checked chunks; a damaged or lost chunk is sent again."""
        size = self._model()["input"]
        if len(data) != size:
            raise UsageError(f"input is {len(data)} bytes, the model on {self.url} takes {size}")
        self._input, self._loaded = bytes(data), None
        off = 0
        while off < size:
            off += self._retry(lambda: self._load(off), f"binary load at offset {off}")
        self._loaded = zlib.crc32(self._input)

    def _load(self, off: int) -> int:
        part = self._input[off:off + self.chunk]
        crc = zlib.crc32(part)
        cmd = f"ek-load {len(part)} {crc:08x} {off}"
        try:
            self._send(cmd)
            self._pending = len(part)  # from here the device may be waiting for the payload
            self._expect(cmd, f"m-ek-load-ready-{len(part)}", self.timeout)
            # the % after the payload completes it if a byte was lost, so the CRC fails now, not after a timeout;
            # else it is an empty command, answered by one more m-ready
            self._write(part + b"%")
            self._expect(cmd, f"m-ek-load-done-{crc:08x}", self.timeout + len(part) / 2000)  # QEMU: ~5 KiB/s
            self._pending = 0
            self._end(cmd)
            self._ready(cmd)
        except TransferError:
            self.chunk = max(MIN_CHUNK, self.chunk // 2)  # a noisy line: smaller chunks get through
            raise
        self.chunk = min(self.max_chunk, self.chunk * 2)
        return len(part)

    def _ensure_input(self) -> int:
        """The loaded input's CRC-32, after loading it again if the device may no longer hold it."""
        if self._input is None:
            raise UsageError("no input loaded: pass one to infer() or load_input() first")
        if self._loaded != (crc := zlib.crc32(self._input)):
            self.load_input(self._input)
        return crc

    def _run(self, cmd: str) -> str:
        """Start a run command on the loaded input; the device checks the input's CRC before it runs."""
        crc = self._ensure_input()
        cmd = f"{cmd} {crc:08x}"
        self._send(cmd)
        self._busy = True
        self._expect(cmd, f"m-ek-input-{crc:08x}", self.timeout)
        return cmd

    def read_output(self) -> bytes:
        """The last inference's raw output bytes, from the loaded input (re-read if damaged)."""
        return self._retry(self._read, "output read")

    def _read(self) -> bytes:
        n_out = self._model()["output"]
        self._send("ek-read")
        header = self._next("ek-read", self.timeout) or ""
        if not (m := re.fullmatch(rf"m-ek-read-{n_out}-([0-9a-f]{{8}})", header)):  # N bounds the raw read
            raise TransferError(f"damaged reply to 'ek-read': {header!r:.60}")
        data = self._raw(n_out, self.timeout + n_out / 20000, "ek-read")
        if self._raw(2, self.timeout, "ek-read") != b"\r\n":
            raise TransferError("damaged reply to 'ek-read': no CRLF after the data")
        self._end("ek-read")
        if self._input is not None and m[1] != f"{zlib.crc32(self._input):08x}":
            raise TransferError(f"{self.url} holds the results of another input")
        return data

    def measure(self, runs: int) -> list[int]:
        """Counter units (see .counter) for each of `runs` back-to-back inferences on the loaded input."""
        if runs < 1:
            raise UsageError("runs must be at least 1")
        return self._retry(lambda: self._time(runs), "timed run")

    def _time(self, runs: int) -> list[int]:
        cmd = self._run(f"ek-time {runs}")
        counts = []
        for _ in range(runs):
            if not (m := re.fullmatch(r"m-ek-time-(\d{1,20})", self._next(cmd, self.infer_timeout) or "")):
                raise TransferError(f"damaged reply to '{cmd}'")
            counts.append(int(m[1]))
        self._end(cmd)
        return counts

    def infer(self, data: bytes | None = None) -> bytes:
        """Optionally load `data`, run one inference, return the raw output."""
        if data is not None:
            self.load_input(data)
        return self._retry(lambda: (self._time(1), self._read())[1], "inference")

    def profile(self) -> list[tuple[str, int]]:
        """(layer name, counter units) for each layer of one inference, through the model's layer hook."""
        return self._retry(self._profile, "profile")

    def _profile(self) -> list[tuple[str, int]]:
        cmd, rows = self._run("ek-profile"), []
        while (line := self._next(cmd, self.timeout if rows else self.infer_timeout)) is not None:
            if not (m := re.fullmatch(r"m-ek-layer-(\d+)-(\d{1,20})-(\S+)", line)) or int(m[1]) != len(rows):
                raise TransferError(f"damaged reply to '{cmd}': {line!r:.60}")
            rows.append((m[3], int(m[2])))
        return rows
