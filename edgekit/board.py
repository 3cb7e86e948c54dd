"""Reach the board a build directory is for: a given serial URL, the board's emulator, or SSH.

`connect` yields the build's manifest and an open `link.Device` already checked to run this build's
model (by the hash of model.onnx), and always tears down what it started (emulator, ssh)."""
from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from pathlib import Path

from . import target as targets
from .errors import UsageError


def load_build(build_dir: Path) -> tuple[dict, Path]:
    build_dir = Path(build_dir)
    path = build_dir / "manifest.json"
    if not path.is_file():
        raise UsageError(f"{build_dir} is not a build directory (no manifest.json): run `edgekit build` first")
    return json.loads(path.read_text()), build_dir


def program(build_dir: Path, manifest: dict) -> Path:
    """The program the board runs: firmware ELF, or the Linux runner binary (manifest: from load_build)."""
    fw = manifest.get("artifact", {}).get("firmware")
    if not fw:
        raise UsageError(f"{build_dir} holds no firmware for a serial link ({manifest['target']}): "
                         "rebuild it with this version of edgekit")
    return build_dir / fw


def runner_args(manifest: dict, threads: int | None) -> list[str]:
    """The Linux runner's command line: `--threads N` sizes its kernels' thread pool (default: all cores)."""
    if threads is None:
        return []
    if targets.get(manifest["target"]).kind != "linux" or "cuda" in manifest:
        raise UsageError(f"--threads applies to Linux boards' runners, not to {manifest['target']}: drop it")
    if not 1 <= threads <= 64:
        raise UsageError(f"--threads {threads} is out of range: use 1 to 64")
    return ["--threads", str(threads)]


def check_reachable(board, port: str | None, host: str | None) -> None:
    """Fail early, before any build work, when nothing says how to reach the board."""
    if port and host:
        raise UsageError("give --port or --host, not both")
    flasher = board.section("flasher").get("kind")
    if not (port or host or board.emulator or flasher == "local"):
        how = "--host USER@ADDR" if flasher == "ssh" else "--port URL (e.g. /dev/ttyACM0)"
        raise UsageError(f"{board.name} has no emulator: connect the board and pass {how}")


@contextmanager
def connect(build_dir: Path, port: str | None = None, host: str | None = None, timeout: float = 5.0,
            threads: int | None = None):
    """(manifest, Device, source): source is 'emulator' when edgekit started the board's emulator.
    threads: the runner's --threads, where edgekit starts the runner (emulator, local, SSH)."""
    from .flash import emulate
    from .link import Device

    manifest, build_dir = load_build(build_dir)
    board = targets.get(manifest["target"])
    args = runner_args(manifest, threads)
    check_reachable(board, port, host)
    if port and args:
        raise UsageError("--threads is given to a runner edgekit starts: with --port, start it with --threads yourself")
    if host:
        where, source = _ssh(build_dir, manifest, host, args), "device"
    elif port:
        where, source = nullcontext(port), "device"
    elif board.emulator:
        where, source = emulate(board, program(build_dir, manifest), args=args), "emulator"
    else:  # a board that runs on this machine (check_reachable let nothing else through)
        from .flash import run_local
        where, source = run_local(program(build_dir, manifest), args=args), "device"
    with where as url, Device(url, timeout=timeout) as dev:
        dev.check_model(manifest["model_sha256"])
        yield manifest, dev, source


RUNNER_PORT = 7707  # where `edgekit flash --host` leaves the runner listening on the board


def _remote_program(build_dir: Path, manifest: dict) -> tuple[list[Path], list[str], str]:
    """(files to copy, runner argv, remote directory) of a Linux or Jetson build."""
    art = manifest["artifact"]
    remote_dir = f"edgekit/{build_dir.resolve().name}"
    if "cuda" in manifest:
        from .cuda import deploy_files, runner_argv
        return deploy_files(build_dir, art), runner_argv(art), remote_dir
    if targets.get(manifest["target"]).kind != "linux":
        raise UsageError(f"{manifest['target']} is not a Linux board: flash it with pyocd or use its emulator")
    fw = program(build_dir, manifest)
    return [fw], [f"./{fw.name}"], remote_dir


def _ssh(build_dir: Path, manifest: dict, host: str, args: list[str]):
    from . import remote
    files, argv, remote_dir = _remote_program(build_dir, manifest)
    remote.deploy(host, files, remote_dir)
    return remote.start(host, remote_dir, argv + args)


def install(build_dir: Path, host: str, port: int = RUNNER_PORT, threads: int | None = None) -> str:
    """Copy a build to a Linux board over SSH and leave its runner serving on TCP `port` (replacing the one
    a previous flash left); returns the pyserial URL that reaches it."""
    import shlex
    from . import remote
    manifest, build_dir = load_build(build_dir)
    files, argv, remote_dir = _remote_program(build_dir, manifest)
    remote.deploy(host, files, remote_dir)
    cmd = " ".join(map(shlex.quote, [*argv, *runner_args(manifest, threads), "--tcp", str(port)]))
    remote.run(host, f"cd {remote_dir} && {{ [ -f runner.pid ] && kill $(cat runner.pid) 2>/dev/null; sleep 0.2; "
                     f"nohup {cmd} > runner.log 2>&1 < /dev/null & echo $! > runner.pid; }}")
    return f"socket://{host.rsplit('@', 1)[-1]}:{port}"
