"""Linux boards over SSH: copy a build to the board, start its runner, hand back a pyserial URL.

Uses the system `ssh`/`scp`, never a Python SSH library, so the user's agent, ~/.ssh/config
(aliases, ProxyJump, keys) and known_hosts apply unchanged. BatchMode: a password prompt
would hang a CLI that the user cannot see; it fails fast instead, with the fix in the message.

`start()` gives the protocol two ways to the runner:
  stdio  the runner talks on its stdin/stdout through the ssh process; a local pty pair bridges
         it, so the URL is a /dev/pts path like any serial port (no port to open on the board).
  tcp    the runner listens on 127.0.0.1:PORT on the board and `ssh -L` forwards a local port:
         socket://127.0.0.1:LOCAL (lower latency for long benchmark runs, no pty in the way).
"""
from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import tty
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from .errors import UsageError, WorkError

CONNECT_TIMEOUT_S = 10
READY_TIMEOUT_S = 120      # the runner imports TVM and loads the library (NVRTC may compile) first
REMOTE_DIR_OK = re.compile(r"[A-Za-z0-9._/~+-]+")  # no quoting games between ssh's and scp's parsers

# ssh's own messages (exit status 255) -> what the user should do about them
_SSH_FAILURES = (
    ("Permission denied", UsageError, "authentication failed: add your key with `ssh-copy-id {host}` "
                                      "or load it into ssh-agent (edgekit never prompts for passwords)"),
    ("Host key verification failed", UsageError, "host key unknown or changed: connect once with "
                                                 "`ssh {host}` and check the fingerprint"),
    ("Could not resolve hostname", UsageError, "unknown host name: check the address or ~/.ssh/config"),
    ("Connection refused", WorkError, "connection refused: is sshd running on the board?"),
    ("timed out", WorkError, "unreachable (connection timed out): is the board on and on this network?"),
    ("No route to host", WorkError, "unreachable (no route to host): is the board on and on this network?"),
    ("Network is unreachable", WorkError, "unreachable (network is unreachable): check this machine's network"),
    ("Connection closed", WorkError, "the board closed the connection: check sshd's log there"),
)


def ssh_base(host: str, options: Sequence[str] = (), timeout: int = CONNECT_TIMEOUT_S,
             program: str = "ssh") -> list[str]:
    """argv prefix for ssh or scp: both take -o/-i/-F alike (the port goes as `-o Port=N`)."""
    exe = shutil.which(program)
    if exe is None:
        raise UsageError(f"{program} not found: install the OpenSSH client (apt-get install openssh-client)")
    # EDGEKIT_SSH_OPTIONS: extra ssh options for every call, e.g. "-F ./ssh_config" on a CI machine
    extra = shlex.split(os.environ.get("EDGEKIT_SSH_OPTIONS", ""))
    return [exe, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", *extra, *options]


def _fail(host: str, what: str, rc: int, stderr: str) -> Exception:
    """One line naming the problem and the fix, from ssh's exit status and stderr."""
    if rc == 255:
        for needle, kind, fix in _SSH_FAILURES:
            if needle in stderr:
                return kind(f"ssh to {host}: {fix.format(host=host)}")
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("Warning: Permanently added")]
    detail = lines[-1] if lines else f"exit status {rc}"
    return WorkError(f"ssh to {host}: {what} failed: {detail}")


def run(host: str, command: str, *, options: Sequence[str] = (), timeout: int = CONNECT_TIMEOUT_S,
        what: str = "remote command") -> str:
    """Run a shell command on the board; its stdout. Errors become UsageError/WorkError."""
    res = subprocess.run([*ssh_base(host, options, timeout), host, command],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if res.returncode != 0:
        raise _fail(host, what, res.returncode, res.stderr)
    return res.stdout


def _check_remote_dir(remote_dir: str) -> None:
    if not REMOTE_DIR_OK.fullmatch(remote_dir):
        raise UsageError(f"remote directory '{remote_dir}' may use only letters, digits and ._/~+-: rename it")


def deploy(host: str, local_files: Sequence[Path], remote_dir: str, *,
           options: Sequence[str] = (), timeout: int = CONNECT_TIMEOUT_S) -> list[str]:
    """Copy files (flat, modes kept) into remote_dir on host, creating it; their remote paths.

    remote_dir is relative to the login's home unless absolute.
    """
    files = [Path(f) for f in local_files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise UsageError(f"cannot deploy {', '.join(missing)}: not found (build first: `edgekit build`)")
    if not files:
        raise UsageError("nothing to deploy: give at least one file")
    _check_remote_dir(remote_dir)
    run(host, f"mkdir -p -- {remote_dir}", options=options, timeout=timeout, what=f"creating {remote_dir}")
    res = subprocess.run([*ssh_base(host, options, timeout, "scp"), "-q", "-p", *map(str, files),
                          f"{host}:{remote_dir}/"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if res.returncode != 0:
        raise _fail(host, f"copying to {remote_dir}", res.returncode, res.stderr)
    return [f"{remote_dir}/{f.name}" for f in files]


def _remote_command(remote_dir: str, argv: Sequence[str]) -> str:
    _check_remote_dir(remote_dir)
    # exec: the runner replaces the shell, so closing the channel reaches it directly
    return f"cd {remote_dir} && exec {' '.join(shlex.quote(a) for a in argv)}"


class _Runner:
    """The ssh process running the board's runner, with its stderr kept for error messages."""

    def __init__(self, cmd: list[str], host: str, name: str):
        self.host, self.name = host, name
        self.err = tempfile.TemporaryFile()
        # own session: Ctrl-C in the terminal reaches only us, and we end ssh in order
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     start_new_session=True)

    def failure(self, what: str) -> Exception:
        self.err.seek(0)
        text = self.err.read().decode(errors="replace")
        rc = self.proc.poll()
        return _fail(self.host, what, rc if rc is not None else -1, text)

    def close(self) -> None:
        """Always end ssh: closing stdin lets the runner see EOF, then TERM, then KILL."""
        p = self.proc
        for stream in (p.stdin, p.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            p.wait(timeout=2)
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.err.close()


def _wait_for(runner: _Runner, token: bytes, timeout: float) -> bytes:
    """Read the runner's stdout until `token` appears; what was read. Fails if ssh ends first."""
    fd, seen, deadline = runner.proc.stdout.fileno(), b"", time.monotonic() + timeout
    while token not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WorkError(f"ssh to {runner.host}: the runner did not answer within {timeout:.0f} s")
        if select.select([fd], [], [], min(left, 0.5))[0]:
            data = os.read(fd, 4096)
            if not data:
                runner.proc.wait(timeout=5)
                raise runner.failure(f"starting `{runner.name}`")
            seen += data
    return seen


def _pump(master: int, out_fd: int, in_fd: int, stop: int) -> None:
    """Copy bytes both ways between the pty master and ssh's pipes until either side ends."""
    while True:
        ready = select.select([master, out_fd, stop], [], [])[0]
        if stop in ready:
            return
        try:
            if out_fd in ready:
                data = os.read(out_fd, 65536)
                if not data:
                    return
                _write_all(master, data)
            if master in ready:
                _write_all(in_fd, os.read(master, 65536))
        except OSError:  # ssh or the pty went away: the context manager's exit cleans up
            return


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


@contextmanager
def start(host: str, remote_dir: str, argv: Sequence[str], *, mode: str = "stdio", remote_port: int = 7707,
          ready: bytes | None = None, options: Sequence[str] = (), timeout: int = CONNECT_TIMEOUT_S,
          ready_timeout: float = READY_TIMEOUT_S) -> Iterator[str]:
    """Run argv in remote_dir on host; yields a pyserial URL that reaches it. ssh ends on exit.

    Waits until the runner prints `ready` on stdout (stdio: the protocol's boot line m-ready;
    like a board that booted before its port was opened, boot lines are not replayed, so hosts
    start with a command). mode "tcp" appends `--tcp remote_port` to argv and waits for the
    runner's m-listening line; the runner then boots the protocol on each connection.
    """
    if mode not in ("stdio", "tcp"):
        raise UsageError(f"unknown link mode '{mode}': use stdio or tcp")
    ready = ready or (b"m-listening" if mode == "tcp" else b"m-ready")
    base = ssh_base(host, options, timeout)
    command = _remote_command(remote_dir, list(argv) + (["--tcp", str(remote_port)] if mode == "tcp" else []))
    if mode == "tcp":
        with socket.socket() as s:  # a free local port; the tiny race with other programs is acceptable
            s.bind(("127.0.0.1", 0))
            local_port = s.getsockname()[1]
        base += ["-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}"]
    runner = _Runner([*base, "-T", host, command], host, " ".join(argv[:2]))
    try:
        _wait_for(runner, ready, ready_timeout)
        if mode == "tcp":
            yield f"socket://127.0.0.1:{local_port}"
        else:
            with _pty_bridge(runner) as url:
                yield url
    finally:
        runner.close()


@contextmanager
def _pty_bridge(runner: _Runner) -> Iterator[str]:
    master, slave = os.openpty()
    tty.setraw(slave)  # bytes pass 1:1: no echo, no CR/LF translation (binary loads go through here)
    stop_r, stop_w = os.pipe()
    pump = threading.Thread(target=_pump, daemon=True,
                            args=(master, runner.proc.stdout.fileno(), runner.proc.stdin.fileno(), stop_r))
    pump.start()
    try:
        # we keep `slave` open ourselves: with no slave open, the master reads EIO between clients
        yield os.ttyname(slave)
    finally:
        os.write(stop_w, b"x")
        pump.join(timeout=5)
        for fd in (master, slave, stop_r, stop_w):
            os.close(fd)
