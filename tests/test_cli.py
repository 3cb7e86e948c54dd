"""The command line: fast start-up, the JSON contract, exit codes and one-line errors for bad input."""
import json
import subprocess
import sys

import pytest

from conftest import run_edgekit


def test_start_up_imports_neither_tensorflow_nor_tvm():
    code = ("import sys; from typer.testing import CliRunner; from edgekit.cli import app; "
            "r = CliRunner().invoke(app, ['targets', '--json']); assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('tensorflow', 'tvm', 'onnx', 'keras') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_targets_json_lists_every_board_file():
    r = run_edgekit("targets", "--json")
    assert r.returncode == 0
    rows = {t["name"]: t for t in json.loads(r.stdout)}
    assert {"rpi4", "jetson-orin-nano", "jetson-nano", "mps2-an386", "mps2-an500", "nucleo-l4r5zi",
            "stm32f746g-disco"} <= set(rows)
    assert rows["nucleo-l4r5zi"]["clock_hz"] == 120_000_000 and rows["nucleo-l4r5zi"]["ram_bytes"] == 640 * 1024
    assert rows["stm32f746g-disco"]["flash_bytes"] == 1 << 20 and rows["mps2-an386"]["emulated"]


def test_adding_a_board_is_adding_a_file(tmp_path, monkeypatch):
    from edgekit import target
    for f in target.TARGETS_DIR.glob("*.toml"):
        (tmp_path / f.name).write_text(f.read_text())
    (tmp_path / "myboard.toml").write_text((target.TARGETS_DIR / "mps2-an386.toml").read_text()
                                           .replace('name = "mps2-an386"', 'name = "myboard"'))
    monkeypatch.setattr(target, "TARGETS_DIR", tmp_path)
    assert "myboard" in target.names() and target.get("myboard").core == "cortex-m4"


def test_summary_json_has_totals():
    r = run_edgekit("summary", "--arch", "v1", "--alpha", "0.25", "--resolution", "128", "--json")
    assert r.returncode == 0
    s = json.loads(r.stdout)
    assert s["macs"] == 13_570_048 and s["params"] == 467_336 and len(s["layers"]) == 29


def test_summary_table():
    r = run_edgekit("summary", "--arch", "v2", "--alpha", "0.35", "--resolution", "96")
    assert r.returncode == 0 and "block_16_project" in r.stdout and "11,934,128" in r.stdout


@pytest.mark.parametrize("args,words", [
    (["build", "--target", "mps2-an38"], ["unknown target", "mps2-an386"]),
    (["build", "--target", "rpi4", "--alpha", "0"], ["alpha"]),
    (["build", "--target", "rpi4", "--alpha", "2.5"], ["alpha"]),
    (["build", "--target", "rpi4", "--resolution", "16"], ["resolution"]),
    (["build", "--target", "rpi4", "--model", "missing.onnx"], ["missing.onnx", "does not exist"]),
    (["build", "--target", "rpi4", "--weights", "missing.h5"], ["missing.h5", "does not exist"]),
    (["summary", "--arch", "v9"], ["architecture"]),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, words):
    r = run_edgekit(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert all(w in r.stderr for w in words), r.stderr
    assert not (tmp_path / "build").exists()
