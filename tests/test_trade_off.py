"""Issue 9: training, accuracy on the device, the alpha x resolution sweep, reports with figures, a quiet terminal.
One small model is trained once (module fixture) on a slice of the real Fashion-MNIST."""
import json
import shutil

import numpy as np
import pytest

from conftest import run_edgekit
from edgekit import datasets

pytestmark = pytest.mark.skipif(not (datasets.FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason="needs Debian's dataset-fashion-mnist (make test installs it)")
EMULATED = shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    r = run_edgekit("train", "--arch", "v1", "--alpha", "0.25", "--resolution", "32", "--dataset", "fashion-mnist",
                    "--epochs", 2, "--limit", 3000, "--out", d / "m.keras", "--json")
    assert r.returncode == 0, r.stderr
    return d, json.loads(r.stdout)


def test_training_beats_chance_and_keeps_its_class_names(trained):
    d, result = trained
    from edgekit.train import metadata
    assert result["test_images"] == 10_000 and result["train_images"] == 3000
    assert result["test_accuracy"] > 0.3  # chance is 0.1 over 10 classes
    meta = metadata(d / "m.keras")
    assert meta["classes"] == datasets.FASHION_CLASSES and meta["test_accuracy"] == result["test_accuracy"]


def test_fashion_mnist_reads_as_the_real_dataset():
    test = datasets.load("fashion-mnist", "test")
    assert test.x.shape == (10_000, 28, 28, 1) and np.bincount(test.y).tolist() == [1000] * 10
    x = datasets.preprocess(test.x[:4], (32, 32), "NCHW")
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.float32 and -1 <= x.min() < x.max() <= 1


def test_npz_and_folder_datasets_split_without_overlap(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8), np.arange(50) % 2
    np.savez(tmp_path / "d.npz", x=x, y=y, classes=np.array(["cat", "dog"]))
    tr, te = datasets.load(tmp_path / "d.npz", "train"), datasets.load(tmp_path / "d.npz", "test")
    assert len(tr.y) == 40 and len(te.y) == 10 and tr.classes == ["cat", "dog"]
    seen = {a.tobytes() for a in tr.x}
    assert not any(a.tobytes() in seen for a in te.x)
    for i in range(6):
        (tmp_path / "imgs" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(tmp_path / "imgs" / f"c{i % 2}" / f"{i}.png")
    assert datasets.load(tmp_path / "imgs", "train").classes == ["c0", "c1"]
    with pytest.raises(Exception, match="neither fashion-mnist"):
        datasets.load(tmp_path / "missing", "test")


@pytest.mark.skipif(not EMULATED, reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_device_accuracy_equals_the_host_reference_and_report_draws_it(trained, tmp_path):
    d, _ = trained
    r = run_edgekit("build", "--target", "mps2-an386", "--model", d / "m.keras", "--out", tmp_path / "b", "--json")
    assert r.returncode == 0, r.stderr
    r = run_edgekit("validate", tmp_path / "b", "--dataset", "fashion-mnist", "--limit", 40, "--json")
    assert r.returncode == 0, r.stderr
    acc = json.loads(r.stdout)["accuracy"]
    assert acc["images"] == 40 and acc["agreement"] == 1.0 and acc["device_top1"] == acc["reference_top1"] > 0.2
    assert np.array(acc["confusion"]).sum() == 40 and acc["classes"] == datasets.FASHION_CLASSES
    assert run_edgekit("bench", tmp_path / "b", "--runs", 1, "--per-layer").returncode == 0
    r = run_edgekit("report", tmp_path / "b", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert not report["missing"] and len(report["figures"]) == 4
    for png in report["figures"]:
        _check_png(png)
    text = (tmp_path / "b" / "report" / "report.md").read_text()
    assert "EMULATOR" in text and "agreement 1.0000" in text


@pytest.mark.skipif(not EMULATED, reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_int8_device_accuracy_equals_tflite_on_the_same_images(trained, tmp_path):
    d, _ = trained
    np.save(tmp_path / "cal.npy", datasets.preprocess(datasets.load("fashion-mnist", "train").x[:64], (32, 32)))
    r = run_edgekit("build", "--target", "mps2-an386", "--model", d / "m.keras", "--quantize", "int8",
                    "--calibration", tmp_path / "cal.npy", "--out", tmp_path / "b", "--json")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # real calibration images: no warning
    r = run_edgekit("validate", tmp_path / "b", "--dataset", "fashion-mnist", "--limit", 40, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    acc = out["accuracy"]
    assert out["validation"]["reference"] == "tflite" and out["validation"]["max_abs_err"] == 0
    assert acc["agreement"] == 1.0 and acc["device_top1"] == acc["reference_top1"] > 0.2


def _check_png(path):
    from PIL import Image
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        w, h = im.size
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert 300 <= w <= 3000 and 200 <= h <= 3000, (path, im.size)
    assert pixels.std() > 5, f"{path} is blank"


@pytest.mark.skipif(not EMULATED, reason="needs arm-none-eabi-gcc and qemu-system-arm")
@pytest.mark.parametrize("resolutions", [[32], pytest.param([32, 40], marks=pytest.mark.soak)], ids=["2x1", "2x2"])
def test_a_sweep_runs_and_resumes(tmp_path, resolutions):
    alphas = [0.25, 0.5]
    args = ("sweep", "--target", "mps2-an386", "--arch", "v1", "--alpha", ",".join(map(str, alphas)),
            "--resolution", ",".join(map(str, resolutions)), "--dataset", "fashion-mnist", "--epochs", 1,
            "--train-limit", 300, "--limit", 8, "--out", tmp_path / "s", "--json")
    r = run_edgekit(*args)
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    grid = [(a, res) for a in alphas for res in resolutions]
    assert [(p["alpha"], p["resolution"]) for p in first["points"]] == grid
    for p in first["points"]:
        assert p["fits"] and p["agreement"] == 1.0 and p["latency_unit"] == "instructions" and p["latency"] > 0
    macs = {(p["alpha"], p["resolution"]): p["macs"] for p in first["points"]}
    assert all(macs[a, res] < macs[b, res2] for a, res in grid for b, res2 in grid
               if (a, res) != (b, res2) and a <= b and res <= res2)  # more width or resolution: more MACs
    for png in first["figures"]:
        _check_png(png)
    assert f"| {alphas[-1]} | {resolutions[-1]} |" in (tmp_path / "s" / "sweep.md").read_text()
    # an interrupted sweep: one point lost; the rerun measures only that one, from its cached model
    points = sorted((tmp_path / "s" / "points").iterdir())
    kept = {p: p.stat().st_mtime_ns for p in points[1:]}
    points[0].unlink()
    models = {p: p.stat().st_mtime_ns for p in (tmp_path / "s" / "models").iterdir()}
    r = run_edgekit(*args)
    assert r.returncode == 0, r.stderr
    # the same point, but its latency: QEMU's SysTick phase differs by a tick (40 instructions) across boots
    again = json.loads(r.stdout)["points"]
    same = lambda p: {k: v for k, v in p.items() if k not in ("latency", "latency_ms")}  # noqa: E731
    assert [same(p) for p in again] == [same(p) for p in first["points"]]
    assert all(abs(a["latency"] - b["latency"]) <= 40 and abs(a["latency_ms"] - b["latency_ms"]) <= 41 / 25e3
               for a, b in zip(again, first["points"]))  # the board's 25 MHz clock: 40 instructions, 1.6 us
    assert {p: p.stat().st_mtime_ns for p in points[1:]} == kept and points[0].is_file()
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "s" / "models").iterdir()} == models


def test_a_plain_tflite_build_keeps_the_terminal_clean(tmp_path):
    import keras
    import tensorflow as tf
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()])
    (tmp_path / "m.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    r = run_edgekit("build", "--target", "host", "--model", tmp_path / "m.tflite", "--out", tmp_path / "b")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = run_edgekit("build", "--target", "host", "--model", tmp_path / "m.tflite", "--out", tmp_path / "b", "--verbose")
    assert r.returncode == 0 and "XNNPACK" in r.stderr  # what --verbose shows, the plain build hid


def test_a_keras_h5_full_model_deploys(tmp_path):
    import keras
    keras.utils.set_random_seed(1)
    m = keras.Sequential([keras.Input((20, 20, 3)), keras.layers.Conv2D(6, 3, activation="relu"),
                          keras.layers.BatchNormalization(), keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax")])
    m.save(tmp_path / "m.h5")
    r = run_edgekit("run", "--target", "host", "--model", tmp_path / "m.h5", "--out", tmp_path / "b", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["validation"]["passed"]
