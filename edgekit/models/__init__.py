"""Model definitions: MobileNet V1/V2 as plain layer specs (no TensorFlow), their cost, and Keras builders."""
from .mobilenet import Layer, ModelConfig, layers, parse_resolution
from .cost import count, count_onnx

__all__ = ["Layer", "ModelConfig", "layers", "parse_resolution", "count", "count_onnx"]
