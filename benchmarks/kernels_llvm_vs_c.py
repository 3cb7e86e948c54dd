"""Kernels from TVM's LLVM backend vs TVM's C output compiled by gcc -O3: which to ship on Linux boards.

There is no Raspberry Pi here and qemu-aarch64 timings mean nothing, so the proxy is this x86-64 host: the
same generated program (schedules, parallel loops, orchestration, threads.c) built twice, once with
kernels.c (gcc -O3 -march=native) and once with kernels.o (LLVM, mcpu = this CPU), timed alternately in
the same run, median of many inferences, at 1 and 2 threads. Prints the LLVM/C latency ratio per model.

    .venv/bin/python benchmarks/kernels_llvm_vs_c.py [--runs 40] [--rounds 5]
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = [("v2", 0.35, 96), ("v1", 0.25, 128)]
CFLAGS = ["-O3", "-march=native", "-pthread"]

# Times `runs` inferences of one input after a warm-up; prints each in ns, then the output's first values.
DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "model.h"
#include "runtime.h"
static float in[EDGEKIT_MODEL_INPUT_BYTES / 4] __attribute__((aligned(64)));
static float out[EDGEKIT_MODEL_OUTPUT_BYTES / 4] __attribute__((aligned(64)));
static long long now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
int main(int argc, char **argv) {
  int threads = atoi(argv[1]), runs = atoi(argv[2]);
  for (unsigned i = 0; i < sizeof in / 4; i++) in[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
  edgekit_set_threads(threads);
  for (int i = 0; i < 3; i++) if (edgekit_model_run(in, out)) return 1;
  for (int i = 0; i < runs; i++) {
    long long t0 = now();
    if (edgekit_model_run(in, out)) return 1;
    printf("%lld ", now() - t0);
  }
  printf("\n%.9g %.9g %.9g\n", out[0], out[1], out[2]);
  return 0;
}
"""


def build(variant: str, d: Path, mod) -> Path:
    import tvm
    from edgekit.codegen import emit, generate
    # TVM's LLVM kernels assume every tensor 64-byte aligned (its kAllocAlignment) and use aligned vector
    # loads: align the arena, weights and workspaces so for both variants (the C kernels assume nothing)
    emit.ALIGN = 64
    llvm = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}
    generate(mod, d, "model", threads=True, llvm=llvm if variant == "llvm" else None)
    (d / "bench.c").write_text(DRIVER)
    srcs = sorted(str(p) for p in d.glob("*.c")) + ([str(d / "kernels.o")] if variant == "llvm" else [])
    subprocess.run(["gcc", *CFLAGS, "-I", str(d), "-o", str(d / "bench"), *srcs, "-lm"], check=True)
    return d / "bench"


def time_it(binary: Path, threads: int, runs: int):
    out = subprocess.run([str(binary), str(threads), str(runs)], capture_output=True, text=True, check=True).stdout
    times, first = out.splitlines()
    return [int(t) for t in times.split()], [float(v) for v in first.split()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40, help="inferences per process")
    ap.add_argument("--rounds", type=int, default=5, help="C / LLVM processes alternated this many times")
    args = ap.parse_args()
    from edgekit.compiler import import_onnx
    from edgekit.export import mobilenet_onnx
    from edgekit.models import ModelConfig
    with tempfile.TemporaryDirectory() as tmp:
        for arch, alpha, res in MODELS:
            mod = import_onnx(mobilenet_onnx(ModelConfig(arch=arch, alpha=alpha, resolution=(res, res))))
            bins = {v: build(v, Path(tmp) / f"{arch}-{res}-{v}", mod) for v in ("c", "llvm")}
            ms = {}
            for threads in (1, 2):
                samples = {v: [] for v in bins}
                firsts = {}
                for _ in range(args.rounds):  # alternate, so drifting machine load hits both alike
                    for v, b in bins.items():
                        t, firsts[v] = time_it(b, threads, args.runs)
                        samples[v] += t
                assert np.allclose(firsts["c"], firsts["llvm"], rtol=1e-4, atol=1e-6), firsts
                for v in bins:
                    ms[v, threads] = statistics.median(samples[v]) / 1e6
                print(f"{arch} a{alpha} r{res} threads={threads}: C (gcc -O3) {ms['c', threads]:.3f} ms, "
                      f"LLVM {ms['llvm', threads]:.3f} ms, LLVM/C = {ms['llvm', threads] / ms['c', threads]:.3f} "
                      f"(median of {args.rounds * args.runs})", flush=True)
            for v in bins:
                print(f"{arch} a{alpha} r{res} {v}: 1 -> 2 threads speedup {ms[v, 1] / ms[v, 2]:.2f}x")


if __name__ == "__main__":
    main()
