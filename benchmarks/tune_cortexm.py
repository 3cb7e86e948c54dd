"""`edgekit tune` on the emulated Cortex-M4 (mps2-an386): candidates counted in instructions (QEMU,
-icount shift=0, exact), then the VWW model (V1 a0.25 96x96, 2 classes) before and after, float32 and int8.
All figures are EMULATOR instruction counts, not cycles. Usage: tune_cortexm.py [--minutes M]"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

from edgekit import board, target
from edgekit.build import build, front_end
from edgekit.models import ModelConfig
from edgekit.tuning import tasks, tune

VWW = ModelConfig("v1", 0.25, (96, 96), 2)


def instructions(build_dir: Path) -> float:
    """Per inference on a fixed input (the count does not depend on the values)."""
    with board.connect(build_dir) as (_, dev, _source):
        dev.load_input(bytes(dev.info()["input"]))
        return statistics.median(dev.measure(3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5)
    args = ap.parse_args()
    an386 = target.get("mps2-an386")
    print(f"mps2-an386 (Cortex-M4F, QEMU emulator: instruction counts, not cycles); tuning {args.minutes:g} min")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for quantize in (None, "int8"):
            name = f"VWW {quantize or 'float32'}"
            mod, _ = front_end(tmp, an386, VWW, None, None, quantize, None)
            if not tasks(mod):
                print(f"{name}: no kernel in the search space")
                continue
            db = tmp / f"db-{quantize}"
            t0 = time.monotonic()
            res = tune(an386, mod, minutes=args.minutes, db=db)
            took = time.monotonic() - t0
            before = build("mps2-an386", VWW, out=tmp / "before", quantize=quantize, tuning=False)
            after = build("mps2-an386", VWW, out=tmp / "after", quantize=quantize, db=db)
            b, a = (instructions(Path(m["build_dir"])) for m in (before, after))
            print(f"{name}: {res['trials']} trials in {took:.0f} s; {after['tuning']['kernels_tuned']} of "
                  f"{after['tuning']['kernels']} kernels tuned; {b:,.0f} -> {a:,.0f} instructions/inference "
                  f"(emulator), {b / a:.2f}x; arena {before['memory']['arena_bytes']:,} -> "
                  f"{after['memory']['arena_bytes']:,} B")


if __name__ == "__main__":
    main()
