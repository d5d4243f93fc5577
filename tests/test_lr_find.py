"""lr_finder.py: the learning-rate range test, fastai's valley rule, and train.py --lr-find / --lr auto."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cats_dogs.frozen_backbone import collate_features
from cats_dogs.lr_finder import lr_range_test, suggest_lr
from conftest import FAST_TRAIN_FLAGS, make_dataset, read_swanlab_runs, run_script


def synthetic_problem(seed: int = 0) -> tuple[nn.Module, DataLoader]:
    """Two Gaussian classes in 20 dimensions and a small MLP with BatchNorm (whose buffers must come back too)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(512) % 2
    features = torch.randn(512, 20, generator=generator) + 1.5 * (labels[:, None] * 2 - 1) * torch.linspace(1, 0, 20)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))
    loader = DataLoader(TensorDataset(features, labels, torch.arange(512)), batch_size=16, shuffle=True,
                        generator=torch.Generator().manual_seed(seed), collate_fn=collate_features)
    return model, loader


def train_steps(model: nn.Module, loader: DataLoader, lr: float, steps: int) -> float:
    """The mean loss over the data after `steps` Adam steps at `lr`."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = (batch for _ in range(steps) for batch in loader)
    for _, (features, labels, _, _) in zip(range(steps), batches, strict=False):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(features), labels).backward()
        optimizer.step()
    model.eval()
    features, labels, _ = loader.dataset.tensors
    with torch.no_grad():
        return nn.functional.cross_entropy(model(features), labels).item()


def test_the_range_test_suggests_a_sane_rate_and_puts_everything_back() -> None:
    model, loader = synthetic_problem()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    random.seed(1)
    torch.manual_seed(1)
    lrs, losses = lr_range_test(model, loader, optimizer, nn.CrossEntropyLoss(), torch.device("cpu"))
    # Model, BatchNorm buffers, optimizer and random state are exactly as before.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert after["1.num_batches_tracked"] == 0
    assert optimizer.state_dict()["state"] == {} and optimizer.param_groups[0]["lr"] == 1e-3
    drawn = random.random(), torch.rand(1).item()
    random.seed(1)
    torch.manual_seed(1)
    assert drawn == (random.random(), torch.rand(1).item())
    # fastai's exponential schedule from 1e-7 towards 10, stopped when the loss explodes.
    assert lrs[0] == 1e-7 and lrs[1] == pytest.approx(1e-7 * 10 ** (8 / 100))
    assert 20 < len(lrs) <= 100 and (len(lrs) == 100 or losses[-1] > 4 * min(losses))
    suggested, index = suggest_lr(lrs, losses)
    assert 1e-4 <= suggested <= 0.3 and lrs[index] == suggested
    # Sane: 30 steps at the suggestion learn the problem; at 1/1000 of it they barely start.
    at_suggestion = train_steps(synthetic_problem()[0], loader, suggested, 30)
    far_below = train_steps(synthetic_problem()[0], loader, suggested / 1000, 30)
    assert at_suggestion < 0.35 < 0.6 < far_below


def test_valley_is_fastais_longest_descent_taken_halfway() -> None:
    # 100 steps: flat, a steady descent over steps 30-69, then a blow-up. fastai leaves out the first 10
    # and the last 5 points. In what is left the longest decreasing subsequence is one flat point and the
    # 40 of the descent, ending at index 59: 41 points, max_start = 59 - 41 = 18, and the suggestion is
    # at 18 + int(41 / 3) + int(41 / 3 / 2) = 18 + 13 + 6 = 37 of the kept points: step 47.
    lrs = [1e-7 * 1e8 ** (i / 100) for i in range(100)]
    losses = [0.7] * 30 + [0.7 - 0.01 * (i + 1) for i in range(40)] + [0.3 + 0.1 * i for i in range(30)]
    assert suggest_lr(lrs, losses) == (lrs[47], 47)
    # The points from the first NaN on are left out.
    assert suggest_lr(lrs, losses[:60] + [math.nan] * 40) == suggest_lr(lrs[:60], losses[:60] + [0.0] * 5)
    with pytest.raises(SystemExit, match="diverged after 12 steps"):
        suggest_lr(lrs[:12], [0.7] * 11 + [math.inf])


def test_lr_find_plots_logs_and_exits_without_training(tmp_path: Path) -> None:
    make_dataset(tmp_path / "datasets", per_class_train=4, per_class_val=2)
    result = run_script("train.py", *FAST_TRAIN_FLAGS, "--model", "resnet18", "--lr-find", "--lr-find-steps", "30",
                        cwd=tmp_path)
    [line] = [line for line in result.stdout.splitlines() if line.startswith("lr finder:")]
    suggested = float(line.split("suggested lr ")[1].split()[0])
    assert "plot: checkpoint/lr_find.png" in line and f"python train.py --lr {suggested:.2e}" in result.stdout
    from PIL import Image

    with Image.open(tmp_path / "checkpoint/lr_find.png") as plot:
        assert plot.size == (600, 400)
    assert not (tmp_path / "checkpoint/latest_checkpoint.pth").exists() and "epoch 1/" not in result.stdout
    # args.json records the rate given and the suggestion, which find_lr returns instead of writing into args.
    config = json.loads((tmp_path / "checkpoint/args.json").read_text(encoding="utf-8"))
    assert config["lr"] == 1e-4 and config["lr_suggested"] == pytest.approx(suggested, rel=1e-2)
    [run] = read_swanlab_runs(tmp_path / "swanlog")
    lrs, losses = run["metrics"]["lr_find/lr"], run["metrics"]["lr_find/loss"]
    assert 10 < len(lrs) == len(losses) <= 30 and lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-7)
    assert run["metrics"]["lr_find/suggested_lr"] == [pytest.approx(suggested, rel=1e-2)]
    assert "train_loss" not in run["metrics"]
