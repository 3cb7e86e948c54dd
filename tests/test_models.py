"""The front end: architecture, cost model, Keras compatibility, ONNX export."""
import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.models import ModelConfig, count, count_onnx, layers, parse_resolution

# ../shared/reference/mobilenet-tables.md: analytic MACs and BatchNorm-folded params
REFERENCE = [("v1", 1.0, 224, 568.7e6, 4.221e6), ("v1", 0.25, 128, 13.6e6, 0.467e6),
             ("v2", 1.0, 224, 300.8e6, 3.488e6), ("v2", 0.35, 224, 59.3e6, 1.670e6), ("v2", 0.35, 96, 11.9e6, 1.670e6)]


@pytest.mark.parametrize("arch,alpha,res,macs,params", REFERENCE)
def test_cost_matches_reference_table(arch, alpha, res, macs, params):
    c = count(layers(ModelConfig(arch, alpha, (res, res))))
    assert c["macs"] == pytest.approx(macs, abs=0.05e6)
    assert c["params"] == pytest.approx(params, abs=0.0005e6)


def test_width_and_resolution_multipliers_scale_cost():
    base = count(layers(ModelConfig("v1", 1.0, (224, 224))))
    half_res = count(layers(ModelConfig("v1", 1.0, (112, 112))))
    assert half_res["params"] == base["params"]
    assert half_res["macs"] / base["macs"] == pytest.approx(0.25, rel=0.05)  # MACs go with rho^2 (not the classifier's)
    half_width = count(layers(ModelConfig("v1", 0.5, (224, 224))))
    assert 0.2 < half_width["macs"] / base["macs"] < 0.3                        # and with alpha^2


def test_v2_keeps_1280_channels_below_alpha_1_and_scales_above():
    assert [l.cout for l in layers(ModelConfig("v2", 0.35)) if l.name == "Conv_1"] == [1280]
    assert [l.cout for l in layers(ModelConfig("v2", 1.4)) if l.name == "Conv_1"] == [1792]
    assert all(l.cout % 8 == 0 for l in layers(ModelConfig("v2", 0.35)) if l.op == "conv" and l.name != "predictions")


def test_v2_residuals_only_where_shapes_match():
    specs = layers(ModelConfig("v2", 1.0))
    adds = [l.name for l in specs if l.op == "add"]
    assert len(adds) == 10  # the paper's 17 bottlenecks: 10 have stride 1 and equal in/out channels
    assert "block_2_add" in adds and "block_1_add" not in adds


@pytest.mark.parametrize("bad", [dict(alpha=0), dict(alpha=2.01), dict(alpha=-1), dict(resolution=(31, 64)),
                                 dict(arch="v3"), dict(classes=0)])
def test_bad_config_is_a_usage_error(bad):
    with pytest.raises(UsageError):
        ModelConfig(**bad)


def test_parse_resolution():
    assert parse_resolution("224") == (224, 224)
    assert parse_resolution("160x128") == (160, 128)
    with pytest.raises(UsageError):
        parse_resolution("12x3x4")


@pytest.mark.parametrize("arch,alpha,res", [("v1", 0.25, 96), ("v2", 0.35, 97), ("v2", 1.3, (64, 48))])
def test_keras_model_matches_keras_applications(arch, alpha, res):
    """Same layer names and weight shapes as keras.applications, so official weight files load."""
    import keras
    from edgekit.models.keras import build
    res = (res, res) if isinstance(res, int) else res
    mine = build(ModelConfig(arch, alpha, res, 10), calibrate=False)
    ref = {"v1": keras.applications.MobileNet, "v2": keras.applications.MobileNetV2}[arch](
        weights=None, alpha=alpha, input_shape=(*res, 3), classes=10)
    shapes = lambda m: [(l.name, [tuple(w.shape) for w in l.weights]) for l in m.layers if l.weights]
    assert shapes(mine) == shapes(ref)
    # BatchNorm folded: drop gamma, beta, mean and variance (4 per channel), add one bias per channel
    bn_channels = sum(l.weights[0].shape[0] for l in ref.layers if isinstance(l, keras.layers.BatchNormalization))
    assert count(layers(ModelConfig(arch, alpha, res, 10)))["params"] == ref.count_params() - 3 * bn_channels


def test_random_init_is_seeded_and_alive():
    from edgekit.models.keras import build
    cfg = ModelConfig("v2", 0.35, (64, 64), 10)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    a, b = build(cfg)(x).numpy(), build(cfg)(x).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.std() > 1e-3  # calibrated BatchNorm keeps the softmax away from uniform


@pytest.mark.parametrize("arch,alpha,res,classes", [("v1", 0.25, 96, 2), ("v2", 0.35, 64, 10), ("v2", 0.5, (72, 56), 5)])
def test_onnx_export_is_nchw_and_matches_keras(onnx_models, arch, alpha, res, classes):
    import onnxruntime as ort
    from edgekit.models.keras import build
    m = onnx_models(arch, alpha, res, classes)
    h, w = (res, res) if isinstance(res, int) else res
    assert m.opset_import[0].version >= 13
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [1, 3, h, w]
    assert not [n for n in m.graph.node if n.op_type == "Transpose" and m.graph.input[0].name in n.input]
    keras_model = build(ModelConfig(arch, alpha, (h, w), classes))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    for _ in range(3):
        x = rng.uniform(-1, 1, (1, h, w, 3)).astype("float32")
        got = sess.run(None, {m.graph.input[0].name: x.transpose(0, 3, 1, 2)})[0]
        assert np.abs(got - keras_model(x).numpy()).max() <= 1e-5


def test_onnx_cost_agrees_with_analytic_cost(onnx_models):
    for key in [("v1", 0.25, 96, 2), ("v2", 0.35, 64, 10)]:
        arch, alpha, res, classes = key
        analytic = count(layers(ModelConfig(arch, alpha, (res, res), classes)))
        assert count_onnx(onnx_models(*key)) ["macs"] == analytic["macs"]
