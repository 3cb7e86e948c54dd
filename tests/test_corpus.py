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
# ds_cnn int8: MLPerf Tiny's KWS shape, a 490-byte int8 input (not a whole number of floats)
CASES = [(m, "tflite", "host") for m in MODELS] + [(m, "onnx", "host") for m in MODELS] + \
        [("ds_cnn", "tflite_drq", "host"), ("ds_cnn", "tflite_int8", "host")]
if shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm"):
    CASES += [(m, "tflite", "mps2-an386") for m in MODELS] + [("ds_cnn", "tflite_int8", "mps2-an386")]
SOAK = {("vww_v1", "onnx", "host"), ("fc_autoencoder", "onnx", "host")}  # ds_cnn and resnet8 cover ONNX files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    return {m: corpus.write(m, d, ("tflite", "onnx") + (("tflite_drq", "tflite_int8") if m == "ds_cnn" else ()))
            for m in MODELS}


@pytest.mark.parametrize("model,fmt,target", [pytest.param(*c, marks=[pytest.mark.soak] if c in SOAK else [])
                                              for c in CASES], ids=["-".join(c) for c in CASES])
def test_deployment_shaped_model_validates(files, tmp_path, model, fmt, target):
    r = run_edgekit("run", "--target", target, "--model", files[model][fmt], "--out", tmp_path / "b",
                    "--inputs", 3, "--runs", 1, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    val = out["validation"]
    assert val["passed"] and val["inputs"] == 3 and not val["warnings"], val
    assert out["latency"]["runs"] == 1 and out["latency"][out["latency"]["unit"]] > 0
    if fmt == "tflite_int8":
        assert val["reference"] == "tflite" and val["max_abs_err"] == 0
    assert "edgekit: warning" not in r.stderr


def test_tflite_models_start_with_a_reshape_of_the_input(files):
    """The shape that once compiled into C that never read its input (tf2onnx's leading Reshape, int8 weights
    dequantized in the graph): the corpus must keep exercising it."""
    from edgekit.export import user_onnx
    ops = [n.op_type for n in user_onnx(files["ds_cnn"]["tflite_drq"]).graph.node]
    assert ops[0] == "Reshape" and "DequantizeLinear" in ops
    assert onnx.load(str(files["ds_cnn"]["onnx"])).graph.node[0].op_type == "Reshape"


def test_int8_tflite_computes_its_reshape_from_the_free_batch(files):
    """TFLite's converter, given a model whose batch is free, computes the classifier's Reshape target with
    SHAPE, STRIDED_SLICE and PACK; the int8 importer skips that arithmetic (tflite._shape_arithmetic). The
    corpus must keep exercising it."""
    import tensorflow as tf
    from edgekit.int8 import tflite
    ops = [d["op_name"] for d in tf.lite.Interpreter(str(files["ds_cnn"]["tflite_int8"]))._get_ops_details()]
    assert {"SHAPE", "STRIDED_SLICE", "PACK"} <= set(ops)
    assert [op.name for op in tflite.read(files["ds_cnn"]["tflite_int8"])[0]] == \
        [op for op in ops if op not in ("SHAPE", "STRIDED_SLICE", "PACK")]
