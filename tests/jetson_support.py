"""Helpers for the Jetson-path tests (test_cuda.py, test_remote.py): a MobileNet-shaped ONNX model
small enough to compile in a second (no TensorFlow: conv 3x3, ReLU6, depthwise 3x3, ReLU6, global
pool, dense), its x86 build for the runner, and a minimal protocol client."""
import zlib
from pathlib import Path

import numpy as np

from edgekit.link import frame

SHAPE = (1, 3, 8, 8)
CLASSES = 5


def write(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    consts = {"w1": rng.standard_normal((4, 3, 3, 3)), "b1": rng.standard_normal(4),
              "w2": rng.standard_normal((4, 1, 3, 3)), "w3": rng.standard_normal((4, CLASSES)),
              "lo": np.array(0.0), "hi": np.array(6.0)}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=4),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "w3"], ["output"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, (1, CLASSES))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by the onnxruntime the project pins
    onnx.save(model, str(path))
    return path


def reference(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def build_x86(onnx_path: Path, out_dir: Path) -> Path:
    """An x86 llvm build laid out like the Jetson one (model.so + model.json): the runner's test double."""
    import json
    import tvm
    from edgekit import compiler, cuda

    mod = compiler.import_onnx(onnx_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    tvm.compile(mod, tvm.target.Target({"kind": "llvm"})).export_library(str(out_dir / "model.so"))
    meta = {"name": "tiny", "hash": "0123abcd", "target": "x86-test", **cuda.io_signature(mod)}
    (out_dir / "model.json").write_text(json.dumps(meta))
    return out_dir / "model.so"


class Client:
    """Speaks firmware/README.md's protocol over anything with write/readline/read (pyserial, pipes)."""

    def __init__(self, port):
        self.port = port

    def cmd(self, text: str, payload: bytes = b"") -> list[bytes]:
        """Send `text%` (ek-* commands with their CRC); the reply lines up to m-ready (stripped), raw ek-read
        data as one item."""
        self.port.write(frame(text).encode() + b"%")
        self._flush()
        lines = []
        while True:
            line = self.port.readline()
            assert line, f"no m-ready after {text!r}; got {lines}"
            if line.startswith(b"m-ek-load-ready-"):
                self.port.write(payload)
                self._flush()
            if line.startswith(b"m-ek-read-"):
                n = int(line.split(b"-")[3])
                lines += [line.strip(), self.port.read(n)]
                assert self.port.readline() == b"\r\n"
                continue
            lines.append(line.strip())
            if line.strip() == b"m-ready":
                return lines

    def _flush(self):
        if hasattr(self.port, "flush"):
            self.port.flush()

    def infer(self, x: np.ndarray) -> np.ndarray:
        raw = x.astype(np.float32).tobytes()
        assert self.cmd(f"ek-load {len(raw)} {zlib.crc32(raw):08x}", raw)[-3].startswith(b"m-ek-load-done-")
        assert b"m-infer-done" in self.cmd("infer 2 1")
        reply = self.cmd("ek-read")
        assert reply[0].endswith(f"-{zlib.crc32(raw):08x}".encode())  # the results' input
        return np.frombuffer(reply[1], np.float32)


class Pipe:
    """A subprocess's stdin/stdout as one port."""

    def __init__(self, proc):
        self.proc = proc

    def write(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def readline(self):
        return self.proc.stdout.readline()

    def read(self, n):
        return self.proc.stdout.read(n)
