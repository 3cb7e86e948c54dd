"""The corpus of deployment-shaped models (tests/corpus.py: DS-CNN keyword spotter, ResNet-8, FC autoencoder,
MobileNet V1 VWW and V2), each as Keras -> TFLite and as ONNX, built with `edgekit run` and validated against
ONNX Runtime on the host and on the emulated Cortex-M4. Prints one row per case; exits 1 if any fails."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import corpus  # noqa: E402

TARGETS = ("host", "mps2-an386")


def main() -> int:
    failed = 0
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        print(f"{'model':16} {'format':7} {'target':11} {'result':7} {'max_abs_err':>12} {'latency':>28}")
        for name in corpus.MODELS:
            for fmt, path in corpus.write(name, d / "models").items():
                for target in TARGETS:
                    r = subprocess.run([sys.executable, "-m", "edgekit.cli", "run", "--target", target, "--model", str(path),
                                        "--out", str(d / "b"), "--inputs", "5", "--runs", "3", "--json"],
                                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
                    if r.returncode != 0:
                        failed += 1
                        print(f"{name:16} {fmt:7} {target:11} {'ERROR':7} {r.stderr.strip().splitlines()[-1][:80]}")
                        continue
                    out = json.loads(r.stdout)
                    val, lat = out["validation"], out["latency"]
                    failed += not val["passed"]
                    where = "EMULATOR " if lat["source"] == "emulator" else ""
                    print(f"{name:16} {fmt:7} {target:11} {'pass' if val['passed'] else 'FAIL':7} {val['max_abs_err']:12.3g} "
                          f"{where + format(lat[lat['unit']], ',.0f') + ' ' + lat['unit']:>28}", flush=True)
    print(f"corpus: {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
