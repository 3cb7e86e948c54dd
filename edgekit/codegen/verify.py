"""Invariants of a lowered, planned program, checked before any C is written: a compiler for devices must
never emit code that drops or misreads a tensor. Each check is independent of the code that made the
program (lifetimes are recomputed here, not taken from the planner), so a bug there cannot hide itself."""
from __future__ import annotations

from ..errors import InternalError


def _fail(msg: str):
    raise InternalError(f"internal error in the C generator: {msg}; no C was written (please report it "
                        "with the model)")


def verify(prog, offsets: dict, workspaces: dict, arena_bytes: int, align: int) -> None:
    """prog: lower.Program; offsets: root tensor -> arena offset; workspaces: call index -> (offset, size)."""
    t = prog.tensors
    for i, c in enumerate(prog.calls):
        for a in c.args:
            if a not in t:
                _fail(f"kernel {i} ({c.kernel}) takes '{a}', which is no tensor of the program")
    root = prog.root
    if t[prog.input].kind != "input" or t[root(prog.output)].kind != "output":
        _fail(f"the program's input '{prog.input}' or output '{prog.output}' is of the wrong kind")

    # dataflow: each kernel reads only tensors already defined, and writes one not yet written
    defined = {n for n, x in t.items() if x.kind in ("input", "const")}
    first, last = {}, {}  # root tensor -> steps it is live in the arena
    for i, c in enumerate(prog.calls):
        *reads, out = c.args
        for a in reads:
            if root(a) not in defined:
                _fail(f"kernel {i} ({c.kernel}) reads '{a}' before any kernel writes it")
            last[root(a)] = i
        o = root(out)
        if o in defined:
            _fail(f"kernel {i} ({c.kernel}) writes '{out}', which is "
                  f"{'an input or a constant' if t[o].kind in ('input', 'const') else 'already written'}")
        defined.add(o)
        first.setdefault(o, i)
        last.setdefault(o, i)
    if prog.input not in last:
        _fail(f"no kernel reads the model input '{prog.input}'")
    if root(prog.output) not in first:
        _fail(f"no kernel writes the model output '{prog.output}'")

    # memory: every arena tensor in bounds and aligned, and no two live at one step overlap
    first[prog.input] = 0  # the caller writes it before run() starts
    spans = [(n, first[n], last[n], offsets.get(n), t[n].nbytes) for n in first if t[n].kind in ("act", "input")]
    spans += [(f"workspace of kernel {i} ({prog.calls[i].kernel})", i, i, o, s) for i, (o, s) in workspaces.items()]
    for n, lo, hi, off, size in spans:
        if n == prog.input and off is None:
            continue  # a program whose input the caller keeps outside the arena
        if off is None or off % align or off < 0 or off + size > arena_bytes:
            _fail(f"'{n}' ({size} B) has no place inside the {arena_bytes} B arena (offset {off}, alignment {align})")
    # an in-place kernel's output may overlap its input, at the one step both live, from its gap below on
    inplace = {}
    for i, c in enumerate(prog.calls):
        gap = prog.kernels[c.kernel].inplace_gap
        src, dst = root(c.args[0]), root(c.args[-1])
        if gap is not None and last.get(src) == i and first.get(dst) == i:
            inplace[frozenset((src, dst))] = (dst, src, gap)
    placed = sorted((s for s in spans if s[3] is not None), key=lambda s: (s[3], s[0]))
    for k, (n, lo, hi, off, size) in enumerate(placed):
        for m, lo2, hi2, off2, size2 in placed[k + 1:]:
            if off2 >= off + size:
                break
            dst, src, gap = inplace.get(frozenset((n, m)), (None, None, None))
            if dst is not None and offsets[src] - offsets[dst] >= gap:
                continue
            if lo <= hi2 and lo2 <= hi:
                _fail(f"'{n}' and '{m}' overlap in the arena ([{off}, {off + size}) and [{off2}, {off2 + size2})) "
                      f"while both are live (steps {max(lo, lo2)}-{min(hi, hi2)})")
