"""`edgekit train`: edgekit's MobileNet trained with Keras on a labelled image set, seeded, saved as .keras with
its class names and held-out accuracy inside (edgekit.json in the archive)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Callable

from .errors import UsageError

BN_MOMENTUM = 0.9  # Keras' 0.999 leaves the moving statistics useless after an epoch or two (FACTS.md)
BATCH = 64
META = "edgekit.json"


def train(cfg, dataset: str | Path, epochs: int = 3, out: Path = Path("model.keras"), limit: int | None = None,
          progress: Callable[[int, int, dict], None] = lambda epoch, epochs, logs: None) -> dict:
    """Train `cfg` (its classes are the dataset's) for `epochs`; save to `out`. Returns the metadata saved with it:
    classes, config, training images, held-out accuracy."""
    from . import datasets
    from .export import _quiet_tensorflow
    if epochs < 1:
        raise UsageError("--epochs must be at least 1")
    if not str(out).endswith(".keras"):
        raise UsageError(f"--out {out}: the trained model is saved as a .keras file")
    tr, te = datasets.load(dataset, "train").take(limit), datasets.load(dataset, "test")
    _quiet_tensorflow()
    import keras
    from .models import ModelConfig
    from .models.keras import build

    cfg = ModelConfig(cfg.arch, cfg.alpha, cfg.resolution, len(tr.classes), cfg.dropout)
    model = build(cfg, calibrate=False)  # seeded inside
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = datasets.preprocess(tr.x, cfg.resolution)

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            progress(epoch + 1, epochs, dict(logs or {}))

    model.fit(x, tr.y, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0, callbacks=[Report()])
    _, acc = model.evaluate(datasets.preprocess(te.x, cfg.resolution), te.y, batch_size=256, verbose=0)
    meta = {"classes": tr.classes, "arch": cfg.arch, "alpha": cfg.alpha, "resolution": list(cfg.resolution),
            "dataset": str(dataset), "epochs": epochs, "train_images": len(tr.y), "test_images": len(te.y),
            "test_accuracy": float(acc)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.keras")  # Keras saves only to a name ending .keras
    try:  # whole or not at all, like a build directory
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as z:
            z.writestr(META, json.dumps(meta, indent=2))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {**meta, "model": str(out)}


def metadata(path: Path) -> dict | None:
    """What `train` saved inside a .keras file, or None for any other model."""
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read(META))
    except (OSError, KeyError, zipfile.BadZipFile, ValueError):
        return None
