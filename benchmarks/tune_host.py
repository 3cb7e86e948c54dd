"""`edgekit tune` on this machine (host target), then tuned edgekit against ONNX Runtime and TFLite's XNNPACK
(TensorFlow's interpreter with num_threads) at 1 and 2 threads, float32 batch 1, rounds interleaved, all in
this run. The tune starts from an empty database and has `--minutes` (default 10) per model.
Ratios > 1 mean edgekit is slower. Usage: tune_host.py [--minutes M] [--rounds R] [--model v2:1.0:160 ...]"""
import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgekit import board, target
from edgekit.build import build
from edgekit.compiler import import_onnx
from edgekit.models import ModelConfig
from edgekit.report import warm_up
from edgekit.tuning import tune

MODELS = {"V2 a0.35 224": ModelConfig("v2", 0.35, (224, 224)), "V1 a0.25 128": ModelConfig("v1", 0.25, (128, 128))}
RUNS = 20


def median_ms(fn) -> float:
    fn()
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def ort_session(path: Path, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def xnnpack_interpreter(cfg: ModelConfig, tmp: Path, threads: int):
    """The same MobileNet as float32 TFLite, run by TensorFlow's interpreter (XNNPACK delegate by default)."""
    import tensorflow as tf
    from edgekit.export import _quiet_tensorflow
    from edgekit.models.keras import build as keras_build
    path = tmp / f"{cfg.arch}-{cfg.alpha}.tflite"
    if not path.exists():
        _quiet_tensorflow()
        with contextlib.redirect_stdout(io.StringIO()):  # the converter prints the SavedModel it goes through
            path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_build(cfg, calibrate=False)).convert())
    it = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    return it


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", action="append", metavar="ARCH:ALPHA:RES",
                    help="MobileNet(s) to tune instead of the two above, e.g. v2:1.0:160")
    args = ap.parse_args()
    host = target.get("host")
    print(f"host CPU, float32, batch 1; tuning {args.minutes:g} min per model from an empty database")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = MODELS if not args.model else {
            m: ModelConfig(a, float(al), (int(r), int(r))) for m in args.model for a, al, r in [m.split(":")]}
        for name, cfg in models.items():
            plain = build("host", cfg, out=tmp / "plain", tuning=False)
            seeded = build("host", cfg, out=tmp / "seeded", db=tmp / "no-database")  # seed tiles, no records
            db = tmp / f"db-{cfg.arch}"
            t0 = time.monotonic()
            res = tune(host, import_onnx(Path(plain["build_dir"]) / "model.onnx"), minutes=args.minutes, db=db)
            tuning_s = time.monotonic() - t0
            tuned = build("host", cfg, out=tmp / "tuned", db=db)
            d, dp = Path(tuned["build_dir"]), Path(plain["build_dir"])
            x = np.random.default_rng(0).uniform(-1, 1, tuned["input_shape"]).astype(np.float32)
            xt = x.transpose(0, 2, 3, 1).copy()  # TFLite takes NHWC
            rows = {k: [] for k in ("edgekit", "seeds", "untuned", "ort", "xnnpack")}
            per = {t: {k: [] for k in rows} for t in (1, 2)}
            sessions = {t: ort_session(d / "model.onnx", t) for t in (1, 2)}
            interps = {t: xnnpack_interpreter(cfg, tmp, t) for t in (1, 2)}
            builds = [("edgekit", d), ("seeds", Path(seeded["build_dir"])), ("untuned", dp)]
            for r in range(args.rounds):
                for t in (1, 2):
                    # each round starts with another build: none always runs right after a reference's threads
                    for key, bdir in builds[r % 3:] + builds[:r % 3]:
                        with board.connect(bdir, threads=t) as (_, dev, _source):
                            dev.load_input(x.tobytes())
                            warm_up(dev)  # a fresh runner process: untimed runs first, as ORT's session has had
                            per[t][key].append(statistics.median(dev.measure(RUNS)) / 1e6)
                    feed = {sessions[t].get_inputs()[0].name: x}
                    per[t]["ort"].append(median_ms(lambda: sessions[t].run(None, feed)))
                    it = interps[t]
                    it.set_tensor(it.get_input_details()[0]["index"], xt)
                    per[t]["xnnpack"].append(median_ms(it.invoke))
            tk = sum(k["schedule"] == "template" for k in res["kernels"])
            print(f"{name}: tuned {res['trials']} trials in {tuning_s:.0f} s (wall, tune() alone); "
                  f"{tk} of {len(res['kernels'])} kernels took the template's schedule (a seed's or a searched one), "
                  f"{tuned['tuning']['kernels_tuned']} of {tuned['tuning']['kernels']} in the build")
            for t in (1, 2):
                e, sd, u, o, xn = (statistics.median(per[t][k]) for k in ("edgekit", "seeds", "untuned", "ort", "xnnpack"))
                print(f"  {t} thread{'s' if t > 1 else ''}: edgekit tuned {e:.2f} ms (seed tiles, no records: {sd:.2f} ms; "
                      f"--no-tuning {u:.2f} ms), ONNX Runtime {o:.2f} ms, XNNPACK {xn:.2f} ms: tuned {e / o:.2f} x ORT, "
                      f"{e / xn:.2f} x XNNPACK")


if __name__ == "__main__":
    main()
