"""Int8 VWW shape (MobileNet V1 a0.25, 96x96, 2 classes, full-integer PTQ) on the emulated Cortex-M boards:
mps2-an386 (M4, DSP), mps2-an500 (M7, DSP), mps2-an385 (M3, no DSP: the portable micro-kernels).
Per board: instructions per inference and per MAC, arena / stack / total RAM, flash (code + weights), and
the ratio to TFLM + CMSIS-NN in the same emulator. All latency figures are EMULATOR instruction counts
(QEMU -icount shift=0), not cycles. The model has edgekit's seeded random weights: dense (the zero-weight
fraction is printed), and edgekit's kernels take no shortcut on zeros, so this is the dense-model figure."""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

edgekit = str(Path(sys.executable).with_name("edgekit"))
VWW = ["--arch", "v1", "--alpha", "0.25", "--resolution", "96", "--classes", "2", "--quantize", "int8"]
BOARDS = ["mps2-an386", "mps2-an500", "mps2-an385"]
# ../shared/reference/peer-baselines.md: TFLM + CMSIS-NN, VWW int8 on QEMU mps2-an386, same counting method
TFLM_CMSIS_NN_INSTRUCTIONS = 24_415_847
TFLM_ARENA, TFLM_CODE, TFLM_MODEL = 100_724, 74_600, 311_720


def zero_weight_fraction(tflite: Path) -> float:
    from edgekit.int8.tflite import read
    ops, _, _ = read(tflite)
    ws = [op.inputs[1].data for op in ops if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    return sum(int((w == 0).sum()) for w in ws) / sum(w.size for w in ws)


print("VWW int8 (V1 a0.25 96x96, 2 classes), QEMU emulator: instruction counts, not cycles")
print(f"TFLM + CMSIS-NN on mps2-an386 (peer-baselines.md): {TFLM_CMSIS_NN_INSTRUCTIONS:,} instructions, "
      f"arena {TFLM_ARENA:,} B, code {TFLM_CODE:,} B + model {TFLM_MODEL:,} B")
with tempfile.TemporaryDirectory() as tmp:
    for board in BOARDS:
        out_dir = Path(tmp) / board
        r = subprocess.run([edgekit, "run", "--target", board, *VWW, "--runs", "3", "--inputs", "1", "--json",
                            "--out", str(out_dir)], capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"{board}: edgekit run failed: {r.stderr.strip()}")
        out = json.loads(r.stdout)
        lat, mem, val = out["latency"], out["memory"], out.get("validation", {})
        n = lat["instructions"]
        code = mem["flash_bytes"] - (0 if mem.get("weights_region_bytes") else mem["weights_bytes"])
        print(f"{board}: {n:,.0f} emulator instructions/inference, {n / out['macs']:.2f} emulator instructions/MAC "
              f"({out['macs']:,} MACs), {n / TFLM_CMSIS_NN_INSTRUCTIONS:.3f} x TFLM+CMSIS-NN; "
              f"arena {mem['arena_bytes']:,} B (per-layer bound {mem['arena_lower_bound']:,} B), "
              f"stack {mem['stack_bytes']:,} B, RAM {mem['ram_bytes']:,} B; "
              f"flash {code:,} B code + {mem['weights_bytes']:,} B weights; "
              f"bit-exact with TFLite: {val.get('passed')} (max_abs_err {val.get('max_abs_err')})")
        if board == BOARDS[0]:
            print(f"  dense model: {zero_weight_fraction(out_dir / 'model.tflite'):.2%} of the weights are zero")
