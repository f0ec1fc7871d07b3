"""slimda.runtime and slimda predict: a deployed model run as the device runs it, in a process where torch
cannot be imported, gives slimda's own top-1 on every image; tampered, missing and unreadable inputs are
refused or named."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slimda.cli import main

# runs slimda's CLI with torch and torchvision made unimportable
NO_TORCH = """
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(name + " is hidden: slimda.runtime must not need it", name=name)
sys.meta_path.insert(0, Hide())
from slimda.cli import main
sys.exit(main(sys.argv[1:]))
"""
IMAGES = 200
DEVICES = ("cpu-onnxruntime", "cpu-openvino", "ort-mobile")


FAKES = Path(__file__).parent / "fakes"  # stand-ins for tensorrt and cuda-python (fakes/README.md)


def predict(*argv: str, cwd: Path, fake_tensorrt: bool = False) -> subprocess.CompletedProcess:
    script = cwd / "no_torch.py"
    script.write_text(NO_TORCH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(FAKES), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(script), "predict", *argv], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env if fake_tensorrt else None)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A briefly trained digits bank deployed fp32 to ONNX Runtime, OpenVINO and ORT format and int8 to ONNX
    Runtime, and the target images it was deployed for as PNG files."""
    from PIL import Image

    from slimda.data.domains import load_domain
    from slimda.train.config import TrainConfig
    from slimda.train.trainer import Trainer

    root = tmp_path_factory.mktemp("runtime")
    Trainer(TrainConfig(iters=150, batch_size=32, model_batch=2, checkpoint_every=150), root / "run",
            progress=False).fit()
    digits = load_domain("digits")
    labels = digits.labels()
    for i in np.linspace(0, len(digits) - 1, IMAGES).astype(int):
        folder = root / "digits" / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits.original(int(i))).save(folder / f"{i:04d}.png")
    common = ["--bank", str(root / "run"), "--target", str(root / "digits"), "--flops", "1G", "--no-measure",
              "--calibration-images", "64", "--score-images", "0", "--population", "4", "--generations", "1"]
    assert main(["deploy", *common, "--device", ",".join(DEVICES), "--out", str(root / "fp32")]) == 0
    # with a source split to estimate from: what --monitor compares windows with
    assert main(["deploy", *common, "--source-val", "mnist", "--source-val-images", "300", "--out",
                 str(root / "estimated")]) == 0
    # int8 calibrates on images that never score
    assert main(["deploy", *common, "--precision", "int8", "--score-images", "128", "--int8-images", "32", "--out",
                 str(root / "int8")]) == 0
    return root


def reference_top1(root: Path, deployment: Path) -> dict[str, str]:
    """slimda's own scoring of every image: the deployed network in PyTorch (int8: the QDQ model in ONNX
    Runtime) on the images read by the training pipeline (torchvision)."""
    import torch

    from slimda.data.domains import load_domain
    from slimda.export.quantize import onnx_outputs
    from slimda.model.bank import load_bank
    from slimda.select.evaluate import TargetImages, TargetScorer, load_target_images

    manifest = json.loads((deployment / "manifest.json").read_text())
    bank, meta = load_bank(root / "run")
    target = load_target_images(str(root / "digits"), meta, calibration_images=64, workers=0)
    domain = load_domain(str(root / "digits"))
    files = [domain.original(i) for i in range(len(domain))]
    images = torch.cat(target.images)
    if manifest["precision"] == "int8":
        (scores,) = onnx_outputs([deployment / "model.onnx"], images.numpy(), manifest["input_shape"][0])
        top = scores.argmax(1)
    else:
        net = TargetScorer(bank, TargetImages("t", target.calibration, [images], None), manifest["head"]) \
            .calibrated(bank.space.from_id(manifest["config_id"])).net(manifest["head"])
        with torch.no_grad():
            top = net(images).argmax(1).numpy()
    return {str(f): manifest["class_names"][k] for f, k in zip(files, top)}


@pytest.mark.parametrize("deployment", [*(f"fp32/{d}" for d in DEVICES), "int8/cpu-onnxruntime"])
def test_predict_without_torch_gives_slimdas_top1_on_every_image(deployed, deployment, tmp_path):
    folder = deployed / deployment
    done = predict(str(folder), str(deployed / "digits"), "--out", str(tmp_path / "p.csv"), "--batch", "8",
                   "--labels", "--confusion", str(tmp_path / "c.csv"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with (tmp_path / "p.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == IMAGES
    expected = reference_top1(deployed, folder)
    assert {r["file"]: r["class"] for r in rows} == expected
    assert "images/s" in done.stderr and "inference p50" in done.stderr and "top1" in done.stderr
    with (tmp_path / "c.csv").open() as fh:
        confusion = list(csv.DictReader(fh))
    assert sum(int(v) for r in confusion for k, v in r.items() if k != "true") == IMAGES


def test_predict_refuses_tampered_or_missing_models_and_names_unreadable_images(deployed, tmp_path):
    import shutil

    from PIL import Image

    copy = tmp_path / "dep"
    shutil.copytree(deployed / "fp32" / "cpu-onnxruntime", copy)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(mixed / "colour.jpg")  # colour for a grey model: converted
    (mixed / "broken.png").write_bytes(b"not a png")
    done = predict(str(copy), str(mixed), cwd=tmp_path)
    assert done.returncode == 1 and "broken.png" in done.stderr and "1 of 2 images could not be read" in done.stderr
    assert "colour.jpg" in done.stdout
    with (copy / "model.onnx").open("ab") as fh:
        fh.write(b"\0")  # one byte more than was deployed
    done = predict(str(copy), str(mixed), cwd=tmp_path)
    assert done.returncode == 2 and "does not match the SHA-256" in done.stderr and "refused" in done.stderr
    (copy / "model.onnx").unlink()
    done = predict(str(copy), str(mixed), cwd=tmp_path)
    assert done.returncode == 2 and "model.onnx is missing" in done.stderr
    (copy / "manifest.json").unlink()
    done = predict(str(copy), str(mixed), cwd=tmp_path)
    assert done.returncode == 2 and "no manifest.json" in done.stderr
    done = predict(str(deployed / "fp32" / "cpu-onnxruntime"), str(tmp_path / "nothing-here"), cwd=tmp_path)
    assert done.returncode == 2 and "no image files" in done.stderr
    done = predict(str(deployed / "fp32" / "cpu-onnxruntime"), str(mixed), "--labels", cwd=tmp_path)
    assert done.returncode == 2 and "not classes of the model" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_recipe_reproduces_the_training_pipeline_bit_for_bit_on_photos_and_greys(tmp_path):
    """Resize by the shorter side, centre crop, scale and normalise: the device's NumPy/Pillow recipe equals
    slimda's torchvision pipeline exactly, for colour photos of both orientations and a grey image fed to a
    colour model."""
    from PIL import Image

    from slimda.data.domains import load_domain
    from slimda.data.preprocessing import IMAGENET_MEAN_STD, Preprocessing
    from slimda.runtime.recipe import Recipe

    rng = np.random.default_rng(0)
    for i, (h, w, mode) in enumerate([(90, 130, "RGB"), (140, 75, "RGB"), (64, 64, "L")]):
        folder = tmp_path / "photos" / "a"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
        Image.fromarray(pixels, mode).save(folder / f"{i}.png")
    prep = Preprocessing((48, 48), 3, *IMAGENET_MEAN_STD, resize=55)
    domain = load_domain(str(tmp_path / "photos"))
    dataset, recipe = domain.dataset(prep), Recipe(prep.recipe())
    for i in range(len(domain)):
        assert np.array_equal(recipe(domain.original(i)), dataset[i][0].numpy())


def test_the_monitor_stays_quiet_on_the_site_and_alerts_soon_after_it_changes(deployed, tmp_path):
    """20 windows of the deploy-time target raise at most one alert; a stream whose second half is the target's
    images inverted (an exposure gone wrong) alerts within 2 windows of the switch; --fail-on-drift says so in
    the exit status, and a deployment without an estimate is refused with how to make one."""
    from PIL import Image, ImageOps

    folder = deployed / "estimated" / "cpu-onnxruntime"
    found = sorted((deployed / "digits").rglob("*.png"))
    targets = [found[i] for i in np.random.default_rng(0).permutation(len(found))]  # a site's images come mixed
    same, switched = tmp_path / "same", tmp_path / "switched"
    for stream in (same, switched):
        stream.mkdir()
    for i in range(600):  # 3 x 200 images: 20 windows of 30, the switch at window 10
        path, name = targets[i % len(targets)], f"{i:03d}.png"
        (same / name).symlink_to(path)
        if i < 300:
            (switched / name).symlink_to(path)
        else:
            ImageOps.invert(Image.open(path).convert("L")).save(switched / name)
    done = predict(str(folder), str(same), "--monitor", str(tmp_path / "same.csv"), "--window", "30",
                   "--fail-on-drift", "--out", str(tmp_path / "p.csv"), cwd=tmp_path)
    with (tmp_path / "same.csv").open() as fh:
        windows = list(csv.DictReader(fh))
    assert len(windows) == 20 and sum(w["alert"] == "True" for w in windows) <= 1, windows
    assert done.returncode in (0, 3) and "windows" in done.stderr
    done = predict(str(folder), str(switched), "--monitor", str(tmp_path / "switched.csv"), "--window", "30",
                   "--fail-on-drift", "--out", str(tmp_path / "p.csv"), cwd=tmp_path)
    with (tmp_path / "switched.csv").open() as fh:
        windows = list(csv.DictReader(fh))
    first = min(int(w["window"]) for w in windows if w["alert"] == "True" and int(w["window"]) >= 10)
    assert first <= 11, windows  # the switch is at window 10
    assert done.returncode == 3 and "the site has drifted" in done.stderr
    done = predict(str(deployed / "fp32" / "cpu-onnxruntime"), str(same), "--monitor", cwd=tmp_path)
    assert done.returncode == 2 and "--monitor needs the deploy-time estimate" in done.stderr


def test_the_monitors_tests_have_their_textbook_values():
    """Fisher's one-sided exact test equals the hypergeometric CDF; the χ² test merges bins that expect fewer
    than 5 images (and equals scipy's on the merged counts); quiet windows drawn from the deploy-time images
    alarm at no more than the tests' level."""
    from scipy import stats

    from slimda.runtime.monitor import chi2_test, fisher_lower

    for k, n, k0, n0 in ((44, 50, 1002, 1024), (10, 30, 900, 1000), (0, 20, 5, 40), (20, 20, 20, 20)):
        expected = stats.hypergeom.cdf(k, n + n0, k + k0, n)  # population, successes in it, draws
        assert fisher_lower(k, n, k0, n0) == pytest.approx(expected, rel=1e-9)
    shares = np.array([0.05, 0.05, 0.15, 0.25, 0.25, 0.15, 0.1])
    observed = np.array([6, 0, 8, 12, 13, 7, 4])  # 50 images: the first two bins expect 2.5 each, merged
    merged_obs, merged_exp = [6, 8, 12, 13, 7, 4], 50 * np.array([0.1, 0.15, 0.25, 0.25, 0.15, 0.1])
    assert chi2_test(observed, shares) == pytest.approx(stats.chisquare(merged_obs, merged_exp).pvalue, rel=1e-9)
    assert chi2_test(np.array([3, 1]), np.array([0.5, 0.5])) == 1.0  # 4 images: one bin left, no test
    rng = np.random.default_rng(0)
    deployed = rng.random(1000) < 0.98  # deploy time: 98 % of images above the threshold
    alarms = sum(fisher_lower(int(w.sum()), 50, int(deployed.sum()), 1000) < 0.001
                 for w in (rng.choice(deployed, 50) for _ in range(2000)))
    assert alarms <= 4  # at most 0.2 % of 2000 windows (the level is 0.1 %)


@pytest.mark.parametrize("deployment", [*(f"fp32/{d}" for d in DEVICES), "int8/cpu-onnxruntime"])
def test_the_model_file_alone_carries_its_recipe(deployed, deployment, tmp_path):
    """With manifest.json deleted, the recipe in the model's own metadata (ONNX metadata_props, which the IR
    carries into rt_info's model_info, and the .ort keeps) gives the same predictions; OpenVINO's Model API
    keys are there too."""
    import shutil

    copy = tmp_path / "bare"
    shutil.copytree(deployed / deployment, copy)
    (copy / "manifest.json").unlink()
    for where, name in ((deployed / deployment, "with.csv"), (copy, "bare.csv")):
        done = predict(str(where), str(deployed / "digits"), "--out", str(tmp_path / name), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    rows = {name: [(r["file"], r["class"], r["probability"]) for r in csv.DictReader((tmp_path / name).open())]
            for name in ("bare.csv", "with.csv")}
    assert rows["bare.csv"] == rows["with.csv"]
    if deployment.endswith("cpu-openvino"):
        import openvino as ov

        model = ov.Core().read_model(str(copy / "model.xml"))
        assert model.get_rt_info(["model_info", "model_type"]).astype(str) == "Classification"
        assert model.get_rt_info(["model_info", "mean_values"]).astype(str) == "127.5"
    for model_file in copy.glob("model.*"):
        model_file.unlink()
    done = predict(str(copy), str(deployed / "digits"), cwd=tmp_path)
    assert done.returncode == 2 and "no manifest.json and no model file" in done.stderr


def engine_deployment(deployed: Path, folder: Path, engine: bytes) -> Path:
    """The fp32 ONNX Runtime deployment as a TensorRT device's would be: ``model.engine`` in the manifest."""
    import shutil

    from slimda.tables import sha256_file

    shutil.copytree(deployed / "fp32" / "cpu-onnxruntime", folder)
    (folder / "model.engine").write_bytes(engine)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifact"] = {"kind": "tensorrt-engine", "file": "model.engine", "tensorrt_version": "10.3.0",
                            "built_on": "nvidia@orin"}
    manifest["files"]["model.engine"] = {"sha256": sha256_file(folder / "model.engine"), "bytes": len(engine)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_predict_runs_a_tensorrt_engine_and_refuses_one_built_elsewhere(deployed, tmp_path):
    """Through the TensorRT API's stand-in (tests/fakes: the engine's network run by ONNX Runtime), a
    model.engine gets slimda's top-1 on every image at batch 8; an engine serialised by another TensorRT is
    refused with both versions and TensorRT's own reason; without tensorrt the user is told how to get it."""
    sys.path.insert(0, str(FAKES))
    try:
        import tensorrt as fake
    finally:
        sys.path.remove(str(FAKES))
        sys.modules.pop("tensorrt", None)
    onnx_bytes = (deployed / "fp32" / "cpu-onnxruntime" / "model.onnx").read_bytes()
    folder = engine_deployment(deployed, tmp_path / "trt", fake.serialize(onnx_bytes))
    done = predict(str(folder), str(deployed / "digits"), "--out", str(tmp_path / "p.csv"), "--batch", "8",
                   cwd=tmp_path, fake_tensorrt=True)
    assert done.returncode == 0, done.stderr
    assert "tensorrt" in done.stderr
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert {r["file"]: r["class"] for r in rows} == reference_top1(deployed, deployed / "fp32" / "cpu-onnxruntime")

    other = engine_deployment(deployed, tmp_path / "old", fake.serialize(onnx_bytes, "8.6.1"))
    done = predict(str(other), str(deployed / "digits"), cwd=tmp_path, fake_tensorrt=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "TensorRT 10.3.0 on Fake GPU 0 cannot load" in done.stderr, done.stderr
    assert "built with TensorRT 10.3.0 on nvidia@orin" in done.stderr  # as the manifest records it
    assert "Version tag does not match" in done.stderr and "--model model.onnx" in done.stderr

    done = predict(str(folder), str(deployed / "digits"), cwd=tmp_path)  # no stand-in: no tensorrt at all
    assert done.returncode == 2 and "needs TensorRT's Python package" in done.stderr and "JetPack" in done.stderr
    done = predict(str(folder), str(deployed / "digits"), "--model", "model.onnx", "--out", str(tmp_path / "o.csv"),
                   cwd=tmp_path)
    assert done.returncode == 0 and list(csv.DictReader((tmp_path / "o.csv").open())) == rows


def test_the_tensorrt_profiler_times_the_engine_as_the_device_loads_it(deployed, tmp_path):
    """slimda-profile's tensorrt device loads and feeds the engine with slimda.runtime's code (stand-in API)."""
    script = f"""
import sys
sys.path.insert(0, {str(FAKES)!r})
import numpy as np, tensorrt
from slimda.profilers.backends.tensorrt_local import time_engine
from slimda.profilers.config import MeasureOptions
engine = tensorrt.serialize(open({str(deployed / "fp32" / "cpu-onnxruntime" / "model.onnx")!r}, "rb").read())
shape = (1, 1, 28, 28)
times, complete = time_engine(engine, {{"input": np.zeros(shape, np.float32)}}, {{"input": shape}},
                              MeasureOptions(warmup=2, min_runs=5, max_runs=5, min_time_s=0, max_time_s=5))
assert len(times) == 5 and all(t > 0 for t in times), times
print("timed", len(times))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "timed 5" in done.stdout, done.stderr
