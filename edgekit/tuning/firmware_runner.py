"""Candidates measured in a one-kernel edgekit firmware (the ordinary generated model code, protocol core and
board port), timed through the serial link: on a Cortex-M board's emulator in instructions, on a real Cortex-M
board (flashed per candidate, reached on its serial port) in its counter's cycles, or on a Linux board over SSH
in seconds.

The emulated firmware's counter is SysTick, which under -icount shift=0 ticks every 40 instructions at a phase
set by when the host's command arrived, so a count varies by a tick from run to run. The measurement program
first calls a sync function that writes SysTick's current value register: QEMU restarts the tick period at that
write, so the kernel after it runs at a fixed phase and its count (ek-profile's figure for that layer, a
multiple of 40) repeats exactly."""
from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.runner import PyRunner, PyRunnerFuture, RunnerResult

from .. import target as targets
from ..errors import UsageError, checkpoint

SYNC = "ek_tick_sync"
SYNC_C = f"""\
int32_t {SYNC}(void *self, void *args, int32_t num_args, void *result) {{
  volatile uint32_t *cvr = (volatile uint32_t *)0xE000E018u;  /* SYST_CVR */
  *cvr = 0;              /* QEMU restarts the tick period here: the phase is now this instruction's */
  while (*cvr == 0) {{}}  /* until the reload (the count steps back there): from then on it runs on as usual */
  return 0;
}}
"""


def _data(shape, dtype: str, rng) -> np.ndarray:
    """Fixed pseudo-random values; integers small, as they may be indices or shifts."""
    if np.dtype(dtype).kind == "f":
        return rng.uniform(-1, 1, shape).astype(dtype)
    return rng.integers(0, 2 if dtype == "bool" else 3, shape).astype(dtype)


def program(source: str, symbol: str, workspace_bytes: int, helpers: str, args, sync: str = SYNC_C,
            parallel_extent: int = 0):
    """The measurement program: the sync call (its 4-byte input and output unused), then the kernel on
    constants (every argument but the last) and the output (the last); on a Linux board, its outer loop of
    parallel_extent iterations split across threads as in a model."""
    from ..codegen.lower import Call, Kernel, Program, Tensor
    rng = np.random.default_rng(0)
    *ins, (out_shape, out_dtype) = args
    tensors = [Tensor("tick", (1,), "int32", "input"), Tensor("synced", (1,), "int32", "act"),
               *(Tensor(f"a{i}", tuple(s), str(d), "const", _data(s, str(d), rng)) for i, (s, d) in enumerate(ins)),
               Tensor("out", tuple(out_shape), str(out_dtype), "output")]
    kernels = {SYNC: Kernel(SYNC, sync, 0), "kernel": Kernel(symbol, source, workspace_bytes, helpers=helpers,
                                                            parallel_extent=parallel_extent)}
    calls = [Call("synced", SYNC, ["tick", "synced"]), Call("out", "kernel", [t.name for t in tensors[2:]])]
    return Program({t.name: t for t in tensors}, calls, kernels, "tick", "out")


# Real boards have no emulated SysTick to align: their counter (DWT cycles, the OS clock) runs on its own, and
# the least of several calls is the figure
SYNC_NONE = f"int32_t {SYNC}(void *self, void *args, int32_t num_args, void *result) {{ return 0; }}\n"
DEVICE_RUNS = 25


def measure(target_name: str, source: str, symbol: str, workspace_bytes: int, helpers: str, args,
            runs: int = 2, build_dir: str | None = None, host: str | None = None, port: str | None = None,
            parallel_extent: int = 0) -> float:
    """One kernel's cost per call, built into a one-kernel firmware for the target: on its emulator,
    instructions (QEMU -icount shift=0, not cycles), the fewest of `runs` (they agree); on a real MCU flashed
    through its flasher and reached at `port`, its counter's cycles; on a Linux board reached over SSH (host,
    USER@ADDR), seconds; both the least of DEVICE_RUNS calls. args: (shape, dtype) of each argument, the output
    last; the inputs hold fixed pseudo-random values. The firmware is built in a temporary directory under
    build_dir (its name also names the board's copy, so that it can be killed)."""
    from ..codegen import write
    from ..firmware import build_firmware
    from ..flash import emulate
    from ..link import Device
    board = targets.get(target_name)
    if host is not None and board.kind != "linux":
        raise UsageError(f"{target_name} is not a Linux board: it is not measured over SSH")
    if port is not None and board.kind != "mcu":
        raise UsageError(f"{target_name} is not a microcontroller board: it is not measured on a serial port")
    if host is None and port is None and ((board.emulator or {}).get("kind") != "qemu-system" or
                                          board.section("firmware").get("timer") != "systick"):
        raise UsageError(f"{target_name} is not a Cortex-M board emulated in QEMU with a SysTick counter")
    emulated = host is None and port is None
    with tempfile.TemporaryDirectory(prefix="edgekit-measure-", dir=build_dir) as tmp:
        write(program(source, symbol, workspace_bytes, helpers, args, SYNC_C if emulated else SYNC_NONE,
                      parallel_extent), Path(tmp) / "model", "kernel", board.core, threads=board.kind == "linux")
        digest = hashlib.sha256(source.encode()).hexdigest()
        fw = build_firmware(board, Path(tmp) / "model", "kernel", digest, Path(tmp) / "fw")["firmware"]
        where = emulate(board, fw) if emulated else _over_ssh(host, fw, Path(tmp)) if host else _flashed(board, fw, port)
        with where as url, Device(url) as dev:
            dev.load_input(bytes(4))
            best = min(dev.profile()[1][1] for _ in range(runs if emulated else DEVICE_RUNS))
            return best * 1e-9 if host else best


@contextmanager
def _flashed(board, firmware: Path, port: str):
    """The measurement firmware flashed onto the board (flash.flash_board), then its serial port."""
    from ..flash import flash_board
    flash_board(board, firmware)
    yield port


REMOTE_DIR = "edgekit/tune"  # on the board, under the login's home


def _over_ssh(host: str, program: Path, tmp: Path):
    """The measurement program copied to the board and started there (remote.start: its runner ends with ssh).
    Its folder there is named after the run's and its own local ones (FirmwareRunner.run removes it)."""
    from .. import remote
    remote_dir = f"{REMOTE_DIR}/{tmp.parent.name}/{tmp.name}"
    remote.deploy(host, [program], remote_dir)
    return remote.start(host, remote_dir, [f"./{program.name}"])


def _remove_remote(host: str, remote_dir: str) -> None:
    from .. import remote
    from ..errors import warn
    try:
        remote.run(host, f"rm -rf -- {remote_dir}", what=f"removing {remote_dir}")
    except Exception as e:  # noqa: BLE001 (the measurements stand; only the board's copies are left)
        warn(f"{host}: could not remove {remote_dir} ({e})")


@derived_object
class _Done(PyRunnerFuture):
    def __init__(self, result: RunnerResult):
        super().__init__()
        self.res = result

    def done(self) -> bool:
        return True

    def result(self) -> RunnerResult:
        return self.res


@derived_object
class FirmwareRunner(PyRunner):
    """MetaSchedule runner measuring each candidate in a one-kernel firmware (measure): on the board's emulator,
    run_secs are instruction counts per call (lower is better), not seconds, `jobs` QEMUs at a time; on a real
    MCU at `port`, cycles; on a Linux board over SSH (host), seconds. A real board takes one candidate at a time
    (two would share its cores and caches, or its flash). Candidates are the builder's JSON artifacts
    ({"source", "symbol", "workspace_bytes", "helpers", "parallel_extent"})."""

    def __init__(self, target_name: str, jobs: int = 2, runs: int = 2, host: str | None = None,
                 port: str | None = None):
        super().__init__()
        self.target_name, self.jobs, self.runs, self.host, self.port = target_name, jobs, runs, host, port
        self.board_lock = threading.Lock()

    def run(self, runner_inputs):
        with tempfile.TemporaryDirectory(prefix="edgekit-firmware-") as tmp:
            try:
                return self._run(runner_inputs, tmp)
            finally:
                if self.host:
                    _remove_remote(self.host, f"{REMOTE_DIR}/{Path(tmp).name}")

    def _run(self, runner_inputs, tmp: str):
        # measured before returning: no emulator (or ssh) outlives run(), whatever interrupts the tuner
        with ThreadPoolExecutor(self.jobs) as pool:
            futures = [pool.submit(self._measure, x, tmp) for x in runner_inputs]
            try:
                while wait(futures, timeout=0.1).not_done:
                    checkpoint()  # a signal deferred while TVM was calling this (errors.PENDING_SIGNALS)
                return [_Done(f.result()) for f in futures]
            except BaseException:  # Ctrl-C, SIGTERM (the CLI raises KeyboardInterrupt): stop the rest now
                pool.shutdown(wait=False, cancel_futures=True)
                while not all(f.done() for f in futures):  # again until none is left: a worker may start one late
                    _kill_children(Path(tmp).name)
                    wait(futures, timeout=0.1)
                raise

    def _measure(self, x, tmp: str) -> RunnerResult:
        try:
            art = json.loads(Path(x.artifact_path).read_text())
            args = [(tuple(int(d) for d in a.shape), str(a.dtype)) for a in x.args_info]
            with self.board_lock if self.host or self.port else nullcontext():
                n = measure(self.target_name, art["source"], art["symbol"], art["workspace_bytes"], art["helpers"],
                            args, self.runs, build_dir=tmp, host=self.host, port=self.port,
                            parallel_extent=art.get("parallel_extent", 0))
            return RunnerResult([float(n)], None)
        except Exception as e:  # noqa: BLE001 (a candidate that fails is a result, not an error)
            return RunnerResult(None, f"{type(e).__name__}: {e}")


def _kill_children(tmp: str) -> None:
    """Kill, by pid, this process's children whose command line names tmp (a run's temporary folder): the
    emulators, compilers and ssh sessions of a batch (a board's runner ends with its ssh)."""
    import psutil
    for p in psutil.Process().children(recursive=True):
        try:
            if any(tmp in a for a in p.cmdline()):
                p.kill()
        except psutil.Error:
            pass
