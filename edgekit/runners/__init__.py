"""Standalone scripts that edgekit ships to Linux boards; they import only what the board has (tvm, numpy)."""
from pathlib import Path

TVM_RUNNER = Path(__file__).with_name("tvm_runner.py")
