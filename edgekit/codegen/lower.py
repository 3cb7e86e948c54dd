"""Relax IRModule -> a flat program: tensors, and kernel calls in order, each kernel TVM's C-target output."""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import numpy as np

from ..errors import checkpoint


@dataclass
class Tensor:
    name: str
    shape: tuple
    dtype: str
    kind: str                     # "input" | "output" | "const" | "act"
    data: np.ndarray | None = None
    alias: str | None = None      # a reshape's output shares its source's memory

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class Kernel:
    name: str                     # C function name
    source: str                   # C function definition(s), no includes
    workspace_bytes: int          # TVMBackendAllocWorkspace total, LIFO worst case
    allocs: list = field(default_factory=list)
    parallel_extent: int = 0      # > 0: one loop of that many iterations may be split across threads (PARALLEL)
    func: object = None           # the scheduled PrimFunc (build_llvm builds it again with TVM's LLVM backend)
    helpers: str = ""             # C source the kernel calls through call_extern (PrimFunc attr edgekit.c_helpers)
    inplace_gap: int | None = None  # its output may overlap its first input from this many bytes below it on
                                  # (PrimFunc attr edgekit.inplace_gap: the kernel reads each input byte first)
    tuned: bool = False           # its schedule came from the tuning database


@dataclass
class Call:
    name: str                     # the Relax binding it computes
    kernel: str                   # key into Program.kernels
    args: list                    # tensor names, output last


@dataclass
class Program:
    tensors: dict                 # name -> Tensor
    calls: list                   # in execution order
    kernels: dict                 # PrimFunc name -> Kernel, each built once however often it is called
    input: str
    output: str

    def root(self, name: str) -> str:
        """The tensor whose memory `name` uses (itself unless a reshape aliases it)."""
        while self.tensors[name].alias:
            name = self.tensors[name].alias
        return name


WS_ALIGN = 16


def _fuse(mod):
    import tvm
    from tvm import relax
    seq = tvm.transform.Sequential([
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
        relax.transform.FuseOps(), relax.transform.FuseTIR(), relax.transform.RewriteDataflowReshape(),
        relax.transform.DeadCodeElimination()])
    return seq(mod)


def _is_reduction(sch, block) -> bool:
    return any(iv.iter_type != 0 for iv in sch.get(block).iter_vars)  # 0 == DataPar


def _reduces_one_element(sch, block) -> bool:
    """A reduction over a single element (a 1x1 pool, a mean over a size-1 axis): its loops vanish, and moved
    under its consumer its update and the consumer's read of it share one loop body, where TVM's C printer
    reuses the value loaded before the store (a silent miscompilation, found by differential testing)."""
    return int(np.prod([int(iv.dom.extent) for iv in sch.get(block).iter_vars if iv.iter_type != 0])) == 1


def _is_scheduled(func) -> bool:
    return func.attrs is not None and "tirx.is_scheduled" in func.attrs and bool(func.attrs["tirx.is_scheduled"])


SMALL = 256  # bytes: a producer this small stays put (on the stack)
UNROLL_MAX = 4  # iterations: an elementwise or copy block's innermost loop this short is unrolled


def _nbytes(buf) -> int:
    return int(np.prod([int(d) for d in buf.shape], dtype=np.int64)) * np.dtype(str(buf.dtype)).itemsize


def shrink(func, threads: bool = False):
    """Schedule a fused PrimFunc to MCU size: inline padding and elementwise stages, and compute each
    remaining producer (a reduction) inside its consumer's loops, so its buffer shrinks to a few elements.
    threads: also mark an outer loop parallel (see parallelize). Returns (func, parallel loop or None)."""
    from tvm import s_tir
    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    outs = {sch.get(b).name_hint for b in sch.get_output_blocks(root)}
    for b in sch.get_child_blocks(root):
        if sch.get(b).name_hint not in outs and not _is_reduction(sch, b):
            try:
                sch.compute_inline(b)
            except Exception:  # noqa: BLE001 (TVM raises its own error types; the block just stays)
                pass
    for b in reversed(sch.get_child_blocks(root)):
        if sch.get(b).name_hint in outs:
            continue
        cons = sch.get_consumers(b)
        # moving a tiny one gains nothing and could recompute a broadcast reduction per element (softmax)
        if len(cons) != 1 or _nbytes(sch.get(b).writes[0].source) <= SMALL or _reduces_one_element(sch, b):
            continue
        # innermost spatial loop of the consumer first; outer ones if TVM refuses
        for loop in reversed(sch.get_loops(cons[0])):
            try:
                sch.compute_at(b, loop, preserve_unit_loops=False)
                break
            except Exception:  # noqa: BLE001
                continue
    par = None
    if threads:  # before decompose_reduction: TVM's parallel check wants reduction blocks whole (with init)
        func, par = parallelize(sch.mod["main"])
        sch = s_tir.Schedule(func)
        root = sch.get_sblock("root")
    # initialise each accumulator once, above its reduction loops, rather than by a branch inside them
    # (faster, and gcc's -Wmaybe-uninitialized cannot see through the branch)
    for b in sch.get_child_blocks(root):  # includes blocks moved under another's loops
        if not _is_reduction(sch, b):
            continue
        for loop in reversed(sch.get_loops(b)):  # innermost legal position: TVM rejects those below a reduction loop
            try:
                sch.decompose_reduction(b, loop)
                break
            except Exception:  # noqa: BLE001
                continue
    # a copy's short innermost loop (a transpose to 3 channels), unrolled, lets gcc vectorize the loop around it:
    # Linux boards' cflags stop gcc unrolling it itself (a model's input transpose: 2-4x faster on host)
    for b in sch.get_child_blocks(root):
        loops = sch.get_loops(b)
        if loops and not _is_reduction(sch, b) and 1 < _extent(sch, loops[-1]) <= UNROLL_MAX:
            sch.unroll(loops[-1])
    return sch.mod["main"], par


def own_schedule(func, threads: bool = False):
    """codegen's schedule for a kernel without a tuning record: an int8 micro-kernel convolution at its
    template's default register block (int8.fast), any other kernel shrunk. Returns (func, parallel loop or None)."""
    from ..int8 import fast
    return (fast.schedule(func), None) if fast.is_micro(func) else shrink(func, threads)


# Parallel kernels (Linux boards). Splitting a loop pays only when each thread gets real work.
PARALLEL_MIN_ITERS = 8      # fuse outer loops until the parallel one has this many iterations (4 cores, 2 each)
PARALLEL_MIN_FLOPS = 16384  # TVM's flop estimate of the kernel; below it a launch (~µs) costs more than it saves


def _extent(sch, loop) -> int:
    return int(sch.get(loop).extent)


def parallelize(func):
    """Mark the output block's outermost spatial loops parallel, fused until the loop has PARALLEL_MIN_ITERS
    iterations (or no more fuse). Returns the new func and the loop (its var name, extent), or None."""
    from tvm import s_tir
    from tvm.s_tir.analysis import estimate_tir_flops
    sch = s_tir.Schedule(func)
    outs = sch.get_output_blocks(sch.get_sblock("root"))
    if len(outs) != 1 or not sch.get_loops(outs[0]) or estimate_tir_flops(func.body) < PARALLEL_MIN_FLOPS:
        return func, None
    best = None
    for k in range(1, len(sch.get_loops(outs[0])) + 1):  # fresh schedule per try: a refusal leaves no trace
        sch = s_tir.Schedule(func)
        lps = sch.get_loops(sch.get_output_blocks(sch.get_sblock("root"))[0])[:k]
        try:
            loop = sch.fuse(*lps) if k > 1 else lps[0]
            sch.parallel(loop)  # TVM refuses a loop bound to a reduction axis
        except Exception:  # noqa: BLE001 (TVM's own error types: the previous choice stands)
            break
        best = (sch.mod["main"], (sch.get(loop).loop_var.name, _extent(sch, loop)))
        if best[1][1] >= PARALLEL_MIN_ITERS:
            break
    if best is None or best[1][1] < 2:
        return func, None
    return best


def parallel_loop(func):
    """(loop var name, extent) of the loop a schedule marked PARALLEL, or None."""
    from tvm import s_tir
    from tvm.tirx import ForKind
    sch = s_tir.Schedule(func)
    for block in sch.get_output_blocks(sch.get_sblock("root")):
        for loop in sch.get_loops(block):
            if sch.get(loop).kind == ForKind.PARALLEL:
                return sch.get(loop).loop_var.name, _extent(sch, loop)
    return None


def chunk_parallel_loop(body: str, symbol: str, var: str, extent: int) -> str | None:
    """TVM's C codegen prints a PARALLEL loop as a plain `for` (only its LLVM backend outlines closures), so
    edgekit splits it itself: the kernel is called once per task, its [lo, hi) slice of the loop passed in
    the packed call's `self` pointer (int64_t[2]), which kernels never use otherwise; NULL runs it whole.
    Returns the rewritten source, or None when the loop header is not found exactly once."""
    v = re.escape(var)
    head = re.compile(rf"for \((int32_t|int64_t) {v} = 0; {v} < {extent}; \+\+{v}\) \{{")
    sig = re.compile(rf"(int32_t {re.escape(symbol)}\(void\* self_handle, void\* args, int32_t num_args, "
                     r"void\* result\) \{)")
    if len(head.findall(body)) != 1 or len(sig.findall(body)) != 1:
        return None
    body = head.sub(lambda m: f"for ({m[1]} {var} = ({m[1]})ek_lo; {var} < ({m[1]})ek_hi; ++{var}) {{", body)
    return sig.sub(lambda m: m[1] + "\n  const int64_t ek_lo = self_handle ? ((const int64_t *)self_handle)[0] : 0;"
                   f"\n  const int64_t ek_hi = self_handle ? ((const int64_t *)self_handle)[1] : {extent};", body)


UNSWITCH = "edgekit.unswitch"  # a loop annotation: hoist the branches invariant in it out of it (unswitch_loop)


def unswitched_loops(func) -> list[str]:
    """The var names of the loops a schedule annotated with UNSWITCH."""
    from tvm import s_tir
    sch = s_tir.Schedule(func)
    names = []
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        for loop in sch.get_loops(block):
            if UNSWITCH in sch.get(loop).annotations and sch.get(loop).loop_var.name not in names:
                names.append(sch.get(loop).loop_var.name)
    return names


_FOR = r"for \((?:int32_t|int64_t) {v} = [^;]+; {v} < [^;]+; \+\+{v}\) \{{"
_IF = re.compile(r"if \(([\w\s()+\-*/%<>=!&|]+)\) \{")
# what a loop body may change: assigned (=, op=, ++, --), declared, or its address taken
_ASSIGNED = re.compile("|".join([
    r"\b([A-Za-z_]\w*)\s*(?:\[[^\]]*\])?\s*(?:[-+*/%&|^]|<<|>>)?=(?!=)",  # x = , x[i] += , x <<=
    r"(?:\+\+|--)\s*([A-Za-z_]\w*)", r"\b([A-Za-z_]\w*)\s*(?:\+\+|--)",  # ++x, x--
    r"\b(?:u?int\d+_t|float|double|int|char|bool)\b[\s*]*([A-Za-z_]\w*)",  # int32_t x, float* p
    r"(?<![&\w)\]\s])\s*&\s*([A-Za-z_]\w*)"]))  # &x (not a && b, a & b)


def _block_end(text: str, i: int) -> int:
    """Index just past the brace block that opens at text[i] == '{'."""
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return j + 1
    raise ValueError("unbalanced braces")


def unswitch_loop(body: str, var: str) -> str:
    """Loop unswitching, which gcc does only for innermost loops: where the body of the loop over `var` holds `if (C)
    {...}` blocks (no else) whose condition C reads only variables the loop never assigns, declares or takes the
    address of, emit `if (C) {the loop, those blocks unconditional} else {the loop without them}`. A pixel tile that
    does not divide the map (space.schedule) leaves such a branch per tail pixel inside the reduction loop; hoisted,
    the full tiles' loop runs branch-free (V1 0.75 224, 14x14 384->384, 6-pixel tiles: 0.90-0.95 x the time of the
    7-pixel tiles that divide 14; with the branches inside, 1.05-1.15 x). The loop header must occur once;
    otherwise, or with no such branch, the source comes back unchanged."""
    heads = list(re.finditer(_FOR.format(v=re.escape(var)), body))
    if len(heads) != 1:
        return body
    head = heads[0]
    end = _block_end(body, head.end() - 1)
    inner = body[head.end():end - 1]
    assigned = {n for m in _ASSIGNED.finditer(inner) for n in m.groups() if n} | {var}
    conds = [m[1] for m in _IF.finditer(inner)
             if not set(re.findall(r"[A-Za-z_]\w*", m[1])) & assigned]
    if not conds:
        return body
    cond = conds[0]

    def assume(value: bool) -> str | None:
        out, k = [], 0
        for m in _IF.finditer(inner):
            if m[1] != cond or m.start() < k:
                continue
            e = _block_end(inner, m.end() - 1)
            if inner[e:].lstrip().startswith("else"):
                return None
            out += [inner[k:m.start()], inner[m.end() - 1:e] if value else ""]  # the block, in its own scope
            k = e
        return "".join(out + [inner[k:]])
    taken, dropped = assume(True), assume(False)
    if taken is None or dropped is None:
        return body
    loop = body[head.start():head.end()]
    return (body[:head.start()] + f"if ({cond}) {{\n{loop}{taken}}}\n}} else {{\n{loop}{dropped}}}\n}}" +
            body[end:])


_WS = re.compile(r"TVMBackendAllocWorkspace\([^,]+,[^,]+,\s*\(uint64_t\)(\d+)ULL")
_WS_ALLOC = re.compile(r"(\w+)\* (\w+) = \(\(\w+\*\)\(\(\w+\*\)TVMBackendAllocWorkspace\(\d+, dev_id, \(uint64_t\)(\d+)ULL, "
                       r"\d+, \d+\)\)\);\s*if \(\2 == NULL\) \{\s*return -1;\s*\}")


def stack_tiles(body: str, limit: int) -> str:
    """Each workspace of at most `limit` bytes as a C array on the stack. TVM allocates buffers of over 1 KB
    through TVMBackendAllocWorkspace even in "local" scope; the tuned kernels' tiles (accumulators, a padded
    patch of input) are a few KB, allocated inside the loop they serve: on the stack they cost nothing, and
    the loop can be split across threads (arena workspaces cannot)."""
    small = {m[2]: m for m in _WS_ALLOC.finditer(body) if int(m[3]) <= limit}
    for name, m in small.items():
        body = body.replace(m[0], f"{m[1]} {name}[({m[3]} + sizeof({m[1]}) - 1) / sizeof({m[1]})] "
                                  "__attribute__((aligned(64)));")
        body = re.sub(rf"if \(TVMBackendFreeWorkspace\(\d+, dev_id, {name}\) != 0\) \{{\s*return -1;\s*\}}", "", body)
    return body


_C_INTRINSICS = []
_C_INTRINSICS_LOCK = threading.Lock()  # the tuner builds candidates on several threads; TVM refuses a second one


def _register_c_intrinsics() -> None:
    """TVM 0.27's C target has no lowering for tirx.fabs (|x|, Softplus, float-to-int casts), which its C
    printer then refuses: give it libm's fabsf/fabs, as its LLVM target does."""
    with _C_INTRINSICS_LOCK:
        if _C_INTRINSICS:
            return
        from tvm import tirx

        def fabs(op):
            dtype = str(op.ty.dtype)
            return tirx.call_pure_extern(dtype, "fabsf" if dtype == "float32" else "fabs", op.args[0])
        tirx.register_intrin_lowering("tirx.fabs", target="c", f=fabs, level=99)
        _C_INTRINSICS.append("tirx.fabs")


def nonnegative_floor_operands(func):
    """func with each floormod(c - x, m) and floordiv(c - x, m) (constant c, m > 0) written as
    (m - 1) - floormod(x + (m - 1 - c), m) and -floordiv(x + (m - 1 - c), m): equal for every integer x, but
    TVM 0.27's FlattenBuffer drops c from the first form in a buffer index (floormod(4 - i, 9) became
    -floormod(i, -9), in C and LLVM alike). A reversed Slice (step -1) reads its input at such indices."""
    import tvm_ffi
    from tvm import tirx
    from tvm.sym import Analyzer
    ana = Analyzer()

    def rewrite(op):
        a = ana.canonical_simplify(op.a)
        if not (isinstance(op.b, tirx.IntImm) and op.b.value > 0 and isinstance(a, tirx.Sub)
                and isinstance(a.a, tirx.IntImm)):
            return op
        m, dtype = op.b.value, str(op.b.ty)
        x = a.b + tirx.const(m - 1 - a.a.value, dtype)
        if isinstance(op, tirx.FloorMod):
            return tirx.const(m - 1, dtype) - tirx.floormod(x, op.b)
        return tirx.const(0, dtype) - tirx.floordiv(x, op.b)
    return tvm_ffi.structural_map(func, [((tirx.FloorMod, tirx.FloorDiv), rewrite)], order="post")


def build_kernel(func, symbol: str, target=None, parallel=None, stack_bytes: int = 0) -> Kernel:
    """C source of one PrimFunc, stripped of includes and TVM's library boilerplate.
    parallel: (loop var name, extent) of a loop marked PARALLEL in func, to be split across threads.
    stack_bytes: workspaces up to this size become stack arrays (stack_tiles)."""
    import tvm
    _register_c_intrinsics()
    func = nonnegative_floor_operands(func).with_attr("global_symbol", symbol)
    with tvm.transform.PassContext(opt_level=3, config={"tirx.disable_assert": True}):
        lib = tvm.compile(tvm.IRModule({symbol: func}), target=tvm.target.Target(target or {"kind": "c"}))
    src = lib.mod.inspect_source() if hasattr(lib, "mod") else lib.inspect_source()
    body = src[src.index("#ifdef __cplusplus"):src.index("// CodegenC: NOTE: Auto-generated entry function")]
    body = body.replace("__tvm_ffi_" + symbol, symbol)
    body = re.sub(r"\binff\b", "INFINITY", body)  # TVM's C printer spells float infinity inff: not C (math.h has it)
    if stack_bytes:
        body = stack_tiles(body, stack_bytes)
    for var in unswitched_loops(func):
        body = unswitch_loop(body, var)
    allocs = [int(m) for m in _WS.findall(body)]
    if len(allocs) != body.count("TVMBackendAllocWorkspace("):
        raise NotImplementedError(f"edgekit codegen: {symbol} allocates a workspace of non-constant size")
    extent = 0
    if parallel and not allocs:  # workspaces come from one LIFO slice of the arena: not for concurrent tasks
        split = chunk_parallel_loop(body, symbol, *parallel)
        if split is not None:
            body, extent = split, parallel[1]
    helpers = str(func.attrs["edgekit.c_helpers"]) if "edgekit.c_helpers" in func.attrs else ""
    gap = int(func.attrs["edgekit.inplace_gap"]) if "edgekit.inplace_gap" in func.attrs else None
    return Kernel(symbol, body.strip() + "\n", sum(-(-a // WS_ALIGN) * WS_ALIGN for a in allocs), allocs, extent,
                  func, helpers, gap)


def lower(mod, prefix: str = "k", target=None, schedule: bool = True, threads: bool = False, tuned=None,
          stack_bytes: int = 0) -> Program:
    """Fuse, schedule and build every kernel; flatten main into calls over named tensors.
    threads: also split one outer loop of each heavy kernel across threads (Linux boards).
    tuned(func): (schedule, from the tuning database) for a kernel, or None (tuning.Tuned). Its tiles of up
    to stack_bytes go on the stack (stack_tiles), as they were when measured."""
    from tvm.ir.expr import Call as RCall, GenericConst, Var
    from ..int8.fast import is_micro
    mod = _fuse(mod)
    main = mod["main"]
    tensors, calls, kernels, names = {}, [], {}, {}

    def sinfo(v):
        if not hasattr(v.ty, "shape"):  # a tuple of tensors (TopK, Split): call_tir with several outputs
            raise NotImplementedError(f"edgekit codegen: {v.name} is a tuple of tensors (an operator with several "
                                      "outputs, such as TopK or Split)")
        return tuple(int(d) for d in v.ty.shape.values), str(v.ty.dtype)

    taken = set()

    def unique(name):
        """A C identifier for each Relax var: their name hints repeat (FuseOps names new bindings lv, lv1...
        beside the importer's own) and hold ONNX characters such as ':' and '/'."""
        base = re.sub(r"\W", "_", name) or "t"
        base = "t" + base if base[0].isdigit() else base
        n, i = base, 1
        while n in taken:
            n, i = f"{base}_{i}", i + 1
        taken.add(n)
        return n

    (inp,) = main.params
    names[inp] = unique(inp.name)
    tensors[names[inp]] = Tensor(names[inp], *sinfo(inp), "input")
    consts = {}

    def arg_name(a):
        if isinstance(a, GenericConst):
            arr = a.value.numpy()
            key = (arr.dtype.str, arr.shape, arr.tobytes())  # by content: ONNX repeats scalars and BN params
            if key not in consts:
                n = unique(f"c{len(consts)}")
                consts[key] = n
                tensors[n] = Tensor(n, tuple(arr.shape), str(arr.dtype), "const", arr)
            return consts[key]
        return names[a]

    body = main.body
    bindings = [b for blk in body.blocks for b in blk.bindings]
    out_var = body.body
    for b in bindings:
        v, e = b.var, b.value
        if isinstance(e, Var):
            names[v] = names[e]
            continue
        tname = names[v] = unique(v.name)
        shape, dtype = sinfo(v)
        kind = "output" if v.same_as(out_var) else "act"
        if isinstance(e, RCall) and e.op.name == "relax.call_tir":
            gv, args = e.args[0], e.args[1].fields
            tensors[tname] = Tensor(tname, shape, dtype, kind)
            if gv.name_hint not in kernels:
                checkpoint()  # each kernel build is a few TVM passes: a deferred interrupt ends the lowering here
                func = mod[gv]
                best = tuned(func) if tuned is not None and not _is_scheduled(func) else None
                if best is not None:
                    best, measured = best
                    par = parallel_loop(best) if threads else None
                    kernels[gv.name_hint] = build_kernel(best, f"{prefix}_{gv.name_hint}", target, par, stack_bytes)
                    kernels[gv.name_hint].tuned = measured
                else:
                    par = None
                    if not _is_scheduled(func) and (schedule or is_micro(func)):
                        func, par = own_schedule(func, threads)
                    kernels[gv.name_hint] = build_kernel(func, f"{prefix}_{gv.name_hint}", target, par)
            calls.append(Call(tname, gv.name_hint, [arg_name(a) for a in args] + [tname]))
        elif isinstance(e, RCall) and e.op.name == "relax.reshape" and kind == "act":
            tensors[tname] = Tensor(tname, shape, dtype, kind, alias=arg_name(e.args[0]))
        else:
            raise NotImplementedError(f"edgekit codegen: unsupported binding {tname} = {e}")
    output = names[out_var] if isinstance(out_var, Var) else None
    if output is None or tensors[output].kind != "output":
        raise NotImplementedError("edgekit codegen: the model must return one tensor computed by a kernel")
    return Program(tensors, calls, kernels, names[inp], output)


# What TVM's LLVM kernels may import: the parallel launcher, through a pointer threads.c defines
_LLVM_IMPORTS = re.compile(r"^@(__TVM\w+) = .*\bglobal ptr null", re.M)


def build_llvm(prog: Program, target: dict, path) -> Program:
    """Build prog's scheduled kernels with TVM's LLVM backend (target e.g. {"kind": "llvm", "mtriple":
    "aarch64-linux-gnu", "mcpu": "cortex-a72"}) into one object file at `path`; return the program calling
    them. Same packed-call ABI, exported as __tvm_ffi_<symbol>; PARALLEL loops become TVM's own closures,
    launched through threads.c, so edgekit's loop splitting is not used."""
    import tvm
    if any(k.workspace_bytes for k in prog.kernels.values()):
        raise NotImplementedError("edgekit codegen: LLVM kernels with workspaces are not supported: use the C kernels")
    mod = tvm.IRModule({k.name: k.func.with_attr("global_symbol", k.name) for k in prog.kernels.values()})
    with tvm.transform.PassContext(opt_level=3, config={"tirx.disable_assert": True}):
        lib = tvm.compile(mod, target=tvm.target.Target(target))
    lib = lib.mod if hasattr(lib, "mod") else lib
    imports = set(_LLVM_IMPORTS.findall(lib.inspect_source("ll"))) - {"__TVMBackendParallelLaunch"}
    if imports:
        raise NotImplementedError(f"edgekit codegen: LLVM kernels import TVM runtime symbols {sorted(imports)}")
    lib.write_to_file(str(path))
    kernels = {key: Kernel("__tvm_ffi_" + k.name, "", 0) for key, k in prog.kernels.items()}
    return Program(prog.tensors, prog.calls, kernels, prog.input, prog.output)
