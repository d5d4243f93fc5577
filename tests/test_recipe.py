"""recipe.py: the optimizer and schedule as train.py makes and restores them."""

from __future__ import annotations

import argparse

import pytest
import torch

from recipe import make_optimizer, make_scheduler, val_acc_at


def test_a_restored_schedule_goes_on_at_the_rate_it_had_reached() -> None:
    args = argparse.Namespace(optimizer="adam", lr=1e-4, weight_decay=0.0, scheduler="cosine", epochs=4, warmup_epochs=1)
    parameters = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = make_optimizer(args, parameters, torch.device("cpu"))
    scheduler = make_scheduler(args, optimizer, steps_per_epoch=4)
    for _ in range(6):  # past the warm-up, into the cosine decay
        optimizer.step()
        scheduler.step()
    reached = optimizer.param_groups[0]["lr"]
    assert reached < 1e-4 and reached != pytest.approx(1e-4 / 4)
    resumed_optimizer = make_optimizer(args, parameters, torch.device("cpu"), optimizer.state_dict())
    resumed = make_scheduler(args, resumed_optimizer, 4, scheduler.state_dict())
    # The first step after --resume uses the rate reached, not the warm-up's first rate.
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(reached)
    resumed_optimizer.step()
    resumed.step()
    optimizer.step()
    scheduler.step()
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])


def test_val_acc_at_an_epoch_without_evaluation_is_minus_one() -> None:
    history = [{"epoch": 1, "train_loss": 0.6}, {"epoch": 2, "train_loss": 0.5, "val_acc": 75.0}]
    assert val_acc_at(history, 2) == 75.0 and val_acc_at(history, 1) == -1.0 and val_acc_at(history, 0) == -1.0
