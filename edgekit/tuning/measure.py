"""Candidates measured as they ship: each is edgekit's C for the kernel (codegen.lower.build_kernel, the text
that goes into kernels.c), compiled with the board's own toolchain and flags, and timed on the board.
Linux boards: a shared library TVM's runtime loads (TVM-FFI packed ABI), timed by its time_evaluator here
(LocalRunner) or on boards behind TVM's RPC tracker (RPCRunner); or, over SSH, in a one-kernel firmware run on
the board (firmware_runner.FirmwareRunner). MCUs: the C goes to such a firmware on the emulator, counted in
instructions, or on a real board at its serial port, in its cycles."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from tvm.s_tir import meta_schedule as ms
from tvm.ir.utils import derived_object

from ..errors import checkpoint
from . import c_target, signature, stack_bytes

SYMBOL = "__tvm_ffi_main"  # what TVM's runtime looks up for the module's "main"
TASK = "ek_candidate"      # the kernel itself, in a library: SYMBOL calls it

# The kernel text refers to the TVM-FFI types and backend calls that edgekit's runtime.h declares on the board;
# a library loaded into TVM's runtime takes them from TVM's own headers.
PRELUDE = """\
#define TVM_DLL __attribute__((visibility("default")))
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <tvm/ffi/c_api.h>
#include <tvm/runtime/c_backend_api.h>
"""


def _includes() -> list[str]:
    import tvm
    import tvm_ffi
    return [f"-I{tvm_ffi.libinfo.find_include_path()}", f"-I{Path(tvm.__file__).parent / 'include'}"]


@derived_object
class CandidateBuilder(ms.builder.PyBuilder):
    """Build each candidate into `work_dir`, `jobs` at a time in this process (no worker pool to start)."""

    def __init__(self, board, work_dir: Path, jobs: int = 2, firmware: bool = False, limits: dict | None = None):
        super().__init__()
        self.board, self.work_dir, self.jobs = board, Path(work_dir), jobs
        self.firmware = firmware or board.kind != "linux"  # the kernel's C for FirmwareRunner, not a library
        self.limits = limits or {}  # signature -> the most workspace bytes a candidate may take (workspace_limits)
        # a Linux board's kernel runs its outer loop on threads, as the build's do (behind a tracker, on the
        # RPC server's TVM thread pool: TVM_NUM_THREADS there, the README says)
        self.threads = board.kind == "linux"
        self.count = 0

    def build(self, build_inputs):
        checkpoint()  # a signal deferred while TVM was calling this (errors.PENDING_SIGNALS)
        start, self.count = self.count, self.count + len(build_inputs)
        with ThreadPoolExecutor(self.jobs) as pool:
            return list(pool.map(self._build, build_inputs, range(start, self.count)))

    def _build(self, inp, n):
        from ..codegen.lower import build_kernel, own_schedule, parallel_loop
        from . import is_baseline
        d = self.work_dir / f"candidate{n}"  # one folder each: MetaSchedule removes it once measured
        try:
            d.mkdir()
            func = inp.mod["main"]
            if is_baseline(func):  # the record that stands for codegen's own schedule measures that schedule
                func, par = own_schedule(func, self.threads)
            else:
                par = parallel_loop(func) if self.threads else None
            kernel = build_kernel(func, SYMBOL if self.firmware else TASK, c_target(self.board), par,
                                  stack_bytes=stack_bytes(self.board))
            limit = self.limits.get(signature(func))
            if limit is not None and kernel.workspace_bytes > limit:
                return ms.builder.BuilderResult(None, f"its {kernel.workspace_bytes} B of workspace would grow the "
                                                      f"arena ({limit} B are free while it runs)")
            if self.firmware:
                path = d / "kernel.json"
                path.write_text(json.dumps({"source": kernel.source, "symbol": SYMBOL, "helpers": kernel.helpers,
                                            "workspace_bytes": kernel.workspace_bytes,
                                            "parallel_extent": kernel.parallel_extent}))
                return ms.builder.BuilderResult(str(path), None)
            return ms.builder.BuilderResult(compile_shared(self.board, kernel, d / "kernel"), None)
        except Exception as e:  # noqa: BLE001 (a candidate that fails to build is a result, not an error)
            return ms.builder.BuilderResult(None, f"{type(e).__name__}: {e}")


def compile_shared(board, kernel, stem: Path) -> str:
    """The kernel (built as TASK) as a library whose SYMBOL TVM's runtime calls: through the model's par_run
    where build_kernel split its outer loop (TVM's thread pool then stands in for threads.c's)."""
    from ..codegen.emit import PARALLEL_CALL
    tc = board.data["toolchain"]
    src, lib = stem.with_suffix(".c"), stem.with_suffix(".so")
    call = (f"par_run({TASK}, (const TVMFFIAny *)args, num_args, {kernel.parallel_extent})" if kernel.parallel_extent
            else f"{TASK}(self, args, num_args, result)")
    src.write_text(PRELUDE + kernel.helpers + kernel.source + (PARALLEL_CALL if kernel.parallel_extent else "") +
                   f"\nTVM_DLL int32_t {SYMBOL}(void *self, void *args, int32_t num_args, void *result) {{\n"
                   f"  return {call};\n}}\n")
    cmd = [tc["cc"], *tc.get("cflags", []), "-shared", "-fPIC", *_includes(), "-o", str(lib), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(res.stderr.strip()[-500:])
    return str(lib)


# Each run starts with the kernel's input in cache (the layer before wrote it) and the rest flushed (TVM flushes
# all arguments but the first), as in a model whose weights outgrow the caches. Timed hot, weight-heavy kernels
# look 2-3x faster than they run in the model, so the search would favour tiles that read weights again
# (V2 1.0 224's last pointwise layer on host, weights first: hot 137-178 us, flushed 414-444, in the model
# 348-377; weights read again for each pixel tile: hot 211-256, flushed 651-730).
EVALUATOR = ms.runner.EvaluatorConfig(number=1, repeat=15, min_repeat_ms=0, enable_cpu_cache_flush=True)


def runner(board, tracker: str | None = None, key: str | None = None, jobs: int = 2, host: str | None = None,
           port: str | None = None):
    """Where candidates run: this machine, the boards behind a TVM RPC tracker, a board over SSH (host), an MCU
    board at its serial port, or the board's emulator."""
    from .firmware_runner import FirmwareRunner
    if host or port:
        return FirmwareRunner(board.name, jobs=jobs, host=host, port=port)
    if tracker:
        address, _, tcp = tracker.rpartition(":")
        return ms.runner.RPCRunner(ms.runner.RPCConfig(tracker_host=address, tracker_port=int(tcp), tracker_key=key,
                                                       session_timeout_sec=60),
                                   evaluator_config=EVALUATOR, max_workers=jobs)
    if board.kind == "linux":
        return ms.runner.LocalRunner(timeout_sec=60, evaluator_config=EVALUATOR,
                                     initializer=partial(_threads, default_threads(board)))
    return FirmwareRunner(board.name, jobs=jobs)


def default_threads(board) -> int:
    """The threads a build's runner uses by default on this machine (threads.c: online CPUs, at most the
    board's cores)."""
    cores, online = int(board.data.get("cores") or 0), os.cpu_count() or 1
    return min(online, cores) if cores else online


def _threads(n: int) -> None:
    """The LocalRunner worker's start: candidates run on as many threads as the build will use. TVM's own
    default here would be 1 (it counts physical cores its own way), and a tile good on one thread can split
    badly across two."""
    os.environ["TVM_NUM_THREADS"] = str(n)


def work_dir():
    return tempfile.TemporaryDirectory(prefix="edgekit-tune-")


def seconds(result) -> float:
    """A runner result's median repeat."""
    secs = sorted(float(s) for s in result.run_secs)
    return secs[len(secs) // 2]


@derived_object
class Progress(ms.measure_callback.PyMeasureCallback):
    """After each round: tell progress() how far we are; stop every task when time is up or a signal came."""

    def __init__(self, found, untuned, trials, deadline, stop, progress, unit, reserve: float = 0.0):
        super().__init__()
        self.unit, self.reserve = unit, reserve  # seconds before the deadline that the search leaves to _confirm
        self.best = dict.fromkeys(n for n, _, _ in found)
        self.untuned, self.trials, self.deadline, self.stop, self.progress = untuned, trials, deadline, stop, progress
        self.done, self.t0 = 0, time.monotonic()

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        ok = [seconds(r) for r in runner_results if r.error_msg is None and r.run_secs]
        self.update(task_scheduler.tasks_[task_id].ctx.task_name, ok, len(runner_results))
        if self.over():
            for i, task in enumerate(task_scheduler.tasks_):
                if not task.is_terminated:  # (one whose space ran out ended already; TVM refuses to end it twice)
                    task_scheduler.terminate_task(i)

    def over(self) -> bool:
        """Time is up, or a signal came."""
        return bool(self.stop) or (self.deadline is not None and time.monotonic() >= self.deadline - self.reserve)

    def update(self, name: str, ok: list, measured: int) -> None:
        """`measured` more candidates of kernel `name` ran, `ok` the latencies of those that did not fail."""
        self.done += measured
        if ok and (self.best[name] is None or min(ok) < self.best[name]):
            self.best[name] = min(ok)
        if self.progress:
            left = (self.deadline - time.monotonic()) if self.deadline else None
            self.progress({"trials": self.done, "total": self.trials, "kernel": name, "best": self.best[name],
                           "untuned": self.untuned.get(name), "seconds": time.monotonic() - self.t0,
                           "seconds_left": left, "errors": measured - len(ok), "unit": self.unit})
