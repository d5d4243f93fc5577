"""recipe.py: the optimizer and schedule as train.py makes and restores them."""

from __future__ import annotations

import argparse
import math

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


def fine_tuning_args(**overrides) -> argparse.Namespace:
    return argparse.Namespace(**{"optimizer": "adam", "lr": 1e-2, "weight_decay": 0.0, "scheduler": "cosine", "epochs": 4,
                                 "warmup_epochs": 1, "freeze_backbone": False, "freeze_epochs": 1,
                                 "lr_decay_per_stage": 0.5, **overrides})


def test_each_stage_from_the_head_down_trains_at_half_the_rate_and_rejoins_with_a_warm_up() -> None:
    from common import build_model
    from recipe import parameter_groups

    model = build_model("resnet18", 2)
    args = fine_tuning_args()
    groups = parameter_groups(model, args)
    assert [g["stage"] for g in groups] == ["fc", "layer4", "layer3", "layer2", "layer1", "stem"]
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in model.parameters())
    optimizer = make_optimizer(args, groups, torch.device("cpu"))
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-2 * 0.5**k for k in range(6)])
    scheduler = make_scheduler(args, optimizer, steps_per_epoch=2)
    rates = []
    for _ in range(4):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    # The head warms up over the first epoch; the backbone is frozen (rate 0) in it, then warms up in the second.
    assert [r[0] for r in rates] == pytest.approx([0.5e-2, 1e-2, 1e-2, 1e-2 * 0.5 * (1 + math.cos(math.pi / 6))])
    assert [r[1] / r[0] for r in rates] == pytest.approx([0, 0, 0.5 * 0.5, 0.5 * 1])
    assert [r[5] / r[0] for r in rates[2:]] == pytest.approx([0.5**5 * 0.5, 0.5**5])
    single = parameter_groups(model, fine_tuning_args(freeze_epochs=0, lr_decay_per_stage=1.0))
    assert len(single) == 1  # the one group of checkpoints written before these flags: they still resume


def test_a_frozen_backbone_keeps_its_weights_and_batchnorm_statistics_until_unfrozen() -> None:
    from common import build_model
    from recipe import parameter_groups, set_backbone_frozen

    torch.manual_seed(0)
    model = build_model("resnet18", 2)
    optimizer = make_optimizer(fine_tuning_args(lr=1e-3), parameter_groups(model, fine_tuning_args()), torch.device("cpu"))
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])

    def steps() -> dict[str, torch.Tensor]:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        for _ in range(2):
            model.train()  # as train_one_epoch does
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
        return before

    set_backbone_frozen(model, True)
    before = steps()
    after = model.state_dict()
    backbone = [k for k in before if not k.startswith("fc.")]
    assert all(torch.equal(before[k], after[k]) for k in backbone)  # weights and BatchNorm buffers alike
    assert after["bn1.num_batches_tracked"] == 0 and model.layer4[1].conv2.weight.grad is None  # no backward there
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    set_backbone_frozen(model, False)
    before = steps()
    after = model.state_dict()
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])
    assert not torch.equal(before["layer1.0.bn1.running_mean"], after["layer1.0.bn1.running_mean"])
    assert after["bn1.num_batches_tracked"] == 2
