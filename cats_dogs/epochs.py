"""One pass over the photos: train_one_epoch and evaluate, as torchvision's references/classification/train.py
writes them. train.py calls them every epoch; bench/bench_training.py times the same step."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm import tqdm

from cats_dogs import distributed, tracking
from cats_dogs.device import autocast
from cats_dogs.photo_batches import report_unreadable
from cats_dogs.preprocessing import to_device


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                    device: torch.device, epoch: int, epochs: int, global_step: int, unreadable: set[str],
                    amp_dtype: torch.dtype | None = None, channels_last: bool = False,
                    scaler: torch.amp.GradScaler | None = None,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                    ema: AveragedModel | None = None, done: dict | None = None,
                    after_step: Callable[[dict], None] | None = None) -> tuple[float, int, int]:
    """One pass over the training photos; returns the mean loss, the updated step count and the photos seen.

    `done`: the part of this epoch trained before a checkpoint inside it ({batches, total_loss, seen}: the loader
    starts after those batches, loaders.EpochSampler); `after_step`: called after every batch with the same
    fields, and epoch and global_step, so far (resume.MidEpochSaves writes the checkpoint inside the epoch)."""
    scaler = scaler or torch.amp.GradScaler(enabled=False)
    model.train()
    done = done or {}
    batches, total_loss, seen = done.get("batches", 0), done.get("total_loss", 0.0), done.get("seen", 0)
    start, seen_before = time.perf_counter(), seen
    progress = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, dynamic_ncols=True,
                    disable=not distributed.is_main_process())
    for images, labels, _, problems in progress:
        batches += 1
        report_unreadable(problems, unreadable)
        # BatchNorm cannot train on a single photo. Under torchrun a process that skipped a step alone would
        # leave the others waiting for its gradients forever: when one process must skip, they all do.
        if distributed.any_process(len(labels) < 2):
            continue
        images, labels = to_device(images, device, channels_last), labels.to(device, non_blocking=True)
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp_dtype):
            loss = criterion(model(images).float(), labels)
        scaler.scale(loss).backward()  # a no-op scale unless fp16, whose small gradients would underflow
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()  # per step, so that warm-up and decay are smooth even over few epochs
        if ema is not None:
            ema.update_parameters(model)

        global_step += 1
        seen += labels.size(0)
        total_loss += loss.item() * labels.size(0)
        tracking.log({"train_loss": loss.item(), "lr": lr}, step=global_step)
        progress.set_postfix(loss=f"{loss.item():.4f}",
                             img_s=f"{(seen - seen_before) / (time.perf_counter() - start):.1f}")
        if after_step is not None:
            after_step({"epoch": epoch, "batches": batches, "total_loss": total_loss, "seen": seen,
                        "global_step": global_step})
    total_loss, seen = distributed.all_reduce_sum([total_loss, seen])  # under torchrun: every process's photos
    tracking.log({"train_loss_epoch": total_loss / max(seen, 1)}, step=global_step)  # results.csv's train_loss
    return total_loss / max(seen, 1), global_step, int(seen)


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device, unreadable: set[str],
             amp_dtype: torch.dtype | None = None, channels_last: bool = False,
             sharded: bool = False) -> tuple[float, float, dict[int, int]]:
    """Mean loss, accuracy in percent, and {dataset index: predicted label} for every readable photo.

    `sharded`: the loader holds this process's share of the photos (under torchrun); the sums and
    predictions of all processes are added up, so that every process returns the same numbers.
    """
    model.eval()
    total_loss, correct, predictions = 0.0, 0, {}
    for images, labels, indices, problems in tqdm(loader, desc="val", unit="batch", leave=False, dynamic_ncols=True,
                                                  disable=not distributed.is_main_process()):
        report_unreadable(problems, unreadable)
        if len(labels) == 0:
            continue
        images, labels = to_device(images, device, channels_last), labels.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(images).float()
        total_loss += criterion(logits, labels).item() * labels.size(0)
        batch_predictions = logits.argmax(dim=1)
        correct += (batch_predictions == labels).sum().item()
        predictions.update(zip(indices.tolist(), batch_predictions.tolist(), strict=True))
    if sharded:
        total_loss, correct = distributed.all_reduce_sum([total_loss, correct])
        predictions = distributed.gather_dict(predictions)
    count = max(len(predictions), 1)
    return total_loss / count, 100.0 * correct / count, predictions
