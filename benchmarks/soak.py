"""`make soak`: edgekit's serial link on a noisy line, at scale, and the protocol core under libFuzzer.

A fault proxy (tests/fault_proxy.py: drops, bit flips and insertions in both directions, at --rate per byte)
sits between the host and the firmware on the emulated mps2-an386, and carries:
  1. edgekit.link.Device with a small model (firmware.fake_model; its input in a buffer of its own, then in
     the model's arena, where each run consumes it) until --faults faults are injected;
  2. the real CLI, `edgekit validate BUILD --port PROXY --inputs N`, on the VWW model (MobileNet V1 alpha 0.25,
     96x96, 2 classes; built first if missing), whose results must equal those of a run on a clean line.
One line sums both: faults injected, inferences, exact results, errors raised, silent corruptions and host
exceptions other than edgekit's own; the last two must be 0, and after every error one inference on a
healthy line must succeed. Then libFuzzer runs the protocol core --fuzz-runs times and the count is printed.

    python benchmarks/soak.py [--rate 0.003] [--seed 1] [--faults 10000] [--cli-rate 0.0001] [--cli-runs 3]
                              [--cli-inputs 2] [--fuzz-runs 1000000]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from fault_proxy import FaultProxy, drive  # noqa: E402

from edgekit import firmware, flash, target  # noqa: E402

EDGEKIT = [sys.executable, "-m", "edgekit.cli"]
VWW = ["--arch", "v1", "--alpha", "0.25", "--resolution", "96", "--classes", "2"]
HASH = "50a4" * 16


def reference(x: np.ndarray) -> np.ndarray:
    """The fake model in float32, summing in the firmware's order."""
    s = np.float32(0)
    for v in x * np.float32(0.5):
        s = np.float32(s + v)
    return s * np.arange(1, 5, dtype=np.float32)


def device_soak(args, tmp: Path) -> Counter:
    n, board = Counter(), target.get("mps2-an386")
    for in_arena, n_in in ((False, 64), (True, 512)):  # 512 distinct floats in the arena: one run per load
        name = "arena" if in_arena else "own"
        elf = firmware.build_firmware(board, firmware.fake_model(tmp / name, n_in=n_in), "fake", HASH, tmp / f"fw-{name}",
                                      input_in_arena=in_arena)["firmware"]
        with flash.emulate(board, elf) as url:
            n += drive(url, args.rate, args.seed, args.faults // 2, n_in, reference)
    return n


def cli_soak(args) -> Counter:
    n, build = Counter(), ROOT / "build" / "mps2-an386-v1-a0.25-r96"
    if not (build / "manifest.json").is_file():
        subprocess.run([*EDGEKIT, "build", "--target", "mps2-an386", *VWW, "--out", build], check=True, cwd=ROOT)
    elf = build / json.loads((build / "manifest.json").read_text())["artifact"]["firmware"]
    with flash.emulate(target.get("mps2-an386"), elf) as url:
        def validate(rate: float, seed: int):
            with FaultProxy(url, rate, seed) as proxy:
                p = subprocess.run([*EDGEKIT, "validate", build, "--port", proxy.url, "--inputs", str(args.cli_inputs),
                                    "--json"], capture_output=True, text=True, cwd=ROOT)
            return p, proxy.faults

        clean, _ = validate(0, 0)
        if clean.returncode:
            sys.exit(f"soak: validate on a clean line failed: {clean.stderr.strip()}")
        want = json.loads(clean.stdout)["validation"]
        for run in range(args.cli_runs):
            p, faults = validate(args.cli_rate, args.seed + run)
            n["faults"] += faults
            n["inferences"] += args.cli_inputs
            if "Traceback" in p.stderr or p.returncode not in (0, 1):
                n["exception"] += 1
                print(p.stderr, file=sys.stderr)
            elif p.stdout.strip() and json.loads(p.stdout)["validation"] == want:
                n["exact"] += args.cli_inputs
            elif p.stdout.strip():  # results came back, and differ from the clean line's
                n["silent"] += 1
            else:
                n["error"] += 1
                print(f"soak: validate: {p.stderr.strip()}", file=sys.stderr)
    return n


def fuzz(runs: int, tmp: Path) -> int:
    """Executions libFuzzer completed on the protocol core (ASan + UBSan)."""
    model = firmware.fake_model(tmp / "fuzz-model")
    (tmp / "ek_model_config.h").write_text(firmware.model_config("fake", HASH, "host"))
    common = firmware.COMMON
    prog = firmware.compile_c("clang", [common / "ek_protocol.c", common / "ek_crc32.c", common / "ek_io.c",
                                        firmware.FIRMWARE / "fuzz" / "ek_fuzz.c", *sorted(model.glob("*.c"))],
                              [tmp, model, common], ["-g", "-O1", "-fsanitize=fuzzer,address,undefined",
                                                     "-DEK_MAX_ITERS=64"], tmp / "fuzz")
    corpus = tmp / "corpus"
    corpus.mkdir()
    for i, seed in enumerate([b"\x00name%infer 2 1%results%db load 4%db 01020304%db print 4 0%",
                              b"\x01ek-load 4 b63cfbcd%\x01\x02\x03\x04%ek-time 1 b63cfbcd%ek-read%ek-sync 1%",
                              b"\x01ek-info%ek-profile%ek-read 4 4%ek-time 2%"]):
        (corpus / str(i)).write_bytes(seed)
    p = subprocess.run([str(prog), f"-runs={runs}", "-seed=1", "-max_len=512", str(corpus)],
                       capture_output=True, text=True, cwd=tmp)
    done = re.search(r"Done (\d+) runs", p.stderr)
    if p.returncode or not done:
        sys.exit(f"soak: libFuzzer failed:\n{p.stderr[-3000:]}")
    return int(done.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=0.003, help="faults per byte, Device run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--faults", type=int, default=10_000, help="faults to inject in the Device run")
    ap.add_argument("--cli-rate", type=float, default=1e-4, help="faults per byte, CLI run")
    ap.add_argument("--cli-runs", type=int, default=3)
    ap.add_argument("--cli-inputs", type=int, default=2)
    ap.add_argument("--fuzz-runs", type=int, default=1_000_000)
    args = ap.parse_args()
    for exe in ("arm-none-eabi-gcc", "qemu-system-arm", "clang"):
        if not shutil.which(exe):
            sys.exit(f"soak: {exe} not found: run `make deps`")
    with tempfile.TemporaryDirectory(prefix="edgekit-soak-") as tmp:
        dev = device_soak(args, Path(tmp))
        cli = cli_soak(args)
        total = dev + cli
        print(f"soak: {total['faults']:,} faults injected (Device {dev['faults']:,}, CLI {cli['faults']:,}), "
              f"{total['inferences']:,} inferences, {total['exact']:,} exact results, {total['error']:,} errors raised, "
              f"{total['silent']} silent corruptions, {total['exception']} host exceptions; "
              f"{dev['recovered']}/{dev['recovered'] + dev['stuck']} recovered on a healthy line after an error",
              flush=True)
        runs = fuzz(args.fuzz_runs, Path(tmp))
        print(f"fuzz: {runs:,} libFuzzer executions of the protocol core, no crash", flush=True)
    return 1 if total["silent"] or total["exception"] or dev["stuck"] else 0


if __name__ == "__main__":
    sys.exit(main())
