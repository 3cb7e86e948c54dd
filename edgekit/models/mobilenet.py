"""MobileNet V1 and V2 as a list of layer specs, channel counts as in keras.applications.

The specs drive both the cost model (pure Python, fast) and the Keras builder (keras.py), so the
numbers `edgekit summary` prints are those of the network `edgekit build` exports.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

ARCHS = ("v1", "v2")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "v2"
    alpha: float = 1.0
    resolution: tuple[int, int] = (224, 224)
    classes: int = 1000
    dropout: float = 1e-3

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise UsageError(f"unknown architecture '{self.arch}': use --arch v1 or --arch v2")
        if not 0 < self.alpha <= 2:
            raise UsageError(f"alpha {self.alpha} is out of range: use a width multiplier in (0, 2], e.g. --alpha 0.35")
        if min(self.resolution) < 32:
            raise UsageError(f"resolution {'x'.join(map(str, self.resolution))} is too small: use 32 or more, e.g. --resolution 96")
        if self.classes < 1:
            raise UsageError(f"classes {self.classes} must be at least 1")
        if not 0 <= self.dropout < 1:
            raise UsageError(f"dropout {self.dropout} must be in [0, 1)")

    @property
    def tag(self) -> str:
        h, w = self.resolution
        return f"{self.arch}-a{float(self.alpha)}-r{h if h == w else f'{h}x{w}'}"


def parse_resolution(text: str | int) -> tuple[int, int]:
    """'224' -> (224, 224); '160x128' -> (160, 128) (height x width)."""
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise UsageError(f"resolution '{text}' is not a number: use e.g. --resolution 224 or --resolution 160x128")
    return (parts[0], parts[-1])


@dataclass(frozen=True)
class Layer:
    """One weighted layer (or a weight-free op that moves data), in NHWC terms."""
    name: str
    op: str             # conv | depthwise | add | pool | dense
    cin: int
    cout: int
    kernel: int
    stride: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    act: str | None     # relu6 | softmax | None
    pad: tuple[int, int, int, int] | None = None  # explicit (top, bottom, left, right) zero padding, else "same"


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _same(hw, stride):
    return tuple(-(-d // stride) for d in hw)


def _valid(hw, pad, k, stride):
    t, b, l, r = pad
    return ((hw[0] + t + b - k) // stride + 1, (hw[1] + l + r - k) // stride + 1)


def _v1(cfg: ModelConfig) -> list[Layer]:
    a, hw = cfg.alpha, cfg.resolution
    out = []
    c = int(32 * a)
    o = _same(hw, 2)
    out.append(Layer("conv1", "conv", 3, c, 3, 2, hw, o, "relu6"))
    hw = o
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for i, (f, s) in enumerate(plan, start=1):
        if s == 1:
            o, pad = hw, None
        else:  # keras.applications pads (0, 1) then runs a 'valid' 3x3
            pad = (0, 1, 0, 1)
            o = _valid(hw, pad, 3, 2)
        out.append(Layer(f"conv_dw_{i}", "depthwise", c, c, 3, s, hw, o, "relu6", pad))
        hw, cout = o, int(f * a)
        out.append(Layer(f"conv_pw_{i}", "conv", c, cout, 1, 1, hw, hw, "relu6"))
        c = cout
    out.append(Layer("global_average_pooling2d", "pool", c, c, 0, 1, hw, (1, 1), None))
    out.append(Layer("conv_preds", "dense", c, cfg.classes, 1, 1, (1, 1), (1, 1), "softmax"))
    return out


def _v2(cfg: ModelConfig) -> list[Layer]:
    a, hw = cfg.alpha, cfg.resolution
    out = []
    c = _make_divisible(32 * a)
    o = _same(hw, 2)
    out.append(Layer("Conv1", "conv", 3, c, 3, 2, hw, o, "relu6"))
    hw = o
    # (expansion, filters, repeats, first stride): the paper's Table 2
    stages = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    block = 0
    for t, f, n, s0 in stages:
        for r in range(n):
            s = s0 if r == 0 else 1
            prefix = f"block_{block}_" if block else "expanded_conv_"
            cout = _make_divisible(int(f * a))
            cin, cexp = c, c * t
            if block:
                out.append(Layer(prefix + "expand", "conv", cin, cexp, 1, 1, hw, hw, "relu6"))
            if s == 2:  # keras.applications' correct_pad: (0, 1) on an even side, (1, 1) on an odd one
                pad = tuple(x for d in hw for x in ((0, 1) if d % 2 == 0 else (1, 1)))
                o = _valid(hw, pad, 3, 2)
            else:
                pad, o = None, hw
            out.append(Layer(prefix + "depthwise", "depthwise", cexp, cexp, 3, s, hw, o, "relu6", pad))
            hw = o
            out.append(Layer(prefix + "project", "conv", cexp, cout, 1, 1, hw, hw, None))
            if s == 1 and cin == cout:
                out.append(Layer(prefix + "add", "add", cout, cout, 0, 1, hw, hw, None))
            c = cout
            block += 1
    last = _make_divisible(1280 * a) if a > 1.0 else 1280
    out.append(Layer("Conv_1", "conv", c, last, 1, 1, hw, hw, "relu6"))
    out.append(Layer("global_average_pooling2d", "pool", last, last, 0, 1, hw, (1, 1), None))
    out.append(Layer("predictions", "dense", last, cfg.classes, 1, 1, (1, 1), (1, 1), "softmax"))
    return out


def layers(cfg: ModelConfig) -> list[Layer]:
    return _v1(cfg) if cfg.arch == "v1" else _v2(cfg)
