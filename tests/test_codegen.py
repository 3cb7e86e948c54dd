"""Codegen: generated C libraries compile warning-free and match ONNX Runtime."""
import ctypes
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ARM = ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2",
       "-Wall", "-Wextra", "-Werror", "-c"]
SOURCES = ["model.c", "kernels.c", "shim.c"]


def _onnx_graph(nodes, inp, out, inits, opset=13):
    """inits: name -> a shape (random float weights) or an array (used as is)."""
    rng = np.random.default_rng(1)
    arrays = {k: v if isinstance(v, np.ndarray) else rng.normal(0, 0.5, v).astype(np.float32) for k, v in inits.items()}
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, inp)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
                          [numpy_helper.from_array(v, k) for k, v in arrays.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def small_cnn():
    """Every op MobileNets use: conv, depthwise conv, Pad, Clip, residual Add, pooling, Flatten, Gemm."""
    n = helper.make_node
    return _onnx_graph([
        n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        n("Clip", ["c1", "lo", "hi"], ["r1"]),
        n("Pad", ["r1", "pads"], ["p1"]),
        n("Conv", ["p1", "w2"], ["c2"], group=8),
        n("Clip", ["c2", "lo", "hi"], ["r2"]),
        n("Conv", ["r2", "w3"], ["c3"]),
        n("Add", ["c3", "r1"], ["a"]),
        n("GlobalAveragePool", ["a"], ["g"]),
        n("Flatten", ["g"], ["f"]),
        n("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ], [1, 3, 16, 16], [1, 5], {"w1": [8, 3, 3, 3], "b1": [8], "w2": [8, 1, 3, 3], "w3": [8, 8, 1, 1],
                                "wf": [5, 8], "bf": [5], "lo": np.zeros((), np.float32),
                                "hi": np.full((), 6.0, np.float32),
                                "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)})


def mlp():
    """The input reshaped first (a reshape aliasing the user's buffer), then MatMul + Relu."""
    n = helper.make_node
    return _onnx_graph([
        n("Reshape", ["x", "shape"], ["r"]),
        n("MatMul", ["r", "w"], ["h"]),
        n("Relu", ["h"], ["y"]),
    ], [1, 2, 4, 4], [1, 6], {"w": [32, 6], "shape": np.array([1, 32], np.int64)})


def _keras_onnx(make, res):
    import tensorflow as tf
    import tf2onnx
    model = make()
    rng = np.random.default_rng(0)
    for layer in model.layers:  # fresh BatchNorm statistics are identities: make folding matter
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            g, b, mu, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.2, b.shape),
                               rng.normal(0, 0.2, mu.shape), rng.uniform(0.5, 1.5, var.shape)])
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=[tf.TensorSpec((1, res, res, 3), tf.float32,
                                          name="input")], opset=13, inputs_as_nchw=["input"])
    return proto


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Generate (and cache) a C library per model: name -> (onnx model, info dict, directory)."""
    from edgekit.codegen import generate
    from edgekit.compiler import import_onnx
    cache, root = {}, tmp_path_factory.mktemp("codegen")

    def get(name, make, **kw):
        if name not in cache:
            model = make()
            cache[name] = (model, generate(import_onnx(model), root / name, name, **kw), root / name)
        return cache[name]
    return get


def vww():
    import keras
    return _keras_onnx(lambda: keras.applications.MobileNet(weights=None, alpha=0.25, input_shape=(96, 96, 3),
                                                            classes=2), 96)


def mobilenet_v2():
    import keras
    return _keras_onnx(lambda: keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(48, 48, 3),
                                                              classes=10, classifier_activation=None), 48)


_libs = {}


def compile_host(d, name):
    """Build once per directory: rewriting a loaded shared library in place is unsafe."""
    if d not in _libs:
        lib = d / f"lib{name}.so"
        r = subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", str(lib),
                            *SOURCES, "-lm"], cwd=d, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        _libs[d] = ctypes.CDLL(str(lib))
    return _libs[d]


def check_matches_ort(model, info, d, tol=1e-4):
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString())
    x = np.random.default_rng(0).standard_normal(info["input_shape"]).astype(np.float32)
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    lib, x0 = compile_host(d, info["name"]), x.copy()
    out = np.full(info["output_shape"], np.nan, np.float32)
    rc = getattr(lib, f"edgekit_{info['name']}_run")(x.ctypes.data_as(ctypes.c_void_p),
                                                     out.ctypes.data_as(ctypes.c_void_p))
    assert rc == 0
    assert np.array_equal(x, x0), "the input buffer was written"
    assert np.abs(out - ref).max() <= tol, np.abs(out - ref).max()
    # in place: the input written into its arena slot, no buffer of the caller's
    slot_fn = getattr(lib, f"edgekit_{info['name']}_input")
    slot_fn.restype = ctypes.c_void_p
    slot = slot_fn()
    assert slot and slot % 16 == 0
    ctypes.memmove(slot, x.ctypes.data, x.nbytes)
    out2 = np.full(info["output_shape"], np.nan, np.float32)
    assert getattr(lib, f"edgekit_{info['name']}_run")(ctypes.c_void_p(slot), out2.ctypes.data_as(ctypes.c_void_p)) == 0
    np.testing.assert_array_equal(out2, out)  # the same kernels on the same bytes
    return lib


@pytest.mark.parametrize("name,make", [("cnn", small_cnn), ("mlp", mlp)])
def test_small_graphs_match_ort(built, name, make):
    check_matches_ort(*built(name, make))


def test_workspace_path_matches_ort(built):
    # TVM's unscheduled kernels materialise padding into workspaces: those must come from the arena
    model, info, d = built("cnn_ws", small_cnn, schedule=False)
    assert any(layer["workspace_bytes"] > 0 for layer in info["layers"])
    assert info["arena_bytes"] >= max(layer["workspace_bytes"] for layer in info["layers"])
    check_matches_ort(model, info, d)
    assert "TVMBackendAllocWorkspace" not in (d / "kernels.c").read_text()  # all served by shim.c


LIBC_OK = re.compile(r"mem(cpy|set|move)|(exp|log|sqrt|pow|tanh|fabs|floor|ceil|round|fmax|fmin|erf|sin|cos)f?")


def undefined_symbols(objs, nm="nm"):
    """Symbols the objects need from outside themselves."""
    objs = list(objs)
    def syms(*flags):
        out = subprocess.run([nm, *flags, *map(str, objs)], capture_output=True, text=True, check=True).stdout
        return {line.split()[-1] for line in out.splitlines() if line.strip() and not line.endswith(":")}
    return syms("-u") - syms("--defined-only")


def test_interface_and_hook(built):
    model, info, d = built("cnn", small_cnn)
    h = (d / "model.h").read_text()
    for key, macro in [("input_bytes", "INPUT_BYTES"), ("output_bytes", "OUTPUT_BYTES"),
                       ("arena_bytes", "ARENA_BYTES"), ("weights_bytes", "WEIGHTS_BYTES")]:
        assert re.search(rf"#define EDGEKIT_CNN_{macro}\s+{info[key]}\b", h)
    assert re.search(rf"#define EDGEKIT_CNN_NUM_LAYERS\s+{len(info['layers'])}\b", h)
    assert re.search(rf"#define EDGEKIT_CNN_INPUT_OFFSET\s+{info['input_offset']}\b", h)
    assert "int edgekit_cnn_run(const void *input, void *output);" in h and "void *edgekit_cnn_input(void);" in h
    assert {"model.h", "model.c", "kernels.c", "runtime.h", "shim.c", "README.md"} <= {p.name for p in d.iterdir()}
    assert not re.search(r'#include\s+[<"](tvm|dlpack)', "".join(p.read_text() for p in d.glob("*.[ch]")))
    lib = compile_host(d, "cnn")
    seen = []
    hook = ctypes.CFUNCTYPE(None, ctypes.c_int)(seen.append)
    ctypes.c_void_p.in_dll(lib, "edgekit_cnn_layer_hook").value = ctypes.cast(hook, ctypes.c_void_p).value
    x, y = np.zeros(info["input_shape"], np.float32), np.zeros(info["output_shape"], np.float32)
    assert lib.edgekit_cnn_run(x.ctypes.data_as(ctypes.c_void_p), y.ctypes.data_as(ctypes.c_void_p)) == 0
    ctypes.c_void_p.in_dll(lib, "edgekit_cnn_layer_hook").value = None
    assert seen == list(range(len(info["layers"])))
    names = (ctypes.c_char_p * len(seen)).in_dll(lib, "edgekit_cnn_layer_names")
    assert [n.decode() for n in names] == [layer["name"] for layer in info["layers"]]


def test_vww_arena_and_accuracy(built):
    model, info, d = built("vww", vww)
    assert info["input_shape"] == [1, 3, 96, 96] and info["output_shape"] == [1, 2]
    assert info["arena_lower_bound"] <= info["arena_bytes"] <= 1.25 * 221184
    assert all(layer["workspace_bytes"] == 0 for layer in info["layers"])
    check_matches_ort(model, info, d)


def test_mobilenet_v2_matches_ort(built):
    check_matches_ort(*built("v2", mobilenet_v2))


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("name,make", [("vww", vww), ("v2", mobilenet_v2), ("cnn_ws", small_cnn)])
def test_arm_compiles_without_warnings(built, tmp_path, name, make):
    d = built(name, make, **({"schedule": False} if name == "cnn_ws" else {}))[2]
    r = subprocess.run([*ARM, *[str(d / s) for s in SOURCES]], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr, r.stderr
    # nothing from libc but memcpy/memset/math, no TVM runtime (GCC's own helpers start with __)
    bad = {s for s in undefined_symbols(tmp_path.glob("*.o"), "arm-none-eabi-nm")
           if not LIBC_OK.fullmatch(s) and not s.startswith("__")}
    assert not bad, bad


def test_tuned_kernels_kept_as_is():
    # a PrimFunc already scheduled (e.g. from a tuning database) is built untouched; its workspace is planned
    from edgekit.codegen.lower import _fuse, lower
    from edgekit.compiler import import_onnx
    mod = _fuse(import_onnx(small_cnn()))
    gv = next(g for g in mod.functions if g.name_hint.startswith("fused_conv2d_"))
    mod[gv] = mod[gv].with_attr("tirx.is_scheduled", True)
    ws = {k: v.workspace_bytes for k, v in lower(mod).kernels.items()}
    assert ws.pop(gv.name_hint) > 0 and not any(ws.values())


def test_c_intrinsics_register_once_when_kernels_build_on_several_threads():
    # the tuner builds candidates on a thread pool; a second registration is an error in TVM. A fresh process,
    # so the first call is the one that registers (and imports TVM, which widens the race)
    code = ("import threading\nfrom edgekit.codegen import lower\nerrors, gate = [], threading.Barrier(4)\n"
            "def go():\n    gate.wait()\n    try:\n        lower._register_c_intrinsics()\n"
            "    except Exception as e:\n        errors.append(e)\n"
            "ts = [threading.Thread(target=go) for _ in range(4)]\n[t.start() for t in ts]\n[t.join() for t in ts]\n"
            "assert not errors, errors\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_short_innermost_copy_loops_are_unrolled():
    # Linux boards' cflags stop gcc unrolling short loops, so codegen does: the model input's NCHW -> NHWC
    # transpose, 3 channels innermost, is then written as three stores per pixel, which gcc vectorizes
    from edgekit.codegen.lower import lower
    from edgekit.compiler import for_board, import_onnx
    from edgekit.target import get
    prog = lower(for_board(import_onnx(small_cnn()), get("host")))
    (transpose,) = [k for n, k in prog.kernels.items() if n.startswith("transpose")]
    loops = [int(n) for n in re.findall(r"for \(int32_t \w+ = 0; \w+ < (\d+);", transpose.source)]
    assert loops and min(loops) > 4, transpose.source


UNSWITCH_C = """#include <stdint.h>
int32_t f(int32_t n, int32_t t, int32_t *out) {
  for (int32_t k = 0; k < n; ++k) {
    int32_t j = (k * 2);
    out[0] = (out[0] + j);
    for (int32_t i = 0; i < 3; ++i) {
      if (t < 3) {
        out[1] = (out[1] + (k * i));
      }
    }
    if (t < 3) {
      out[2] = (out[2] + 1);
    }
    if (j < 6) {
      out[3] = (out[3] + 1);
    }
  }
  return 0;
}
"""


def test_unswitching_hoists_only_a_branch_the_loop_cannot_change(tmp_path):
    # a pixel tile that does not divide the map leaves `if (tile < last)` per tail pixel inside the reduction
    # loop; gcc unswitches innermost loops only, so codegen hoists the branch itself, keeping both copies
    from edgekit.codegen.lower import unswitch_loop
    hoisted = unswitch_loop(UNSWITCH_C, "k")
    assert hoisted.count("for (int32_t k = 0;") == 2 and hoisted.index("if (t < 3) {") < hoisted.index("for (int32_t k")
    assert hoisted.count("if (j < 6) {") == 2 and hoisted.count("if (t < 3) {") == 1  # j changes with k: stays
    results = {}
    for label, src in (("as is", UNSWITCH_C), ("hoisted", hoisted)):
        (tmp_path / f"{label}.c").write_text(src)
        lib = tmp_path / f"{label}.so"
        subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-shared", "-fPIC", "-o", str(lib),
                        str(tmp_path / f"{label}.c")], check=True)
        f = ctypes.CDLL(str(lib)).f
        for n in range(5):
            for t in range(6):
                out = (ctypes.c_int32 * 4)()
                f(n, t, out)
                results.setdefault((n, t), []).append(list(out))
    assert all(a == b for a, b in results.values()), results
    # what it must leave alone: a condition the loop assigns to, one with an else, a header that is not unique
    assigned = UNSWITCH_C.replace("out[0] = (out[0] + j);", "t = (t + out[0]);")
    assert unswitch_loop(assigned, "k") == assigned
    with_else = UNSWITCH_C.replace("out[2] = (out[2] + 1);\n    }", "out[2] = (out[2] + 1);\n    } else {\n    }")
    assert unswitch_loop(with_else, "k") == with_else
    twice = UNSWITCH_C + UNSWITCH_C.replace("f(", "g(")
    assert unswitch_loop(twice, "k") == twice
    inner = unswitch_loop(UNSWITCH_C, "i")  # the inner loop: the same branch, hoisted there only
    assert inner.count("for (int32_t i = 0;") == 2 and inner.count("for (int32_t k = 0;") == 1
    assert inner.count("if (t < 3) {") == 2 and inner.index("if (t < 3) {") < inner.index("for (int32_t i")



def test_floor_division_of_a_constant_minus_a_variable_is_exact():
    # TVM 0.27's FlattenBuffer drops c from a buffer index floormod(c - i, m) or floordiv(c - i, m): codegen writes
    # them with i's sign positive first (lower.nonnegative_floor_operands); each form here against Python's
    import tvm
    from tvm.script import tirx as T
    from edgekit.codegen.lower import nonnegative_floor_operands

    @T.prim_func(s_tir=True)
    def indices(x: T.Buffer((9,), "float32"), y: T.Buffer((18, 4), "float32")):
        T.func_attr({"tirx.noalias": True})
        for i in range(T.int64(18)):
            with T.sblock("b"):
                v = T.axis.spatial(T.int64(18), i)
                y[v, 0] = x[T.floormod(T.int64(13) - v, T.int64(9))]
                y[v, 1] = x[T.floordiv(T.int64(40) - v, T.int64(9)) + T.int64(2)]
                y[v, 2] = x[T.floordiv(T.floormod(T.int64(22) - v, T.int64(9)), T.int64(3))]
                y[v, 3] = x[T.floormod(v - T.int64(4), T.int64(9))]

    x = np.arange(9, dtype=np.float32) + 1
    want = np.array([[x[(13 - i) % 9], x[(40 - i) // 9 + 2], x[(22 - i) % 9 // 3], x[(i - 4) % 9]] for i in range(18)])
    lib = tvm.compile(tvm.IRModule({"main": nonnegative_floor_operands(indices)}), target="llvm")
    y = tvm.runtime.tensor(np.zeros((18, 4), np.float32))
    lib["main"](tvm.runtime.tensor(x), y)
    np.testing.assert_array_equal(y.numpy(), want)
