"""Cortex-M baseline on the emulated mps2-an386 (QEMU, -icount shift=0): instructions per inference, MACs per
instruction, and the arena against its lower bound, for the MLPerf Tiny VWW shape and MobileNet V2 0.35 at 96.
All latency figures here are EMULATOR instruction counts, not cycles."""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

edgekit = str(Path(sys.executable).with_name("edgekit"))
MODELS = {"VWW (V1 a0.25 96x96, 2 classes)": ["--arch", "v1", "--alpha", "0.25", "--resolution", "96", "--classes", "2"],
          "V2 a0.35 96x96, 1000 classes": ["--arch", "v2", "--alpha", "0.35", "--resolution", "96"]}
# ../shared/reference/peer-baselines.md: TFLM on the same emulated board, VWW int8, same counting method
TFLM_REFERENCE_INSTRUCTIONS = 100_513_974
TFLM_CMSIS_NN_INSTRUCTIONS = 24_415_847
VWW_TENSOR_BOUND = 221_184  # the largest total of float32 tensors live at one layer (issue 3)

print("mps2-an386 (Cortex-M4F, QEMU emulator: instruction counts, not cycles)")
with tempfile.TemporaryDirectory() as tmp:
    for name, args in MODELS.items():
        for flags in ([], ["--no-tuning"]):  # the build a user gets (shipped records, targets/tuning/), and without
            r = subprocess.run([edgekit, "run", "--target", "mps2-an386", *args, *flags, "--runs", "3", "--inputs", "1",
                                "--json", "--out", f"{tmp}/b"], capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"{name}: edgekit run failed: {r.stderr.strip()}")
            out = json.loads(r.stdout)
            lat, mem, tuning = out["latency"], out["memory"], out["tuning"]
            how = "--no-tuning" if flags else f"{tuning['kernels_tuned']} of {tuning['kernels']} kernels from records"
            print(f"{name}, {how}: {lat['instructions']:,.0f} instructions/inference (emulator), {out['macs']:,} MACs, "
                  f"{lat['macs_per_instruction']:.3f} MACs/instruction; arena {mem['arena_bytes']:,} B = "
                  f"{mem['arena_bytes'] / mem['arena_lower_bound']:.3f} x its lower bound {mem['arena_lower_bound']:,} B; "
                  f"flash {mem['flash_bytes']:,} B, RAM {mem['ram_bytes']:,} B, weights {mem['weights_bytes']:,} B"
                  + (" (in PSRAM)" if mem.get("weights_region_bytes") else ""))
            if name.startswith("VWW"):
                print(f"  arena / the issue's tensor lower bound {VWW_TENSOR_BOUND:,} B (unpadded tensors): "
                      f"{mem['arena_bytes'] / VWW_TENSOR_BOUND:.3f}")
                print(f"  float32 edgekit vs int8 TFLM (peer-baselines.md, same emulator): "
                      f"{lat['instructions'] / TFLM_REFERENCE_INSTRUCTIONS:.2f} x reference kernels, "
                      f"{lat['instructions'] / TFLM_CMSIS_NN_INSTRUCTIONS:.2f} x CMSIS-NN")
