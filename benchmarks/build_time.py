"""Wall time of `edgekit build --target rpi4 --alpha 0.35` (the README's first build), against the
60-second aim for a 2-core machine."""
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AIM_S = 60.0
edgekit = str(Path(sys.executable).with_name("edgekit"))
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    subprocess.run([edgekit, "build", "--target", "rpi4", "--alpha", "0.35", "--out", f"{tmp}/b"], check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
print(f"build rpi4 v2 a0.35 r224: {wall:.1f} s wall ({wall / AIM_S:.2f} x the {AIM_S:.0f} s aim)")
