"""Models shaped like real deployments (tests/corpus.py), as a user would bring them: Keras through TFLite's
converter, or ONNX, built with `edgekit run` and validated against ONNX Runtime on the host and on the
emulated Cortex-M4. `make bench` (benchmarks/corpus.py) runs the whole matrix, MobileNet V2 included."""
import json
import shutil

import onnx
import pytest

import corpus
from conftest import run_edgekit

MODELS = ("ds_cnn", "resnet8", "fc_autoencoder", "vww_v1")
CASES = [(m, "tflite", "host") for m in MODELS] + [(m, "onnx", "host") for m in MODELS] + \
        [("ds_cnn", "tflite_drq", "host")]
if shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm"):
    CASES += [(m, "tflite", "mps2-an386") for m in MODELS]
SOAK = {("vww_v1", "onnx", "host"), ("fc_autoencoder", "onnx", "host")}  # ds_cnn and resnet8 cover ONNX files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    return {m: corpus.write(m, d, ("tflite", "onnx") + (("tflite_drq",) if m == "ds_cnn" else ())) for m in MODELS}


@pytest.mark.parametrize("model,fmt,target", [pytest.param(*c, marks=[pytest.mark.soak] if c in SOAK else [])
                                              for c in CASES], ids=["-".join(c) for c in CASES])
def test_deployment_shaped_model_validates(files, tmp_path, model, fmt, target):
    r = run_edgekit("run", "--target", target, "--model", files[model][fmt], "--out", tmp_path / "b",
                    "--inputs", 3, "--runs", 1, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    val = json.loads(r.stdout)["validation"]
    assert val["passed"] and val["inputs"] == 3 and not val["warnings"], val
    assert "edgekit: warning" not in r.stderr


def test_tflite_models_start_with_a_reshape_of_the_input(files):
    """The shape that once compiled into C that never read its input (tf2onnx's leading Reshape, int8 weights
    dequantized in the graph): the corpus must keep exercising it."""
    from edgekit.export import user_onnx
    ops = [n.op_type for n in user_onnx(files["ds_cnn"]["tflite_drq"]).graph.node]
    assert ops[0] == "Reshape" and "DequantizeLinear" in ops
    assert onnx.load(str(files["ds_cnn"]["onnx"])).graph.node[0].op_type == "Reshape"
