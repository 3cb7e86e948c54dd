"""Keras functional models built from the layer specs, with keras.applications' layer names so that an
official weights file loads. Imports TensorFlow: call only when a model is really built."""
from __future__ import annotations

from .mobilenet import Layer, ModelConfig, layers

SEED = 20170417  # MobileNet V1's arXiv date: any fixed seed makes random initialisation repeatable


def _bn_name(l: Layer, arch: str) -> str:
    if arch == "v1":
        return l.name + "_bn"
    return {"Conv1": "bn_Conv1", "Conv_1": "Conv_1_bn"}.get(l.name, l.name + "_BN")


def _relu_name(l: Layer, arch: str) -> str:
    if arch == "v1":
        return l.name + "_relu"
    return {"Conv1": "Conv1_relu", "Conv_1": "out_relu"}.get(l.name, l.name + "_relu")


def build(cfg: ModelConfig, calibrate: bool = True):
    """The Keras model for `cfg`, seeded. With `calibrate`, BatchNorm statistics are set from a batch of
    seeded random images, so that a randomly initialised network has live activations at every layer."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(SEED)
    bn_kw = {"epsilon": 1e-3} if cfg.arch == "v2" else {}
    x = inp = keras.Input((*cfg.resolution, 3), name="input")
    residual = None
    for l in layers(cfg):
        if l.op in ("conv", "depthwise"):
            if l.name.endswith(("_expand", "expanded_conv_depthwise")):
                residual = x  # a V2 block starts: keep its input for the residual add
            padding = "same"
            if l.pad:
                x = L.ZeroPadding2D(((l.pad[0], l.pad[1]), (l.pad[2], l.pad[3])),
                                    name=l.name.replace("depthwise", "pad") if cfg.arch == "v2" else f"conv_pad_{l.name.split('_')[-1]}")(x)
                padding = "valid"
            if l.op == "conv":
                x = L.Conv2D(l.cout, l.kernel, strides=l.stride, padding=padding, use_bias=False, name=l.name)(x)
            else:
                x = L.DepthwiseConv2D(l.kernel, strides=l.stride, padding=padding, use_bias=False, name=l.name)(x)
            x = L.BatchNormalization(name=_bn_name(l, cfg.arch), **bn_kw)(x)
            if l.act == "relu6":
                x = L.ReLU(6.0, name=_relu_name(l, cfg.arch))(x)
        elif l.op == "add":
            x = L.Add(name=l.name)([residual, x])
        elif l.op == "pool":
            x = L.GlobalAveragePooling2D(keepdims=cfg.arch == "v1")(x)
            if cfg.dropout:
                x = L.Dropout(cfg.dropout, name="dropout")(x)
        elif l.op == "dense" and cfg.arch == "v1":
            x = L.Conv2D(l.cout, 1, padding="same", name="conv_preds")(x)
            x = L.Reshape((l.cout,), name="reshape_2")(x)
            x = L.Activation("softmax", name="predictions")(x)
        else:
            x = L.Dense(l.cout, activation="softmax", name="predictions")(x)
    name = f"mobilenet_{cfg.arch}_{cfg.alpha:g}_{cfg.resolution[0]}".replace(".", "_")
    model = keras.Model(inp, x, name=name)
    if calibrate:
        calibrate_batchnorm(model, cfg)
    return model


def calibrate_batchnorm(model, cfg: ModelConfig, images: int = 8):
    """One training-mode forward pass with momentum 0 sets each BatchNorm's moving statistics to the batch
    statistics of its own input, layer after layer (each BN sees inputs already normalised upstream)."""
    import numpy as np
    import keras

    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    x = np.random.default_rng(SEED).uniform(-1, 1, (images, *cfg.resolution, 3)).astype("float32")
    model(x, training=True)
    for bn, m in zip(bns, saved):
        bn.momentum = m
