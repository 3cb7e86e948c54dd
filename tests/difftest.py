"""Differential test harness: one ONNX graph through edgekit's real compiler and C generator, compared with
ONNX Runtime. Used by tests/test_differential.py and benchmarks/difftest_soak.py.

check_graph() runs the library path (compiler.import_onnx -> codegen.generate -> gcc -> ctypes) and returns
an Outcome: "pass", "skip" (edgekit refuses the model cleanly: a UsageError from the importer, or the code
generator's NotImplementedError, which `edgekit build` turns into a UsageError), or "fail" (a crash, an
internal error, a C compiler error or warning, a non-zero return from run(), or outputs that differ).
The C runs in a forked child, so a segfault or a hang in generated code is a failure, not the end of a soak.

check_cli() does the same through `edgekit build --model` and `edgekit validate`.
check_space() checks the tuning's search space on the graph's kernels instead: random points and the seeds of
its template against codegen's own schedule, in the MCUs' layout and the Linux boards'.
shrink() reduces a failing graph to a small one that still fails the same way.
"""
from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4        # of the output's scale, as `edgekit validate` uses
SCALE_FLOOR = 1e-2      # outputs near zero are compared at this scale: float noise is relative to the inputs
SOURCES = ["model.c", "kernels.c", "shim.c"]
CFLAGS = ["-O2", "-Wall", "-Wextra", "-shared", "-fPIC"]
ARM = ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2", "-Wall",
       "-Wextra", "-c"]


@dataclass
class Outcome:
    status: str         # "pass" | "skip" | "fail"
    kind: str = ""      # what failed or why it was skipped, short and stable: the soak counts by it
    detail: str = ""

    def __str__(self):
        return f"{self.status}: {self.kind}" + (f"\n{self.detail}" if self.detail else "")


class GeneratorError(Exception):
    """ONNX Runtime rejects the graph: a bug in the generator, not in edgekit."""


def shape_of(value_info) -> list:
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim]


def inputs_for(model, count: int = 2, seed: int = 0) -> list:
    shape = shape_of(model.graph.input[0])
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]


def reference(model, xs) -> list:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # the operators' own semantics: ORT's extended optimizations approximate, e.g. DequantizeLinear(int8) +
    # MatMul becomes MatMulNBits, which quantizes the activations too (errors of ~1% of the output scale)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        outs = [sess.run(None, {"x": x})[0] for x in xs]
    except Exception as e:  # noqa: BLE001
        raise GeneratorError(f"ONNX Runtime rejects the graph: {e}") from None
    want = tuple(shape_of(model.graph.output[0]))
    if outs[0].shape != want:
        raise GeneratorError(f"ONNX Runtime's output shape {outs[0].shape} is not the declared {want}")
    return outs


def compare(ref: np.ndarray, got: np.ndarray) -> str | None:
    """None when `got` matches `ref`, else what differs."""
    if got.shape != ref.shape:
        return f"output shape {got.shape}, ONNX Runtime's {ref.shape}"
    if not np.isfinite(got).all():
        return f"non-finite outputs at {np.argwhere(~np.isfinite(got))[:3].tolist()}"
    scale = max(float(np.abs(ref).max()), SCALE_FLOOR)
    err = float(np.abs(got.astype(np.float64) - ref).max())
    if err > TOLERANCE * scale:
        worst = np.unravel_index(np.abs(got - ref).argmax(), ref.shape)
        return (f"max_abs_err {err:.3g} > {TOLERANCE * scale:.3g} (output scale {scale:.3g}); at {list(worst)} "
                f"got {got[worst]:.6g}, ONNX Runtime {ref[worst]:.6g}")
    return None


# ---- the generated C, run in a forked child ----

def _run_library(lib_path: str, name: str, xs, out_shape, conn):
    """Child process: every way of calling run() on each input; sends back outputs or a message."""
    try:
        lib = ctypes.CDLL(lib_path)
        run = getattr(lib, f"edgekit_{name}_run")
        slot_fn = getattr(lib, f"edgekit_{name}_input")
        slot_fn.restype = ctypes.c_void_p
        results = []
        for x in xs:
            x0, out = x.copy(), np.full(out_shape, np.nan, np.float32)
            rc = run(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p))
            if rc != 0:
                return conn.send(("error", "run-error", f"edgekit_{name}_run returned {rc}"))
            if not np.array_equal(x, x0):
                return conn.send(("error", "input-written", "run() wrote its input buffer"))
            # in place: the input written into its arena slot (what firmware does to save RAM)
            slot = slot_fn()
            if not slot or slot % 16:
                return conn.send(("error", "input-slot", f"edgekit_{name}_input() returned {slot}"))
            ctypes.memmove(slot, x.ctypes.data, x.nbytes)
            in_place = np.full(out_shape, np.nan, np.float32)
            rc = run(ctypes.c_void_p(slot), in_place.ctypes.data_as(ctypes.c_void_p))
            if rc != 0:
                return conn.send(("error", "run-error", f"edgekit_{name}_run from the input slot returned {rc}"))
            results.append((out, in_place))
        conn.send(("ok", results))
    except BaseException as e:  # noqa: BLE001
        conn.send(("error", "ctypes", f"{type(e).__name__}: {e}"))


def run_in_child(lib_path, name, xs, out_shape, timeout: float = 60.0):
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_run_library, args=(str(lib_path), name, xs, out_shape, send), daemon=True)
    proc.start()
    send.close()
    try:
        msg = recv.recv() if recv.poll(timeout) else ("error", "hang", f"run() did not return within {timeout:.0f} s")
    except EOFError:
        msg = None
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if msg is None:
        return ("error", "crash", f"the generated C crashed the process (exit code {proc.exitcode})")
    return msg


# A standalone program over the generated library, for the sanitizer build (no ctypes: the sanitizers' runtimes
# want to be linked into the executable). argv: input file, output file; exit 10 + run()'s error code.
DRIVER_C = """\
#include <stdio.h>
#include "model.h"
static float in[EDGEKIT_G_INPUT_BYTES / 4], out[EDGEKIT_G_OUTPUT_BYTES / 4];
int main(int argc, char **argv) {
  FILE *f = argc == 3 ? fopen(argv[1], "rb") : NULL;
  if (!f || fread(in, 1, sizeof in, f) != sizeof in) return 2;
  fclose(f);
  int rc = edgekit_g_run(in, out);
  if (rc) return 10 + rc;
  f = fopen(argv[2], "wb");
  if (!f || fwrite(out, 1, sizeof out, f) != sizeof out) return 3;
  fclose(f);
  return 0;
}
"""


def run_sanitized(d: Path, x: np.ndarray, out_shape, threads: bool):
    """Build the library with AddressSanitizer and UBSan into a program, run it on x: (kind, detail) or the output."""
    (d / "driver.c").write_text(DRIVER_C)
    sources = ["driver.c", *SOURCES] + (["threads.c"] if threads else [])
    r = subprocess.run(["gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                        "-fno-omit-frame-pointer", "-o", "sanitized", *sources, "-lm"] + (["-pthread"] if threads else []),
                       cwd=d, capture_output=True, text=True)
    if r.returncode != 0:
        return ("c-compile-error", r.stderr[-2000:])
    x.tofile(d / "in.bin")
    try:
        r = subprocess.run(["./sanitized", "in.bin", "out.bin"], cwd=d, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return ("hang", "the sanitized program did not finish in 120 s")
    if r.returncode != 0 or "runtime error" in r.stderr:
        return ("sanitizer", f"exit {r.returncode}\n{r.stderr[-3000:]}")
    return np.fromfile(d / "out.bin", np.float32).reshape(out_shape)


def check_graph(model, workdir: Path | None = None, threads: bool = False, schedule: bool = True,
                arm: bool = False, sanitize: bool = False, name: str = "g") -> Outcome:
    """Build `model` with edgekit's library (import, lower, plan, emit), compile it with gcc, run it on two
    random inputs and compare with ONNX Runtime. threads: the Linux boards' path, as `build --target host`
    without a tuning database takes it (NHWC layout, the tuning's seed tiles, split kernels in threads.c);
    schedule=False: TVM's unscheduled kernels, whose workspaces come from the arena; arm: generate for
    Cortex-M4 as MCU builds do, and also compile it with arm-none-eabi-gcc (no warnings allowed); sanitize: also
    run it once built with AddressSanitizer and UBSan (reads past the arena or a weight, misaligned access...)."""
    from edgekit import codegen, compiler
    from edgekit.errors import InternalError as EdgekitInternalError
    from edgekit.errors import UsageError

    xs = inputs_for(model)
    refs = reference(model, xs)
    if not all(np.isfinite(r).all() for r in refs):
        return Outcome("skip", "reference-not-finite")
    own_dir = workdir is None
    d = Path(tempfile.mkdtemp(prefix="difftest-")) if own_dir else Path(workdir)
    try:
        try:
            mod = compiler.import_onnx(model)
        except UsageError as e:
            return Outcome("skip", "import: " + _short(str(e)), str(e))
        except Exception as e:  # noqa: BLE001
            return Outcome("fail", f"import-crash: {type(e).__name__}", traceback.format_exc(limit=-3))
        try:
            linux = {}
            if threads:
                from edgekit import target, tuning
                host = target.get("host")
                mod, linux = compiler.for_board(mod, host), {"tuned": tuning.tuned_for(host, d / "no-database"),
                                                              "stack_bytes": tuning.stack_bytes(host)}
            info = codegen.generate(mod, d, name, threads=threads, schedule=schedule, mcpu="cortex-m4" if arm else None,
                                    **linux)
        except NotImplementedError as e:  # build.py turns these into "cannot be built for <board> yet"
            return Outcome("skip", "codegen: " + _short(str(e)), str(e))
        except EdgekitInternalError as e:  # codegen/verify.py caught a broken program before writing C
            return Outcome("fail", "invariant-violation", str(e))
        except Exception as e:  # noqa: BLE001
            return Outcome("fail", f"codegen-crash: {type(e).__name__}", f"{e}\n{traceback.format_exc(limit=-3)}")
        lib = d / f"lib{name}.so"
        sources = SOURCES + (["threads.c"] if threads else [])
        # TVM's unscheduled reductions initialise their accumulator under a branch, which gcc cannot see through
        # (a false alarm; edgekit's scheduled kernels initialise above the loop: lower.shrink)
        quiet = [] if schedule else ["-Wno-maybe-uninitialized"]
        r = subprocess.run(["gcc", *CFLAGS, *quiet, "-o", str(lib), *sources, "-lm"] + (["-pthread"] if threads else []),
                           cwd=d, capture_output=True, text=True)
        if r.returncode != 0:
            return Outcome("fail", "c-compile-error", r.stderr[-2000:])
        if r.stderr.strip():
            return Outcome("fail", "c-warning", r.stderr[-2000:])
        if arm:
            r = subprocess.run([*ARM, *SOURCES], cwd=d, capture_output=True, text=True)
            if r.returncode != 0 or r.stderr.strip():
                return Outcome("fail", "arm-c-warning" if r.returncode == 0 else "arm-c-compile-error", r.stderr[-2000:])
        if list(info["output_shape"]) != list(refs[0].shape):
            return Outcome("fail", "output-shape", f"edgekit {info['output_shape']}, ONNX Runtime {list(refs[0].shape)}")
        msg = run_in_child(lib, name, xs, tuple(info["output_shape"]))
        if msg[0] == "error":
            return Outcome("fail", msg[1], msg[2])
        for i, ((out, in_place), ref) in enumerate(zip(msg[1], refs)):
            bad = compare(ref, out)
            if bad:
                return Outcome("fail", "mismatch", f"input {i}: {bad}")
            if not np.array_equal(out, in_place, equal_nan=True):
                return Outcome("fail", "in-place-differs", f"input {i}: run() from the input slot gives other outputs "
                               f"({compare(ref, in_place) or 'within tolerance'})")
        if sanitize:
            if name != "g":
                raise ValueError("the sanitizer driver calls edgekit_g_run: keep name='g'")
            got = run_sanitized(d, xs[0], tuple(info["output_shape"]), threads)
            if isinstance(got, tuple):
                return Outcome("fail", got[0], got[1])
            bad = compare(refs[0], got)
            if bad:
                return Outcome("fail", "sanitized-mismatch", bad)
        return Outcome("pass")
    finally:
        if own_dir:
            shutil.rmtree(d, ignore_errors=True)


def _short(msg: str) -> str:
    return msg.splitlines()[0][:120] if msg else ""


# ---- the command line: edgekit build + validate ----

def kernel_outputs(cases, tmp: Path) -> list:
    """Each (func, kernel_func)'s output for fixed random arguments, the kernel built as the tuner builds
    candidates for the host; gcc runs on every core."""
    import tvm
    from concurrent.futures import ThreadPoolExecutor
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from edgekit import target
    from edgekit.codegen.lower import build_kernel
    from edgekit.tuning import c_target, stack_bytes
    from edgekit.tuning.measure import TASK, compile_shared
    board = target.get("host")
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        libs = [pool.submit(compile_shared, board, build_kernel(k, TASK, c_target(board),
                                                                stack_bytes=stack_bytes(board)), tmp / f"k{i}")
                for i, (_, k) in enumerate(cases)]
        outputs = []
        for (func, _), lib in zip(cases, libs):
            rng = np.random.default_rng(0)
            args = [tvm.runtime.tensor(np.array(rng.uniform(-1, 1, [int(d) for d in a.shape]), dtype=str(a.dtype)))
                    for a in ArgInfo.from_prim_func(func)]
            tvm.runtime.load_module(lib.result())["main"](*args)
            outputs.append(args[-1].numpy())
    return outputs


def template_points(func, board, randoms: int, label: str):
    """(cases, labels) for space_mismatches: codegen's schedule of func (label None: the reference), then the
    tuning's template at `randoms` random points (seeds 1, 2...) and at each of the board's seed tiles."""
    from tvm import s_tir
    from edgekit.codegen.lower import shrink
    from edgekit.tuning import space
    cases, labels = [(func, shrink(func)[0])], [None]
    for point in (*range(1, randoms + 1), *space.seeds(board)):
        random = isinstance(point, int)
        sch = s_tir.Schedule(func, seed=point if random else 1)
        space.schedule(sch, None if random else point)
        cases.append((func, sch.mod["main"]))
        labels.append(f"{label} {sch.trace}")
    return cases, labels


def space_mismatches(cases, labels, tmp: Path) -> list[str]:
    """The labels of template points whose output differs from their reference's (the case before them with
    label None)."""
    bad = []
    for got, label in zip(kernel_outputs(cases, tmp), labels):
        if label is None:
            ref = got
        elif not np.allclose(got, ref, rtol=1e-4, atol=1e-5):
            bad.append(f"{label} (max error {float(np.max(np.abs(got - ref))):.3g})")
    return bad


def space_cases(model, randoms: int = 2) -> tuple[list, list, list]:
    """template_points (cases, labels) for every kernel of `model` built around one reduction (what the tuning
    covers), in the MCUs' layout (mps2-an386) and the Linux boards' (host); and the kernels the template refuses
    (they would keep codegen's schedule, but the template is meant to cover every one)."""
    from tvm import s_tir
    from edgekit import compiler, target
    from edgekit.codegen.lower import _fuse, _is_scheduled
    from edgekit.tuning import space
    cases, labels, refused = [], [], []
    for board in (target.get("mps2-an386"), target.get("host")):
        mod = _fuse(compiler.for_board(compiler.import_onnx(model), board))
        for gv, func in mod.functions.items():
            if gv.name_hint == "main" or _is_scheduled(func) or space.reduction_block(s_tir.Schedule(func)) is None:
                continue
            if not space.tunable(func):
                refused.append(f"{board.name} {gv.name_hint}")
                continue
            c, n = template_points(func, board, randoms, f"{board.name} {gv.name_hint}")
            cases, labels = cases + c, labels + n
    return cases, labels, refused


def check_space(model) -> Outcome:
    """The tuning's search space on `model`'s kernels (space_cases): "fail" where the template refuses a kernel
    or a point computes other outputs than codegen's schedule; "skip" where TVM does not import the model."""
    from edgekit.errors import UsageError
    try:
        cases, labels, refused = space_cases(model)
    except UsageError as e:
        return Outcome("skip", "import: " + _short(str(e)), str(e))
    if refused:
        return Outcome("fail", "space-refused", "\n".join(refused))
    with tempfile.TemporaryDirectory(prefix="difftest-space-") as d:
        bad = space_mismatches(cases, labels, Path(d))
    return Outcome("fail", "space-mismatch", "\n".join(bad)) if bad else Outcome("pass")


def edgekit_cli(*args, cwd, timeout=900):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)


def check_cli(model, workdir: Path, target: str = "host", inputs: int = 3) -> Outcome:
    """`edgekit build --target T --model x.onnx` then `edgekit validate` (the board's emulator for MCUs)."""
    reference(model, inputs_for(model))  # a generator bug shows as such, not as an edgekit failure
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(workdir / "x.onnx"))
    r = edgekit_cli("build", "--target", target, "--model", "x.onnx", "--out", "b", "--json", cwd=workdir)
    if r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1:
        return Outcome("skip", "build: " + _short(r.stderr), r.stderr)  # a clean refusal: one line, exit 2
    if r.returncode != 0:
        return Outcome("fail", f"build-exit-{r.returncode}", r.stderr[-3000:])
    if r.stderr.strip():  # library chatter stays off the terminal unless --verbose (ARCHITECTURE.md)
        return Outcome("fail", "build-stderr", r.stderr[-3000:])
    r = edgekit_cli("validate", "b", "--inputs", inputs, "--json", cwd=workdir)
    if r.returncode != 0:
        return Outcome("fail", f"validate-exit-{r.returncode}", (r.stdout + r.stderr)[-3000:])
    v = json.loads(r.stdout)["validation"]
    return Outcome("pass") if v["passed"] else Outcome("fail", "validate-mismatch", json.dumps(v))


# ---- shrinking ----

def _with_output(model, name: str, shape) -> onnx.ModelProto:
    """`model` computing tensor `name` as its output "y", without the nodes and constants it no longer needs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for n in g.node:
        n.output[:] = ["y" if o == name else (o + "_" if o == "y" else o) for o in n.output]
        n.input[:] = ["y" if i == name else (i + "_" if i == "y" else i) for i in n.input]
    g.output[0].CopyFrom(helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(shape)))
    return prune(m)


def prune(model) -> onnx.ModelProto:
    """Drop nodes and initializers that do not lead to the output."""
    g = model.graph
    needed, keep = {"y"}, []
    for n in reversed(g.node):
        if set(n.output) & needed:
            keep.append(n)
            needed |= {i for i in n.input if i}
    kept_nodes = list(reversed(keep))
    inits = [t for t in g.initializer if t.name in needed]
    del g.node[:]
    g.node.extend(kept_nodes)
    del g.initializer[:]
    g.initializer.extend(inits)
    return model


def _shapes(model) -> dict:
    inferred = onnx.shape_inference.infer_shapes(model)
    vis = list(inferred.graph.value_info) + list(inferred.graph.output)
    return {v.name: shape_of(v) for v in vis if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}


def _candidates(model):
    """Smaller variants of `model`: the output moved to an earlier tensor; a node bypassed (its consumers fed
    its same-shaped input); a dequantized weight replaced by its float value."""
    shapes = _shapes(model)
    acts = {"x"} | {o for n in model.graph.node if n.op_type != "DequantizeLinear" for o in n.output}
    for n in model.graph.node:  # earliest first: the biggest cut first
        for o in n.output:
            if o != "y" and o in shapes and o in acts and all(d > 0 for d in shapes[o]):
                yield f"output at {o} ({n.op_type})", _with_output(model, o, shapes[o])
    for k, n in enumerate(model.graph.node):
        out = n.output[0]
        for i in n.input:
            if i in acts and (shapes.get(i) == shapes.get(out) or (i == "x" and shape_of(model.graph.input[0]) == shapes.get(out))):
                if out == "y" and i == "x":
                    continue
                m = onnx.ModelProto()
                m.CopyFrom(model)
                del m.graph.node[k]
                if out == "y":  # the bypassed input becomes the output
                    m = _with_output(m, i, shapes.get(out))
                else:
                    for other in m.graph.node:
                        other.input[:] = [i if j == out else j for j in other.input]
                yield f"bypass {n.op_type} {out}", prune(m)
                break
    for k, n in enumerate(model.graph.node):
        if n.op_type == "DequantizeLinear":
            m = onnx.ModelProto()
            m.CopyFrom(model)
            del m.graph.node[k]
            m.graph.initializer.append(numpy_helper.from_array(dequantize(model, n), n.output[0]))
            yield f"float weight {n.output[0]}", prune(m)


def dequantize(model, node) -> np.ndarray:
    """The value of a DequantizeLinear node over constants: (q - zero_point) * scale, per tensor or per axis."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    q = inits[node.input[0]].astype(np.float64)
    scale = inits[node.input[1]].astype(np.float64)
    zero = inits[node.input[2]].astype(np.float64) if len(node.input) > 2 and node.input[2] else np.zeros_like(scale)
    if scale.ndim == 1:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % q.ndim
        shape = [-1 if i == axis else 1 for i in range(q.ndim)]
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero) * scale).astype(np.float32)


def shrink(model, fails, log=lambda s: None, budget: int = 60) -> onnx.ModelProto:
    """Greedily apply _candidates while fails(candidate) holds; at most `budget` checks."""
    checks = 0
    progress = True
    while progress and checks < budget:
        progress = False
        for what, cand in _candidates(model):
            try:
                onnx.checker.check_model(cand)
                reference(cand, inputs_for(cand, 1))
            except Exception:  # noqa: BLE001 (not a valid graph: not a candidate)
                continue
            checks += 1
            if fails(cand):
                log(f"  shrink: {what} ({len(cand.graph.node)} nodes)")
                model, progress = cand, True
                break
            if checks >= budget:
                break
    return model
