"""Int8: edgekit's integer kernels against TFLite's reference interpreter, every output byte, per operator."""
import ctypes
import re

import numpy as np
import pytest

from int8_support import HostModel, block_noise, quantized_inputs, reference, to_tflite

pytest.importorskip("tensorflow")


def _models():
    """name -> (Keras model factory, input shape): each ends in the operator it is named after; shapes,
    strides, paddings and channel counts vary (odd ones included)."""
    import keras
    from keras import layers as L

    def seq(shape, *layers):
        return lambda: keras.Sequential([keras.Input(shape, batch_size=1), *layers])

    def branches(shape):  # two convolutions with different scales, summed (ADD), then ReLU6
        def make():
            x = keras.Input(shape, batch_size=1)
            a = L.Conv2D(6, 3, padding="same")(x)
            b = L.Conv2D(6, 1, activation="relu")(x)
            return keras.Model(x, L.ReLU(6.0)(L.Add()([a, b])))
        return make
    return {
        "conv_same_s2_relu6": (seq((11, 13, 3), L.Conv2D(5, 3, strides=2, padding="same"), L.ReLU(6.0)), (11, 13, 3)),
        "conv_valid_relu": (seq((9, 8, 4), L.Conv2D(7, (3, 2), padding="valid", activation="relu")), (9, 8, 4)),
        "depthwise_s2_same": (seq((10, 9, 5), L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)),
                              (10, 9, 5)),
        "depthwise_valid_relu6": (seq((7, 7, 3), L.ZeroPadding2D(((0, 1), (0, 1))), L.DepthwiseConv2D(3, padding="valid"),
                                      L.ReLU(6.0)), (7, 7, 3)),
        "avg_pool_same": (seq((9, 11, 3), L.Conv2D(4, 1), L.AveragePooling2D(3, strides=2, padding="same")), (9, 11, 3)),
        "max_pool_valid": (seq((8, 10, 3), L.Conv2D(3, 3, padding="same"), L.MaxPooling2D(2)), (8, 10, 3)),
        "add": (branches((6, 5, 3)), (6, 5, 3)),
        "mean": (seq((5, 6, 7), L.Conv2D(9, 3, padding="same"), L.GlobalAveragePooling2D()), (5, 6, 7)),
        "mean_keepdims": (seq((4, 4, 5), L.Conv2D(6, 1), L.GlobalAveragePooling2D(keepdims=True)), (4, 4, 5)),
        "dense_softmax": (seq((3, 3, 4), L.Flatten(), L.Dense(11), L.Softmax()), (3, 3, 4)),
        # 1x1 over 8 channels (8-wide micro-kernel), odd width and stride 2 (no pixel blocks)
        "pointwise_odd_width": (seq((5, 7, 8), L.Conv2D(6, 1, activation="relu"), L.Conv2D(10, 1, strides=2)),
                                (5, 7, 8)),
        # a 1x1 expansion whose input dies there: the MCU form writes its output over its input
        "pointwise_expand": (seq((6, 8, 3), L.Conv2D(8, 3, padding="same"), L.Conv2D(16, 1), L.Conv2D(4, 1)),
                             (6, 8, 3)),
        # 16 channels: every register block of the direct template (up to 16 accumulators)
        "depthwise_16": (seq((6, 7, 16), L.DepthwiseConv2D(3, padding="same"), L.ReLU(6.0)), (6, 7, 16)),
        "pad": (seq((5, 4, 3), L.Conv2D(5, 1, activation="relu"), L.ZeroPadding2D(((1, 2), (2, 0)))), (5, 4, 3)),
        # float in and out: QUANTIZE and DEQUANTIZE at the edges
        "float_io": (seq((6, 6, 2), L.Conv2D(3, 3, strides=2, padding="same"), L.Flatten(),
                         L.Dense(4)), (6, 6, 2)),
    }
FLOAT_KERNELS = ("softmax", "quantize", "dequantize")  # TFLite's own reference computes these in float


MODELS = list(_models())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every model converted (seeded calibration), built once into a host shared library."""
    import keras
    root, rng, out = tmp_path_factory.mktemp("int8"), np.random.default_rng(7), {}
    for name, (make, shape) in _models().items():
        keras.utils.set_random_seed(len(out))
        model = make()
        for layer in model.layers:  # biases zero-initialised by Keras: make them matter
            if getattr(layer, "bias", None) is not None:
                layer.bias.assign(rng.normal(0, 0.3, layer.bias.shape))
        calib = np.concatenate([block_noise((16, *shape), rng, a, 2) for a in (0.5, 1.5)])
        path = to_tflite(model, root / f"{name}.tflite", calib, float_io=name == "float_io")
        out[name] = (path, HostModel(path, root / name))
    return out


def _inputs(path, shape, seed=0):
    rng = np.random.default_rng(seed)
    xs = np.concatenate([block_noise((4, *shape), rng, a, b) for a in (0.25, 1.0, 2.5) for b in (1, 2, 3)])
    return quantized_inputs(path, xs)


@pytest.mark.parametrize("name", MODELS)
def test_operator_bit_exact_with_tflite_reference(built, name):
    path, model = built[name]
    xs = _inputs(path, model.inp.shape[1:])
    ref, got = reference(path, xs), model(xs)
    assert ref.dtype == got.dtype == (np.float32 if name == "float_io" else np.int8)
    rows = ref.reshape(len(ref), -1)
    assert len(np.unique(rows)) > 3 and len(np.unique(rows, axis=0)) > len(rows) // 2, "inputs too weak"
    np.testing.assert_array_equal(got, ref)


def test_cpu_kernels_take_output_channels_innermost(built):
    """Without micro-kernels (CPUs) a convolution's weights are [KH, KW, I, O], like the float path's HWIO, and
    a fully connected layer's [K, O], so a vector of output channels is one load; TFLite's [O, KH, KW, I] and
    [O, K] kept gcc from vectorizing them."""
    from edgekit.int8 import tflite
    checked = set()
    for path, _ in built.values():
        ops, funcs = tflite.read(path)[0], tflite.to_relax(path, None)[0].functions.items()
        for op_name, prefix in (("CONV_2D", "conv2d"), ("FULLY_CONNECTED", "fully_connected")):
            want = {(*s[1:], s[0]) for s in (op.inputs[1].shape for op in ops if op.name == op_name)}
            got = {tuple(int(d) for d in f.params[1].ty.shape) for gv, f in funcs if gv.name_hint.startswith(prefix)}
            assert got == want, (path.name, op_name)
            checked |= {op_name} if want else set()
    assert checked == {"CONV_2D", "FULLY_CONNECTED"}


@pytest.mark.parametrize("name", MODELS)
def test_microcontroller_kernels_bit_exact(built, name, tmp_path):
    """The MCU forms (fast.py: micro-kernel convolutions and requantization, blocked schedules), portable C."""
    path, model = built[name]
    micro = HostModel(path, tmp_path / "micro", micro="portable")
    xs = _inputs(path, model.inp.shape[1:])
    np.testing.assert_array_equal(micro(xs), reference(path, xs))


@pytest.mark.parametrize("name", ["pointwise_expand", "pointwise_odd_width", "depthwise_16"])
def test_every_register_block_the_tuning_may_choose_is_bit_exact(built, name, tmp_path):
    """The int8 search space (fast.blocks: pixels x output channels per register block), portable C: build k
    gives every micro-kernel convolution its k-th block, until each kernel has had all of its own (the in-place
    ones included: the gap below the input depends on the block)."""
    from edgekit.int8 import fast
    path, model = built[name]
    xs = _inputs(path, model.inp.shape[1:])
    ref, sizes, k = reference(path, xs), [], 0

    def kth(func):
        if not fast.is_micro(func):
            return None
        sizes.append(len(fast.blocks(func)))
        return fast.schedule(func, fast.blocks(func)[k % sizes[-1]]), True
    while k == 0 or k < max(sizes):
        sizes.clear()
        m = HostModel(path, tmp_path / f"b{k}", micro="portable", tuned=kth)
        assert m.info["kernels_tuned"] == len(sizes) >= 1
        np.testing.assert_array_equal(m(xs), ref, err_msg=f"register blocks #{k}")
        k += 1
    assert k >= 2  # some kernel had a choice


def test_inplace_kernels_go_below_the_per_layer_bound(built, tmp_path):
    """In-place kernels (output over input) stay bit-exact, the input in its arena slot included."""
    path, _ = built["pointwise_expand"]
    m = HostModel(path, tmp_path / "micro", micro="portable")
    assert m.info["arena_bytes"] < m.info["arena_lower_bound"]
    slot = m.lib.edgekit_m_input
    slot.restype = ctypes.c_void_p
    xs, outs = _inputs(path, m.inp.shape[1:]), []
    for x in xs:
        ctypes.memmove(slot(), np.ascontiguousarray(x).ctypes.data, x.nbytes)
        y = np.zeros(m.out.shape, m.out.dtype)
        assert m.lib.edgekit_m_run(ctypes.c_void_p(slot()), y.ctypes.data_as(ctypes.c_void_p)) == 0
        outs.append(y[0])
    np.testing.assert_array_equal(np.stack(outs), reference(path, xs))


def _functions(c_source: str) -> dict:
    """kernel name -> its C text (TVM's packed functions, one per kernel)."""
    parts = re.split(r"^(?=\w[^\n]*int32_t (edgekit_\w+)\(void\* self_handle)", c_source, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.mark.parametrize("name", MODELS)
def test_integer_kernels_have_no_float_arithmetic(built, name):
    """No float type in any kernel but those whose TFLite reference is float (softmax and the edges)."""
    kernels = _functions((built[name][1].dir / "kernels.c").read_text())
    assert kernels
    floaty = {k for k, src in kernels.items() if re.search(r"\b(float|double)\b", src)}
    assert all(any(f in k for f in FLOAT_KERNELS) for k in floaty), floaty


@pytest.mark.skipif(not __import__("shutil").which("arm-none-eabi-gcc"), reason="needs arm-none-eabi-gcc")
def test_integer_model_needs_no_floating_point_support(built, tmp_path):
    """Compiled for a Cortex-M3 (no FPU), an int8 model's kernels call none of GCC's soft-float helpers."""
    import subprocess
    d = built["conv_same_s2_relu6"][1].dir
    obj = tmp_path / "k.o"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft", "-O2", "-c",
                    str(d / "kernels.c"), "-o", str(obj)], check=True)
    undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], capture_output=True, text=True).stdout
    assert not re.search(r"__aeabi_[fdil]2[fd]|__aeabi_[fd](add|sub|mul|div|cmp)", undefined), undefined


def test_unsupported_operator_is_a_usage_error(tmp_path):
    import keras
    from edgekit.errors import UsageError
    from edgekit.int8.tflite import to_relax
    model = keras.Sequential([keras.Input((4, 4, 2), batch_size=1), keras.layers.Conv2D(2, 1, activation="tanh")])
    calib = block_noise((8, 4, 4, 2), np.random.default_rng(0), 1.0)
    path = to_tflite(model, tmp_path / "tanh.tflite", calib)
    with pytest.raises(UsageError, match="TANH"):
        to_relax(path)
