"""recipe.py: the optimizer and schedule as train.py makes and restores them."""

from __future__ import annotations

import math

import pytest
import torch

from cats_dogs.recipe import (
    best_choice,
    checkpoints_due,
    ema_state,
    make_ema,
    make_optimizer,
    make_scheduler,
    stop_early,
    val_acc_at,
)


def test_a_restored_schedule_goes_on_at_the_rate_it_had_reached() -> None:
    parameters = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = make_optimizer("adam", 1e-4, 0.0, parameters, torch.device("cpu"))
    scheduler = make_scheduler(optimizer, 4, "cosine", epochs=4, warmup_epochs=1)
    for _ in range(6):  # past the warm-up, into the cosine decay
        optimizer.step()
        scheduler.step()
    reached = optimizer.param_groups[0]["lr"]
    assert reached < 1e-4 and reached != pytest.approx(1e-4 / 4)
    resumed_optimizer = make_optimizer("adam", 1e-4, 0.0, parameters, torch.device("cpu"), optimizer.state_dict())
    resumed = make_scheduler(resumed_optimizer, 4, "cosine", epochs=4, warmup_epochs=1, state=scheduler.state_dict())
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


def test_ema_weights_and_batchnorm_statistics_equal_a_hand_computation_over_3_steps() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = make_ema(model, decay=0.5)
    seen = []  # each step's weight and running mean, as the model had them when the EMA was updated
    for step in range(3):
        with torch.no_grad():
            model[0].weight.fill_(float(step + 1) ** 2)  # 1, 4, 9
        model(torch.randn(4, 2))  # training mode: BatchNorm's running mean moves
        seen.append((model[0].weight.clone(), model[1].running_mean.clone()))
        ema.update_parameters(model)
    # timm's ModelEmaV3 with warm-up: the 1st update copies, the t-th after it uses min(decay, 1 - (1 + t) ** (-2/3)).
    d1, d2 = min(0.5, 1 - 2 ** (-2 / 3)), min(0.5, 1 - 3 ** (-2 / 3))
    assert d1 == pytest.approx(0.3700, abs=1e-4) and d2 == 0.5  # the warm-up, then the decay's cap
    for index in range(2):  # the weights, then the running means: averaged alike
        expected = d2 * (d1 * seen[0][index] + (1 - d1) * seen[1][index]) + (1 - d2) * seen[2][index]
        averaged = ema.module[0].weight if index == 0 else ema.module[1].running_mean
        torch.testing.assert_close(averaged, expected)
    assert model[0].weight[0, 0] == 9  # the trained model is left alone

    resumed = make_ema(model, decay=0.5, state=ema_state(ema))  # --resume: the same average, the same warm-up step
    for average in (ema, resumed):
        average.update_parameters(model)
    torch.testing.assert_close(resumed.module.state_dict(), ema.module.state_dict())
    assert int(resumed.n_averaged) == 4


def test_best_choice_under_each_rule_and_with_the_ema_competing() -> None:
    history = [{"epoch": 1, "val_acc": 60.0, "val_loss": 0.60, "ema_val_acc": 50.0, "ema_val_loss": 0.70},
               {"epoch": 2, "val_acc": 90.0, "val_loss": 0.50, "ema_val_acc": 70.0, "ema_val_loss": 0.40},
               {"epoch": 3, "val_acc": 70.0, "val_loss": 0.55, "ema_val_acc": 80.0, "ema_val_loss": 0.45},
               {"epoch": 4, "val_acc": 70.0, "val_loss": 0.65, "ema_val_acc": 85.0, "ema_val_loss": 0.50}]
    assert best_choice(history, "last", 2) == (4, False)
    assert best_choice(history, "last", 2, ema=True) == (4, True)  # 85 > 70 at the last epoch
    assert best_choice(history, "window", 1) == (2, False)  # 90, a single evaluation
    assert best_choice(history, "window", 2) == (3, False)  # (90 + 70) / 2 = 80, the first of the two 80s
    assert best_choice(history, "window", 2, ema=True) == (4, True)  # (80 + 85) / 2 = 82.5
    assert best_choice(history, "val-loss", 2) == (2, False)
    assert best_choice(history, "val-loss", 2, ema=True) == (2, True)  # 0.40 < 0.50
    # Without per-photo results (val_right) the paired rule cannot doubt the latest epoch: it serves it.
    assert checkpoints_due(history, "window", 2, ema=True, save_candidates=True) == {
        "best_checkpoint.pth": True, "candidates/ema.pth": True, "candidates/paired.pth": False}
    assert checkpoints_due(history[:2], "window", 2, ema=False, save_candidates=True) == {  # epoch 2 is each rule's choice so far
        "best_checkpoint.pth": False, "candidates/window.pth": False, "candidates/val-loss.pth": False,
        "candidates/paired.pth": False}


def test_the_paired_rule_keeps_an_earlier_epoch_only_when_it_is_better_beyond_the_uncertainty() -> None:
    # 40 val photos. Epoch 2 loses 10 of epoch 1's right photos and gains 2: McNemar p = 2·79/4096 = 0.039, so epoch 1
    # stays served. Epoch 3 against epoch 1: 8 lost, 3 gained, p = 2·232/2048 = 0.23: not beyond doubt, epoch 3 is
    # served although its val_acc (62.5%) is below epoch 1's (75%). Epoch 4 (a resumed run's first, with the same
    # history read back from the checkpoint) ties epoch 3 on every photo: the latest is served.
    epoch_1 = "1" * 30 + "0" * 10
    epoch_2 = "0" * 10 + "1" * 20 + "11" + "0" * 8
    epoch_3 = "0" * 8 + "1" * 22 + "111" + "0" * 7
    history = [{"epoch": e, "val_acc": 100 * right.count("1") / 40, "val_right": right, "ema_val_acc": 100.0}
               for e, right in enumerate((epoch_1, epoch_2, epoch_3, epoch_3), start=1)]
    assert [h["val_acc"] for h in history] == [75.0, 55.0, 62.5, 62.5]
    assert [best_choice(history[:n], "paired", 3, ema=True)[0] for n in (1, 2, 3, 4)] == [1, 1, 3, 4]
    assert best_choice(history, "paired", 3, ema=True) == (4, False)  # the trained weights, even where the EMA scores 100%
    assert checkpoints_due(history[:2], "paired", 3, ema=False, save_candidates=True) == {}  # epoch 1 stays served
    assert checkpoints_due(history[:3], "paired", 3, ema=False) == {"best_checkpoint.pth": False}
    # An epoch whose photo was unreadable ("-") is compared on the photos both epochs measured.
    unreadable = [{**history[0], "val_right": "-" + epoch_1[1:]}, {**history[1], "val_right": "-" + epoch_2[1:]}]
    assert best_choice(unreadable, "paired", 3)[0] == 2  # 9 lost, 2 gained: p = 0.065


def test_each_stage_from_the_head_down_trains_at_half_the_rate_and_rejoins_with_a_warm_up() -> None:
    from cats_dogs.model import build_model
    from cats_dogs.recipe import parameter_groups

    model = build_model("resnet18", 2)
    groups = parameter_groups(model, freeze_epochs=1, lr_decay_per_stage=0.5)
    assert [g["stage"] for g in groups] == ["fc", "layer4", "layer3", "layer2", "layer1", "stem"]
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in model.parameters())
    optimizer = make_optimizer("adam", 1e-2, 0.0, groups, torch.device("cpu"))
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-2 * 0.5**k for k in range(6)])
    scheduler = make_scheduler(optimizer, 2, "cosine", epochs=4, warmup_epochs=1, freeze_epochs=1)
    rates = []
    for _ in range(4):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    # The head warms up over the first epoch; the backbone is frozen (rate 0) in it, then warms up in the second.
    assert [r[0] for r in rates] == pytest.approx([0.5e-2, 1e-2, 1e-2, 1e-2 * 0.5 * (1 + math.cos(math.pi / 6))])
    assert [r[1] / r[0] for r in rates] == pytest.approx([0, 0, 0.5 * 0.5, 0.5 * 1])
    assert [r[5] / r[0] for r in rates[2:]] == pytest.approx([0.5**5 * 0.5, 0.5**5])
    single = parameter_groups(model, freeze_epochs=0, lr_decay_per_stage=1.0)
    assert len(single) == 1  # the one group of checkpoints written before these flags: they still resume


def test_a_frozen_backbone_keeps_its_weights_and_batchnorm_statistics_until_unfrozen() -> None:
    from cats_dogs.model import build_model
    from cats_dogs.recipe import parameter_groups, set_backbone_frozen

    torch.manual_seed(0)
    model = build_model("resnet18", 2)
    groups = parameter_groups(model, freeze_epochs=1, lr_decay_per_stage=0.5)
    optimizer = make_optimizer("adam", 1e-3, 0.0, groups, torch.device("cpu"))
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


def test_imbalanced_classes_judge_the_best_epoch_and_early_stopping_on_balanced_accuracy() -> None:
    # val_acc climbs as the model learns to say the big class; balanced accuracy peaked at epoch 2.
    history = [{"epoch": e, "val_acc": acc, "val_balanced_acc": balanced, "val_loss": 1.0}
               for e, acc, balanced in ((1, 70.0, 60.0), (2, 75.0, 70.0), (3, 80.0, 55.0), (4, 83.0, 50.0))]
    assert best_choice(history, "window", 1) == (4, False)
    assert best_choice(history, "window", 1, key="val_balanced_acc") == (2, False)
    assert not stop_early(history, 1, 2) and stop_early(history, 1, 2, "val_balanced_acc")


def test_the_paired_rule_weighs_photos_by_class_on_imbalanced_classes() -> None:
    """60 cats, 6 dogs, 4 foxes. Epoch 1 says cat to everything; epoch 2 gets 25 cats wrong and every dog and fox
    right. Counted photo by photo, epoch 1 is better beyond doubt (25 against 10, exact McNemar p = 0.017) and the
    plain rule keeps it; weighted by class, as balanced accuracy is, epoch 2 leads (D = −0.53) and is served."""
    labels = [0] * 60 + [1] * 6 + [2] * 4
    says_cat = "1" * 60 + "0" * 10
    balanced = "1" * 35 + "0" * 25 + "1" * 10
    history = [{"epoch": e, "val_acc": 100 * right.count("1") / 70, "val_right": right}
               for e, right in enumerate((says_cat, balanced), start=1)]
    assert best_choice(history, "paired", 3)[0] == 1
    assert best_choice(history, "paired", 3, key="val_balanced_acc", labels=labels)[0] == 2
    # The other way round: the balanced epoch first, then the one that says cat: weighted by class, the first is
    # better beyond doubt (p = 0.015) and stays served; counted photo by photo, the later one leads.
    reversed_history = [{**history[1], "epoch": 1}, {**history[0], "epoch": 2}]
    assert best_choice(reversed_history, "paired", 3, key="val_balanced_acc", labels=labels)[0] == 1
    assert best_choice(reversed_history, "paired", 3)[0] == 2
    assert checkpoints_due(reversed_history, "paired", 3, ema=False, labels=labels) == {}
