"""settings.py: train.py's command line decided once into a frozen TrainSettings."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from cats_dogs.checkpoint import make_checkpoint, save_checkpoint
from cats_dogs.device import autocast_dtype
from cats_dogs.model import build_model
from cats_dogs.settings import TrainSettings, resolve_settings, speed_defaults
from conftest import make_dataset
from train import DEFAULTS, get_args_parser


def resolve(*flags: str) -> TrainSettings:
    args = get_args_parser().parse_args(list(flags))
    given = dict(vars(args))
    settings, _ = resolve_settings(args, DEFAULTS, ddp_device=None)
    assert vars(args) == given  # the command line is only read
    return settings


def test_the_settings_are_every_flag_in_the_parsers_order_and_frozen(tmp_path: Path) -> None:
    # args.json, the checkpoint's config and SwanLab's list the settings in this order, as they listed the flags.
    parsed = vars(get_args_parser().parse_args([]))
    # Then what train.csv decides: what --balance applies, and whether the classes are imbalanced.
    assert [field.name for field in dataclasses.fields(TrainSettings)] == [*parsed, "balance_applied", "imbalanced"]
    settings = resolve("--data-dir", str(make_dataset(tmp_path / "data", 2, 1)), "--device", "cpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.image_size = 64  # type: ignore[misc]


def test_defaults_stated_in_train_py_fill_the_flags_not_given(tmp_path: Path) -> None:
    data = str(make_dataset(tmp_path / "data", 2, 1))
    settings = resolve("--data-dir", data, "--device", "cpu", "--optimizer", "adamw", "--lr", "auto")
    assert (settings.model, settings.image_size, settings.weights) == ("resnet50", 256, "IMAGENET1K_V2")
    assert (settings.freeze_epochs, settings.lr_decay_per_stage, settings.weight_decay) == (0, 1.0, 0.05)
    assert settings.experiment_name == "resnet50" and settings.device == "cpu"
    assert settings.lr == "auto"  # found later, on the model and the loader, by lr_finder.find_lr
    given = resolve("--data-dir", data, "--device", "cpu", "--model", "resnet18", "--weight-decay", "0.1")
    assert (given.model, given.experiment_name, given.weight_decay) == ("resnet18", "resnet18", 0.1)
    assert "0.05 for adamw" in get_args_parser().format_help()  # --help shows the defaults the settings use


def test_speed_defaults_for_the_device_as_documented() -> None:
    cpu, cores = torch.device("cpu"), os.cpu_count() or 2
    assert speed_defaults(cpu, False, photo_bytes=10**6) == {
        "amp": autocast_dtype(cpu) is not None, "channels_last": True, "cache": "memory", "num_workers": 0}
    assert speed_defaults(cpu, False, photo_bytes=4 * 1024**3)["cache"] == "disk"  # over the 3 GB budget
    assert speed_defaults(cpu, True, photo_bytes=0) == {  # --freeze-backbone: nothing to cache, workers decode
        "amp": autocast_dtype(cpu) is not None, "channels_last": True, "cache": "off",
        "num_workers": min(4, max(1, cores - 1))}
    cuda = speed_defaults(torch.device("cuda"), False, photo_bytes=0, amp=False)
    assert cuda == {"amp": False, "channels_last": True, "cache": "disk", "num_workers": min(8, max(1, cores - 1))}
    mps = speed_defaults(torch.device("mps"), False, 0, channels_last=None, cache="off", num_workers=3)
    assert (mps["channels_last"], mps["cache"], mps["num_workers"]) == (False, "off", 3)  # given flags are kept


def test_resume_takes_model_image_size_and_weights_from_the_checkpoint_and_refuses_another(tmp_path: Path) -> None:
    data = str(make_dataset(tmp_path / "data", 2, 1))
    output = tmp_path / "run"
    config = {"weights": "none", "freeze_epochs": 1, "lr_decay_per_stage": 0.5, "freeze_backbone": False}
    save_checkpoint(make_checkpoint(build_model("resnet18", 2), arch="resnet18", class_names=["cat", "dog"],
                                    image_size=48, epoch=1, metrics={}, config=config, weights="none"),
                    output / "latest_checkpoint.pth")
    flags = ("--data-dir", data, "--output-dir", str(output), "--device", "cpu", "--epochs", "2", "--resume")
    settings = resolve(*flags)
    assert (settings.model, settings.image_size, settings.weights) == ("resnet18", 48, "none")
    assert (settings.freeze_epochs, settings.lr_decay_per_stage) == (1, 0.5)
    assert resolve(*flags, "--image-size", "48").image_size == 48  # the same value may be given
    with pytest.raises(SystemExit, match="trained with --image-size 48, but this command says --image-size 64"):
        resolve(*flags, "--image-size", "64")
    with pytest.raises(SystemExit, match="trained with --model resnet18"):
        resolve(*flags, "--model", "resnet50")
