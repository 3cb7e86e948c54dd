"""Shared fixtures. TensorFlow-built models are cached per session: exporting one costs seconds."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
EDGEKIT = [sys.executable, "-m", "edgekit.cli"]
# A suite started in the background (`make test &`, some CI shells) inherits SIGINT ignored, and so would every
# edgekit it starts (edgekit keeps what nohup ignores): the tests that press Ctrl-C need it delivered.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_edgekit(*args, cwd=None, timeout=600):
    env = {**os.environ, "COLUMNS": "200"}  # rich wraps tables to the terminal; tests read whole names
    return subprocess.run([*EDGEKIT, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def onnx_models():
    """Exported ONNX for a few small configurations, keyed by (arch, alpha, resolution, classes)."""
    from edgekit.export import mobilenet_onnx
    from edgekit.models import ModelConfig
    cache = {}

    def get(arch, alpha, res, classes):
        key = (arch, alpha, res, classes)
        if key not in cache:
            cache[key] = mobilenet_onnx(ModelConfig(arch, alpha, (res, res) if isinstance(res, int) else res, classes))
        return cache[key]
    return get
