"""Soak: thousands of random ONNX graphs through edgekit's compiler and C generator, each compared with
ONNX Runtime (tests/graphgen.py makes the graphs, tests/difftest.py checks them).

    .venv/bin/python benchmarks/difftest_soak.py --count 2000 [--seed 0] [--out soak-failures] [--shrink]

Graph i is graph_from_seed(seed + i): any failure is reproducible from its seed alone (with the same
tests/graphgen.py: a changed generator maps seeds to other graphs; --out keeps the failing .onnx files). Every 4th graph is
generated for the Linux boards' split kernels (threads.c), every 10th with TVM's unscheduled kernels (arena
workspaces), every 5th for Cortex-M4 and compiled with arm-none-eabi-gcc too, every 8th also run built with
AddressSanitizer and UBSan; every 5th that passes also has the tuning's search space checked on its kernels
(difftest.check_space: random points and seeds against codegen's schedule, MCU and Linux layouts).
--board T --board-every K also runs every Kth graph through `edgekit build --target T` + `edgekit validate`
(QEMU for mps2-an386: ~10 s each). Prints each failure as it comes, then graphs run / passed / failed / skipped,
failures by kind and skips by reason; exits 1 when any graph failed. With --out, each failing graph is saved as .onnx and
as onnx.helper code (shrunk first with --shrink).
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import onnx  # noqa: E402

import difftest  # noqa: E402
import graphgen  # noqa: E402


def variant(seed: int) -> dict:
    arm = seed % 5 == 1 and shutil.which("arm-none-eabi-gcc") is not None
    return {"threads": seed % 4 == 3, "schedule": seed % 10 != 7, "arm": arm, "sanitize": seed % 8 == 5}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000, help="graphs to run")
    ap.add_argument("--seed", type=int, default=0, help="first graph's seed")
    ap.add_argument("--max-ops", type=int, default=8, help="operators per graph, at most")
    ap.add_argument("--max-elems", type=int, default=4096, help="elements per tensor, at most")
    ap.add_argument("--out", type=Path, help="save failing graphs here (.onnx and .py)")
    ap.add_argument("--shrink", action="store_true", help="shrink the first failing graph of each kind before saving it")
    ap.add_argument("--verbose", action="store_true", help="print every graph's outcome")
    ap.add_argument("--board", help="also build and validate some graphs on this target through the CLI")
    ap.add_argument("--board-every", type=int, default=50, help="with --board: every Kth graph")
    args = ap.parse_args(argv)

    counts, kinds, skips = collections.Counter(), collections.Counter(), collections.Counter()
    start = time.monotonic()
    for i in range(args.count):
        seed = args.seed + i
        model = graphgen.graph_from_seed(seed, max_ops=args.max_ops, max_elems=args.max_elems)
        opts = variant(seed)
        try:
            outcome = difftest.check_graph(model, **opts)
        except difftest.GeneratorError as e:
            outcome = difftest.Outcome("fail", "generator", str(e))
        except Exception as e:  # noqa: BLE001 (a harness error must not end a soak of thousands)
            outcome = difftest.Outcome("fail", f"harness: {type(e).__name__}", str(e))
        if outcome.status == "pass" and seed % 5 == 2:  # the tuning's search space on its kernels too
            try:
                outcome = difftest.check_space(model)
            except Exception as e:  # noqa: BLE001 (as above)
                outcome = difftest.Outcome("fail", f"harness: {type(e).__name__}", str(e))
            opts = {**opts, "space": True}
        if outcome.status == "pass" and args.board and i % args.board_every == 0:
            with tempfile.TemporaryDirectory(prefix="difftest-cli-") as d:
                outcome = difftest.check_cli(model, Path(d), target=args.board)
            opts = {**opts, "board": args.board}
        counts[outcome.status] += 1
        if outcome.status == "skip":
            skips[outcome.kind] += 1
        if outcome.status == "fail":
            kinds[outcome.kind] += 1
            print(f"seed {seed} {opts}: FAIL {outcome.kind}: {outcome.detail.strip().splitlines()[-1][:300] if outcome.detail else ''}",
                  flush=True)
            if args.out:  # shrinking takes dozens of builds: only the first failure of each kind
                save(model, outcome, seed, opts, args, shrink=args.shrink and kinds[outcome.kind] == 1)
        elif args.verbose:
            print(f"seed {seed}: {outcome.status} {outcome.kind}", flush=True)
        if (i + 1) % 100 == 0:
            print(f"... {i + 1} graphs, {counts['fail']} failed, {time.monotonic() - start:.0f} s", flush=True)

    print(f"\ngraphs run: {args.count}  passed: {counts['pass']}  failed: {counts['fail']}  skipped: {counts['skip']}"
          f"  ({time.monotonic() - start:.0f} s)")
    for title, counter in (("failures by kind", kinds), ("skips by reason", skips)):
        if counter:
            print(title + ":")
            for kind, n in counter.most_common():
                print(f"  {n:6d}  {kind}")
    return 1 if counts["fail"] else 0


def save(model, outcome, seed: int, opts: dict, args, shrink: bool) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    if shrink and outcome.kind != "generator":
        def same_failure(m):
            try:
                if "board" in opts:
                    with tempfile.TemporaryDirectory(prefix="difftest-cli-") as d:
                        return difftest.check_cli(m, Path(d), target=opts["board"]).kind == outcome.kind
                if outcome.kind.startswith("space-"):
                    return difftest.check_space(m).kind == outcome.kind
                return difftest.check_graph(m, **{k: v for k, v in opts.items() if k != "space"}).kind == outcome.kind
            except difftest.GeneratorError:
                return False
        model = difftest.shrink(model, same_failure, log=print)
    onnx.save(model, str(args.out / f"seed{seed}.onnx"))
    code = graphgen.model_as_code(model, f"seed{seed}")
    (args.out / f"seed{seed}.py").write_text(f"# {outcome.kind} with {opts}\n# {outcome.detail.strip()[:500]}\n\n{code}\n")


if __name__ == "__main__":
    sys.exit(main())
