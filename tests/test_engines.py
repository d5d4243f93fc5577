"""engines.py: onnxruntime and OpenVINO (fp32, INT8 by int8.py) answer like PyTorch, are cached beside the
checkpoint, refuse a bad INT8 model, and fall back to PyTorch with one line when they cannot load."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
from gradio_client import handle_file
from PIL import Image
from playwright.sync_api import expect

from cats_dogs.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from cats_dogs.engine_build import convert_fp32_here
from cats_dogs.engines import (
    CALIBRATION_PHOTOS,
    cached_engine_answers,
    engine_path,
    engine_ready,
    judge_int8,
    load_engine,
    read_photos,
    served_val_right,
)
from cats_dogs.model import build_model
from conftest import make_dataset, run_app, run_script

CPU = torch.device("cpu")


def make_separating_checkpoint(path: Path, data: Path, epoch: int = 1) -> Path:
    """A from-scratch resnet18 at 32 px whose head is set to tell the generated cats (red) from dogs (blue)
    on every photo: a model with clear answers, made in a second instead of trained."""
    torch.manual_seed(0)
    model = build_model("resnet18", 2).eval()
    meta = make_checkpoint(model, arch="resnet18", class_names=["cat", "dog"], image_size=32, epoch=epoch, metrics={})
    photos, labels = read_photos(data / "train.csv", meta, 100)
    with torch.inference_mode():
        features = torch.nn.Sequential(*list(model.children())[:-1])(photos).flatten(1)
    cats, dogs = features[torch.tensor(labels) == 0].mean(0), features[torch.tensor(labels) == 1].mean(0)
    direction = (cats - dogs) / (cats - dogs).norm()
    with torch.no_grad():
        model.fc.weight.copy_(torch.stack([direction, -direction]) * 10)
        model.fc.bias.copy_(torch.stack([-(direction @ (cats + dogs) / 2), direction @ (cats + dogs) / 2]) * 10)
    save_checkpoint(make_checkpoint(model, arch="resnet18", class_names=["cat", "dog"], image_size=32, epoch=epoch,
                                    metrics={}), path)
    return path


def make_broken_calibration(folder: Path, data: Path) -> Path:
    """train.csv holds one flat grey photo (the ImageNet mean: all zeros once normalized), val.csv the real ones."""
    (folder / "train").mkdir(parents=True)
    Image.new("RGB", (32, 32), (124, 116, 104)).save(folder / "train/grey.png")
    (folder / "train.csv").write_text("train/grey.png,0\n", encoding="utf-8")
    shutil.copytree(data / "val", folder / "val")
    shutil.copy(data / "val.csv", folder / "val.csv")
    return folder


@pytest.fixture(scope="module")
def separating(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("engines")
    data = make_dataset(root / "datasets", per_class_train=6, per_class_val=4)
    return make_separating_checkpoint(root / "checkpoint/best_checkpoint.pth", data), data


def real_photos(data: Path, meta: dict) -> torch.Tensor:
    """12 of the tutorial's val photos when $CATS_DOGS_TUTORIAL_DIR is set, else the generated ones."""
    tutorial = os.environ.get("CATS_DOGS_TUTORIAL_DIR")
    return read_photos(Path(tutorial) / "val.csv" if tutorial else data / "val.csv", meta, 12)[0]


def test_every_engine_answers_pytorchs_top_class(separating: tuple[Path, Path]) -> None:
    checkpoint, data = separating
    model, meta = load_checkpoint(checkpoint)
    photos = real_photos(data, meta)
    with torch.inference_mode():
        expected = model(photos)
    for name in ("onnxruntime", "openvino-fp32"):
        run, line = load_engine(name, model, meta, checkpoint, CPU)
        assert run is not None and line == f"engine: {name.replace('-fp32', '')} fp32"
        assert torch.equal(run(photos).argmax(1), expected.argmax(1))
        assert (run(photos) - expected).abs().max() < 1e-3
    generated, labels = read_photos(data / "val.csv", meta, 100)
    run, line = load_engine("auto", model, meta, checkpoint, CPU, data_dir=data)  # a CPU: OpenVINO INT8 if it passes
    assert line == f"engine: openvino int8 (agreement 100% on {len(labels)} val photos, accuracy 100.0% vs fp32 100.0%)"
    assert run(generated).argmax(1).tolist() == labels  # the separating model is right on each
    int8_bytes, fp32_bytes = (engine_path(checkpoint, f"{name}.bin").stat().st_size for name in ("openvino-int8", "openvino"))
    assert int8_bytes < fp32_bytes / 3  # 8-bit weights
    assert load_engine("auto", model, meta, checkpoint, torch.device("meta"))[0] is None  # not a CPU: PyTorch


def test_int8_falls_back_on_a_broken_calibration_and_the_cache_follows_the_checkpoint(
        separating: tuple[Path, Path], tmp_path: Path, browser) -> None:
    checkpoint = shutil.copy(separating[0], tmp_path / "model.pth")  # its own cache: checkpoint dir/engines/
    make_broken_calibration(tmp_path / "datasets", separating[1])  # predict.py calibrates on ./datasets
    photo = str(tmp_path / "datasets/val/dog/dog.0.jpg")
    first = run_script("predict.py", photo, "--checkpoint", str(checkpoint), "--engine", "openvino", cwd=tmp_path)
    # 4 photos of 8 lost: not beyond the uncertainty of 8 photos (McNemar p = 0.125), but another model: refused
    reason = "INT8 not used: agreement 50.0% < 95% on 8 val photos"
    # bf16 inside where the CPU computes it faster than fp32, as PyTorch does there
    assert re.search(rf"engine: openvino (fp32|bf16) \({re.escape(reason)}", first.stderr), first.stderr
    assert "calibrating on 1 photos" in first.stderr
    assert first.stdout.startswith(f"{photo}\tdog")  # answered by OpenVINO fp32, right
    report = json.loads(engine_path(Path(checkpoint), "openvino-int8.json").read_text(encoding="utf-8"))
    assert report["decision"] == "fp32" and report["agreement"] == 0.5 and report["reason"].startswith("agreement 50.0%")
    cached = {path: path.stat().st_mtime_ns for path in (tmp_path / "engines").iterdir()}

    again = run_script("evaluate.py", "--checkpoint", str(checkpoint), "--csv", "datasets/val.csv", "--out", "eval",
                       "--engine", "openvino", "--cache", "off", cwd=tmp_path)
    assert reason in again.stdout and "accuracy 1.0000" in again.stdout
    assert "exporting" not in again.stderr and "quantizing" not in again.stderr  # the cache, not a new build
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "engines").iterdir()} == cached

    # The page: PyTorch answers until the engine is ready, then the engine; the page says which, and why not INT8.
    with run_app("--checkpoint", str(checkpoint), "--engine", "openvino", cwd=tmp_path) as (client, _):
        log = tmp_path / f"app-{client.src.rstrip('/').rsplit(':', 1)[1]}.log"
        deadline = time.monotonic() + 60
        while "engine: openvino" not in log.read_text(encoding="utf-8") and time.monotonic() < deadline:
            time.sleep(0.5)  # the engine is loaded in the background
        page = browser.new_page()
        page.goto(client.src)
        expect(page.locator("#engine")).to_contain_text(reason, timeout=30_000)
        assert client.predict(handle_file(photo), api_name="/predict")["label"] == "dog"
        page.close()
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "engines").iterdir()} == cached

    make_separating_checkpoint(Path(checkpoint), separating[1], epoch=2)  # retrained: other bytes, another key
    model, meta = load_checkpoint(checkpoint)
    run, line = load_engine("openvino-fp32", model, meta, checkpoint, CPU)
    assert run is not None and line == "engine: openvino fp32"
    assert engine_path(Path(checkpoint), "openvino.xml").is_file() and len(list((tmp_path / "engines").iterdir())) > len(cached)
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in cached.items())  # the old ones untouched

def test_an_engine_that_cannot_load_falls_back_to_torch_with_one_line(separating: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    (tmp_path / "fake/openvino").mkdir(parents=True)
    (tmp_path / "fake/openvino/__init__.py").write_text("raise ImportError('no OpenVINO for this CPU')\n", encoding="utf-8")
    photo = str(separating[1] / "val/cat/cat.0.jpg")
    result = run_script("predict.py", photo, "--checkpoint", str(separating[0]), "--engine", "openvino",
                        cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "fake")})
    assert result.stderr.strip() == "engine: torch (openvino is not usable here: ImportError: no OpenVINO for this CPU)"
    assert result.stdout.startswith(f"{photo}\tcat")


def test_bench_engines_prints_the_page_latency_per_engine_and_predicts_rates(tmp_path: Path) -> None:
    make_dataset(tmp_path / "datasets", per_class_train=4, per_class_val=2)
    result = run_script("bench/bench.py", "--data-dir", "datasets", "--engines", "--image-size", "32", "--photos", "3",
                        "--predict-photos", "4", "--no-compile", cwd=tmp_path, timeout=600)
    out = result.stdout
    assert re.search(r"^## bench\.py on cpu \(.+: (.*AVX2|none of AVX2)", out, re.M)  # the CPU and its instruction sets
    rows = re.findall(r"^\| (tutorial app function|page, [^|]+) \| ([\d.]+) ms \| ([\d.]+) ms \| ([\d.]+)× \|$", out, re.M)
    names = [name for name, *_ in rows]
    assert names[:3] == ["tutorial app function", "page, torch", "page, onnxruntime fp32"]
    assert re.fullmatch(r"page, openvino (fp32|bf16)", names[3]) and names[4] == "page, openvino int8"
    tutorial_p50 = float(rows[0][1])
    for _, p50, p90, ratio in rows:
        assert float(p50) <= float(p90) and float(ratio) == pytest.approx(float(p50) / tutorial_p50, abs=0.02)
    rates = re.findall(r"^\| predict\.py --engine (\w+) \| ([\d.]+) \| ([\d.]+)× \| (.+) \|$", out, re.M)
    assert [(engine, line.split(" (")[0]) for engine, _, _, line in rates][0] == ("torch", "torch")
    assert rates[1][0] == "auto" and rates[1][3].startswith("openvino")  # auto on a CPU
    assert all(float(rate) > 0 for _, rate, _, _ in rates)


def test_a_checkpoint_in_a_folder_with_a_comma_gets_its_openvino_engine(separating: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    """OpenVINO once split a path at its commas (the ONNX file was handed over as bytes): the model is converted
    in memory now, and saved and read back from that folder."""
    (tmp_path / "lr 1e-4, bs 8").mkdir()
    checkpoint = shutil.copy(separating[0], tmp_path / "lr 1e-4, bs 8/best_checkpoint.pth")
    model, meta = load_checkpoint(checkpoint)
    run, line = load_engine("openvino-fp32", model, meta, checkpoint, CPU)
    assert run is not None and line == "engine: openvino fp32"


def test_openvino_fp32_converted_by_train_py_answers_a_small_job_until_int8_is_built(separating: tuple[Path, Path],
                                                                                  tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """train.py converts OpenVINO fp32 where that is cheap before INT8 is built in the background: predict.py on a
    few photos answers with it (faster than PyTorch, nothing to build), a job big enough to repay INT8 builds it.
    Run beside the photos (./datasets), where INT8 could be built."""
    monkeypatch.chdir(separating[1].parent)
    checkpoint = Path(shutil.copy(separating[0], tmp_path / "best_checkpoint.pth"))
    model, meta = load_checkpoint(checkpoint)
    photo = str(separating[1] / "val/cat/cat.0.jpg")
    before = run_script("predict.py", photo, "--checkpoint", str(checkpoint), cwd=separating[1].parent)
    assert before.stderr.startswith("engine: torch (1 photos: building OpenVINO INT8 takes")  # nothing cached yet
    assert not cached_engine_answers("auto", meta, checkpoint, CPU, photos=1)

    assert convert_fp32_here(model, meta, checkpoint, cheap=False) == ""  # too dear for the run: left to the build
    assert not engine_path(checkpoint, "openvino.xml").exists()
    assert convert_fp32_here(model, meta, checkpoint, cheap=True).startswith("OpenVINO fp32 converted here")
    assert engine_ready("auto", meta, checkpoint, photos=1) == "openvino-fp32"
    assert cached_engine_answers("auto", meta, checkpoint, CPU, photos=1)
    assert engine_ready("auto", meta, checkpoint, photos=None) == "auto"  # unknown size: INT8 is built
    after = run_script("predict.py", photo, "--checkpoint", str(checkpoint), cwd=separating[1].parent)
    assert after.stderr.strip() == ("engine: openvino fp32 (INT8 is not built yet, and 1 photos do not repay "
                                    "building it here)")
    assert after.stdout.startswith(f"{photo}\tcat ") and before.stdout.startswith(f"{photo}\tcat ")
    assert not engine_path(checkpoint, "openvino-int8.xml").exists()


def right_and_wrong(photos: int, only_fp32: int, only_int8: int) -> tuple[str, str]:
    """fp32's and INT8's right ("1") and wrong ("0") on `photos` val photos: both right on the rest."""
    fp32 = "1" * only_fp32 + "0" * only_int8 + "1" * (photos - only_fp32 - only_int8)
    int8 = "0" * only_fp32 + "1" * only_int8 + "1" * (photos - only_fp32 - only_int8)
    return fp32, int8


@pytest.mark.parametrize(("photos", "only_fp32", "only_int8", "decision", "reason"), [
    (70, 1, 0, "int8", "agreement 99% on 70 val photos, accuracy 98.6% vs fp32 100.0%"),  # refused before (98.6% < 99%)
    (160, 1, 0, "int8", "agreement 99% on 160 val photos, accuracy 99.4% vs fp32 100.0%"),  # 71.9% vs 72.5% was refused
    (200, 7, 0, "fp32", "val accuracy 96.5% vs fp32 100.0%, lower beyond the uncertainty (McNemar p = 0.016) on 200"),
    (100, 3, 3, "fp32", "agreement 94.0% < 95% on 100 val photos"),  # as accurate, but another model
])
def test_int8_is_refused_only_when_worse_beyond_the_val_sets_uncertainty_or_another_model(
        photos: int, only_fp32: int, only_int8: int, decision: str, reason: str) -> None:
    result = judge_int8(*right_and_wrong(photos, only_fp32, only_int8))
    assert result["decision"] == decision and result["reason"].startswith(reason), result["reason"]
    assert (result["only_fp32_right"], result["only_int8_right"], result["val_photos"]) == (only_fp32, only_int8, photos)


def test_the_check_takes_fp32s_answers_from_train_pys_last_evaluation_of_those_photos(tmp_path: Path) -> None:
    history = [{"epoch": 1, "val_right": "0101"}, {"epoch": 2, "val_right": "1101", "ema_val_right": "1111"}]
    meta = {"epoch": 2, "ema_weights": False, "history": history, "config": {"data_dir": str(tmp_path)}}
    assert served_val_right(meta, tmp_path) == "1101"
    assert served_val_right({**meta, "ema_weights": True}, tmp_path) == "1111"  # the EMA's, when it is served
    assert served_val_right(meta, tmp_path / "other") is None  # other photos: the check computes fp32's itself
    assert served_val_right({**meta, "history": [{"epoch": 2, "val_right": "1-01"}]}, tmp_path) is None  # unreadable
    assert served_val_right({k: v for k, v in meta.items() if k != "history"}, tmp_path) is None  # an older file


def test_freeze_backbone_on_150_photos_trains_on_int8_features_and_serves_that_backbone_with_its_head(
        tmp_path: Path) -> None:
    from cats_dogs.checkpoint import read_checkpoint
    from cats_dogs.engines import fp32_logits, logits_of, openvino_engine, right_string

    make_dataset(tmp_path / "datasets", per_class_train=75, per_class_val=10)  # INT8_FEATURES_MIN_PHOTOS
    trained = run_script("train.py", "--weights", "none", "--model", "resnet18", "--image-size", "64",
                         "--freeze-backbone", "--lr", "3e-2", "--epochs", "3", "--batch-size", "16", "--num-workers", "0",
                         "--swanlab-mode", "disabled", cwd=tmp_path)
    calibrated = f"features: the train photos through the backbone in INT8 (calibrated on {CALIBRATION_PHOTOS} of them"
    assert calibrated in trained.stdout
    [line] = [line for line in trained.stdout.splitlines() if line.startswith("engine:")]
    assert "the INT8 backbone the features came from with the trained head" in line and "background" not in line
    best = tmp_path / "checkpoint/best_checkpoint.pth"
    meta = read_checkpoint(best)
    report = json.loads(engine_path(best, "openvino-int8.json").read_text(encoding="utf-8"))
    assert report["from_int8_backbone"] and report["calibration_photos"] == CALIBRATION_PHOTOS and report["val_photos"] == 20
    model, _ = load_checkpoint(best)
    photos, labels = read_photos(tmp_path / "datasets/val.csv", meta, 10**9)
    # The val accuracy train.py reports is the checkpoint's own in PyTorch (fp32 features), not INT8's.
    served_epoch = next(entry for entry in meta["history"] if entry["epoch"] == meta["epoch"])
    assert right_string(fp32_logits(model, photos).argmax(1), labels) == served_epoch["val_right"]
    # The engine saved is the INT8 backbone with the head: it answers as its check says INT8 did.
    answers = logits_of(openvino_engine(engine_path(best, "openvino-int8.xml"), None), photos).argmax(1)
    assert 100 * right_string(answers, labels).count("1") / len(labels) == report["int8_accuracy"]
    if report["decision"] != "int8":
        assert engine_path(best, "openvino.xml").is_file()  # what answers instead, no conversion left to do
    predicted = run_script("predict.py", "datasets/val", cwd=tmp_path)
    assert "engine: openvino" in predicted.stderr and "quantizing" not in predicted.stderr  # built nothing


def test_features_fall_back_to_pytorch_with_one_line_when_openvino_cannot_compile_the_backbone(
        tmp_path: Path, monkeypatch, capsys) -> None:
    from torch.utils.data import DataLoader

    from cats_dogs import frozen_backbone
    from cats_dogs.loaders import loader_options
    from load_datasets import DatasetLoader

    data = make_dataset(tmp_path / "datasets", per_class_train=3, per_class_val=2)
    train_set = DatasetLoader(data / "train.csv", 32, train=True, augment="none")
    val_set = DatasetLoader(data / "val.csv", 32)
    options = loader_options(4, 0, torch.device("cpu"))
    model = build_model("resnet18", 2)
    arguments = (train_set, DataLoader(val_set, **options), options, torch.device("cpu"), None, False,
                 torch.Generator().manual_seed(0))
    with_openvino = frozen_backbone.feature_loaders(model, *arguments)

    def cannot_compile(*_):
        raise RuntimeError("no CPU plugin")

    monkeypatch.setattr(frozen_backbone, "openvino_engine", cannot_compile)
    with_pytorch = frozen_backbone.feature_loaders(model, *arguments, int8=True)
    assert "features computed with PyTorch (OpenVINO could not convert the backbone: RuntimeError)" in capsys.readouterr().out
    assert with_pytorch[3] is None  # no INT8 backbone either
    for ours, theirs in zip(with_openvino[:2], with_pytorch[:2], strict=True):
        assert torch.allclose(ours.dataset.tensors[0], theirs.dataset.tensors[0], atol=1e-4)
