"""Tuning: TVM MetaSchedule over a model's kernels, each candidate measured on the board (measure.py), the
best kept in a database per target that codegen reads at build time. Records are keyed by the kernel's
workload (its PrimFunc, structurally), so models that share a layer shape share its records."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import types
from pathlib import Path

from ..errors import checkpoint, warn

TRIALS_PER_ROUND = 8      # candidates built and measured together, per kernel in turn
DEFAULT_TRIALS = 64       # per kernel, when neither trials nor minutes is given
CONFIRM_SHARE = 0.15      # of a timed tune on a Linux board, kept for the finals of each kernel's schedules (_confirm)
FINAL_ROUNDS = 3          # measurements of each finalist, side by side
SEED_MARGIN = 0.05        # how much faster than the first seed, in the finals, a schedule must be to replace it
STACK_TILE_BYTES = 65536  # Linux boards: tiles up to this size live on the (megabyte) thread stacks


def c_target(board) -> dict:
    """The TVM target edgekit's C generator lowers for on this board (codegen.generate's)."""
    return {"kind": "c", **({"mcpu": board.core} if board.core else {})}


def stack_bytes(board) -> int:
    """MCUs keep every tile in the planned arena, where the memory report counts it."""
    return STACK_TILE_BYTES if board.kind == "linux" else 0


def database_dir(target: str, db: Path | None = None) -> Path:
    if db is not None:
        return Path(db)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "edgekit" / "tuning" / target


WORKLOADS, RECORDS = "workloads.json", "records.json"


def _repair(path: Path) -> None:
    """Drop a last line cut short (the process killed while appending it): the rest stays readable."""
    if not path.exists():
        return
    lines = path.read_bytes().splitlines(keepends=True)
    good = []
    for line in lines:
        try:
            json.loads(line)
            good.append(line if line.endswith(b"\n") else line + b"\n")
        except ValueError:
            break
    if len(good) != len(lines) or (lines and not lines[-1].endswith(b"\n")):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(good))
        os.replace(tmp, path)


def open_database(path: Path, create: bool = False):
    """The MetaSchedule JSON database in `path` (two append-only files, one JSON value per line), or None
    when there is none and create is False. Records replay the search space's traces: those of another
    version of space.py are set aside (create) or ignored."""
    from tvm.s_tir import meta_schedule as ms
    from . import space
    path = Path(path)
    version = path / "space-version"
    current = (path / RECORDS).exists() and version.exists() and version.read_text().strip() == space.VERSION
    if not create and not current:
        if (path / RECORDS).exists():
            warn(f"the tuning database {path} was made by another edgekit version: run `edgekit tune` again")
        return None
    path.mkdir(parents=True, exist_ok=True)
    if not current:
        for name in (WORKLOADS, RECORDS):
            if (path / name).exists():
                os.replace(path / name, path / f"{name}.old")
        version.write_text(space.VERSION + "\n")
    for name in (WORKLOADS, RECORDS):
        _repair(path / name)
    return ms.database.JSONDatabase(str(path / WORKLOADS), str(path / RECORDS), module_equality="structural")


class Tuned:
    """What codegen asks of the tuning stage: each kernel's best measured schedule, from the first of `databases`
    ((path, database) pairs: the user's, then the records edgekit ships) that has one; on boards with a seed
    (Linux boards), the search's first seed for a kernel not measured yet."""

    def __init__(self, databases: list, target: dict, seed: tuple[int, int] | None = None):
        import tvm
        self.databases, self.target, self.seed = databases, tvm.target.Target(target), seed

    @property
    def path(self) -> Path | None:
        return self.databases[0][0] if self.databases else None

    def seeded(self, func):
        """func's schedule at the board's first seed (a Schedule), or None where the board has none, or the
        template none for func."""
        from ..int8 import fast
        from . import space
        if self.seed is None or fast.is_micro(func):
            return None
        return space.seeded(func, self.seed)

    def record(self, func):
        """(database path, record, its seconds or instructions) that codegen applies to func, or None: the
        fastest (best_record) of the first database with any, but the board's first seed where the finals
        measured it within SEED_MARGIN of that. A kernel timed alone, its caches flushed, is not the kernel in
        its model: a 10-minute tune of V1 a0.75 224 ran 1.08 x its seeds alone (2-core VM, rounds interleaved)."""
        for path, database in self.databases:
            ranked = best_record(database, func, 1 << 30)
            if not ranked:
                continue
            rec, secs, _ = ranked[0]
            seeded = self.seeded(func)
            if seeded is not None:
                seed = str(seeded.trace)
                rec, secs = next(((r, t) for r, t, n in ranked if n >= FINAL_ROUNDS and secs > t * (1 - SEED_MARGIN)
                                  and str(r.trace) == seed), (rec, secs))
            return path, rec, secs
        return None

    def __call__(self, func):
        """(schedule, from the database) for func, or None: codegen's own schedule, measured the fastest, or
        nothing known."""
        import tvm
        from tvm.s_tir import Schedule
        from ..int8 import fast
        found = self.record(func)
        if found is None:
            seeded = self.seeded(func)
            return None if seeded is None else (seeded.mod["main"], False)
        path, rec, _ = found
        if _is_baseline(rec.trace):
            return None
        try:
            block = _annotation(rec.trace, MICRO_BLOCK)
            if block is not None:
                return fast.schedule(func, tuple(int(b) for b in block)), True
            sch = Schedule(tvm.IRModule({"main": func}))
            rec.trace.apply_to_schedule(sch, remove_postproc=False)
        except Exception as e:  # noqa: BLE001 (TVM's error types) a record this TVM cannot replay: not a wrong kernel
            warn(f"a record in {path} does not apply ({str(e).strip().splitlines()[-1][:120]}): "
                 "that kernel keeps codegen's schedule")
            return None
        return sch.mod["main"], True


def best_record(database, func, leaders: int = 1):
    """(record, seconds or instructions) of func's fastest schedule in database, or None; leaders > 1: a list of
    the fastest few, each with how many times it was measured. A schedule (a trace) measured once or twice
    counts at the slowest median of its measurements: on a shared machine one can run fast by chance. From
    FINAL_ROUNDS measurements on it counts at their median: _confirm measures the finalists side by side that
    often, so a slow spell of the machine during one of them (a 2-core VM's speed drifts by up to 30 % within
    minutes) does not decide either (on an emulator every measurement of a schedule is the same)."""
    import statistics
    import tvm
    from .measure import seconds
    mod = tvm.IRModule({"main": func})
    if not database.has_workload(mod):
        return None
    schedules = {}
    for rec in database.get_top_k(database.commit_workload(mod), 1 << 30):
        if rec.run_secs:
            schedules.setdefault(str(rec.trace), (rec, []))[1].append(seconds(rec))
    ranked = sorted(((rec, statistics.median(t) if len(t) >= FINAL_ROUNDS else max(t), len(t))
                     for rec, t in schedules.values()), key=lambda s: s[1])
    if leaders > 1:
        return ranked[:leaders]
    return ranked[0][:2] if ranked else None


def shipped_dir(target: str) -> Path:
    """Records edgekit ships for a target (targets/tuning/<target>/), measured on its emulator, exact: a tuning
    database whose workloads file is gzipped (TVM's JSON of each kernel is large and repetitive)."""
    from ..target import TARGETS_DIR
    return TARGETS_DIR / "tuning" / target


def open_shipped(target: str):
    """The shipped database, or None. JSONDatabase reads its files when it is made, so they are unpacked into a
    temporary folder for that moment only (nothing is ever committed to it)."""
    import gzip
    import shutil
    import tempfile
    src = shipped_dir(target)
    if not (src / RECORDS).exists():
        return None
    with tempfile.TemporaryDirectory(prefix="edgekit-shipped-") as d:
        (Path(d) / WORKLOADS).write_bytes(gzip.decompress((src / f"{WORKLOADS}.gz").read_bytes()))
        for name in (RECORDS, "space-version"):
            shutil.copyfile(src / name, Path(d) / name)
        return open_database(Path(d))


def pack(src: Path, dst: Path) -> None:
    """Database src as shipped records in dst: each kernel's best record only, the workloads gzipped."""
    import gzip
    import shutil
    best = {}
    for line in (Path(src) / RECORDS).read_text().splitlines():
        workload, (_, secs, *_) = rec = json.loads(line)
        if workload not in best or sum(secs) / len(secs) < sum(best[workload][1][1]) / len(best[workload][1][1]):
            best[workload] = rec
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / RECORDS).write_text("".join(json.dumps(best[w], separators=(",", ":")) + "\n" for w in sorted(best)))
    (dst / f"{WORKLOADS}.gz").write_bytes(gzip.compress((Path(src) / WORKLOADS).read_bytes(), mtime=0))
    shutil.copyfile(Path(src) / "space-version", dst / "space-version")


def tuned_for(board, db: Path | None = None) -> Tuned | None:
    """The tuning codegen applies on `board`: database `db`, or the user's (database_dir) then edgekit's
    shipped records."""
    path = database_dir(board.name, db)
    databases = [(p, d) for p, d in ((path, open_database(path)),
                                     (shipped_dir(board.name), None if db else open_shipped(board.name)))
                 if d is not None]
    seed = first_seed(board)
    return None if not databases and seed is None else Tuned(databases, c_target(board), seed)


def first_seed(board) -> tuple | None:
    """The seed a build uses for kernels without records, on Linux boards; None on MCUs, whose builds keep
    codegen's small arena."""
    from . import space
    return space.seeds(board)[0] if board.kind == "linux" else None


def signature(func) -> tuple:
    """A kernel's parameters (shapes, dtypes): what its candidates keep, scheduled or not."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    return tuple(str(a.as_json()) for a in ArgInfo.from_prim_func(func))


def workspace_limits(mod, board) -> dict:
    """MCUs keep every tile in the arena (stack_bytes 0): for each kernel signature, the arena bytes its
    workspace may take without growing the arena of the untuned build, i.e. what is free there while it runs
    (at the least free of its calls), or its untuned workspace where that is more."""
    from ..codegen import _buffers
    from ..codegen.emit import ALIGN
    from ..codegen.lower import lower
    from ..codegen.plan import align_up, plan
    prog = lower(mod, target=c_target(board))
    bufs, keys = _buffers(prog)
    arena = plan(bufs, align=ALIGN).arena_bytes
    limits = {}
    for i, c in enumerate(prog.calls):
        live = sum(align_up(b.size, ALIGN) for b, k in zip(bufs, keys) if b.first <= i <= b.last and isinstance(k, str))
        sig, own = signature(prog.kernels[c.kernel].func), prog.kernels[c.kernel].workspace_bytes
        limits[sig] = min(limits.get(sig, arena), max(arena - live, own))
    return limits


def tasks(mod) -> list[tuple[str, object, int]]:
    """(name, PrimFunc, calls) for each kernel the search space covers, in model order."""
    from ..codegen.lower import _fuse, _is_scheduled
    from .space import tunable
    mod = _fuse(mod)
    calls = {}
    for blk in mod["main"].body.blocks:
        for b in blk.bindings:
            if getattr(b.value, "op", None) is not None and getattr(b.value.op, "name", "") == "relax.call_tir":
                name = b.value.args[0].name_hint
                calls[name] = calls.get(name, 0) + 1
    return [(n, mod[n], c) for n, c in calls.items() if not _is_scheduled(mod[n]) and tunable(mod[n])]


def tune_model(target: str, cfg=None, model: Path | None = None, weights: Path | None = None,
               quantize: str | None = None, calibration: Path | None = None, *, trials: int | None = None,
               minutes: float | None = None, db: Path | None = None, port: str | None = None,
               host: str | None = None, tracker: str | None = None, key: str | None = None,
               stage=lambda s: None, progress=None) -> dict:
    """`edgekit tune`: the model through the same front end as `edgekit build`, then tune()."""
    import tempfile
    from .. import target as targets
    from ..build import check_inputs, front_end
    from ..errors import UsageError, checkpointed
    from ..models import ModelConfig
    board = targets.get(target)
    check_inputs(board, model, weights, quantize, calibration, None)
    stage = checkpointed(stage)
    if board.kind == "cuda":
        raise UsageError(f"edgekit tune measures edgekit's C kernels: {board.name} runs TVM's CUDA build, "
                         "which it does not tune yet")
    if port and (board.kind != "mcu" or board.section("flasher").get("kind") != "pyocd"):
        raise UsageError(f"--port tunes a microcontroller board flashed with pyocd, on its serial port; "
                         f"{board.name} is not one" + (" (it is tuned on its emulator: drop --port)"
                                                       if board.kind == "mcu" else ""))
    if sum(map(bool, (port, host, tracker))) > 1:
        raise UsageError("give one of --port (an MCU board), --host (a Linux board over SSH) or --tracker "
                         "(Linux boards behind a TVM RPC tracker), not several")
    if tracker and (not key or ":" not in tracker):
        raise UsageError("--tracker takes HOST:PORT, with --key naming the boards (rpc_server --key)")
    if (tracker or host) and board.kind != "linux":
        raise UsageError(f"--{'tracker' if tracker else 'host'} reaches Linux boards; {board.name} is tuned on its "
                         f"emulator (drop --{'tracker' if tracker else 'host'})")
    if (trials is not None and trials < 1) or (minutes is not None and minutes <= 0):
        raise UsageError("--trials and --minutes must be positive")
    cfg = None if model is not None else (cfg or ModelConfig())
    with tempfile.TemporaryDirectory(prefix="edgekit-front-") as d:
        mod, manifest = front_end(Path(d), board, cfg, model, weights, quantize, calibration, stage)
    stage("measure the untuned kernels")
    result = tune(board, mod, trials=trials, minutes=minutes, db=db, tracker=tracker, key=key, host=host,
                  port=port, progress=progress)
    return {"target": board.name, **{k: manifest.get(k) for k in ("arch", "alpha", "resolution", "macs", "params")},
            "source": "emulator" if board.kind == "mcu" and not port else "device", "unit": unit(board, port),
            **result}


def unit(board, port: str | None = None) -> str:
    """What measurements count: instructions on an emulated MCU, cycles on a real one, seconds elsewhere."""
    return "s" if board.kind != "mcu" else "cycles" if port else "instructions"


def tune(board, mod, trials: int | None = None, minutes: float | None = None, db: Path | None = None,
         tracker: str | None = None, key: str | None = None, host: str | None = None, port: str | None = None,
         progress=None) -> dict:
    """Search each kernel's schedule, measuring on `board` (here, through `tracker` with `key`, over SSH at
    `host`, at serial `port`, or on its emulator), until `trials` candidates in all or `minutes` have passed. Every measured
    record goes into the database as it comes, so an interrupted run (KeyboardInterrupt, which SIGTERM becomes
    in the CLI) keeps them. progress(dict) hears of each round. Returns the per-kernel table (untuned and
    tuned latency)."""
    import tvm
    from ..compiler import for_board
    from ..int8 import fast
    from . import measure, space

    mod = for_board(mod, board)
    found = tasks(mod)
    if not found:
        return {"database": str(database_dir(board.name, db)), "kernels": [], "trials": 0, "seconds": 0.0}
    path = database_dir(board.name, db)
    database = open_database(path, create=True)
    target = tvm.target.Target(c_target(board))
    if trials is None and minutes is None:
        trials = DEFAULT_TRIALS * len(found)
    deadline = time.monotonic() + minutes * 60 if minutes else None
    stop = []

    def on_signal(signum, frame):  # finish the round in flight, then stop: its records are worth keeping
        stop.append(signum)
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, previous[s])

    jobs = max(1, min(4, os.cpu_count() or 1))
    t0 = time.monotonic()
    with measure.work_dir() as work:
        limits = workspace_limits(mod, board) if board.kind == "mcu" else None
        builder = measure.CandidateBuilder(board, Path(work), jobs, firmware=host is not None, limits=limits)
        runner = measure.runner(board, tracker, key, jobs, host, port)
        previous = {}
        try:
            untuned = _untuned(found, builder, runner, target)
            # heaviest first: a short tune spends its rounds where the model spends its time
            found.sort(key=lambda t: -(untuned.get(t[0]) or float("inf")) * t[2])
            blocked = [t for t in found if fast.is_micro(t[1])]
            searched = [t for t in found if not fast.is_micro(t[1])]
            for n, f, _ in found:  # codegen's own schedule competes too: where the search cannot beat it, it stays
                if untuned.get(n) is not None:  # (a micro-kernel convolution's is its template's default block)
                    mark, value = (MICRO_BLOCK, list(fast.blocks(f)[0])) if fast.is_micro(f) else (BASELINE, 1)
                    _commit(database, f, mark, value, untuned[n], target)
            checkpoint()  # a signal deferred while TVM ran the measurements (errors.PENDING_SIGNALS)
            _commit_seeds(searched, space.seeds(board), builder, runner, database, target)
            checkpoint()
            report = measure.Progress(found, untuned, trials, deadline, stop, progress, unit(board, port),
                                      reserve=minutes * 60 * CONFIRM_SHARE if minutes and board.kind == "linux" else 0)
            _measure_blocks(blocked, builder, runner, database, target, trials, report)
            left = None if trials is None else trials - report.done
            if searched and not report.over() and (left is None or left > 0):
                _search(searched, target, jobs, left, builder, runner, database, report, work, on_signal, previous)
            if report.reserve:
                report.reserve = 0.0
                _confirm(searched, first_seed(board), builder, runner, database, target, report)
        finally:
            for s, h in previous.items():
                if signal.getsignal(s) is on_signal:
                    signal.signal(s, h)
            _close(runner)
    if stop:
        raise KeyboardInterrupt
    table = _table(found, untuned, Tuned([(path, open_database(path))], c_target(board), first_seed(board)))
    return {"database": str(path), "kernels": table, "trials": report.done, "seconds": time.monotonic() - t0}


def _confirm(found, seed, builder, runner, database, target, report) -> None:
    """The finals of each kernel: its two fastest schedules (best_record) and its schedule at the board's first
    seed (what a build uses for a kernel without records), measured side by side until each has FINAL_ROUNDS
    measurements (or the time is up, or a signal came): a timed tune's last CONFIRM_SHARE. Without them, a
    schedule measured in a fast spell of the machine could beat seeds measured in a slow one: a tuned V2 0.35
    224 once ran 3.09 ms where its seeds alone ran 2.62 (2-core VM, same run)."""
    import tvm
    from tvm.s_tir import Schedule
    from ..codegen.lower import own_schedule
    from . import space
    # once: the same schedule every round (None: the template has none at the seed)
    seeded_traces = [None if (sch := space.seeded(f, seed)) is None else sch.trace for _, f, _ in found]
    for _ in range(FINAL_ROUNDS):
        todo = []
        for (_, f, _), seeded in zip(found, seeded_traces):
            ranked = {str(rec.trace): (rec.trace, n) for rec, _, n in best_record(database, f, 1 << 30) or []}
            finalists = dict(list(ranked.items())[:2])
            if seeded is not None:
                finalists.setdefault(str(seeded), ranked.get(str(seeded), (seeded, 0)))
            todo += [(f, t) for t, n in finalists.values() if n < FINAL_ROUNDS]
        if not todo or report.over():
            return
        funcs = []
        for f, trace in todo:
            if _is_baseline(trace):
                funcs.append(own_schedule(f, builder.threads)[0])
                continue
            sch = Schedule(tvm.IRModule({"main": f}))
            trace.apply_to_schedule(sch, remove_postproc=False)
            funcs.append(sch.mod["main"])
        for (f, trace), secs in zip(todo, _measure(funcs, builder, runner, target)):
            if secs is not None:
                _commit_trace(database, f, trace, secs, target)
        checkpoint()


def _search(found, target, jobs, trials, builder, runner, database, report, work, on_signal, previous) -> None:
    """MetaSchedule's evolutionary search over space.schedule for each kernel, `trials` candidates in all
    (None: until report says stop), its cost model learning from every measurement."""
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from . import space
    mutators = {ms.mutator.MutateTileSize(): 1.0}
    with _without_tensor_intrinsics():
        contexts = [ms.TuneContext(tvm.IRModule({"main": f}), target=target, task_name=n, num_threads=jobs,
                                   space_generator=ms.space_generator.ScheduleFn(
                                       space.schedule, sch_rules=[], postprocs=[], mutator_probs=mutators),
                                   search_strategy=ms.search_strategy.EvolutionarySearch(
                                       population_size=128, init_measured_ratio=0.1))
                    for n, f, _ in found]
    # from here a signal lets the round in flight finish: TVM's loop would turn an exception into its own
    previous.update({s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)})
    checkpoint()  # one that came while the search was set up, deferred (inside TVM) or not
    ms.tune_tasks(tasks=contexts, task_weights=[float(c) for _, _, c in found], work_dir=str(work),
                  max_trials_global=trials or 10 ** 6, num_trials_per_iter=TRIALS_PER_ROUND,
                  builder=builder, runner=runner, database=database, cost_model="xgb",
                  measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), report],
                  task_scheduler="round-robin")


@contextlib.contextmanager
def _without_tensor_intrinsics():
    """TuneContext imports tvm.s_tir.tensor_intrin only to register the tensor intrinsics that tensorize rules
    use (wmma, VNNI, ARM dot). This space has no such rule, and the import costs about 20 s of a tune's time
    (its ~500 TVMScript parses each inspect the whole stack). An empty module stands in while the contexts are
    made, then goes, so a later real import in this process still works."""
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        yield
        return
    stand_in = sys.modules[name] = types.ModuleType(name)
    try:
        yield
    finally:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]


def _measure_blocks(found, builder, runner, database, target, trials, report) -> None:
    """The int8 micro-kernel convolutions (int8.fast): a space of a few register blocks each, so every block is
    measured and recorded (the default one was, untuned), heaviest kernel first, a round at a time until
    `trials` or report says stop."""
    from ..int8 import fast
    queue = [(n, f, b) for n, f, _ in found for b in fast.blocks(f)[1:]]
    while queue and not report.over() and (trials is None or report.done < trials):
        size = TRIALS_PER_ROUND if trials is None else min(TRIALS_PER_ROUND, trials - report.done)
        batch, queue = queue[:size], queue[size:]
        secs = _measure([fast.schedule(f, b) for _, f, b in batch], builder, runner, target)
        for (n, f, b), t in zip(batch, secs):
            if t is not None:
                _commit(database, f, MICRO_BLOCK, list(b), t, target)
            report.update(n, [] if t is None else [t], 1)


def _measure(funcs, builder, runner, target, errors: list | None = None) -> list:
    """Seconds (or instructions) of each PrimFunc as built and run by the tuning's own builder and runner;
    None where it failed to build or run (and its error appended to `errors`)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from . import measure
    built = builder.build([ms.builder.BuilderInput(tvm.IRModule({"main": f}), target) for f in funcs])
    run = runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", ms.arg_info.ArgInfo.from_prim_func(f))
                      for b, f in zip(built, funcs) if b.error_msg is None])
    res, it = [], iter(run)
    for b in built:
        r = next(it).result() if b.error_msg is None else None
        ok = r is not None and r.error_msg is None
        res.append(measure.seconds(r) if ok else None)
        if not ok and errors is not None:
            errors.append(b.error_msg or r.error_msg)
    return res


def _untuned(found, builder, runner, target) -> dict:
    """Each kernel with codegen's own schedule, measured the same way: the table's baseline."""
    from ..codegen.lower import own_schedule
    errors = []
    secs = _measure([own_schedule(f, builder.threads)[0] for _, f, _ in found], builder, runner, target, errors)
    for (n, _, _), t in zip(found, secs):
        if t is None:
            warn(f"{n} could not be measured with codegen's schedule ({errors.pop(0).strip().splitlines()[-1][:200]})")
    return dict(zip([n for n, _, _ in found], secs))


def _commit_seeds(found, seeds, builder, runner, database, target) -> None:
    """The template at each of the board kind's seed tiles (space.seed_tiles), measured and recorded: the
    search's best records start its population, so a short tune starts from tiles that vectorize."""
    from . import space
    schedules = [(f, sch) for _, f, _ in found for seed in seeds if (sch := space.seeded(f, seed)) is not None]
    for (f, sch), secs in zip(schedules, _measure([s.mod["main"] for _, s in schedules], builder, runner, target)):
        if secs is not None:
            _commit_trace(database, f, sch.trace, secs, target)


BASELINE = "edgekit.codegen_schedule"  # a record for the kernel as codegen schedules it (shrink)
MICRO_BLOCK = "edgekit.micro_block"    # a record for an int8 micro-kernel convolution at this register block


def _commit(database, func, key: str, value, seconds: float, target) -> None:
    """A record of a schedule that is not a replayable trace (codegen's own, a micro-kernel template's): a trace
    that only annotates the root block with key = value (MetaSchedule skips records whose trace is empty)."""
    import tvm
    from tvm.s_tir import Schedule
    sch = Schedule(tvm.IRModule({"main": func}))
    sch.annotate(sch.get_sblock("root"), key, value)
    _commit_trace(database, func, sch.trace, seconds, target)


def _commit_trace(database, func, trace, seconds: float, target) -> None:
    """A record of func scheduled by trace, measured at `seconds` (or instructions)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms
    database.commit_tuning_record(ms.database.TuningRecord(
        trace, database.commit_workload(tvm.IRModule({"main": func})), [seconds], target,
        ms.arg_info.ArgInfo.from_prim_func(func)))


def _annotation(trace, key: str):
    """The value a record's trace annotates the root block with under key, or None."""
    return next((i.inputs[1] for i in trace.insts if i.kind.name == "Annotate" and str(i.attrs[0]) == key), None)


def _is_baseline(trace) -> bool:
    return _annotation(trace, BASELINE) is not None


def is_baseline(func) -> bool:
    """func is that record's trace applied: its root block carries the mark."""
    from tvm.s_tir import Schedule
    sch = Schedule(func)
    return BASELINE in sch.get(sch.get_sblock("root")).annotations


def _close(runner) -> None:
    """Runner worker processes (TVM's local and RPC runners keep a pool) end with the tune, however it ends;
    the firmware runner ends its QEMUs (or ssh sessions) within each run."""
    pool = getattr(runner, "pool", None)
    if pool is not None:
        pool.shutdown()


def _table(found, untuned, tuned) -> list[dict]:
    rows = []
    for n, f, calls in found:
        _, rec, best = tuned.record(f) or (None, None, None)
        block = None if rec is None else _annotation(rec.trace, MICRO_BLOCK)
        schedule = "codegen" if rec is None or _is_baseline(rec.trace) else \
            "template" if block is None else "block {}x{}".format(*block)
        rows.append({"kernel": n, "calls": calls, "untuned": untuned.get(n), "tuned": best, "schedule": schedule})
    total = sum((r["tuned"] or r["untuned"] or 0) * r["calls"] for r in rows) or 1.0
    for r in rows:
        r["share"] = (r["tuned"] or r["untuned"] or 0) * r["calls"] / total
    return rows
