"""`edgekit tune`: the search space computes what the untuned kernels compute; a tune over a TVM RPC tracker
with two boards (RPC servers on loopback) fills the database, build applies it and validate passes; an
interrupted tune leaves a database that build still applies, and no process behind."""
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_edgekit
import difftest
from test_differential import depthwise_column_over_a_batch
from test_remote import sshd  # noqa: F401 (a fixture: a private sshd on loopback)
from test_signals import assert_clean_exit, start, wait_for



@pytest.fixture(scope="module")
def block(tmp_path_factory) -> Path:
    """A MobileNet block as ONNX: the stem (3x3 s2, padded), depthwise 3x3, pointwise, pooling, classifier.
    Small, and without TensorFlow, so the CLI tests spend their time tuning."""
    import onnx
    from onnx import helper
    from graphgen import make_model
    rng = np.random.default_rng(0)
    w = lambda *s: rng.uniform(-0.5, 0.5, s).astype(np.float32)  # noqa: E731
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]), n("Relu", ["c1"], ["r1"]),
             n("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=16), n("Relu", ["c2"], ["r2"]),
             n("Conv", ["r2", "w3", "b3"], ["c3"]), n("Relu", ["c3"], ["r3"]),
             n("GlobalAveragePool", ["r3"], ["p"]), n("Flatten", ["p"], ["f"]), n("Gemm", ["f", "w4", "b4"], ["y"])]
    inits = {"w1": w(16, 3, 3, 3), "b1": w(16), "w2": w(16, 1, 3, 3), "b2": w(16), "w3": w(32, 16, 1, 1),
             "b3": w(32), "w4": w(32, 10), "b4": w(10)}
    path = tmp_path_factory.mktemp("block") / "block.onnx"
    onnx.save(make_model(nodes, [1, 3, 48, 48], [1, 10], inits), str(path))
    return path


def _kernels(onnx_model, board=None):
    from edgekit.compiler import for_board, import_onnx
    from edgekit.tuning import tasks
    mod = import_onnx(onnx_model)
    return tasks(for_board(mod, board) if board else mod)


def _assert_points_match(cases, labels, tmp):
    bad = difftest.space_mismatches(cases, labels, tmp)
    assert not bad, "\n".join(bad)


def test_every_point_of_the_space_computes_the_same(onnx_models, tmp_path):
    """Random points of the template (tile sizes, where padding goes, the epilogue under the tile) and its
    seeds against codegen's untuned schedule, on every kernel of a MobileNet V2 (stem, depthwise s1/s2,
    pointwise with and without residual, padded outputs, pooling, the classifier), as imported (NCHW, the
    MCUs') and in a Linux board's layout (NHWC, HWIO weights)."""
    from edgekit import target
    cases, labels = [], []
    for board in (target.get("mps2-an386"), target.get("host")):
        assert (board.name == "host") == ("layout" in board.data["tvm"])  # both layouts are covered
        for name, func, _ in _kernels(onnx_models("v2", 0.35, 64, 10), board):  # the export test_models makes
            c, n = difftest.template_points(func, board, 1, f"{board.name} {name}")
            cases, labels = cases + c, labels + n
    assert len(labels) - labels.count(None) >= 120
    _assert_points_match(cases, labels, tmp_path)


def test_every_point_of_the_space_computes_the_same_on_random_graphs(tmp_path):
    """As above, on every kernel with one reduction of graphgen's seeded graphs (convolutions of any window,
    stride, dilation and grouping, pools, matmuls, batches of several images): the template schedules each (one
    it cannot schedule would keep codegen's), and random points and the seeds compute what codegen's schedule
    does (difftest.space_cases; `make soak` runs more). Seed 7 once made it fuse two loops that were not
    adjacent: the host build failed."""
    from graphgen import graph_from_seed
    from edgekit.errors import UsageError
    cases, labels = [], []
    for seed in range(80):
        try:
            c, n, refused = difftest.space_cases(graph_from_seed(seed, max_ops=8))
        except UsageError:  # an operator TVM does not import
            continue
        assert not refused, (seed, refused)
        cases, labels = cases + c, labels + [lb and f"seed {seed} {lb}" for lb in n]
    assert labels.count(None) >= 60, labels.count(None)
    _assert_points_match(cases, labels, tmp_path)


def test_pixel_tiles_that_cross_rows_compute_the_same(tmp_path):
    """An NCHW pointwise layer (the MCUs' layout) on a 6x10 map, its pixels one axis: tiles of 4, 6 or 12 pixels
    cross rows. When that axis was a fusion of the two map loops, the epilogue under such a tile covered whole
    rows and wrote pixels of other tiles from accumulators it never computed."""
    import onnx
    from onnx import helper
    from tvm import s_tir
    from graphgen import make_model
    from edgekit import target
    from edgekit.codegen.lower import shrink
    from edgekit.tuning import space
    rng = np.random.default_rng(0)
    model = make_model([helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
                       [1, 8, 6, 10], [1, 16, 6, 10], {"w": rng.standard_normal((16, 8, 1, 1)).astype(np.float32),
                                                        "b": rng.standard_normal(16).astype(np.float32)})
    onnx.save(model, str(tmp_path / "pointwise.onnx"))
    (_, func, _), = _kernels(tmp_path / "pointwise.onnx", target.get("mps2-an386"))
    cases, labels, crossing = [(func, shrink(func)[0])], [None], 0
    for seed in range(1, 25):
        sch = s_tir.Schedule(func, seed=seed)
        space.schedule(sch, None)
        tiles = [[int(t) for t in d] for d in sch.trace.decisions.values() if hasattr(d, "__len__")]  # perfect tiles
        crossing += any(o * t == 60 and t % 10 and 10 % t for o, t in tiles)  # the pixels' tile crosses a row
        cases.append((func, sch.mod["main"]))
        labels.append(str(sch.trace))
    assert crossing >= 3, crossing
    _assert_points_match(cases, labels, tmp_path)


def test_a_kernel_the_template_cannot_schedule_keeps_codegens_schedule(monkeypatch):
    # a kernel the template's steps do not fit is no task of the search and builds with codegen's schedule
    from tvm.s_tir.schedule import ScheduleError
    from edgekit import target, tuning
    from edgekit.tuning import space
    host = target.get("host")
    (_, func, _), = _kernels(depthwise_column_over_a_batch(), host)
    tuned = tuning.Tuned([], tuning.c_target(host), tuning.first_seed(host))
    assert space.tunable(func) and tuned(func) is not None

    def unfit(sch, seed=None):
        raise ScheduleError("a kernel these steps do not fit")
    monkeypatch.setattr(space, "schedule", unfit)
    assert not space.tunable(func) and space.seeded(func, space.seeds(host)[0]) is None
    assert tuned(func) is None  # codegen's own schedule
    assert _kernels(depthwise_column_over_a_batch(), host) == []


def test_a_reduction_writing_the_output_accumulates_in_a_local_tile(onnx_models):
    # the classifier's matmul (packed weights, no bias) writes its output directly: accumulating there would
    # load and store the output at every step of the reduction, which gcc cannot keep in registers
    from edgekit import target
    from edgekit.codegen.lower import build_kernel
    from edgekit.tuning import space
    host = target.get("host")
    (func,) = [f for n, f, _ in _kernels(onnx_models("v2", 0.35, 64, 10), host) if n.startswith("matmul")]
    src = build_kernel(space.seeded(func, space.seeds(host)[0]).mod["main"], "k", stack_bytes=65536).source
    assert re.search(r"float \w+_local\[", src), src
    assert not re.search(r"for \(int32_t k = 0;.*\n.*\n\s*matmul\[", src), src


def test_a_tail_tile_leaves_no_branch_in_the_reduction_loop(onnx_models):
    # 6-pixel tiles of a map 6 does not divide: the tail's pixels sit behind a branch, which codegen hoists out
    # of the reduction loop (lower.unswitch_loop): a loop for full tiles and one for the tail, neither branching
    from edgekit import target
    from edgekit.codegen.lower import _block_end, build_kernel, unswitched_loops
    from edgekit.tuning import space
    host = target.get("host")
    checked = 0
    for name, func, _ in _kernels(onnx_models("v2", 0.35, 64, 10), host):
        if not space.tunable(func):
            continue
        kernel = space.seeded(func, space.seeds(host)[0]).mod["main"]
        loops = unswitched_loops(kernel)
        if not loops:
            continue
        src = build_kernel(kernel, "k", stack_bytes=65536).source
        heads = [m.end() for m in re.finditer(rf"for \(int32_t {loops[0]} = 0;[^{{]*\{{", src)]
        bodies = [src[h:_block_end(src, h - 1)] for h in heads]
        assert bodies and not any("if (" in b for b in bodies), (name, bodies)
        checked += len(bodies) == 2  # a tail: full tiles' loop and the tail's (one loop where the tile divides)
    assert checked >= 10, checked


def test_packed_pointwise_weights_follow_the_seeds_channel_tile(tmp_path):
    # the packed weights' channel tile is the seed's (compiler.for_board), which differs on an 11x11 map between
    # tiles that divide it (11 pixels by 1 vector) and flattened ones with a tail (6 by 2)
    import onnx
    from onnx import helper
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from graphgen import make_model
    from edgekit import target
    from edgekit.tuning import space
    host = target.get("host")
    seed = (8, 112, 96)  # AVX2's (space.seeds)
    host.data["tvm"].update(vector_floats=8, vector_registers=16, spare_registers=2)
    assert space.seeds(host)[0] == seed
    rng = np.random.default_rng(0)
    path = tmp_path / "pw.onnx"
    onnx.save(make_model([helper.make_node("Conv", ["x", "w"], ["y"])], [1, 32, 11, 11], [1, 64, 11, 11],
                         {"w": rng.uniform(-1, 1, (64, 32, 1, 1)).astype(np.float32)}), str(path))
    (func,) = [f for n, f, _ in _kernels(path, host) if "packed" in n]
    packed = [int(d) for d in ArgInfo.from_prim_func(func)[1].shape]
    sch = space.seeded(func, seed)
    inner = [int(d[1]) for i, d in sch.trace.decisions.items() if i.kind.name == "SamplePerfectTile"][-1]
    assert packed[-1] == inner == space.seed_channel_tile(11, 11, 64, True, seed) == 16, (packed, inner)


@pytest.mark.parametrize("extents", [[7, 7, 960], [49, 1280], [14, 14, 96], [56, 56, 24], [1, 1000],
                                     [28, 28, 3], [1, 13, 11, 40]])
def test_seed_tiles_take_a_block_of_pixels_that_fits_the_registers(extents):
    # a 7x7 map has no row count between 1 and 7: tiles of one axis only would take one pixel, and load a
    # weight vector for each multiply-add
    from edgekit.tuning import space
    for vector, registers in ((16, 256), (16, 448), (8, 96), (4, 32), (1, 8)):
        tiles = space.seed_tiles(extents, vector, registers)
        assert all(e % t == 0 for e, t in zip(extents, tiles)), tiles
        assert math.prod(tiles) <= max(registers, tiles[-1]), tiles
        assert tiles[-1] % vector == 0 or tiles[-1] == extents[-1] or extents[-1] % vector, tiles
        rows = math.prod(tiles[-3:-1])
        if any(e % r == 0 for e in extents[-3:-1] for r in range(2, registers // tiles[-1] + 1)):
            assert rows > 1, tiles  # a row count that divides the map fits
    assert space.seed_tiles([7, 7, 960], 16, 256) == [1, 7, 32]


def test_seeds_read_the_larger_operand_once(onnx_models):
    # the outer loops' order: a late layer's pointwise weights (hundreds of KB) against its small map go
    # once through the cache, each weight block serving every pixel tile; an early layer's map likewise
    from tvm import s_tir
    from edgekit import target
    from edgekit.tuning import space
    host = target.get("host")
    orders = []
    for name, func, _ in _kernels(onnx_models("v2", 0.35, 64, 10), host):
        sch = space.seeded(func, space.seeds(host)[0])
        (choice,) = [d for i, d in sch.trace.decisions.items() if i.kind.name == "SampleCategorical"
                     and [int(c) for c in i.attrs[0]] == [0, 1]] or [None]  # not a pixel tile (1, 2, ...)
        if choice is None:  # a depthwise convolution, pooling: every outer loop moves over the data
            continue
        fresh = s_tir.Schedule(func)
        block = fresh.get(space.reduction_block(fresh))
        data, weights = (math.prod(int(d) for d in r.source.shape) for r in block.reads[:2])
        orders.append(int(choice))
        assert int(choice) == (weights > data), name
    assert set(orders) == {0, 1}


RUN_ON_TWO_THREADS = """
import sys, numpy as np, tvm
lib, out = sys.argv[1:]
args = [tvm.runtime.tensor(a) for a in np.load(out.replace("out", "args"), allow_pickle=True)]
tvm.runtime.load_module(lib)["main"](*args)
np.save(out, args[-1].numpy())
"""


def test_a_host_candidate_splits_its_outer_loop_across_threads_as_the_build_does(block, tmp_path):
    """Candidates are measured as they ship: the template's parallel loop goes through par_run (TVM's pool, on
    two threads here, standing in for threads.c), and the split kernel computes what the whole one does."""
    import tvm
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from edgekit import target
    from edgekit.tuning import space
    from edgekit.tuning.measure import CandidateBuilder
    host = target.get("host")
    name, func, _ = next(t for t in _kernels(block, host) if "conv" in t[0])
    sch = space.seeded(func, space.seeds(host)[0])
    (built,) = CandidateBuilder(host, tmp_path, 1).build([BuilderInput(sch.mod, tvm.target.Target("c"))])
    assert built.error_msg is None, built.error_msg
    assert "return par_run(ek_candidate" in Path(built.artifact_path).with_suffix(".c").read_text()
    (whole,) = difftest.kernel_outputs([(func, sch.mod["main"])], tmp_path)
    rng = np.random.default_rng(0)
    args = np.empty(len(func.params), object)
    args[:] = [rng.uniform(-1, 1, [int(d) for d in a.shape]).astype(str(a.dtype)) for a in ArgInfo.from_prim_func(func)]
    np.save(tmp_path / "args.npy", args, allow_pickle=True)
    subprocess.run([sys.executable, "-c", RUN_ON_TWO_THREADS, built.artifact_path, str(tmp_path / "out.npy")],
                   check=True, env={**os.environ, "TVM_NUM_THREADS": "2"})
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), whole, rtol=1e-5, atol=1e-6, err_msg=name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tracker():
    """A TVM RPC tracker and two RPC servers ("boards") registered with it under one key, on loopback."""
    port = _free_port()
    py = [sys.executable, "-m"]
    procs = [subprocess.Popen([*py, "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                               "--port-end", str(port + 1), "--silent"], start_new_session=True)]
    try:
        from tvm import rpc
        deadline = time.monotonic() + 60
        while True:
            try:
                rpc.connect_tracker("127.0.0.1", port).summary()
                break
            except Exception:  # noqa: BLE001 (not listening yet)
                assert time.monotonic() < deadline, "the tracker did not start"
                time.sleep(0.3)
        for server in (_free_port(), _free_port()):
            procs.append(subprocess.Popen([*py, "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}", "--key",
                                           "edgekit-test", "--host", "127.0.0.1", "--port", str(server),
                                           "--port-end", str(server + 1), "--silent"], start_new_session=True))
        while sum(q["free"] for q in rpc.connect_tracker("127.0.0.1", port).summary()["queue_info"].values()) < 2:
            assert time.monotonic() < deadline, "the RPC servers did not register"
            time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_tune_through_a_tracker_then_build_applies_it_and_validates(tracker, block, tmp_path):
    model = ["--model", block]
    env_cache = tmp_path / "cache"
    os.environ["XDG_CACHE_HOME"] = str(env_cache)
    try:
        r = run_edgekit("tune", "--target", "host", *model, "--trials", "16", "--tracker", tracker,
                        "--key", "edgekit-test", "--json", timeout=900)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        db = env_cache / "edgekit" / "tuning" / "host"
        assert res["database"] == str(db) and (db / "records.json").stat().st_size > 0
        assert res["trials"] >= 16
        tuned = [k for k in res["kernels"] if k["schedule"] == "template"]
        assert all(k["untuned"] for k in res["kernels"]), r.stderr  # every kernel measured untuned on a board
        assert tuned and all(k["tuned"] <= k["untuned"] for k in res["kernels"])  # codegen's schedule competes
        assert abs(sum(k["share"] for k in res["kernels"]) - 1) < 1e-6

        b = run_edgekit("build", "--target", "host", *model, "--out", tmp_path / "b", "--json")
        assert b.returncode == 0, b.stderr
        t = json.loads(b.stdout)["tuning"]
        assert t["database"] == str(db) and 1 <= t["kernels_tuned"] <= t["kernels"]
        assert t["kernels_tuned"] == len(tuned)
        v = run_edgekit("validate", tmp_path / "b", "--inputs", "3", "--json")
        assert v.returncode == 0 and json.loads(v.stdout)["validation"]["passed"], v.stdout + v.stderr

        plain = run_edgekit("build", "--target", "host", *model, "--out", tmp_path / "p", "--no-tuning", "--json")
        assert json.loads(plain.stdout)["tuning"] == {"database": None, "kernels_tuned": 0, "kernels": t["kernels"]}
    finally:
        del os.environ["XDG_CACHE_HOME"]


def _name(process):
    import psutil
    try:
        return process.name()
    except psutil.NoSuchProcess:  # ended between the listing and the question
        return None


@pytest.mark.soak  # about a minute: SSH tuning shares its runner with --port, which test_tune_firmware covers
def test_tune_over_ssh_then_build_applies_it_and_validates(sshd, block, tmp_path, monkeypatch):
    """A Linux board over SSH (this machine behind a private sshd): each candidate runs in a one-kernel runner
    copied to the board; nothing is left there, nor any ssh here."""
    import psutil
    from test_remote import HOST
    monkeypatch.setenv("EDGEKIT_SSH_OPTIONS", " ".join(sshd["options"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    r = run_edgekit("tune", "--target", "host", "--model", block, "--trials", "4", "--host", HOST, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["source"] == "device" and res["unit"] == "s" and res["trials"] >= 4
    measured = [k for k in res["kernels"] if k["untuned"]]  # a failed measurement is a warning, not an error
    assert len(measured) >= len(res["kernels"]) - 1 and all(0 < k["tuned"] <= k["untuned"] for k in measured), \
        r.stdout + r.stderr
    assert any(k["schedule"] == "template" for k in res["kernels"])  # the seeds, measured on the board
    assert not [p for p in psutil.Process().children(recursive=True) if _name(p) == "ssh"]
    assert not any((Path.home() / "edgekit" / "tune").glob("*"))
    b = run_edgekit("build", "--target", "host", "--model", block, "--out", tmp_path / "b", "--json")
    assert b.returncode == 0 and json.loads(b.stdout)["tuning"]["kernels_tuned"] >= 1, b.stderr
    v = run_edgekit("validate", tmp_path / "b", "--inputs", "3", "--json")
    assert v.returncode == 0 and json.loads(v.stdout)["validation"]["passed"], v.stdout + v.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.soak)],
                         ids=["SIGINT", "SIGTERM"])  # the CLI makes SIGTERM a Ctrl-C (test_signals.py)
def test_interrupted_tune_keeps_a_usable_database_and_no_process(block, tmp_path, sig):
    db = tmp_path / "db"
    p = start(["tune", "--target", "host", "--model", block, "--minutes", "10", "--db", db], tmp_path,
              start_new_session=True)
    records = db / "records.json"
    from edgekit import target
    from edgekit.tuning import BASELINE, space
    host = target.get("host")
    seeded = len(_kernels(block, host)) * len(space.seeds(host))
    searched = lambda: records.exists() and \
        len([ln for ln in records.read_text().splitlines() if BASELINE not in ln]) > seeded  # noqa: E731
    wait_for(searched, p, timeout=600)  # codegen's schedules and the seeds measured, and a first round of the search
    os.killpg(p.pid, sig) if sig == signal.SIGINT else p.send_signal(sig)  # Ctrl-C reaches the whole group
    assert_clean_exit(p)
    from edgekit.tuning import open_database
    assert open_database(db) is not None
    lines = records.read_text().splitlines()
    assert lines and all(json.loads(line) for line in lines)
    b = run_edgekit("build", "--target", "host", "--model", block, "--out", tmp_path / "b", "--db", db, "--json")
    assert b.returncode == 0, b.stderr
    assert json.loads(b.stdout)["tuning"]["database"] == str(db)
    from edgekit import target
    from edgekit.compiler import for_board, import_onnx
    from edgekit.tuning import tasks, tuned_for
    host = target.get("host")
    tuned = tuned_for(host, db)
    kernels = tasks(for_board(import_onnx(tmp_path / "b" / "model.onnx"), host))
    from_records = sum((tuned(f) or (None, False))[1] for _, f, _ in kernels)
    assert from_records >= 1 and json.loads(b.stdout)["tuning"]["kernels_tuned"] == from_records


@pytest.mark.parametrize("model", [("v1", 0.25, 96, 2), pytest.param(("v2", 0.35, 96, 1000), marks=pytest.mark.soak)],
                         ids=["demo VWW", "bench V2 a0.35 96"])  # make demo's; benchmarks/cortexm.py's other (80 s)
def test_shipped_records_apply_to_the_float_models_of_demo_and_bench(model, onnx_models, tmp_path, monkeypatch):
    """edgekit ships tuning records for the float models `make demo` and `make bench` build for mps2-an386
    (targets/tuning/, measured on the emulator, exact): with an empty user cache, a build takes one for every
    kernel, each computes what codegen's schedule does, and its arena stays the untuned build's."""
    from edgekit import target
    from edgekit.codegen import generate
    from edgekit.codegen.lower import shrink
    from edgekit.compiler import for_board, import_onnx
    from edgekit.tuning import _is_baseline, shipped_dir, tasks, tuned_for
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    board = target.get("mps2-an386")
    mod = for_board(import_onnx(onnx_models(*model)), board)
    tuned = tuned_for(board)
    assert tuned.path == shipped_dir(board.name)
    kernels = [f for _, f, _ in tasks(mod)]
    records = [tuned.record(f) for f in kernels]
    assert all(records), f"a kernel of {model} has no shipped record: re-tune it (README, Tuning)"
    better = sum(not _is_baseline(rec.trace) for _, rec, _ in records)
    info = generate(mod, tmp_path / "tuned", "m", mcpu=board.core, tuned=tuned)
    assert better >= 10 and info["kernels_tuned"] == better
    assert info["arena_bytes"] <= generate(mod, tmp_path / "plain", "m", mcpu=board.core)["arena_bytes"]
    cases = [c for f in kernels if (applied := tuned(f)) for c in ((f, shrink(f)[0]), (f, applied[0]))]
    assert len(cases) == 2 * better
    _assert_points_match(cases, [None, "a shipped record"] * better, tmp_path)


def test_every_shipped_database_is_of_this_search_space():
    """Records replay traces of the space they were tuned in: a change to space.py (its VERSION) that leaves
    the shipped ones behind would build every board's demo and bench models untuned, with only a warning."""
    from edgekit.target import TARGETS_DIR
    from edgekit.tuning import open_shipped
    boards = [d.name for d in (TARGETS_DIR / "tuning").iterdir() if d.is_dir()]
    assert {"mps2-an386", "mps2-an500", "mps2-an385"} <= set(boards)
    assert [b for b in boards if open_shipped(b) is None] == [], "re-tune them (README, Tuning)"


def test_a_record_cut_short_is_dropped(tmp_path):
    from edgekit.tuning import RECORDS, _repair
    f = tmp_path / RECORDS
    f.write_text('[0, [1]]\n[1, [2]]\n[2, [')
    _repair(f)
    assert f.read_text() == '[0, [1]]\n[1, [2]]\n'


def test_the_search_is_set_up_without_tvms_tensor_intrinsics_and_leaves_no_stand_in():
    # their import (TVMScript parses that inspect the stack) took 20 s of a tune's minutes; nothing of it may
    # stay in sys.modules, so a later import is the real one. A fresh process: another test may have imported them
    code = ("import sys, tvm\nfrom tvm.s_tir import meta_schedule as ms\n"
            "from edgekit.tuning import _without_tensor_intrinsics\n"
            "with _without_tensor_intrinsics():\n    ms.TuneContext()\n"
            "assert not [m for m in sys.modules if m.startswith('tvm.s_tir.tensor_intrin')]\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_time_up_ends_the_tasks_still_searching_only():
    # a small kernel's space can run out before the deadline; TVM refuses to end a task twice (InternalError)
    from types import SimpleNamespace
    from edgekit.tuning.measure import Progress
    tasks = [SimpleNamespace(is_terminated=t, ctx=SimpleNamespace(task_name=n)) for n, t in (("a", True), ("b", False))]

    def terminate_task(i):  # as TVM's
        assert not tasks[i].is_terminated
        tasks[i].is_terminated = True
    report = Progress([("a", None, 1), ("b", None, 1)], {}, None, time.monotonic() - 1, [], None, "s")
    report._inst.apply(SimpleNamespace(tasks_=tasks, terminate_task=terminate_task), 1, [], [], [])
    assert all(t.is_terminated for t in tasks) and report.done == 0


def test_bad_usage_is_one_line(block, tmp_path):
    for command, args, words in (("tune", ["--tracker", "nohost"], "HOST:PORT"),
                                 ("tune", ["--port", "/dev/null"], "pyocd"), ("tune", ["--trials", "0"], "positive"),
                                 ("tune", ["--host", "a@b", "--tracker", "c:1", "--key", "k"], "not several"),
                                 ("build", ["--db", tmp_path / "nowhere"], "no tuning database"),
                                 ("run", ["--db", tmp_path, "--no-tuning"], "exclude each other")):
        r = run_edgekit(command, "--target", "host", "--model", block, *args)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("machine, flags, simd", [("x86_64", "fpu sse sse2 avx avx2 fma avx512f avx512vl", (16, 32, 2)),
                                                  ("x86_64", "fpu sse sse2 avx avx2 fma", (8, 16, 2)),
                                                  ("x86_64", "fpu sse sse2", (4, 16, 2)), ("aarch64", "", (4, 32, 4))])
def test_host_tiles_for_the_simd_registers_it_has(machine, flags, simd):
    # AVX-512's tiles on an AVX2 machine spill: V2 1.0 160 was 3.6 x ONNX Runtime, seeds only
    from edgekit import target
    from edgekit.tuning import space
    assert target.native_simd(machine, f"processor\t: 0\nflags\t\t: {flags}\n") == simd
    host = target.get("host").data["tvm"]
    assert (host["vector_floats"], host["vector_registers"], host["spare_registers"]) == target.native_simd()
    v, r, spare = host["vector_floats"], host["vector_registers"], host["spare_registers"]
    assert space.seeds(target.get("host"))[0] == (v, (r - spare) * v, (r - 4) * v)  # all registers but the operands
    assert space.seeds(target.get("rpi4"))[0] == (4, 28 * 4, 28 * 4)  # NEON's FMA reads its weights from registers


def test_pointwise_layers_tile_flattened_pixels_with_a_tail_within_the_registers(onnx_models):
    # pointwise layers gained from more accumulators (V2 1.0 224, AVX2: 7 pixels by 2 vectors where 12 took
    # 2x2 by 2); with the pixels flattened, 6 by 2 (12, a tail tile after them) ran 0.85-0.95 x 7 by 2 on 14x14
    # maps. The padded stem lost with more (1.34 x), and the classifier's matrix-vector product reads each
    # weight once whatever its tile: more accumulators there would only leave fewer tiles for the threads
    from tvm import s_tir
    from edgekit import target
    from edgekit.tuning import space
    host = target.get("host")
    seed = (8, 128, 96)  # 16 vectors of accumulators for a tile that must divide the map, 12 for any other
    tiles, tails = {}, []
    for name, func, _ in _kernels(onnx_models("v2", 0.35, 64, 1000), host):  # 1000 classes: 63 weight tiles
        if not space.tunable(func):
            continue
        fresh = s_tir.Schedule(func)
        red = fresh.get(space.reduction_block(fresh))
        padded = any(space._is_padding(fresh.get(b)) for b in fresh.get_producers(space.reduction_block(fresh)))
        out = space._shape(red.writes[0])
        same_map = space._shape(red.reads[0])[1:3] == out[1:3]
        kind = "padded" if padded else "matvec" if name.startswith("matmul") else "pointwise" if same_map else "other"
        tile = 1
        for inst, d in space.seeded(func, seed).trace.decisions.items():
            if inst.kind.name == "SamplePerfectTile":
                tile *= int(d[1])
            elif inst.kind.name == "SampleCategorical" and [int(c) for c in inst.attrs[0]] != [0, 1]:
                pixel_tile = int(inst.attrs[0][int(d)])
                tile *= pixel_tile
                tails.append(out[1] * out[2] % pixel_tile)
        tiles.setdefault(kind, []).append(tile)
    assert tiles["padded"] and tiles["matvec"] and tiles["pointwise"], tiles
    assert max(tiles["padded"] + tiles["matvec"] + tiles["pointwise"]) <= 96, tiles
    assert len(tails) == len(tiles["pointwise"]) and any(tails), tails  # every one flattened, some with a tail
    assert max(tiles["pointwise"]) == 96, tiles  # 6 pixels by 2 vectors, though 6 divides no map here


def test_a_schedule_fast_once_by_chance_loses_to_one_measured_fast_twice(block, tmp_path):
    # a schedule measured once or twice counts at its slowest measurement, from three on at their median
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from edgekit import target
    from edgekit.tuning import best_record, c_target, open_database, space
    host = target.get("host")
    func, lucky, steady = next((f, *ts) for _, f, _ in _kernels(block, host) if space.tunable(f)
                               for ts in [[space.seeded(f, s).trace for s in space.seeds(host)[::2]]]
                               if str(ts[0]) != str(ts[1]))  # two schedules of one kernel
    db = open_database(tmp_path / "db", create=True)
    mod = tvm.IRModule({"main": func})
    tgt = tvm.target.Target(c_target(host))

    def commit(trace, secs):
        db.commit_tuning_record(ms.database.TuningRecord(trace, db.commit_workload(mod), secs, tgt,
                                                         ms.arg_info.ArgInfo.from_prim_func(func)))
    commit(lucky, [1e-3, 1.1e-3, 1.2e-3])
    commit(steady, [2e-3])
    rec, secs = best_record(db, func)
    assert str(rec.trace) == str(lucky) and secs == 1.1e-3  # the median of its repeats
    commit(lucky, [3e-3])
    commit(steady, [2.1e-3])
    rec, secs = best_record(db, func)
    assert str(rec.trace) == str(steady) and secs == 2.1e-3
    assert [(str(r.trace), t, n) for r, t, n in best_record(db, func, leaders=2)] == \
        [(str(steady), 2.1e-3, 2), (str(lucky), 3e-3, 2)]
    commit(lucky, [1.2e-3])  # a third measurement (_confirm's finals): the median counts, not one slow spell
    commit(steady, [2.2e-3])
    assert [(str(r.trace), t, n) for r, t, n in best_record(db, func, leaders=2)] == \
        [(str(lucky), 1.2e-3, 3), (str(steady), 2.1e-3, 3)]


def test_a_schedule_replaces_the_first_seed_only_when_the_finals_find_it_clearly_faster(block, tmp_path):
    """What a build applies (Tuned.record): the board's first seed, measured FINAL_ROUNDS times, stays unless a
    schedule measured at least SEED_MARGIN faster; boards without a seed take the fastest."""
    import tvm
    from edgekit import target
    from edgekit.tuning import FINAL_ROUNDS, SEED_MARGIN, Tuned, _commit_trace, c_target, open_database, space
    host = target.get("host")
    func = next(f for _, f, _ in _kernels(block, host) if space.tunable(f))
    seed, close, clear = [space.seeded(func, s).trace for s in space.seeds(host)]
    db = open_database(tmp_path / "db", create=True)
    tgt = tvm.target.Target(c_target(host))
    seeded = Tuned([(tmp_path / "db", db)], c_target(host), space.seeds(host)[0])
    unseeded = Tuned([(tmp_path / "db", db)], c_target(host))

    def applied(tuned):
        return str(tuned.record(func)[1].trace)
    for _ in range(FINAL_ROUNDS):
        _commit_trace(db, func, close, 1e-3 * (1 - SEED_MARGIN / 2), tgt)
    for _ in range(FINAL_ROUNDS - 1):
        _commit_trace(db, func, seed, 1e-3, tgt)
    assert applied(seeded) == str(close)  # the seed not through the finals yet
    _commit_trace(db, func, seed, 1e-3, tgt)
    assert applied(seeded) == str(seed) and applied(unseeded) == str(close)
    for _ in range(FINAL_ROUNDS):
        _commit_trace(db, func, clear, 1e-3 * (1 - SEED_MARGIN * 2), tgt)
    assert applied(seeded) == str(clear)


def test_a_timed_tune_ends_with_finals_of_each_kernels_leaders_and_its_seed(block, tmp_path):
    """_confirm (a timed tune's last CONFIRM_SHARE) measures each kernel's two fastest schedules and its schedule
    at the first seed (what a build without records uses), side by side, until each has FINAL_ROUNDS
    measurements; then each counts at its median, so one slow spell does not decide. Others are left alone."""
    import tvm
    from edgekit import target
    from edgekit.tuning import (BASELINE, FINAL_ROUNDS, _close, _commit, _commit_trace, _confirm, best_record,
                                c_target, measure, open_database, space)
    host = target.get("host")
    name, func = next((n, f) for n, f, _ in _kernels(block, host) if space.tunable(f))
    traces = [space.seeded(func, s).trace for s in space.seeds(host)]
    assert len({str(t) for t in traces}) == 3, name
    db = open_database(tmp_path / "db", create=True)
    tgt = tvm.target.Target(c_target(host))
    for trace, secs in zip(traces, [1.0, 1e-6, 2e-6]):  # the first seed measured in a (very) slow spell
        _commit_trace(db, func, trace, secs, tgt)
    _commit(db, func, BASELINE, 1, 10.0, tgt)  # too slow to reach the finals

    class Running:
        def over(self):
            return False
    runner = measure.runner(host, jobs=1)
    try:
        _confirm([(name, func, 1)], space.seeds(host)[0], measure.CandidateBuilder(host, tmp_path, 1), runner, db,
                 tgt, Running())
    finally:
        _close(runner)
    ranked = {str(r.trace): (t, n) for r, t, n in best_record(db, func, leaders=9)}
    assert [ranked[str(t)][1] for t in traces] == [FINAL_ROUNDS] * 3, ranked
    assert sorted(n for _, n in ranked.values()) == [1, FINAL_ROUNDS, FINAL_ROUNDS, FINAL_ROUNDS]
    assert all(2e-6 < ranked[str(t)][0] < 1.0 for t in traces)  # the board's times, not the stand-ins
