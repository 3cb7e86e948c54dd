"""The Jetson build: Relax module -> CUDA kernels + an aarch64 host library for TVM's runtime.

What goes into `out_dir` (names relative to it, as the manifest records them):
  model.so            aarch64 library for the Relax VM; TVM embeds the CUDA *source* in it
  model.json          input/output shapes and dtypes, read by the runner on the board
  kernels.cu          that CUDA source, as a file
  kernels.fatbin      the kernels compiled ahead of time by nvcc for the board's arch (when possible)
  build_on_device.sh  the nvcc step written out, to make kernels.fatbin on the board itself
  tvm_runner.py       the protocol runner (edgekit.runners.tvm_runner), run next to model.so

Why a separate fatbin: TVM 0.27's CUDA codegen only emits source, and its runtime compiles it
when the library is loaded, through the global hook `tvm_callback_cuda_compile` (NVRTC, which
needs `cuda-bindings` on the board). The runner's `--kernels kernels.fatbin` serves that hook
with the prebuilt binary instead, so the board needs no compiler at all.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import stat
import subprocess
from pathlib import Path

from .errors import UsageError, WorkError
from .runners import TVM_RUNNER
from .target import Target

NVCC_FLAGS = ["--fatbin", "-O3", "-w"]


def tvm_target(target: Target):
    """The TVM CUDA target of a board file's [tvm] section: tag (or dict), host and arch from the file.

    The tag's own host is replaced: `nvidia/jetson-orin-nano` names a Carmel (Xavier) host and
    `nvidia/jetson-nano` none, while the library must be built for the board's real CPU.
    """
    from tvm.target import Target as TvmTarget

    sec = target.section("tvm")
    if "target" not in sec or "host" not in sec:
        raise UsageError(f"target file {target.name}.toml: [tvm] needs `target` and `host`: add them")
    base = sec["target"]
    spec = dict(TvmTarget(base).export()) if isinstance(base, str) else dict(base)
    spec.pop("host", None)
    if "arch" in sec:
        spec["arch"] = sec["arch"]
    if spec.get("kind") != "cuda":
        raise UsageError(f"target file {target.name}.toml: [tvm] target must be a CUDA target")
    return TvmTarget({**spec, "host": dict(sec["host"])})


def io_signature(mod) -> dict:
    """Shapes and dtypes of `main`'s parameters and result: the runner needs them to size buffers."""

    # TVM 0.27 calls Relax's struct info `ty` (TensorType, TupleType); dtype is a PrimType
    def tensors(ty):
        if hasattr(ty, "fields"):  # a tuple of results
            return [t for f in ty.fields for t in tensors(f)]
        return [{"shape": [int(d) for d in ty.shape.values], "dtype": str(ty.dtype)}]

    fn = mod["main"]
    inputs = [{"name": str(p.name), **tensors(p.ty)[0]} for p in fn.params]
    return {"inputs": inputs, "outputs": tensors(fn.ret_ty)}


def gpu_pipeline(target):
    """relax.backend.cuda's default pipeline, except that each PrimFunc gets the first dlight rule that
    schedules it *without raising*: dlight stops at the first rule that matches, and its Matmul rule
    matches fused MobileNet convolutions but then fails an assertion ("consumers of the cache-write
    stage that are not properly inlined"), which would fail the whole build."""
    import tvm
    from tvm.relax.backend.cuda import pipeline as cuda
    from tvm.s_tir import dlight as dl
    from .codegen.lower import nonnegative_floor_operands

    rules = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]

    def schedule(func):
        for rule in rules:
            try:
                space = rule.apply(func, target, False)
            except Exception:  # noqa: BLE001 (TVM raises assorted errors from a rule that half-matched)
                continue
            if space is not None:
                sch = space[0] if isinstance(space, list) else space
                return nonnegative_floor_operands(sch.mod["main"]).with_attr("tirx.is_scheduled", True)
        raise WorkError(f"no GPU schedule fits kernel {func.attrs.get('global_symbol', '?')}")

    @tvm.transform.module_pass(opt_level=0)
    def apply_schedules(mod, _ctx):
        for gv, func in list(mod.functions_items()):
            if isinstance(func, tvm.tirx.PrimFunc) and not ("tirx.is_scheduled" in func.attrs and func.attrs["tirx.is_scheduled"]):
                mod[gv] = schedule(func)
        return mod

    @tvm.transform.module_pass(opt_level=0)
    def pipeline(mod, _ctx):
        with target:
            legalize = [p for p in cuda.legalize_passes(target) if "ApplyDefaultSchedule" not in type(p).__name__]
            passes = (cuda.library_dispatch_passes(target) + legalize + [apply_schedules]
                      + cuda.dataflow_lower_passes(target) + cuda.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)
    return pipeline


def nvcc_archs() -> set[str] | None:
    """The real archs (`sm_XX`) the installed nvcc compiles for; None without nvcc.

    Asked of nvcc rather than assumed: CUDA 13 dropped everything below sm_75, so the
    Jetson Nano's sm_53 needs the board's own CUDA 10.2 toolkit.
    """
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    res = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True)
    if res.returncode != 0:
        return None
    return {a.replace("compute_", "sm_") for a in res.stdout.split()}


def nvcc_command(arch: str, src: str = "kernels.cu", out: str = "kernels.fatbin") -> list[str]:
    """SASS for `arch` plus its PTX, so a newer GPU or driver can still JIT the kernels."""
    num = arch.removeprefix("sm_")
    return ["nvcc", *NVCC_FLAGS, "-gencode", f"arch=compute_{num},code=[sm_{num},compute_{num}]",
            "-o", out, src]


def _write_build_script(path: Path, arch: str) -> None:
    # nvcc_command() written for sh, the arch a parameter; quoted so `[...]` never globs
    cmd = (f"nvcc {' '.join(NVCC_FLAGS)} -gencode \"arch=compute_${{ARCH#sm_}},code=[$ARCH,compute_${{ARCH#sm_}}]\""
           " -o kernels.fatbin kernels.cu")
    path.write_text(f"""#!/bin/sh
# Compile model.so's CUDA kernels for this board's GPU, on the board (its JetPack nvcc
# supports its arch even where the build machine's CUDA does not). Then run:
#   python3 tvm_runner.py model.so        (it picks up kernels.fatbin beside model.so)
# Without kernels.fatbin the runner still works if TVM can compile at load time (NVRTC via
# `pip install cuda-bindings`, or TVM_CUDA_COMPILE_MODE=nvcc with nvcc on PATH).
set -eu
cd "$(dirname "$0")"
ARCH="${{1:-{arch}}}"
export PATH="$PATH:/usr/local/cuda/bin"
{cmd}
echo "kernels.fatbin built for $ARCH"
""")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _compile_fatbin(out_dir: Path, arch: str) -> tuple[bool, str]:
    """Try nvcc here; returns (done, why) for the manifest."""
    archs = nvcc_archs()
    if archs is None:
        return False, "nvcc not installed here: run build_on_device.sh on the board"
    if arch not in archs:
        return False, (f"this nvcc does not support {arch} (lowest: {min(archs, key=lambda a: int(a[3:]))}):"
                       " run build_on_device.sh on the board")
    res = subprocess.run(nvcc_command(arch), cwd=out_dir, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise WorkError(f"nvcc failed on kernels.cu for {arch}: {tail}")
    return True, f"kernels compiled ahead of time with nvcc for {arch}"


def build_cuda(mod, target: Target, out_dir: Path, name: str = "model", model_hash: str | None = None) -> dict:
    """Compile `mod` (Relax, from compiler.import_onnx) for a CUDA board into `out_dir`.

    `name` and `model_hash` are what the runner's `ek-info` reports (hash: defaults to the CUDA
    source's). Returns {"artifact": {role: file name}, "cuda_aot": bool, "cuda_aot_reason": str, "arch": ...}.
    """
    import tvm
    import tvm.support.cc as cc

    cxx = target.section("toolchain").get("cxx", "aarch64-linux-gnu-g++")
    if shutil.which(cxx) is None:
        raise UsageError(f"{cxx} not found: apt-get install g++-aarch64-linux-gnu")
    tgt = tvm_target(target)
    arch = str(tgt.attrs["arch"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # TVM's CUDA pipeline, with dlight's GPU schedules applied rule by rule (see gpu_pipeline);
    # without those schedules kernels would not bind to threads.
    ex = tvm.compile(mod, target=tgt, relax_pipeline=gpu_pipeline(tgt))
    cuda_mods = [m for m in _walk(ex.mod) if m.kind == "cuda"]
    if len(cuda_mods) != 1:
        raise WorkError(f"expected one CUDA module from TVM, got {len(cuda_mods)}: the model has no GPU kernels")
    source = cuda_mods[0].inspect_source("cuda")
    (out_dir / "kernels.cu").write_text(source)
    try:
        ex.export_library(str(out_dir / "model.so"), fcompile=cc.cross_compiler(cxx))
    except Exception as e:  # the cross compiler's own message is the useful part
        raise WorkError(f"linking model.so with {cxx} failed: {str(e).strip().splitlines()[-1]}") from None

    source_sha = hashlib.sha256(source.encode()).hexdigest()
    meta = {"name": name, "hash": model_hash or source_sha[:16], "target": target.name,
            **io_signature(mod), "arch": arch, "cuda_source_sha256": source_sha}
    (out_dir / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    _write_build_script(out_dir / "build_on_device.sh", arch)
    shutil.copyfile(TVM_RUNNER, out_dir / "tvm_runner.py")
    aot, why = _compile_fatbin(out_dir, arch)

    artifact = {"library": "model.so", "meta": "model.json", "cuda_source": "kernels.cu",
                "build_script": "build_on_device.sh", "runner": "tvm_runner.py"}
    if aot:
        artifact["cuda_fatbin"] = "kernels.fatbin"
    return {"artifact": artifact, "cuda_aot": aot, "cuda_aot_reason": why, "arch": arch,
            "host": str(tgt.host.attrs.get("mtriple", ""))}


# the artifact roles that go to the board (the manifest's artifact also names model.onnx, which stays here)
DEPLOY_ROLES = ("library", "meta", "cuda_source", "cuda_fatbin", "build_script", "runner")


def deploy_files(build_dir: Path, artifact: dict) -> list[Path]:
    """The files of a CUDA build that remote.deploy() should copy to the board."""
    return [Path(build_dir) / artifact[r] for r in DEPLOY_ROLES if r in artifact]


def runner_argv(artifact: dict, python: str = "python3") -> list[str]:
    """The command that starts the runner inside the deployed directory (remote.start's argv).

    No --kernels: the runner picks up kernels.fatbin next to the library by itself, so a fatbin
    made later on the board with build_on_device.sh is used too.
    """
    return [python, artifact["runner"], artifact["library"], "--meta", artifact["meta"]]


def _walk(m):
    yield m
    for sub in m.imports:
        yield from _walk(sub)
