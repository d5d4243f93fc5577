"""What a training run leaves behind and logs: the checkpoints, args.json, results.csv, train_batch.jpg,
training_curves.png, and the SwanLab run.

train.py calls these once per run or once per epoch; training itself is in train.py and recipe.py.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from cats_dogs import distributed, tensorboard_log, tracking
from cats_dogs.atomic import atomic_write_text
from cats_dogs.checkpoint import Checkpoint, make_checkpoint
from cats_dogs.checkpoint_writes import write_later
from cats_dogs.class_balance import applied_method, class_counts, class_weights, data_warnings
from cats_dogs.device import bf16_beats_fp32_cpu, has_native_bf16_cpu
from cats_dogs.photo_batches import ImageList
from cats_dogs.photo_grid import photo_grid
from cats_dogs.preprocessing import IMAGENET_MEAN, IMAGENET_STD, to_device
from cats_dogs.random_state import random_states, same_random_state
from cats_dogs.recipe import best_fields, checkpoints_due, ema_state
from cats_dogs.served_epoch import PER_PHOTO_KEYS, against_last_epoch
from cats_dogs.settings import TrainSettings
from cats_dogs.tracking import Picture

SWANLAB_LOG_DIR = "swanlog"
# training_curves.png is redrawn after an epoch only when older than this, and once at the end: drawing it took 0.47 s,
# a 20-epoch --freeze-backbone run 9.4 s of its 96.
CURVES_EVERY_S = 10.0


def print_setup(settings: TrainSettings, amp_dtype: torch.dtype | None, class_names: list[str],
                train_set: ImageList, val_set: ImageList) -> None:
    """train.py's first lines: the device, the photos and classes, the speed settings chosen, and torchrun's processes."""
    cached = {"memory": ", photos cached in memory", "disk": ", photos cached on disk"}.get(settings.cache, "")
    size = settings.image_size
    print(f"device: {settings.device}  |  {len(train_set)} train / {len(val_set)} val photos at {size}×{size}"
          f"  |  classes: {', '.join(class_names)}")
    print(f"speed: {'mixed precision ' + str(amp_dtype).replace('torch.', '') if amp_dtype else 'fp32'}"
          f"{', channels_last' if settings.channels_last else ''}{cached}"
          f"{', backbone frozen (head only)' if settings.freeze_backbone else ''}, {settings.num_workers} data workers")
    if not amp_dtype and settings.device == "cpu" and has_native_bf16_cpu() and not bf16_beats_fp32_cpu():
        print("note: this CPU has bf16 instructions, but bf16 was measured slower than fp32 here (AVX512-BF16 without "
              "AMX, say), so it trains in fp32; --amp forces bf16")
    print_balance(settings, class_names, train_set, len(val_set))
    if distributed.is_distributed():
        world_size, batch_size = distributed.get_world_size(), settings.batch_size
        backend = "nccl" if settings.device.startswith("cuda") else "gloo"
        print(f"torchrun: {world_size} processes ({backend}), batch {batch_size} per process = "
              f"{batch_size * world_size} photos per step{', SyncBatchNorm' if settings.sync_bn else ''}")


def print_balance(settings: TrainSettings, class_names: list[str], train_set: ImageList, val_photos: int) -> None:
    """The data's warnings (class_balance.data_warnings), what --balance does about them and what epochs are judged on."""
    counts = class_counts([label for _, label in train_set.samples], len(class_names))
    for line in data_warnings(class_names, counts, val_photos):
        print(f"warning: {line}")
    _, why = applied_method(settings.balance, counts, distributed.is_distributed(), settings.freeze_backbone)
    if settings.balance_applied == "loss":
        weights = ", ".join(f"{name} {weight:.2f}" for name, weight in zip(class_names, class_weights(counts), strict=True))
        print(f"balance: class-weighted loss ({weights}) ({why})")
    elif settings.balance_applied == "sampler":
        print(f"balance: each class drawn equally often, {len(train_set)} draws an epoch ({why})")
    elif settings.imbalanced:
        print(f"balance: off ({why}); the small classes may be neglected")
    if settings.imbalanced:
        print("imbalanced classes: the best checkpoint and early stopping judge on val_balanced_acc (mean recall per class)")


def start_swanlab(settings: TrainSettings, lr: float, lr_found: dict | None, class_names: list[str],
                  train_set: ImageList, val_set: ImageList, continuation: dict | None = None) -> dict:
    """A local SwanLab run with the whole configuration; returns that configuration (the checkpoint keeps it too).
    `lr` and `lr_found`: lr_finder.find_lr's answers, the rate the run trains at (recorded as `lr`, for --lr auto
    too) and the range test, whose suggestion is recorded as `lr_suggested`."""
    suggested = {"lr_suggested": lr_found["suggested"]} if lr_found else {}
    # The data folder resolved: export.py and evaluate.py, run from another folder, find the val photos by it.
    config = {**dataclasses.asdict(settings), "data_dir": str(Path(settings.data_dir).resolve()), "lr": lr,
              **suggested, "num_classes": len(class_names),
              "class_names": class_names, "train_size": len(train_set), "val_size": len(val_set),
              "train_class_counts": class_counts([label for _, label in train_set.samples], len(class_names)),
              "world_size": distributed.get_world_size()}
    swanlab_mode = "online" if settings.swanlab_mode == "cloud" else settings.swanlab_mode
    # The other processes log nothing: their swanlab.log calls do nothing.
    tracking.open_swanlab(mode=swanlab_mode if distributed.is_main_process() else "disabled",
                          project=settings.project, name=settings.experiment_name, log_dir=SWANLAB_LOG_DIR,
                          config=config,
                          description=f"Fine-tune {settings.model} on {settings.data_dir} ({', '.join(class_names)}).",
                          **(continuation or {}))  # resume.swanlab_continuation: the resumed run's experiment
    if swanlab_mode == "local":
        print(f"SwanLab dashboard: run `swanlab watch {SWANLAB_LOG_DIR}` in another terminal")
    if distributed.is_main_process():
        save_run_config(config, Path(settings.output_dir) / "args.json")
    return config


def log_validation(metrics: dict[str, float], epoch: int, step: int, predictions: dict[int, int], gallery: list,
                   val_set: ImageList, class_names: list[str]) -> None:
    """The val numbers and a gallery of val photos captioned "predicted / true" to SwanLab (and TensorBoard)."""
    captioned = [Picture(image, caption=f"{class_names[predictions[i]]} / {class_names[val_set.samples[i][1]]}")
                 for i, image in gallery if i in predictions]
    numbers = {key: value for key, value in metrics.items() if key not in PER_PHOTO_KEYS}  # not val_right's strings
    tracking.log({**numbers, "epoch": epoch, "val_examples": captioned}, step=step)


def log_run_start(settings: TrainSettings, model: nn.Module, device: torch.device, first_step: int) -> None:
    """Before the first step: with --tensorboard, its writer opened (rank 0), the model graph in it; train_batch.jpg
    to SwanLab and TensorBoard. `first_step`: the steps done already (a resumed run's)."""
    tensorboard_log.start(settings.tensorboard, first_step, model, settings.image_size, device, settings.imbalanced)
    train_batch = Path(settings.output_dir) / "train_batch.jpg"
    if distributed.is_main_process() and train_batch.is_file():
        tracking.log({"train_batch": Picture(train_batch, caption="a training batch, as the model sees it")},
                     step=first_step)


def save_checkpoints(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, settings: TrainSettings,
                     config: dict, class_names: list[str], history: list[dict], ema: AveragedModel | None,
                     paired_labels: list[int] | None = None, resume_state: dict | None = None,
                     mid_epoch_saves=None) -> None:
    """latest_checkpoint.pth every epoch, best_checkpoint.pth when --best-rule picks this epoch, and the curves.
    paired_labels: the val classes in val order on imbalanced classes (--best-rule paired weighs photos by class).
    resume_state: latest_checkpoint's; mid_epoch_saves (resume.MidEpochSaves) learns that one was just written.
    latest_checkpoint.pth is written last: a run killed before it redoes the epoch
    and writes the same files again, so that no epoch is missing or twice in results.csv. The checkpoints are written
    by a thread while the next epoch trains (checkpoint_writes.write_later)."""
    rule, window = settings.best_rule, settings.best_window
    fields = checkpoint_fields(settings, config, class_names, history, ema, paired_labels)
    output_dir = Path(settings.output_dir)
    due = checkpoints_due(history, rule, window, ema is not None, settings.save_candidates, settings.score_key,
                          paired_labels)
    checkpoint = make_checkpoint(model, **{**fields, "ema_weights": False}) if due else None
    ema_checkpoint = make_checkpoint(ema.module, **{**fields, "ema_weights": True}) if any(due.values()) else None
    # for using, not resuming: no optimizer state
    files = [(ema_checkpoint if use_ema else checkpoint, output_dir / name, False) for name, use_ema in due.items()]
    last_epoch = history[-1]["epoch"] >= settings.epochs  # finish_run draws the curves then
    if not last_epoch and curves_due(output_dir / "training_curves.png", history):
        save_training_curves(history, output_dir / "training_curves.png")
    save_results_csv(history, output_dir / "results.csv")
    latest = latest_checkpoint(model, optimizer, scheduler, settings, config, class_names, history, ema, paired_labels,
                               **(resume_state or {}))
    write_later([*files, (latest, output_dir / "latest_checkpoint.pth", True)])
    if mid_epoch_saves is not None:
        mid_epoch_saves.saved()


def checkpoint_fields(settings: TrainSettings, config: dict, class_names: list[str], history: list[dict],
                      ema: AveragedModel | None, paired_labels: list[int] | None) -> dict[str, Any]:
    """make_checkpoint's fields for the last epoch of `history` (none yet: epoch 0, no best epoch)."""
    last = history[-1] if history else {"epoch": 0}
    best = best_fields(history, settings.best_rule, settings.best_window, ema is not None, settings.score_key,
                       paired_labels) if history else {}
    return dict(arch=settings.model, class_names=class_names, image_size=settings.image_size, epoch=last["epoch"],
                metrics={k: v for k, v in last.items() if k not in ("epoch", *PER_PHOTO_KEYS)},
                history=history, config=config, weights=settings.weights, **best)


def save_latest(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, settings: TrainSettings,
                config: dict, class_names: list[str], history: list[dict], ema: AveragedModel | None,
                paired_labels: list[int] | None = None, **resume_state: Any) -> None:
    """latest_checkpoint.pth alone (resume.MidEpochSaves, inside an epoch), handed to the writing thread."""
    latest = latest_checkpoint(model, optimizer, scheduler, settings, config, class_names, history, ema, paired_labels,
                               **resume_state)
    write_later([(latest, Path(settings.output_dir) / "latest_checkpoint.pth", True)])


def latest_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, settings: TrainSettings,
                      config: dict, class_names: list[str], history: list[dict], ema: AveragedModel | None,
                      paired_labels: list[int] | None = None, global_step: int = 0, mid_epoch: dict | None = None,
                      scaler: torch.amp.GradScaler | None = None,
                      generator: torch.Generator | None = None) -> Checkpoint:
    """latest_checkpoint.pth's content, everything --resume needs to go on exactly: the weights, the optimizer,
    scheduler, EMA and gradient scaler, the history, `global_step`, the generators' states, and `mid_epoch`
    (train_one_epoch's position, when written inside an epoch: resume.MidEpochSaves)."""
    fields = checkpoint_fields(settings, config, class_names, history, ema, paired_labels)
    return make_checkpoint(model, **{**fields, "ema_weights": False}, optimizer_state=optimizer.state_dict(),
                           scheduler_state=scheduler.state_dict() if scheduler else None,
                           ema_state=ema_state(ema) if ema else None, global_step=global_step,
                           mid_epoch=mid_epoch, random_state=random_states(generator),
                           scaler_state=scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
                           swanlab_run_id=swanlab_run_id(settings.swanlab_mode))


def swanlab_run_id(mode: str) -> str | None:
    """The id of the SwanLab experiment being logged to in the cloud, which a resumed run continues; else None."""
    get_run = getattr(tracking.swanlab, "get_run", None)  # not on tracking's stand-in
    return getattr(get_run(), "id", None) if mode == "cloud" and get_run is not None else None


def curves_due(path: Path, history: list[dict]) -> bool:
    """After an epoch: training_curves.png is redrawn when older than CURVES_EVERY_S, or drawn first once the epochs
    so far took that long (not after a --freeze-backbone run's first epoch of a tenth of a second)."""
    try:
        return time.time() - path.stat().st_mtime >= CURVES_EVERY_S
    except OSError:  # not drawn yet
        return sum(entry.get("epoch_time_s", 0.0) for entry in history) >= CURVES_EVERY_S


def save_training_curves(history: list[dict[str, float]], path: Path) -> None:
    """Loss and accuracy per epoch as a PNG, for those who never open SwanLab."""
    import matplotlib

    matplotlib.use("Agg")  # no window, also on machines without a display
    import matplotlib.pyplot as plt

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    loss_axis.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    evaluated = [h for h in history if "val_loss" in h]
    loss_axis.plot([h["epoch"] for h in evaluated], [h["val_loss"] for h in evaluated], "o-", label="val loss")
    evaluated_epochs = [h["epoch"] for h in evaluated]
    accuracy_axis.plot(evaluated_epochs, [h["val_acc"] for h in evaluated], "o-", color="tab:green", label="val_acc")
    if evaluated and all("val_acc_low" in h for h in evaluated):  # runs before the intervals have none
        accuracy_axis.fill_between(evaluated_epochs, [h["val_acc_low"] for h in evaluated],
                                   [h["val_acc_high"] for h in evaluated], color="tab:green", alpha=0.15, label="95% CI")
    if evaluated and all("val_balanced_acc" in h for h in evaluated):
        accuracy_axis.plot(evaluated_epochs, [h["val_balanced_acc"] for h in evaluated], "s-", color="tab:purple",
                           label="val_balanced_acc")
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy (%)", title="Validation accuracy")
    loss_axis.legend()
    accuracy_axis.legend()
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_run_config(config: dict[str, Any], path: Path) -> None:
    """args.json beside the checkpoints: the whole configuration, with what auto and the defaults chose."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def save_results_csv(history: list[dict[str, float]], path: Path) -> None:
    """results.csv: one row per epoch with every metric (the checkpoint's history), rewritten after every epoch,
    through a temporary file: a run stopped at any moment keeps the rows of its finished epochs. The per-photo
    strings (val_right) stay in the checkpoint's history: 160 characters a cell would bury the numbers."""
    columns = list(dict.fromkeys(key for row in history for key in row if key not in PER_PHOTO_KEYS))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="", extrasaction="ignore")  # unevaluated: empty cells
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, text.getvalue(), newline="")


def save_train_batch(loader: DataLoader, class_names: list[str], path: Path, max_photos: int = 32) -> None:
    """train_batch.jpg: the first batch of the training loader as the model gets it (augmented, normalised by
    preprocessing.to_device), de-normalised with the ImageNet mean and std, its class under each photo. The random
    state is put back: the first training step gets this very batch."""
    from PIL import Image

    with same_random_state(loader):
        images, labels, _, _ = next(iter(loader))
    if len(labels) == 0:
        return
    inputs = to_device(images[:max_photos], torch.device("cpu"), channels_last=False)  # N×3×H×W, as the model sees
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    photos = (inputs * std + mean).clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).numpy()
    captions = [class_names[label] for label in labels[:max_photos].tolist()]
    grid = photo_grid([Image.fromarray(photo) for photo in photos], captions,
                      tile=max(128, photos.shape[1]))  # tiny test images are enlarged, pixel for pixel
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, quality=90)


def print_summary(settings: TrainSettings, history: list[dict], unreadable: set[str],
                  paired_labels: list[int] | None = None) -> None:
    """The run's last lines: the photos skipped, the best epoch against the last one, where everything is."""
    if unreadable:
        print(f"skipped {len(unreadable)} unreadable photo(s); fix or remove them from the CSVs:")
        for problem in sorted(unreadable):
            print(f"  {problem}")
    best = best_fields(history, settings.best_rule, settings.best_window, settings.ema, settings.score_key,
                       paired_labels)
    judged = "" if settings.score_key == "val_acc" else f" {settings.score_key}"
    print(against_last_epoch(history, best["best_epoch"], best["ema_weights"], paired_labels))
    print(f"done. best epoch {best['best_epoch']}{' (EMA weights)' if best['ema_weights'] else ''}: val_acc "
          f"{best['best_val_acc']:.2f}% (mean of last {settings.best_window}{judged}: "
          f"{best['best_val_acc_windowed']:.2f}%)  |  "
          f"checkpoints and training_curves.png in {settings.output_dir}/  |  "
          f"dashboard: swanlab watch {SWANLAB_LOG_DIR}  |  web page: python app.py")
