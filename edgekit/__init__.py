"""edgekit: put MobileNets (and any ONNX model) on edge boards through Apache TVM."""
__version__ = "0.1.0"
