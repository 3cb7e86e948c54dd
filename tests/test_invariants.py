"""The generated C never drops or misreads a tensor: build-time invariants over the flat program, the input
binding regression, and validate's warning for a model that ignores its input."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import ROOT, run_edgekit
from edgekit.codegen.lower import Call, Kernel, Program, Tensor
from edgekit.codegen.verify import verify
from edgekit.errors import InternalError


def _prog(calls, extra=()):
    """x (input) -> a -> b -> y (output) unless `calls` says otherwise; a const w."""
    ts = [Tensor("x", (1, 4), "float32", "input"), Tensor("w", (4,), "float32", "const", np.zeros(4, "float32")),
          Tensor("a", (1, 4), "float32", "act"), Tensor("b", (1, 4), "float32", "act"),
          Tensor("y", (1, 4), "float32", "output"), *extra]
    return Program({t.name: t for t in ts}, [Call(c[-1], "k", list(c)) for c in calls], {"k": Kernel("k", "", 0)},
                   "x", "y")


GOOD = [("x", "w", "a"), ("a", "b"), ("b", "x", "y")]
OFFSETS = {"x": 0, "a": 16, "b": 32}


def test_a_sound_program_passes():
    verify(_prog(GOOD), OFFSETS, {}, 48, 16)


@pytest.mark.parametrize("calls,offsets,message", [
    # the miscompilation once seen: the first kernel reads the tensor it writes, never the input
    ([("a", "w", "a"), ("a", "b"), ("b", "y")], OFFSETS, "kernel 0 (k) reads 'a' before any kernel writes it"),
    ([("w", "a"), ("a", "b"), ("b", "y")], OFFSETS, "no kernel reads the model input 'x'"),
    ([("x", "a"), ("a", "b")], OFFSETS, "no kernel writes the model output 'y'"),
    ([("x", "a"), ("b", "y"), ("a", "b")], OFFSETS, "kernel 1 (k) reads 'b' before any kernel writes it"),
    ([("x", "a"), ("a", "nope"), ("a", "y")], OFFSETS, "kernel 1 (k) takes 'nope', which is no tensor"),
    ([("x", "a"), ("a", "a"), ("a", "y")], OFFSETS, "kernel 1 (k) writes 'a', which is already written"),
    ([("a", "x")] + GOOD, OFFSETS, "kernel 0 (k) reads 'a' before"),
    ([("x", "w")] + GOOD[1:], OFFSETS, "kernel 0 (k) writes 'w', which is an input or a constant"),
    (GOOD, {"x": 0, "a": 0, "b": 32}, "'a' and 'x' overlap in the arena"),   # x is live until the last kernel
    (GOOD, {"x": 0, "a": 16, "b": 40}, "'b' (16 B) has no place"),            # misaligned
    (GOOD, {"x": 0, "a": 16}, "'b' (16 B) has no place"),                     # never placed
])
def test_each_broken_invariant_is_an_internal_error_naming_tensor_and_kernel(calls, offsets, message):
    with pytest.raises(InternalError, match="internal error") as e:
        verify(_prog(calls), offsets, {}, 48, 16)
    assert message in str(e.value)


def test_a_workspace_overlapping_a_live_tensor_is_caught():
    with pytest.raises(InternalError, match="workspace of kernel 1 .* overlap|overlap.*workspace of kernel 1"):
        verify(_prog(GOOD), OFFSETS, {1: (16, 16)}, 48, 16)   # kernel 1 reads a, which sits at 16
    verify(_prog(GOOD), {"x": 0, "a": 16, "b": 48}, {1: (32, 16)}, 64, 16)  # beside everything live: fine


def _reshape_first_model(path):
    """Input -> Reshape -> Conv -> Relu: tf2onnx's TFLite shape, whose Relax bindings once shared a name with
    the first fused kernel's output."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (4, 1, 3, 3)).astype("float32"), "w")
    w2 = numpy_helper.from_array(rng.normal(0, 0.5, (2, 4, 1, 1)).astype("float32"), "w2")
    shape = numpy_helper.from_array(np.array([1, 1, 10, 6], "int64"), "shape")
    g = helper.make_graph(
        [helper.make_node("Reshape", ["in:0", "shape"], ["r"]), helper.make_node("Conv", ["r", "w"], ["c"], pads=[1, 0, 1, 1]),
         helper.make_node("Relu", ["c"], ["h"]), helper.make_node("Conv", ["h", "w2"], ["out"])], "reshape_first",
        [helper.make_tensor_value_info("in:0", TensorProto.FLOAT, [1, 60])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 10, 5])], [w, w2, shape])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_the_input_is_bound_when_a_reshape_comes_first(tmp_path):
    from edgekit import compiler
    from edgekit.codegen.lower import lower
    _reshape_first_model(tmp_path / "m.onnx")
    prog = lower(compiler.import_onnx(onnx.load(str(tmp_path / "m.onnx"))))
    assert prog.root(prog.calls[0].args[0]) == prog.input
    assert len({c.args[-1] for c in prog.calls}) == len(prog.calls)  # one tensor per kernel output
    r = run_edgekit("run", "--target", "host", "--model", tmp_path / "m.onnx", "--out", tmp_path / "b", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["validation"]["passed"]


BROKEN_PLAN = """
import sys
import edgekit.codegen as codegen
from edgekit.codegen.plan import Plan
codegen.plan = lambda bufs, align: Plan([0] * len(bufs), max(b.size for b in bufs), 0)  # everything at 0
sys.argv = ["edgekit", *sys.argv[1:]]
from edgekit.cli import main
main()
"""


def test_a_broken_plan_stops_the_build_with_exit_1_and_writes_nothing(tmp_path):
    _reshape_first_model(tmp_path / "m.onnx")
    r = subprocess.run([sys.executable, "-c", BROKEN_PLAN, "build", "--target", "host", "--model", tmp_path / "m.onnx",
                        "--out", tmp_path / "b"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("edgekit: error: internal error") and "overlap" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_identical_outputs_from_distinct_inputs_are_flagged():
    from edgekit.validate import input_blind
    x = np.arange(12, dtype="float32").reshape(3, 4)
    assert input_blind(x, np.ones((3, 2))) and not input_blind(x, np.eye(3))
    assert not input_blind(np.ones((3, 4)), np.ones((3, 2)))  # the same input thrice proves nothing
    assert not input_blind(x[:1], np.ones((1, 2)))


def test_validate_warns_about_a_model_that_ignores_its_input(tmp_path):
    zero = numpy_helper.from_array(np.zeros(1, "float32"), "zero")
    bias = numpy_helper.from_array(np.arange(5, dtype="float32"), "bias")
    g = helper.make_graph([helper.make_node("Mul", ["input", "zero"], ["z"]), helper.make_node("Add", ["z", "bias"], ["out"])],
                          "blind", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 5])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 5])], [zero, bias])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "m.onnx"))
    r = run_edgekit("run", "--target", "host", "--model", tmp_path / "m.onnx", "--out", tmp_path / "b", "--json")
    assert r.returncode == 0, r.stderr  # the board does what ONNX Runtime does, so it passes: with a warning
    assert "edgekit: warning: 3 distinct inputs gave identical outputs" in r.stderr
    assert json.loads(r.stdout)["validation"]["warnings"]
