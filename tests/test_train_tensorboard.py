"""train.py --tensorboard, run for real: the event files read back with TensorBoard's own reader."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from cats_dogs.checkpoint import read_checkpoint
from conftest import FAST_TRAIN_FLAGS, make_dataset, read_swanlab_runs, run_script

FLAGS = [*FAST_TRAIN_FLAGS, "--model", "resnet18", "--tensorboard"]
# results.csv's columns under their TensorBoard names: the per-step train_loss keeps its own name, as in SwanLab.
EPOCH_TAGS = {"train_loss_epoch": "train_loss", "val_loss": "val_loss", "val_acc": "val_acc", "val_acc_low": "val_acc_low",
              "val_acc_high": "val_acc_high", "val_balanced_acc": "val_balanced_acc",
              "val_balanced_acc_low": "val_balanced_acc_low", "val_balanced_acc_high": "val_balanced_acc_high",
              "val_count": "val_count", "epoch": "epoch"}


def read_events(folder: Path) -> EventAccumulator:
    return EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0}).Reload()  # 0: keep every event


def test_tensorboard_logs_beside_swanlab_and_a_resume_continues_its_folder_without_duplicate_steps(tmp_path: Path) -> None:
    # 6 cats and 2 dogs: imbalanced, so balanced accuracy is logged too; two steps of 4 photos an epoch.
    data = make_dataset(tmp_path / "datasets", per_class_train=6, per_class_val=2)
    rows = (data / "train.csv").read_text(encoding="utf-8").splitlines()
    (data / "train.csv").write_text("\n".join(rows[:8]) + "\n", encoding="utf-8")
    first = run_script("train.py", *FLAGS, "--epochs", "1", cwd=tmp_path)
    [folder] = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("resnet18-") and f"TensorBoard: event files in runs/{folder.name}" in first.stdout
    latest = tmp_path / "checkpoint/latest_checkpoint.pth"
    assert read_checkpoint(latest)["config"]["tensorboard"] == f"runs/{folder.name}"
    assert json.loads((tmp_path / "checkpoint/args.json").read_text(encoding="utf-8"))["tensorboard"] == f"runs/{folder.name}"
    # SwanLab got the same numbers from the same call.
    [swanlab_run] = read_swanlab_runs(tmp_path / "swanlog")
    events = read_events(folder)
    assert [e.value for e in events.Scalars("val_acc")] == [np.float32(v) for v in swanlab_run["metrics"]["val_acc"]]

    # A run stopped after logging epoch 2's steps but before its checkpoint: the resumed run must replace them.
    with SummaryWriter(str(folder)) as stopped:
        for step in (3, 4):
            stopped.add_scalar("train_loss", 999.0, step)
        stopped.add_scalar("val_acc", -1.0, 4)
    resumed = run_script("train.py", *FLAGS, "--epochs", "2", "--resume", "--swanlab-mode", "disabled", cwd=tmp_path)
    assert f"TensorBoard: event files in runs/{folder.name}" in resumed.stdout
    assert list((tmp_path / "runs").iterdir()) == [folder] and len(list(folder.glob("events.out.tfevents.*"))) == 3

    events = read_events(folder)
    tags = events.Tags()
    assert set(tags["scalars"]) == {"train_loss", "lr", *EPOCH_TAGS, "val_balanced_acc_windowed"}
    assert set(tags["images"]) == {"train_batch", "val_examples"} and tags["graph"]
    assert "custom_scalars__config__" in tags["tensors"]  # val_acc between its bounds, train against val loss
    assert any("conv1" in node.name for node in events.Graph().node)
    for tag in tags["scalars"]:  # every step once: the stopped run's epoch 2 was purged
        steps = [e.step for e in events.Scalars(tag)]
        assert steps == sorted(set(steps)), (tag, steps)
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2, 3, 4]
    assert 999.0 not in [e.value for e in events.Scalars("train_loss")]
    assert [e.step for e in events.Images("val_examples")] == [2, 4]
    gallery = events.Images("val_examples")[-1]
    assert gallery.width == 4 * 128 and gallery.height > 128  # 4 val photos, 128 px each, captions under them

    with open(tmp_path / "checkpoint/results.csv", encoding="utf-8", newline="") as file:
        results = list(csv.DictReader(file))
    assert [row["epoch"] for row in results] == ["1", "2"]
    for tag, column in EPOCH_TAGS.items():
        logged = [e.value for e in events.Scalars(tag)]
        assert logged == [np.float32(float(row[column])) for row in results], (tag, logged)


def test_without_tensorboard_one_line_names_the_package(tmp_path: Path) -> None:
    make_dataset(tmp_path / "datasets", per_class_train=2, per_class_val=1)
    hidden = tmp_path / "hide_tensorboard"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text("import sys\nsys.modules['tensorboard'] = None  # as if not installed\n",
                                             encoding="utf-8")
    result = run_script("train.py", *FLAGS, cwd=tmp_path, check=False, env={"PYTHONPATH": str(hidden)})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == ("--tensorboard: TensorBoard is not installed: pip install "
                                                      "tensorboard (or leave out --tensorboard)")
    assert not (tmp_path / "checkpoint").exists() and not (tmp_path / "runs").exists()
