"""`edgekit build`: the build directory, its manifest, TVM's output against ONNX Runtime, user models,
and what is left behind when things fail."""
import json
import os

import numpy as np
import pytest

from conftest import run_edgekit

CONTRACT = {"target", "arch", "alpha", "resolution", "macs", "params", "artifact"}


def _ort(model, x):
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("key", [("v1", 0.25, 96, 2), ("v2", 0.35, 64, 10)])
def test_tvm_host_build_matches_onnx_runtime(onnx_models, key):
    import tvm
    from tvm import relax
    from edgekit.compiler import import_onnx
    model = onnx_models(*key)
    vm = relax.VirtualMachine(tvm.compile(import_onnx(model), tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, key[2], key[2])).astype("float32")
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    assert np.abs(got - _ort(model, x)).max() <= 1e-4


def test_build_rpi4_writes_contract_and_aarch64_library(tmp_path):
    r = run_edgekit("build", "--target", "rpi4", "--alpha", "0.35", "--resolution", "96", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = tmp_path / "build" / "rpi4-v2-a0.35-r96"
    manifest = json.loads((d / "manifest.json").read_text())
    assert CONTRACT <= set(manifest) and manifest["macs"] == 11_934_128 and manifest["resolution"] == [96, 96]
    assert json.loads(r.stdout)["build_dir"] == "build/rpi4-v2-a0.35-r96"
    lib = (d / manifest["artifact"]["firmware"]).read_bytes()  # the static aarch64 runner
    assert lib[:4] == b"\x7fELF" and int.from_bytes(lib[18:20], "little") == 183  # EM_AARCH64
    assert (d / "model.onnx").is_file()
    assert [p.name for p in (tmp_path / "build").iterdir()] == ["rpi4-v2-a0.35-r96"]  # no temporary left


def test_build_jetson_records_cuda_artifacts(tmp_path):
    r = run_edgekit("build", "--target", "jetson-orin-nano", "--alpha", "0.35", "--resolution", "64", "--json",
                    cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    d = tmp_path / m["build_dir"]
    assert m["cuda"]["arch"] == "sm_87" and "__global__" in (d / m["artifact"]["cuda_source"]).read_text()
    assert (d / m["artifact"]["library"]).read_bytes()[:4] == b"\x7fELF"


def test_user_models_in_every_format(tmp_path, onnx_models):
    import keras
    import onnx
    import tensorflow as tf
    from edgekit.export import user_onnx
    onnx.save(onnx_models("v1", 0.25, 96, 2), str(tmp_path / "m.onnx"))
    keras.utils.set_random_seed(0)
    small = keras.Sequential([keras.Input((40, 40, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    small.save(tmp_path / "m.keras")
    (tmp_path / "m.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(small).convert())
    x = np.random.default_rng(0).uniform(-1, 1, (1, 40, 40, 3)).astype("float32")
    for name in ("m.keras", "m.tflite"):
        m = user_onnx(tmp_path / name)
        dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
        got = _ort(m, x.transpose(0, 3, 1, 2) if dims == [1, 3, 40, 40] else x)
        assert np.abs(got - small(x).numpy()).max() <= 1e-5, name
    r = run_edgekit("build", "--target", "rpi4", "--model", tmp_path / "m.onnx", "--out", tmp_path / "out", "--json")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["arch"] == "custom" and manifest["macs"] == 7_489_664 and manifest["resolution"] == [96, 96]


def test_corrupt_and_mismatched_files_are_usage_errors(tmp_path):
    import keras
    (tmp_path / "bad.onnx").write_bytes(os.urandom(256))
    (tmp_path / "bad.weights.h5").write_bytes(os.urandom(256))
    keras.applications.MobileNet(weights=None, alpha=0.25, input_shape=(96, 96, 3), classes=2).save_weights(
        tmp_path / "v1.weights.h5")
    for args in (["--model", "bad.onnx"], ["--weights", "bad.weights.h5"],
                 ["--arch", "v2", "--alpha", "0.35", "--resolution", "96", "--weights", "v1.weights.h5"]):
        r = run_edgekit("build", "--target", "rpi4", *args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "build").exists()


def test_official_keras_weights_load(tmp_path):
    """A weights file saved from keras.applications loads into edgekit's model and gives the same outputs."""
    import keras
    import onnx
    ref = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(64, 64, 3), classes=5)
    ref.save_weights(tmp_path / "official.weights.h5")
    r = run_edgekit("build", "--target", "rpi4", "--arch", "v2", "--alpha", "0.35", "--resolution", "64",
                    "--classes", "5", "--weights", tmp_path / "official.weights.h5", "--out", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    got = _ort(onnx.load(str(tmp_path / "b" / "model.onnx")), x.transpose(0, 3, 1, 2))
    assert np.abs(got - ref(x).numpy()).max() <= 1e-5


def test_operators_tvm_cannot_import_are_a_usage_error(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Celu", ["x"], ["y"])], "g", io[:1], io[1:])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "celu.onnx"))
    r = run_edgekit("build", "--target", "mps2-an386", "--model", "celu.onnx", cwd=tmp_path)
    assert r.returncode == 2 and "Celu" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "build").exists()


def test_legacy_h5_weights_in_the_official_files_layout_load(tmp_path):
    """keras.applications' released weights (mobilenet_*_tf.h5) are legacy HDF5 files, matched by layer order."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format
    from edgekit.export import load_weights
    from edgekit.models import ModelConfig
    from edgekit.models.keras import build
    ref = keras.applications.MobileNet(weights=None, alpha=0.25, input_shape=(64, 64, 3), classes=7)
    with h5py.File(tmp_path / "mobilenet_2_5_64_tf.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref)
    mine = build(ModelConfig("v1", 0.25, (64, 64), 7), calibrate=False)
    load_weights(mine, tmp_path / "mobilenet_2_5_64_tf.h5")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(mine(x).numpy(), ref(x).numpy())
