"""Raspberry Pi 4 through the command line: the static aarch64 runner under qemu-aarch64, like a board."""
import json
import shutil
import subprocess

import pytest

from conftest import run_edgekit

pytestmark = pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")),
                                reason="needs gcc-aarch64-linux-gnu and qemu-user (make test installs them)")


def test_run_rpi4_in_qemu_user(tmp_path):
    r = run_edgekit("run", "--target", "rpi4", "--arch", "v1", "--alpha", "0.25", "--resolution", "32",
                    "--classes", "3", "--threads", "2", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["validation"]["passed"] and out["validation"]["source"] == "emulator"
    lat = out["latency"]
    assert lat["source"] == "emulator" and lat["unit"] == "ns" and "emulator" in lat["note"] and lat["ms"] > 0
    runner = tmp_path / out["build_dir"] / out["artifact"]["firmware"]
    elf = runner.read_bytes()
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # EM_AARCH64
    # needs nothing on the Pi: no dynamic section, so no libtvm_runtime (nor any other shared library)
    dyn = subprocess.run(["aarch64-linux-gnu-readelf", "-d", str(runner)], capture_output=True, text=True).stdout
    assert "no dynamic section" in dyn
