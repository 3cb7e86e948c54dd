"""Host-CPU latency of edgekit's pipeline (generated C + protocol runner, built for this machine with gcc)
against ONNX Runtime on the same model.onnx, measured in the same run, rounds interleaved. A proxy for code
quality until a Raspberry Pi is attached. Ratios > 1 mean edgekit is slower. edgekit's build is the one a user
gets before any `edgekit tune`: no tuning records, each kernel at the tuning's first seed tiles."""
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgekit import board
from edgekit.build import build
from edgekit.models import ModelConfig
from edgekit.report import warm_up

MODELS = {"V2 a0.35 224": ModelConfig("v2", 0.35, (224, 224)), "V1 a0.25 128": ModelConfig("v1", 0.25, (128, 128))}
ROUNDS, RUNS = 5, 10


def ort_ms(path: Path, x: np.ndarray, threads: int) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    sess.run(None, feed)
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


with tempfile.TemporaryDirectory() as tmp:
    for name, cfg in MODELS.items():
        m = build("host", cfg, out=Path(tmp) / name.replace(" ", "_"), db=Path(tmp) / "no-database")
        d = Path(m["build_dir"])
        x = np.random.default_rng(0).uniform(-1, 1, m["input_shape"]).astype(np.float32)
        ek, ort1, ort2 = [], [], []
        with board.connect(d) as (_, dev, _source):
            dev.load_input(x.tobytes())
            warm_up(dev)  # a fresh runner process: untimed runs first, as ORT's session has had
            threads = dev.info().get("threads", "?")
            for _ in range(ROUNDS):
                ek.append(statistics.median(dev.measure(RUNS)) / 1e6)
                ort1.append(ort_ms(d / "model.onnx", x, 1))
                ort2.append(ort_ms(d / "model.onnx", x, 2))
        e, o1, o2 = map(statistics.median, (ek, ort1, ort2))
        print(f"{name} (host CPU, float32, untuned): edgekit {e:.2f} ms ({threads} threads), ONNX Runtime {o1:.2f} ms "
              f"(1 thread) / {o2:.2f} ms (2 threads): ratio {e / o1:.2f} x ORT-1t, {e / o2:.2f} x ORT-2t")
sys.stdout.flush()
