"""Checkpoints: what one holds, the one writer, the one reader.

Every script reads checkpoints through `read_checkpoint` (or `load_checkpoint`, which also builds
the model), so that old files, the tutorial's bare state dict and files from a newer version of
this project are handled the same way everywhere, with defaults filled in one place.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import torch
from PIL import Image
from torch import nn

from cats_dogs.atomic import atomic_file, exit_when_cannot_write
from cats_dogs.classes import class_name_problem, default_class_names
from cats_dogs.model import build_model
from cats_dogs.preprocessing import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from cats_dogs.weights import read_file

# 1: what train.py has written since checkpoints carried metadata. 0: the tutorial's bare state dict.
CHECKPOINT_FORMAT = 1


class Checkpoint(TypedDict, total=False):
    """The keys of a checkpoint. `read_checkpoint` fills every one of them (None where unknown),
    except the training-only states, which only latest_checkpoint.pth holds."""

    format: int
    model_state: dict[str, torch.Tensor]
    arch: str
    num_classes: int
    class_names: list[str]
    image_size: int  # photos are squashed to image_size × image_size
    mean: list[float]  # normalization after scaling to 0..1
    std: list[float]
    weights: str | None  # what training started from: IMAGENET1K_V2, none, a .pth path
    epoch: int | None
    metrics: dict[str, float]  # of that epoch: train_loss, val_acc, …
    history: list[dict[str, Any]]  # one metrics dict per epoch, for the curves and the best-epoch rule (val_right: a str)
    best_epoch: int | None
    best_val_acc: float | None
    best_val_acc_windowed: float | None
    config: dict[str, Any]  # train.py's resolved arguments
    saved_at: str | None
    ema_weights: bool  # model_state holds the exponential moving average of the weights (train.py --ema), not the last
    optimizer_state: dict[str, Any]  # latest_checkpoint.pth only: for --resume
    scheduler_state: dict[str, Any] | None
    ema_state: dict[str, Any] | None  # with --ema: the average's weights and update count (recipe.ema_state)
    # latest_checkpoint.pth only, for an exact --resume (docs/training.md, "What a checkpoint holds"):
    global_step: int  # optimizer steps taken so far: the x of per-step curves, where a resumed log goes on
    mid_epoch: dict[str, Any] | None  # written inside epoch `epoch` + 1: resume.EpochPosition's fields; None after an epoch
    random_state: dict[str, Any] | None  # random_state.random_states
    scaler_state: dict[str, Any] | None  # fp16's gradient scaler
    swanlab_run_id: str | None  # the SwanLab experiment, continued on --resume where SwanLab can (cloud)


TRAINING_STATE_KEYS = ("optimizer_state", "scheduler_state", "ema_state", "global_step", "mid_epoch", "random_state",
                       "scaler_state", "swanlab_run_id")
FREE_SPACE_THEN = ("The checkpoint saved before is unchanged: free some space (or choose another --output-dir), then run "
                   "the same command with --resume.")


def make_checkpoint(model: nn.Module, *, arch: str, class_names: list[str], image_size: int,
                    epoch: int, metrics: dict[str, float], **extra: Any) -> Checkpoint:
    """Everything needed to use the weights later without the training command line."""
    model = getattr(model, "_orig_mod", model)  # torch.compile wraps the module
    unknown = set(extra) - set(Checkpoint.__annotations__)
    if unknown:  # a typo here would silently write a key nobody reads
        raise TypeError(f"not checkpoint keys: {', '.join(sorted(unknown))}")
    return Checkpoint(
        format=CHECKPOINT_FORMAT,
        model_state={k: v.detach().cpu() for k, v in model.state_dict().items()},
        arch=arch,
        num_classes=len(class_names),
        class_names=list(class_names),
        image_size=image_size,
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        epoch=epoch,
        metrics=dict(metrics),
        saved_at=datetime.datetime.now().isoformat(timespec="seconds"),
        **extra,
    )


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike, training_state: bool = True) -> None:
    """Write to a temporary file, then rename: a kill during the save never leaves a broken file.

    training_state=False leaves out the optimizer and scheduler (2/3 of the bytes): for files meant
    for using, not resuming.
    """
    if not training_state:
        checkpoint = without_training_state(checkpoint)
    # A unique temporary name: two writers of one path never collide. A full disk stops the run with one line, the
    # previous file at `path` unchanged.
    with exit_when_cannot_write(path, tensor_bytes(checkpoint), FREE_SPACE_THEN), atomic_file(path) as file:
        torch.save(checkpoint, file)


def without_training_state(checkpoint: Checkpoint) -> Checkpoint:
    return Checkpoint(**{k: v for k, v in checkpoint.items() if k not in TRAINING_STATE_KEYS})


def tensor_bytes(value: Any) -> int:
    """About the size of a saved checkpoint: the bytes of the tensors in it."""
    if isinstance(value, torch.Tensor):
        return value.nbytes
    if isinstance(value, dict):
        return sum(tensor_bytes(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(item) for item in value)
    return 0


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """One of our checkpoints, any format up to this version's, or the tutorial's bare state dict,
    with every key of `Checkpoint` present (defaults for what older files lack)."""
    content = read_file(path)
    if not isinstance(content, dict):
        raise ValueError(f"{path} is not a checkpoint (it holds a {type(content).__name__})")
    if "model_state" not in content:
        # The tutorial saved model.state_dict() of a 2-class ResNet50 and nothing else.
        num_classes = content["fc.weight"].shape[0] if "fc.weight" in content else 2
        content = {"format": 0, "model_state": content, "arch": "resnet50", "num_classes": num_classes,
                   "class_names": default_class_names(num_classes), "image_size": 256}
    found = content.get("format", 0)
    if found > CHECKPOINT_FORMAT:
        raise ValueError(f"{path} was written by a newer version of this project (checkpoint format {found}). "
                         f"This version reads format {CHECKPOINT_FORMAT} or older. Update the code (git pull), then try again.")
    metrics = content.get("metrics") or {}
    defaults = Checkpoint(format=found, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), weights=None, epoch=None,
                          metrics=metrics, history=[], best_epoch=None, best_val_acc=metrics.get("val_acc"),
                          best_val_acc_windowed=None, config={}, saved_at=None, ema_weights=False)
    checkpoint = Checkpoint(**{**defaults, **content})
    if "class_names" not in content:
        checkpoint["class_names"] = default_class_names(checkpoint["num_classes"])
    # Class names become folder names (predict.py --sort-into): a file from elsewhere must not name a path.
    names = checkpoint["class_names"]
    if not isinstance(names, list):
        raise ValueError(f"{path}: class_names is not a list of names")
    for i, name in enumerate(names):
        if problem := class_name_problem(name):
            raise ValueError(f"{path}: class_names[{i}]: {problem}")
    return checkpoint


def find_checkpoint(path: str | os.PathLike | None = None, output_dir: str | os.PathLike = "checkpoint") -> Path:
    """The checkpoint a user means: the one named, else the best one, else the latest one."""
    candidates = [Path(path)] if path else [Path(output_dir) / "best_checkpoint.pth", Path(output_dir) / "latest_checkpoint.pth"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SystemExit(f"no checkpoint at {' or '.join(map(str, candidates))}; train one first: python train.py")


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, Checkpoint]:
    """The model of a checkpoint, in eval mode on `device`, and the checkpoint's metadata (without weights or
    training state)."""
    return model_of(read_checkpoint(path), device)


def model_of(checkpoint: Checkpoint, device: torch.device | str = "cpu") -> tuple[nn.Module, Checkpoint]:
    """load_checkpoint for a checkpoint already read (read_checkpoint)."""
    with torch.device("meta"):  # no random initialization, which the weights replace: 0.3 s for a ResNet50
        model = build_model(checkpoint["arch"], checkpoint["num_classes"], weights="none")
    # fp32, as the model's own tensors would have made them
    model.load_state_dict({name: tensor.float() if tensor.is_floating_point() else tensor
                           for name, tensor in checkpoint["model_state"].items()}, assign=True)
    model.to(device).eval()
    return model, checkpoint_meta(checkpoint)


def checkpoint_meta(checkpoint: Checkpoint) -> Checkpoint:
    """A checkpoint's metadata: everything but its weights and training state."""
    return Checkpoint(**{k: v for k, v in checkpoint.items() if k not in ("model_state", *TRAINING_STATE_KEYS)})


def load_checkpoint_or_exit(path: str | os.PathLike, device: torch.device | str = "cpu",
                            checkpoint: Checkpoint | None = None) -> tuple[nn.Module, Checkpoint]:
    """load_checkpoint for a script's start: a file that cannot be loaded ends the script with one line that
    names it, not a traceback. `checkpoint`: the file's contents when already read, not read again."""
    try:
        return load_checkpoint(path, device) if checkpoint is None else model_of(checkpoint, device)
    except (ValueError, KeyError, RuntimeError, OSError) as error:
        raise SystemExit(f"cannot load {path}: {error}") from None


def read_checkpoint_or_exit(path: str | os.PathLike) -> Checkpoint:
    """read_checkpoint for a script: a file that cannot be read ends it with one line that names it."""
    try:
        return read_checkpoint(path)
    except (ValueError, KeyError, OSError) as error:
        raise SystemExit(f"cannot read {path}: {error}") from None


def preprocessing(meta: Checkpoint) -> dict[str, Any]:
    """image_size, mean and std as the checkpoint was trained with: the keyword arguments of
    preprocessing.eval_transform and load_datasets' datasets, so that every script builds the same input."""
    return {"image_size": meta["image_size"], "mean": meta["mean"], "std": meta["std"]}


def checkpoint_transform(meta: Checkpoint) -> Callable[[Image.Image], torch.Tensor]:
    """The evaluation preprocessing a checkpoint was trained with: PIL photo in, normalized tensor out."""
    return eval_transform(**preprocessing(meta))
