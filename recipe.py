"""How train.py trains: optimizer, learning-rate schedule, speed settings, the rule that picks the best epoch, curves.

Only training needs these; what training and serving must agree on (model, preprocessing) is in common.py.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

import torch

from common import autocast_dtype
from load_datasets import CACHE_BUDGET_BYTES, DatasetLoader

WEIGHT_DECAY_DEFAULTS = {"adam": 0.0, "adamw": 0.05, "sgd": 1e-4}  # the usual one for each optimizer


def make_optimizer(args: argparse.Namespace, parameters, device: torch.device,
                   state: dict[str, Any] | None = None) -> torch.optim.Optimizer:
    """train.py's --optimizer with its --lr and --weight-decay (already resolved to a number); `state`: a
    resumed checkpoint's optimizer state."""
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay, nesterov=True)
    else:  # the fused kernels update all weights at once: the same algorithm, a few % faster per step
        optimizer_class = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
        optimizer = optimizer_class(parameters, lr=args.lr, weight_decay=args.weight_decay,
                                    fused=device.type in ("cpu", "cuda"))
    if state:
        optimizer.load_state_dict(state)
    return optimizer


def make_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                   state: dict[str, Any] | None = None) -> torch.optim.lr_scheduler.LambdaLR | None:
    """Linear warm-up, then cosine decay to zero or a ×0.1 step at 1/2 and 3/4 of the run; stepped every batch.
    `state`: a resumed checkpoint's scheduler state."""
    if args.scheduler == "none":
        return None
    total, warmup = args.epochs * steps_per_epoch, round(args.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if args.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
        return 0.1 ** sum(step >= total * milestone for milestone in (0.5, 0.75))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if state:
        scheduler.load_state_dict(state)
        # Creating the scheduler set the rate of step 0, and loading its state does not undo that.
        for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr(), strict=True):
            group["lr"] = lr
    return scheduler


def resolve_speed_settings(args: argparse.Namespace, device: torch.device, train_set: DatasetLoader,
                           val_set: DatasetLoader) -> torch.dtype | None:
    """Turn the `auto` speed flags into choices for this device (written back into args, so SwanLab logs them)."""
    if args.amp is None:
        args.amp = autocast_dtype(device) is not None
    if args.channels_last is None:
        args.channels_last = device.type in ("cpu", "cuda")
    # Under torchrun, the processes on this machine share its memory and cores.
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if args.cache == "auto":  # the frozen backbone sees each photo once: nothing to cache
        fits = (train_set.cache_bytes() + val_set.cache_bytes()) * processes_here <= CACHE_BUDGET_BYTES
        # On a GPU, worker processes read the disk cache: a memory cache would be copied into each (spawn).
        args.cache = "off" if args.freeze_backbone else "memory" if fits and device.type != "cuda" else "disk"
    if args.num_workers is None:
        cores = max(1, (os.cpu_count() or 2) // processes_here)
        if device.type == "cuda":  # augmenting and collating in parallel, so that the GPU never waits for photos
            args.num_workers = min(8, max(1, cores - 1))
        else:  # cached photos only need augmenting (0.1 ms): workers would take cores from the model
            args.num_workers = 0 if args.cache != "off" else min(4, max(1, cores - 1))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image size: let cuDNN pick the fastest kernels once
    if not args.amp:
        return None
    return autocast_dtype(device) or (torch.float16 if device.type == "mps" else torch.bfloat16)


def resolve_settings(args: argparse.Namespace, device: torch.device, train_set: DatasetLoader,
                     val_set: DatasetLoader) -> torch.dtype | None:
    """The choices left to `auto` or to a default, made once, so that SwanLab and the checkpoint record
    what was used; returns the mixed-precision type (None for fp32)."""
    if args.weight_decay is None:
        args.weight_decay = WEIGHT_DECAY_DEFAULTS[args.optimizer]
    args.experiment_name = args.experiment_name or args.model
    return resolve_speed_settings(args, device, train_set, val_set)


def windowed_val_accs(history: list[dict[str, float]], window: int) -> list[tuple[int, float]]:
    """(epoch, mean val accuracy of the `window` evaluations ending there) for every evaluated epoch.

    On a few hundred val photos one epoch's accuracy jumps by several points: the best single epoch
    is often a lucky spike early in training, whose test accuracy falls short of the epochs around it.
    """
    evaluated = [h for h in history if "val_acc" in h]
    # fsum: the same accuracies in another order give exactly the same mean, so ties stay ties.
    return [(h["epoch"], math.fsum(e["val_acc"] for e in evaluated[max(0, i + 1 - window):i + 1]) / min(i + 1, window))
            for i, h in enumerate(evaluated)]


def val_acc_at(history: list[dict[str, float]], epoch: int) -> float:
    """The val accuracy of that epoch, -1 where it was not evaluated (no epoch evaluated yet)."""
    return next((h["val_acc"] for h in history if h["epoch"] == epoch and "val_acc" in h), -1.0)


def best_evaluation(history: list[dict[str, float]], window: int) -> tuple[int, float, int]:
    """The epoch to keep (the highest windowed val accuracy, the earliest on a tie), that accuracy, and
    the number of evaluations since then, which early stopping counts."""
    scores = windowed_val_accs(history, window)
    if not scores:
        return 0, -1.0, 0
    # The first evaluations' shorter windows are as noisy as one evaluation: once a full window exists, only full ones compete.
    candidates = range(window - 1, len(scores)) if len(scores) >= window else range(len(scores))
    best = max(candidates, key=lambda i: scores[i][1])
    return *scores[best], len(scores) - 1 - best


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
    accuracy_axis.plot([h["epoch"] for h in evaluated], [h["val_acc"] for h in evaluated], "o-", color="tab:green")
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy (%)", title="Validation accuracy")
    loss_axis.legend()
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
