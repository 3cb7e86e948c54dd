"""Flash stage: put firmware on a board (pyocd) or start it in the board's emulator behind a pty.

`emulate` yields a pyserial URL (a /dev/pts path) once the firmware has printed its boot lines, and
always ends the emulator: on normal exit, an exception, Ctrl-C, SIGTERM or SIGHUP (edgekit.cli makes them
KeyboardInterrupt).
"""
from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time
import tty
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from .errors import UsageError, WorkError

BOOT = ["m-timestamp-mode-performance", "m-init-done", "m-ready"]


def _need(exe: str, package: str) -> None:
    if not shutil.which(exe):
        raise UsageError(f"{exe} not found: apt-get install {package}")


def _read_until(fd: int, pattern: bytes, timeout: float, what: str, proc: subprocess.Popen) -> bytes:
    got, deadline = b"", time.monotonic() + timeout
    while pattern not in got:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            why = f"exited with code {proc.returncode}" if proc.poll() is not None else f"stalled for {timeout:.0f} s"
            raise WorkError(f"{what} {why}; got {got[-200:]!r}")
        if select.select([fd], [], [], min(left, 0.1))[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise WorkError(f"{what}: output closed; got {got[-200:]!r}")
            got += chunk
    return got


def _check_boot(text: bytes, what: str) -> None:
    lines = [ln for ln in text.decode(errors="replace").split("\r\n") if ln]
    if lines[-3:] != BOOT:
        raise WorkError(f"{what} did not boot: expected {' / '.join(BOOT)}, got {lines[-3:]}")


@contextmanager
def emulate(target, binary: Path, boot_timeout: float = 20.0, args: Sequence[str] = ()) -> Iterator[str]:
    """Run `binary` in the target's emulator; yield the serial URL once the firmware has booted.
    args: the Linux runner's command line (e.g. --threads N); firmware under qemu-system takes none."""
    emu = target.emulator
    if not emu:
        raise UsageError(f"target {target.name} has no emulator: flash the board (edgekit flash) and pass --port")
    if not Path(binary).is_file():
        raise UsageError(f"{binary} does not exist: build it first (edgekit build)")
    _need(emu["command"][0], "qemu-system-arm" if emu["kind"] == "qemu-system" else "qemu-user")
    if emu["kind"] == "qemu-system":
        yield from _qemu_system(target, emu["command"], Path(binary), boot_timeout)
    elif emu["kind"] == "qemu-user":
        yield from _qemu_user(target, emu["command"], Path(binary), boot_timeout, args)
    else:
        raise UsageError(f"targets/{target.name}.toml: emulator kind '{emu['kind']}' is not qemu-system or qemu-user")


def _qemu_system(target, command: list[str], elf: Path, boot_timeout: float) -> Iterator[str]:
    # Start paused with a monitor socket, hold the pty open, then `cont`: no boot output is lost. All of it
    # inside the try: a signal at any point (edgekit turns SIGTERM into KeyboardInterrupt) still cleans up.
    tmp = proc = fd = mon = None
    try:
        tmp = tempfile.mkdtemp(prefix="edgekit-qemu-")
        sock_path = os.path.join(tmp, "monitor")
        proc = subprocess.Popen([*command, "-kernel", str(elf), "-nographic", "-serial", "pty", "-S",
                                 "-monitor", f"unix:{sock_path},server=on,wait=off"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = _read_until(proc.stdout.fileno(), b"(label", 10, f"{command[0]} -M {target.name}", proc)
        m = re.search(rb"char device redirected to (/dev/pts/\d+)", out)
        if not m:
            raise WorkError(f"{command[0]} printed no pty path: {out[-200:]!r}")
        pty = m.group(1).decode()
        fd = os.open(pty, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        mon = socket.socket(socket.AF_UNIX)
        mon.connect(sock_path)
        mon.sendall(b"cont\n")
        _check_boot(_read_until(fd, b"m-ready\r\n", boot_timeout, f"{target.name} firmware in QEMU", proc),
                    f"{target.name} firmware in QEMU")
        yield pty
    finally:
        try:
            if mon:
                mon.sendall(b"quit\n")
        except OSError:
            pass
        if proc:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        if mon:
            mon.close()
        if fd is not None:
            os.close(fd)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def run_local(binary: Path, boot_timeout: float = 20.0, args: Sequence[str] = ()) -> Iterator[str]:
    """Run a Linux runner built for this machine behind a pty, like an emulated board."""
    yield from _qemu_user(None, [], Path(binary), boot_timeout, args)


def _qemu_user(target, command: list[str], binary: Path, boot_timeout: float,
               args: Sequence[str] = ()) -> Iterator[str]:
    # The program talks on the pty's master; the host opens the slave path like any serial port.
    # We hold the slave open so the master never reads EOF while the host reopens the port.
    master, slave = os.openpty()
    log, proc = tempfile.TemporaryFile(), None
    try:
        tty.setraw(master)
        tty.setraw(slave)
        proc = subprocess.Popen([*command, str(binary), *args], stdin=master, stdout=master, stderr=log)
        ours, master = master, None  # the child holds it now
        os.close(ours)
        what = f"{binary.name} under {command[0]}" if command else binary.name
        try:
            _check_boot(_read_until(slave, b"m-ready\r\n", boot_timeout, what, proc), what)
        except WorkError as e:
            log.seek(0)
            raise WorkError(f"{e}; stderr: {log.read()[-300:].decode(errors='replace')}") from None
        yield os.ttyname(slave)
    finally:
        if proc:
            proc.kill()
            proc.wait()
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
        log.close()


def flash_board(target, elf: Path) -> None:
    """Program a real MCU board through pyocd (`pyocd flash -t <pyocd_target> ELF`)."""
    flasher = target.section("flasher")
    if flasher.get("kind") != "pyocd":
        how = {"ssh": "copy it with --host USER@ADDR", "local": "it runs on this machine: use validate or bench"}
        hint = how.get(flasher.get("kind"), "") or ("run it with --emulate" if target.emulator else "see its target file")
        raise UsageError(f"target {target.name} is not flashed with pyocd (flasher kind '{flasher.get('kind')}'): {hint}")
    exe = shutil.which("pyocd")
    if not exe:
        raise UsageError("pyocd is not installed: pip install pyocd (or flash the ELF with your own tool)")
    if not Path(elf).is_file():
        raise UsageError(f"{elf} does not exist: build it first (edgekit build)")
    try:
        p = subprocess.run([exe, "flash", "-t", flasher["pyocd_target"], str(elf)],
                           capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise WorkError("pyocd flash took over 5 minutes: check the board's USB connection") from None
    if p.returncode:
        last = (p.stderr.strip() or p.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise WorkError(f"pyocd flash failed: {last[0]} (is the board connected? see `pyocd list`)")
