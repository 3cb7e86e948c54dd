"""Relax IRModule -> a flat program: tensors, and kernel calls in order, each kernel TVM's C-target output."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np


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


def _is_scheduled(func) -> bool:
    return func.attrs is not None and "tirx.is_scheduled" in func.attrs and bool(func.attrs["tirx.is_scheduled"])


SMALL = 256  # bytes: a producer this small stays put (on the stack)


def _nbytes(buf) -> int:
    return int(np.prod([int(d) for d in buf.shape], dtype=np.int64)) * np.dtype(str(buf.dtype)).itemsize


def shrink(func):
    """Schedule a fused PrimFunc to MCU size: inline padding and elementwise stages, and compute each
    remaining producer (a reduction) inside its consumer's loops, so its buffer shrinks to a few elements."""
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
        if len(cons) != 1 or _nbytes(sch.get(b).writes[0].source) <= SMALL:
            continue
        # innermost spatial loop of the consumer first; outer ones if TVM refuses
        for loop in reversed(sch.get_loops(cons[0])):
            try:
                sch.compute_at(b, loop, preserve_unit_loops=False)
                break
            except Exception:  # noqa: BLE001
                continue
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
    return sch.mod["main"]


_WS = re.compile(r"TVMBackendAllocWorkspace\([^,]+,[^,]+,\s*\(uint64_t\)(\d+)ULL")


def build_kernel(func, symbol: str, target=None) -> Kernel:
    """C source of one PrimFunc, stripped of includes and TVM's library boilerplate."""
    import tvm
    func = func.with_attr("global_symbol", symbol)
    with tvm.transform.PassContext(opt_level=3, config={"tirx.disable_assert": True}):
        lib = tvm.compile(tvm.IRModule({symbol: func}), target=tvm.target.Target(target or {"kind": "c"}))
    src = lib.mod.inspect_source() if hasattr(lib, "mod") else lib.inspect_source()
    body = src[src.index("#ifdef __cplusplus"):src.index("// CodegenC: NOTE: Auto-generated entry function")]
    body = body.replace("__tvm_ffi_" + symbol, symbol)
    allocs = [int(m) for m in _WS.findall(body)]
    if len(allocs) != body.count("TVMBackendAllocWorkspace("):
        raise NotImplementedError(f"edgekit codegen: {symbol} allocates a workspace of non-constant size")
    return Kernel(symbol, body.strip() + "\n", sum(-(-a // WS_ALIGN) * WS_ALIGN for a in allocs), allocs)


def lower(mod, prefix: str = "k", target=None, schedule: bool = True) -> Program:
    """Fuse, schedule and build every kernel; flatten main into calls over named tensors."""
    from tvm.ir.expr import Call as RCall, GenericConst, Var
    mod = _fuse(mod)
    main = mod["main"]
    tensors, calls, kernels, names = {}, [], {}, {}

    def sinfo(v):
        return tuple(int(d) for d in v.ty.shape.values), str(v.ty.dtype)

    (inp,) = main.params
    tensors[inp.name] = Tensor(inp.name, *sinfo(inp), "input")
    names[inp] = inp.name
    consts = {}

    def arg_name(a):
        if isinstance(a, GenericConst):
            arr = a.value.numpy()
            key = (arr.dtype.str, arr.shape, arr.tobytes())  # by content: ONNX repeats scalars and BN params
            if key not in consts:
                n = f"c{len(consts)}"
                consts[key] = n
                tensors[n] = Tensor(n, tuple(arr.shape), str(arr.dtype), "const", arr)
            return consts[key]
        return names[a]

    body = main.body
    bindings = [b for blk in body.blocks for b in blk.bindings]
    out_var = body.body
    for b in bindings:
        v, e = b.var, b.value
        tname = v.name
        names[v] = tname
        shape, dtype = sinfo(v)
        kind = "output" if v.same_as(out_var) else "act"
        if isinstance(e, RCall) and e.op.name == "relax.call_tir":
            gv, args = e.args[0], e.args[1].fields
            tensors[tname] = Tensor(tname, shape, dtype, kind)
            if gv.name_hint not in kernels:
                func = mod[gv]
                if schedule and not _is_scheduled(func):  # keep tuned kernels (a MetaSchedule database applied)
                    func = shrink(func)
                kernels[gv.name_hint] = build_kernel(func, f"{prefix}_{gv.name_hint}", target)
            calls.append(Call(tname, gv.name_hint, [arg_name(a) for a in args] + [tname]))
        elif isinstance(e, RCall) and e.op.name == "relax.reshape" and kind == "act":
            tensors[tname] = Tensor(tname, shape, dtype, kind, alias=arg_name(e.args[0]))
        elif isinstance(e, Var):
            names[v] = names[e]
        else:
            raise NotImplementedError(f"edgekit codegen: unsupported binding {tname} = {e}")
    output = names[out_var] if isinstance(out_var, Var) else None
    if output is None or tensors[output].kind != "output":
        raise NotImplementedError("edgekit codegen: the model must return one tensor computed by a kernel")
    return Program(tensors, calls, kernels, inp.name, output)
