"""MLPerf Tiny performance figure, as the official runner computes it (tests_performance.yaml, vww01: 5 windows of
`download` + `infer 20 5`; the figure is the median over windows of inferences / (T1 - T0) of m-lap-us-), for the
VWW shape (MobileNet V1 a0.25 96x96, 2 classes, int8) built with --mlperf vww01 on the emulated mps2-an386.
EMULATOR figures: m-lap-us- counts QEMU's virtual time (-icount shift=0: 1 instruction = 1 ns), not a real clock."""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgekit import flash, mlperf, target

WINDOWS, ITERATIONS, WARMUPS = 5, 20, 5  # tests_performance.yaml, vww01

with tempfile.TemporaryDirectory() as tmp:
    r = subprocess.run([sys.executable, "-m", "edgekit.cli", "build", "--target", "mps2-an386", "--arch", "v1",
                        "--alpha", "0.25", "--resolution", "96", "--classes", "2", "--quantize", "int8",
                        "--mlperf", "vww01", "--out", f"{tmp}/b", "--json"], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"edgekit build failed: {r.stderr.strip()}")
    m = json.loads(r.stdout)
    rng = np.random.default_rng(0)
    windows = []
    with flash.emulate(target.get("mps2-an386"), Path(tmp) / "b" / m["artifact"]["firmware"]) as url, \
            mlperf.RunnerClient(url, timeout=60) as client:
        for _ in range(WINDOWS):  # a different image per window, as the runner loads file after file
            client.load(rng.integers(0, 256, 96 * 96 * 3, dtype=np.uint8).tobytes())
            run = client.infer(ITERATIONS, WARMUPS)
            windows.append((ITERATIONS, run["elapsed_us"]))
    median = mlperf.median_throughput(windows)
    print(f"MLPerf Tiny vww01 (V1 a0.25 96x96 int8, --mlperf vww01) on mps2-an386, EMULATOR (QEMU -icount shift=0: "
          f"instructions, not cycles): median throughput {median:.3f} inf./emulated s over {WINDOWS} windows of "
          f"infer {ITERATIONS} {WARMUPS} = {1e9 / median:,.0f} instructions/inference")
