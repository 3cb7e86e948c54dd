"""Relax IRModule -> a self-contained C library: TVM's C kernels plus edgekit's orchestration and arena."""
from __future__ import annotations

import json
import re
from pathlib import Path

from .plan import Buffer, plan
from .verify import verify


def _buffers(prog):
    """Planner buffers: one per arena tensor (reshape aliases merged into their source), one per kernel
    workspace live only during its kernel. Returns (buffers, keys).
    The model input gets a slot too (edgekit_NAME_input()), live from before the first kernel to its last
    consumer, after which later tensors reuse it: writing the input there saves the caller a buffer of its
    own (TFLite Micro keeps its input tensor in the arena for the same reason)."""
    span = {}
    for i, c in enumerate(prog.calls):
        for a in c.args:
            r = prog.root(a)
            if prog.tensors[r].kind in ("act", "input"):
                lo, hi = span.get(r, (i, i))
                span[r] = (min(lo, i), max(hi, i))
    if prog.input in span:  # written before run() starts, so live from step 0 whoever reads it first
        span[prog.input] = (0, span[prog.input][1])
    keys = list(span) + [("ws", i) for i, c in enumerate(prog.calls) if prog.kernels[c.kernel].workspace_bytes]
    bufs = [Buffer(prog.tensors[k].nbytes, *span[k]) if isinstance(k, str)
            else Buffer(prog.kernels[prog.calls[k[1]].kernel].workspace_bytes, k[1], k[1]) for k in keys]
    return bufs, keys


def inplace_pairs(prog) -> list:
    """(step, input, output, gap) for each call whose kernel may write its output over its first input
    (Kernel.inplace_gap) where both are in the arena (the input's slot is consumed like any activation) and
    the input dies at the step the output is born."""
    first, last = {}, {}
    for i, c in enumerate(prog.calls):
        for a in c.args:
            r = prog.root(a)
            first.setdefault(r, i)
            last[r] = i
    pairs = []
    for i, c in enumerate(prog.calls):
        gap = prog.kernels[c.kernel].inplace_gap
        src, dst = prog.root(c.args[0]), prog.root(c.args[-1])
        if gap is not None and prog.tensors[src].kind in ("act", "input") and prog.tensors[dst].kind == "act" \
                and last[src] == i and first[dst] == i:
            pairs.append((i, src, dst, gap))
    return pairs


def _plan_record(prog, keys, bufs, p) -> dict:
    """The arena plan and each layer's work, for `edgekit report` (which reads build directories only)."""
    from tvm.s_tir.analysis import estimate_tir_flops
    flops = {key: int(estimate_tir_flops(k.func.body)) if k.func is not None else None for key, k in prog.kernels.items()}
    return {"arena_bytes": p.arena_bytes, "lower_bound": p.lower_bound,
            "buffers": [{"tensor": k if isinstance(k, str) else f"workspace of layer {k[1]}", "offset": o,
                         "bytes": b.size, "first": b.first, "last": b.last} for k, o, b in zip(keys, p.offsets, bufs)],
            "layers": [{"name": c.kernel, "flops": flops[c.kernel]} for c in prog.calls]}


def generate(mod, out_dir: Path, name: str, mcpu: str | None = None, schedule: bool = True,
             threads: bool = False, llvm: dict | None = None, tuned=None, stack_bytes: int = 0) -> dict:
    """Write model.h, model.c, kernels.c, runtime.h, shim.c and README.md to out_dir; return a summary.
    mcpu (e.g. "cortex-m4") goes into the C target TVM lowers for; schedule=False keeps TVM's default
    (workspace-hungry) kernels, which tests use to exercise the workspace path. threads (Linux boards):
    split the heavy kernels' outer loops across a pthread pool, written as threads.c (link with -pthread).
    llvm: a TVM LLVM target dict: build the kernels with TVM's LLVM backend into kernels.o, not kernels.c
    (benchmarks/kernels_llvm_vs_c.py; Linux boards ship the C kernels, which measured as fast).
    tuned, stack_bytes: the tuning database's schedules, and how large a tile may live on the stack (lower)."""
    from . import emit
    from .lower import lower
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"model name {name!r} must be a lower-case C identifier")
    if llvm and emit.ALIGN < 64:  # LLVM's vector loads then fault on edgekit's 16-byte aligned tensors
        raise NotImplementedError("edgekit codegen: TVM's LLVM kernels assume 64-byte aligned tensors: set "
                                  "codegen.emit.ALIGN = 64 and pass 64-byte aligned input and output")
    target = {"kind": "c", **({"mcpu": mcpu} if mcpu else {})}
    prog = lower(mod, prefix=f"edgekit_{name}", target=target, schedule=schedule, threads=threads, tuned=tuned,
                 stack_bytes=stack_bytes)
    return write(prog, out_dir, name, mcpu, threads, llvm)


def write(prog, out_dir: Path, name: str, mcpu: str | None = None, threads: bool = False,
          llvm: dict | None = None) -> dict:
    """generate's second half: plan a lowered Program's arena, verify it and write its files."""
    from . import emit
    bufs, keys = _buffers(prog)
    index = {k: n for n, k in enumerate(keys)}
    overlaps = [(index[dst], index[src], gap) for _, src, dst, gap in inplace_pairs(prog)]
    p = plan(bufs, align=emit.ALIGN, **({"overlaps": overlaps} if overlaps else {}))
    offsets = {k: o for k, o in zip(keys, p.offsets) if isinstance(k, str)}
    ws = {k[1]: (o, b.size) for k, o, b in zip(keys, p.offsets, bufs) if not isinstance(k, str)}
    verify(prog, offsets, ws, p.arena_bytes, emit.ALIGN)  # raises before any file is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if llvm:
        from .lower import build_llvm
        prog = build_llvm(prog, llvm, out_dir / "kernels.o")
    tin, tout = prog.tensors[prog.input], prog.tensors[prog.output]
    info = {
        "name": name, "input_bytes": tin.nbytes, "output_bytes": tout.nbytes,
        "input_offset": offsets.get(prog.input, 0),
        "input_shape": list(tin.shape), "output_shape": list(tout.shape),
        "input_dtype": tin.dtype, "output_dtype": tout.dtype,
        "arena_bytes": p.arena_bytes, "arena_lower_bound": p.lower_bound,
        "weights_bytes": sum(t.nbytes for t in prog.tensors.values() if t.kind == "const"),
        # name: as in the C layer_names; kernel: its C function; tensor: the Relax binding it computes
        "layers": [{"name": c.kernel, "kernel": prog.kernels[c.kernel].name, "tensor": c.name,
                    "workspace_bytes": prog.kernels[c.kernel].workspace_bytes,
                    "output_shape": list(prog.tensors[c.args[-1]].shape),
                    "parallel_extent": prog.kernels[c.kernel].parallel_extent} for c in prog.calls],
        "threads": threads,
        "kernels_tuned": sum(k.tuned for k in prog.kernels.values()), "kernels": len(prog.kernels),
    }
    files = {
        "model.h": emit.model_h(name, info),
        "model.c": emit.model_c(name, prog, offsets, ws, p.arena_bytes),
        "runtime.h": emit.runtime_h(name, prog, threads),
        **({} if llvm else {"kernels.c": emit.kernels_c(name, prog)}),
        "shim.c": emit.shim_c(name),
        "README.md": emit.readme(name, info, mcpu),
    }
    if threads:
        from .threads import THREADS_C
        files["threads.c"] = THREADS_C
    files["plan.json"] = json.dumps(_plan_record(prog, keys, bufs, p), indent=1) + "\n"
    for fname, text in files.items():
        (out_dir / fname).write_text(text)
    info["files"] = [str(out_dir / f) for f in files] + ([str(out_dir / "kernels.o")] if llvm else [])
    return info
