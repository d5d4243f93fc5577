"""How train.py trains: the model and optimizer, learning-rate schedule, the rule that picks
the best epoch.

Only training needs these; what training and serving must agree on (model, preprocessing) is in preprocessing.py and model.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cats_dogs import distributed
from cats_dogs.checkpoint import Checkpoint
from cats_dogs.class_balance import class_counts, class_weights
from cats_dogs.model import build_model
from cats_dogs.served_epoch import paired_epoch
from cats_dogs.settings import TrainSettings

BEST_RULES = ("window", "val-loss", "last", "paired")  # train.py --best-rule
EMA_WARMUP_POWER = 2 / 3  # timm's ModelEmaV3 default


def resume_point(resume_from: Checkpoint | None, latest_path: Path) -> tuple[int, list[dict]]:
    """The first epoch to train and the history so far: where the resumed checkpoint stopped, else epoch 1 and none."""
    if not resume_from:
        return 1, []
    print(f"resuming from {latest_path} at epoch {resume_from['epoch'] + 1}")
    return resume_from["epoch"] + 1, resume_from["history"]


def setup_model(settings: TrainSettings, num_classes: int, device: torch.device, amp_dtype: torch.dtype | None,
                resume_from: Checkpoint | None) -> tuple[nn.Module, torch.optim.Optimizer, AveragedModel | None,
                                                         torch.amp.GradScaler]:
    """The ResNet with a new head, from the --weights or the checkpoint resumed, on the device; its optimizer;
    its average (--ema); and the gradient scaler, which only fp16 needs."""
    model = build_model(settings.model, num_classes, weights="none" if resume_from else settings.weights,
                        zero_init_residual=settings.zero_init_residual)
    if resume_from:
        model.load_state_dict(resume_from["model_state"])
    if settings.sync_bn and distributed.is_distributed():  # same parameters and keys: checkpoints stay plain ResNets
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image size: let cuDNN pick the fastest kernels once
    # The model moves before the optimizer is made, so that restored optimizer state lands on the same device.
    model = model.to(device, memory_format=torch.channels_last if settings.channels_last else torch.preserve_format)
    groups = parameter_groups(model, settings.freeze_backbone, settings.freeze_epochs, settings.lr_decay_per_stage)
    optimizer = make_optimizer(settings.optimizer, settings.lr, settings.weight_decay, groups, device,
                               resume_from and resume_from["optimizer_state"])
    ema = make_ema(model, settings.ema_decay, resume_from and resume_from.get("ema_state")) if settings.ema else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    if scaler.is_enabled() and resume_from and resume_from.get("scaler_state"):
        scaler.load_state_dict(resume_from["scaler_state"])  # its scale, as it had grown or shrunk
    return model, optimizer, ema, scaler


def make_optimizer(name: str, lr: float | str, weight_decay: float, parameters, device: torch.device,
                   state: dict[str, Any] | None = None) -> torch.optim.Optimizer:
    """--optimizer `name` (adam, adamw, sgd) at --lr and --weight-decay; `parameters`: tensors, or parameter_groups'
    groups; `state`: a resumed checkpoint's optimizer state."""
    lr = 0.0 if lr == "auto" else lr  # --lr auto: lr_finder.find_lr sets the rates before the first step
    # Each group of parameter_groups trains at its share of the rate (discriminative learning rates).
    parameters = [{**group, "lr": lr * group["lr_scale"]} if isinstance(group, dict) else group for group in parameters]
    if name == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    else:  # the fused kernels update all weights at once: the same algorithm, a few % faster per step
        optimizer_class = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        optimizer = optimizer_class(parameters, lr=lr, weight_decay=weight_decay, fused=device.type in ("cpu", "cuda"))
    if state:
        optimizer.load_state_dict(state)
    return optimizer


def make_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int, schedule: str, epochs: int,
                   warmup_epochs: float, freeze_epochs: int = 0,
                   state: dict[str, Any] | None = None) -> torch.optim.lr_scheduler.LambdaLR | None:
    """Linear warm-up, then cosine decay to zero or a ×0.1 step at 1/2 and 3/4 of the run; stepped every batch.
    `schedule`: --scheduler (none, cosine, step); `state`: a resumed checkpoint's scheduler state."""
    if schedule == "none":
        return None
    total, warmup = epochs * steps_per_epoch, round(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
        return 0.1 ** sum(step >= total * milestone for milestone in (0.5, 0.75))

    # --freeze-epochs: the backbone joins later, and warms up again from there, as fastai's fine_tune starts a
    # second one-cycle schedule after unfreezing: Adam's first steps move every weight by about the full rate.
    joins = freeze_epochs * steps_per_epoch

    def rejoining(step: int) -> float:
        return factor(step) * min(1.0, max(0, step - joins + 1) / max(1, warmup))

    factors = [rejoining if joins and group.get("stage", "fc") != "fc" else factor for group in optimizer.param_groups]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
    if state:
        scheduler.load_state_dict(state)
        # Creating the scheduler set the rate of step 0, and loading its state does not undo that.
        for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr(), strict=True):
            group["lr"] = lr
    return scheduler


def train_criterion(balance_applied: str, train_labels: list[int], num_classes: int, label_smoothing: float,
                    device: torch.device) -> nn.CrossEntropyLoss:
    """The training loss: cross-entropy, weighted per class (class_balance.class_weights) with --balance loss. The
    val loss stays unweighted, comparable between runs."""
    weight = None
    if balance_applied == "loss":
        weight = torch.tensor(class_weights(class_counts(train_labels, num_classes)), device=device)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)


def step_speed(freeze_backbone: bool, channels_last: bool, amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """The mixed precision and memory layout of the training and evaluation steps. The head alone
    (--freeze-backbone) trains on fp32 features in milliseconds: no mixed precision or layout needed there."""
    if freeze_backbone:
        return {"amp_dtype": None, "channels_last": False}
    return {"amp_dtype": amp_dtype, "channels_last": channels_last}


def windowed_val_accs(history: list[dict[str, float]], window: int, key: str = "val_acc") -> list[tuple[int, float]]:
    """(epoch, mean val accuracy of the `window` evaluations ending there) for every evaluated epoch.

    On a few hundred val photos one epoch's accuracy jumps by several points: the best single epoch
    is often a lucky spike early in training, whose test accuracy falls short of the epochs around it.
    `key`: ema_val_acc for the EMA weights' accuracy.
    """
    evaluated = [h for h in history if key in h]
    # fsum: the same accuracies in another order give exactly the same mean, so ties stay ties.
    return [(h["epoch"], math.fsum(e[key] for e in evaluated[max(0, i + 1 - window):i + 1]) / min(i + 1, window))
            for i, h in enumerate(evaluated)]


def val_acc_at(history: list[dict[str, float]], epoch: int, key: str = "val_acc") -> float:
    """The val accuracy of that epoch, -1 where it was not evaluated (no epoch evaluated yet)."""
    return next((h[key] for h in history if h["epoch"] == epoch and key in h), -1.0)


def best_evaluation(history: list[dict[str, float]], window: int, key: str = "val_acc") -> tuple[int, float, int]:
    """The epoch to keep (the highest windowed val accuracy, the earliest on a tie), that accuracy, and
    the number of evaluations since then, which early stopping counts."""
    scores = windowed_val_accs(history, window, key)
    if not scores:
        return 0, -1.0, 0
    # The first evaluations' shorter windows are as noisy as one evaluation: once a full window exists, only full ones compete.
    candidates = range(window - 1, len(scores)) if len(scores) >= window else range(len(scores))
    best = max(candidates, key=lambda i: scores[i][1])
    return *scores[best], len(scores) - 1 - best


def stop_early(history: list[dict[str, float]], best_window: int, early_stopping: int, key: str = "val_acc") -> bool:
    """--early-stopping N: whether N evaluations have gone by without a better `key` (val_acc, or val_balanced_acc
    on imbalanced classes), on the windowed mean, not on one lucky evaluation, whatever --best-rule serves. Says so
    when they have."""
    best_epoch, best_windowed, evaluations_since_best = best_evaluation(history, best_window, key)
    if not (early_stopping and evaluations_since_best >= early_stopping):
        return False
    name = "val accuracy" if key == "val_acc" else key
    print(f"early stopping: no better {name} (mean of last {best_window}) for {early_stopping} "
          f"evaluations; its high was at epoch {best_epoch} ({best_windowed:.2f}%)")
    return True


def best_choice(history: list[dict[str, float]], rule: str, window: int, ema: bool = False,
                key: str = "val_acc", labels: Sequence[int] | None = None) -> tuple[int, bool]:
    """(epoch, whether the EMA weights) that --best-rule keeps in best_checkpoint.pth: `window`, the highest mean
    `key` (val_acc, or val_balanced_acc on imbalanced classes) over `window` evaluations; `val-loss`, the lowest val
    loss; `last`, the last epoch; `paired`, the latest epoch unless an earlier one is better beyond the uncertainty
    (served_epoch.paired_epoch; each photo weighted by its class with `labels`, the val classes in val order, given
    on imbalanced classes), on the trained weights alone. With `ema`, under the other rules, the EMA weights of
    an epoch compete with the trained ones on the same score and win only when strictly better."""
    if rule == "paired":
        return paired_epoch(history, labels), False
    if rule == "last":
        last = history[-1]
        return last["epoch"], ema and last.get("ema_" + key, -1.0) > last.get(key, -1.0)
    options = []
    for is_ema in (False, True) if ema else (False,):
        prefix = "ema_" if is_ema else ""
        if rule == "window":
            epoch, score, _ = best_evaluation(history, window, prefix + key)
        else:  # the earliest of equal losses, as for accuracies
            lowest = min((h for h in history if prefix + "val_loss" in h), key=lambda h: h[prefix + "val_loss"], default=None)
            epoch, score = (lowest["epoch"], -lowest[prefix + "val_loss"]) if lowest else (0, -math.inf)
        options.append((score, is_ema, epoch))
    score, is_ema, epoch = max(options, key=lambda option: option[0])  # the first of equal scores: the trained weights
    return epoch, is_ema


def best_fields(history: list[dict[str, float]], rule: str, window: int, ema: bool,
                key: str = "val_acc", labels: Sequence[int] | None = None) -> dict[str, Any]:
    """The checkpoint keys that describe the epoch --best-rule keeps: best_epoch, best_val_acc, and
    best_val_acc_windowed, the windowed `key` the rule judged on (of the EMA weights when they won: ema_weights)."""
    epoch, use_ema = best_choice(history, rule, window, ema, key, labels)
    prefix = "ema_" if use_ema else ""
    return {"best_epoch": epoch, "best_val_acc": val_acc_at(history, epoch, prefix + "val_acc"), "ema_weights": use_ema,
            "best_val_acc_windowed": dict(windowed_val_accs(history, window, prefix + key)).get(epoch, -1.0)}


def checkpoints_due(history: list[dict[str, float]], rule: str, window: int, ema: bool,
                    save_candidates: bool = False, key: str = "val_acc",
                    labels: Sequence[int] | None = None) -> dict[str, bool]:
    """{file under --output-dir: whether it holds the EMA weights} for the files this epoch writes besides
    latest_checkpoint.pth: best_checkpoint.pth when --best-rule picks this epoch; with --save-candidates, also
    candidates/window.pth, candidates/val-loss.pth and candidates/paired.pth (those rules on the trained weights) and
    candidates/ema.pth (the EMA, every epoch), so that a study measures every choice of one run."""
    epoch = history[-1]["epoch"]
    choices = {"best_checkpoint.pth": best_choice(history, rule, window, ema, key, labels)}
    if save_candidates:
        choices.update({f"candidates/{candidate}.pth": best_choice(history, candidate, window, key=key, labels=labels)
                        for candidate in ("window", "val-loss", "paired")})
        if ema:
            choices["candidates/ema.pth"] = (epoch, True)
    return {name: use_ema for name, (chosen, use_ema) in choices.items() if chosen == epoch}


def make_ema(model: nn.Module, decay: float, state: dict[str, Any] | None = None) -> AveragedModel:
    """An exponential moving average of `model`'s weights, updated by `ema.update_parameters(model)` after every step
    as timm's ModelEmaV3 with warm-up: ema = d·ema + (1 − d)·weights, with d = min(decay, 1 − (1 + t)^(−2/3)) at
    the t-th update after the first, which copies. The warm-up keeps the first epochs' EMA from being mostly the
    random start. BatchNorm's running statistics are averaged like the weights (timm's default), not copied: they
    must describe the averaged weights, not the last ones. `state`: a resumed checkpoint's ema_state."""
    def ema_update(ema_tensors: list[torch.Tensor], tensors: list[torch.Tensor], updates: torch.Tensor) -> None:
        # num_batches_tracked, an integer, is averaged and truncated: BatchNorm ignores it (its momentum is fixed).
        get_ema_multi_avg_fn(min(decay, 1 - (1 + int(updates)) ** -EMA_WARMUP_POWER))(ema_tensors, tensors, updates)

    ema = AveragedModel(getattr(model, "_orig_mod", model), multi_avg_fn=ema_update, use_buffers=True)
    if state:
        ema.module.load_state_dict(state["model_state"])
        ema.n_averaged.fill_(state["updates"])
    return ema.eval()


def ema_state(ema: AveragedModel) -> dict[str, Any]:
    """What --resume needs to continue the EMA: its weights and the number of updates (the warm-up's t)."""
    return {"model_state": {k: v.detach().cpu() for k, v in ema.module.state_dict().items()},
            "updates": int(ema.n_averaged)}


# --------------------------------------------------------------------------- --freeze-epochs, --lr-decay-per-stage
# A torchvision ResNet's stages from the head down: with --lr-decay-per-stage D, the k-th trains at lr × D**k.
RESNET_STAGES = ("fc", "layer4", "layer3", "layer2", "layer1", "stem")


def parameter_groups(model: nn.Module, freeze_backbone: bool = False, freeze_epochs: int = 0,
                     lr_decay_per_stage: float = 1.0) -> list[dict[str, Any]]:
    """The parameters as the optimizer gets them, each group with its `lr_scale`, its share of --lr.

    With --lr-decay-per-stage D (or --freeze-epochs), one group per stage: 1 for the head, D for layer4, D²
    for layer3, ... D⁵ for the stem. Earlier layers hold general features (edges, textures) that ImageNet
    already taught; they should move least. This is the layer-wise decay of ULMFiT (Howard & Ruder 2018,
    "discriminative fine-tuning") and BEiT (timm's `layer_decay`), by ResNet stage as fastai splits it.
    """
    if freeze_backbone:
        return [{"params": list(model.fc.parameters()), "lr_scale": 1.0, "stage": "fc"}]
    if lr_decay_per_stage == 1 and not freeze_epochs:
        return [{"params": list(model.parameters()), "lr_scale": 1.0}]  # one group, as checkpoints before these flags
    stages: dict[str, list[nn.Parameter]] = {stage: [] for stage in RESNET_STAGES}
    for name, parameter in model.named_parameters():
        top = name.split(".")[0]
        stages[top if top in stages else "stem"].append(parameter)  # conv1 and bn1 are the stem
    return [{"params": stages[stage], "lr_scale": lr_decay_per_stage ** depth, "stage": stage}
            for depth, stage in enumerate(RESNET_STAGES)]


def keep_batchnorm_statistics(module: nn.Module, inputs: tuple) -> None:
    """A forward pre-hook: train_one_epoch's model.train() put the frozen BatchNorm back in training mode, which
    would normalise with the batch's statistics and overwrite the running ones ImageNet gave."""
    module.eval()


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """--freeze-epochs: freeze or unfreeze everything but the head. Frozen, no gradient is computed for the backbone
    (no backward through it: the step costs about a forward pass) and its BatchNorm layers keep their
    statistics. Called before every epoch, so that the phase follows the epoch, on --resume too."""
    was_frozen = not model.conv1.weight.requires_grad
    for name, child in model.named_children():
        if name != "fc":
            child.requires_grad_(not frozen)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if frozen and not hasattr(module, "frozen_hook"):
                module.frozen_hook = module.register_forward_pre_hook(keep_batchnorm_statistics)
            elif not frozen and hasattr(module, "frozen_hook"):
                module.frozen_hook.remove()
                del module.frozen_hook
    if frozen != was_frozen:
        print("backbone frozen: the head trains alone (BatchNorm statistics kept)" if frozen else
              "backbone unfrozen: every layer trains from here")
