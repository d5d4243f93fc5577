"""train.py --lr-find and --lr auto: a learning-rate range test, and the rate it suggests.

The model trains for about 100 steps while the learning rate grows exponentially from 1e-7 to 10;
the loss first does nothing, then falls, then explodes. A good rate lies on the way down. The
model, the optimizer and the random state are put back afterwards, so that the training that
follows (--lr auto) is the one `--lr <the suggestion>` would run.

This is fastai's `Learner.lr_find` (Leslie Smith, "Cyclical Learning Rates for Training Neural
Networks", 2017, section 3.3) with its default suggestion, `valley`; see fastai/callback/schedule.py:
LRFinder, lr_find, valley and plot_lr_find.
"""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from cats_dogs import tracking
from cats_dogs.device import autocast
from cats_dogs.preprocessing import to_device
from cats_dogs.random_state import same_random_state
from cats_dogs.settings import TrainSettings

START_LR, END_LR, NUM_STEPS = 1e-7, 10.0, 100  # fastai's lr_find defaults
SMOOTHING = 0.98  # fastai's Recorder: an exponential moving average of the loss (AvgSmoothLoss, beta 0.98)


def learning_rate(text: str) -> float | str:
    """--lr: a positive number, or `auto` (the range test's suggestion)."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1e-4, or auto; got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a learning rate of 0 or more, got {text!r}")
    return value


def another_pass(loader: DataLoader, number: int) -> DataLoader:
    """The loader for its `number`-th pass: round it as often as needed, each time in another order (loaders.EpochSampler
    draws an epoch's order from its number: the passes get their own, below 1, which no training epoch has)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(-number)
    return loader


def lr_range_test(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                  device: torch.device, amp_dtype: torch.dtype | None = None, channels_last: bool = False,
                  num_steps: int = NUM_STEPS, start_lr: float = START_LR,
                  end_lr: float = END_LR) -> tuple[list[float], list[float]]:
    """Train `num_steps` steps (going round the loader as often as needed) at a rate growing exponentially from
    `start_lr` to `end_lr`, and return the rates and the smoothed losses. It stops early when the smoothed loss
    passes 4× its lowest (fastai's stop_div). Each parameter group trains at the rate × its `lr_scale`.
    The model's weights and buffers and the optimizer's state are restored at the end."""
    saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    lrs, losses, average, best = [], [], 0.0, math.inf
    model.train()
    with same_random_state(loader):
        batches = (batch for number in range(num_steps) for batch in another_pass(loader, number))
        for images, labels, _, _ in batches:
            if len(labels) < 2:  # BatchNorm cannot train on a single photo
                continue
            lr = start_lr * (end_lr / start_lr) ** (len(lrs) / num_steps)  # fastai's SchedExp at train_iter/num_it
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, amp_dtype):
                loss = criterion(model(to_device(images, device, channels_last)).float(), labels.to(device))
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            average = SMOOTHING * average + (1 - SMOOTHING) * loss.item()
            smoothed = average / (1 - SMOOTHING ** (len(lrs) + 1))  # debiased, as fastai's AvgSmoothLoss.value
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if len(lrs) >= num_steps or not smoothed <= 4 * best:  # done, or diverged (NaN included)
                break
    model.load_state_dict(saved_model)
    optimizer.load_state_dict(saved_optimizer)
    optimizer.zero_grad(set_to_none=True)
    return lrs, losses


def suggest_lr(lrs: list[float], losses: list[float], num_steps: int = NUM_STEPS) -> tuple[float, int]:
    """fastai's `valley` rule (fastai/callback/schedule.py, by ESRI): leave out the first 10% of the steps and
    the last 5, and the points from the first NaN on; find the longest valley, the longest run of ever lower
    losses (a longest decreasing subsequence); suggest the rate about halfway down it, "the steepest slope
    roughly 2/3 through the longest valley". Returns the rate and its index in `lrs`."""
    first = num_steps // 10
    kept = losses[first:len(losses) - 5]
    kept = kept[:next((i for i, loss in enumerate(kept) if math.isnan(loss)), len(kept))]
    if len(kept) < 2:
        raise SystemExit(f"--lr-find: the loss diverged after {len(losses)} steps, too early to suggest a rate. "
                         "Check the data (python evaluate.py on a few photos), or pass --lr yourself.")
    # The loops below are fastai's valley, line for line: lds[i] is the longest valley ending at i.
    n, max_start, max_end = len(kept), 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if kept[i] < kept[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    index = max_start + int(sections) + int(sections / 2)
    return lrs[first + index], first + index


def save_lr_plot(lrs: list[float], losses: list[float], suggestion: tuple[float, int], path: Path) -> None:
    """Loss against learning rate on a log scale, the last 5 points left out (they explode), the suggestion marked:
    fastai's plot_lr_find."""
    import matplotlib

    matplotlib.use("Agg")  # no window, also on machines without a display
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    shown = max(len(lrs) - 5, 1)
    axis.plot(lrs[:shown], losses[:shown])
    lr, index = suggestion
    axis.plot(lr, losses[index], "o", color="tab:orange", label=f"valley: lr {lr:.1e}")
    axis.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)", title="Learning-rate range test")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def find_lr(settings: TrainSettings, trained: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
            criterion: nn.Module, device: torch.device, speed: dict,
            resume_from: dict | None) -> tuple[float, dict | None]:
    """--lr-find and --lr auto: the range test on the model as its first epoch trains it (the head alone in a
    --freeze-epochs phase), the plot beside the checkpoints, the suggestion printed. Returns the peak rate the
    run trains at and the test's results (None when it did not run). The rate is --lr; with --lr auto, the
    suggestion, which the optimizer's rates are set to, and on --resume the rate the run started with.
    The settings keep "auto": run_folder.start_swanlab records the rate returned and the suggestion."""
    train_after = settings.lr == "auto" or not settings.lr_find
    # --lr auto on --resume: found when the run started; its schedule goes on from the checkpoint.
    lr = resume_from["config"].get("lr", 1e-4) if settings.lr == "auto" and resume_from else settings.lr
    if not (settings.lr_find or lr == "auto"):
        return lr, None
    num_steps = settings.lr_find_steps
    lrs, losses = lr_range_test(trained, loader, optimizer, criterion, device, num_steps=num_steps, **speed)
    suggested, index = suggest_lr(lrs, losses, num_steps)
    path = Path(settings.output_dir) / "lr_find.png"
    save_lr_plot(lrs, losses, (suggested, index), path)
    print(f"lr finder: {len(lrs)} steps from {lrs[0]:.0e} to {lrs[-1]:.1e}; suggested lr {suggested:.2e} "
          f"(fastai's valley rule)  |  plot: {path}")
    if lr == "auto":
        lr = suggested
        for group in optimizer.param_groups:
            group["lr"] = suggested * group.get("lr_scale", 1.0)
    return lr, {"lrs": lrs, "losses": losses, "suggested": suggested, "train_after": train_after}


def log_lr_find(found: dict | None, output_dir: str) -> bool:
    """The range test to SwanLab: `lr_find/loss` against `lr_find/lr` step by step, and the plot. Returns True
    when the run ends here: --lr-find without --lr auto."""
    if found is None:
        return False
    for step, (lr, loss) in enumerate(zip(found["lrs"], found["losses"], strict=True), start=1):
        tracking.log({"lr_find/loss": loss, "lr_find/lr": lr}, step=step)
    tracking.log({"lr_find/suggested_lr": found["suggested"],
                  "lr_find/plot": tracking.Picture(Path(output_dir) / "lr_find.png", caption="loss against lr")})
    if found["train_after"]:
        return False
    print(f"to train with it: python train.py --lr {found['suggested']:.2e} (or --lr auto, which runs the test again)")
    return True
