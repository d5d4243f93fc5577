"""The 95% intervals of accuracies and the class-balancing arithmetic, checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from cats_dogs.class_balance import applied_method, class_weights, data_warnings, is_imbalanced, sample_weights
from cats_dogs.intervals import (
    accuracy_metrics,
    balanced_accuracy_interval,
    describe_metrics,
    mcnemar_p,
    weighted_mcnemar,
    wilson_interval,
)
from cats_dogs.loaders import make_loaders


def test_wilson_interval_of_34_out_of_40_by_hand() -> None:
    # Wilson (1927): (p + z²/2n ± z·√(p(1−p)/n + z²/4n²)) / (1 + z²/n), with p = 0.85, n = 40, z = 1.96.
    z2 = 1.96 ** 2
    center = (0.85 + z2 / 80) / (1 + z2 / 40)
    half = 1.96 * math.sqrt(0.85 * 0.15 / 40 + z2 / 6400) / (1 + z2 / 40)
    low, high = wilson_interval(34, 40)
    assert (low, high) == pytest.approx((center - half, center + half), abs=1e-4)
    assert (round(100 * low, 1), round(100 * high, 1)) == (70.9, 92.9)
    # The textbook p ± 1.96·√(p(1−p)/n) would say 73.9–96.1%: Wilson's leans towards 50%.
    assert high < 0.85 + 1.96 * math.sqrt(0.85 * 0.15 / 40)


def test_mcnemar_p_by_hand() -> None:
    # b = 10 photos right only at the earlier epoch, c = 2 only at the later: P(X ≤ 2) for X ~ Bin(12, ½) is
    # (1 + 12 + 66) / 4096, doubled: 0.0386.
    assert mcnemar_p(10, 2) == pytest.approx(2 * 79 / 4096) == pytest.approx(0.0386, abs=1e-4)
    assert mcnemar_p(2, 10) == mcnemar_p(10, 2)  # two-sided
    assert mcnemar_p(0, 7) == pytest.approx(2 / 2**7)
    assert mcnemar_p(11, 5) == pytest.approx(2 * (1 + 16 + 120 + 560 + 1820 + 4368) / 2**16)  # 0.21
    assert mcnemar_p(5, 5) == 1.0 and mcnemar_p(0, 0) == 1.0  # capped at 1; no photo splits them: no evidence
    assert 0 < mcnemar_p(1500, 1300) < 0.001  # thousands of photos: exact, no float overflow


def test_wilson_interval_stays_inside_0_and_100_percent() -> None:
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(10, 10)[0] == pytest.approx(10 / (10 + 1.96 ** 2), abs=1e-4)  # n / (n + z²)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_balanced_accuracy_interval_combines_the_classes_wilson_intervals() -> None:
    assert balanced_accuracy_interval([(34, 40)]) == pytest.approx((0.85, *wilson_interval(34, 40)))
    (low_a, high_a), (low_b, high_b) = wilson_interval(40, 40), wilson_interval(5, 10)
    mean, low, high = balanced_accuracy_interval([(40, 40), (5, 10), (0, 0)])  # a class without photos: left out
    assert mean == 0.75
    assert low == pytest.approx(0.75 - math.sqrt((1 - low_a) ** 2 + (0.5 - low_b) ** 2) / 2)
    assert high == pytest.approx(0.75 + math.sqrt((high_a - 1) ** 2 + (high_b - 0.5) ** 2) / 2)


def test_accuracy_metrics_and_their_line() -> None:
    labels, predictions = [0] * 30 + [1] * 10, [0] * 30 + [1] * 4 + [0] * 6
    metrics = accuracy_metrics(labels, predictions, 2)
    assert metrics["val_acc"] == 85.0 and metrics["val_count"] == 40 and metrics["val_balanced_acc"] == 70.0
    assert describe_metrics(metrics).startswith("val_acc 85.00% (95% CI 71–93%, 40 photos)  val_balanced_acc 70.00%")
    assert "balanced" not in describe_metrics(accuracy_metrics(labels, predictions, 2, "test", balanced=False), "test")


def test_class_weights_and_sampling_frequencies_on_a_3_class_imbalanced_set() -> None:
    counts = [6, 3, 1]  # n = 10, k = 3: n / (k · n_c)
    assert class_weights(counts) == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    assert class_weights([5, 5]) == [1.0, 1.0]
    labels = [0] * 6 + [1] * 3 + [2]
    weights = sample_weights(labels, counts)
    assert weights == pytest.approx([1 / 6] * 6 + [1 / 3] * 3 + [1.0])
    # Each class drawn equally often: its photos' weights add up to the same share.
    shares = [sum(w for w, label in zip(weights, labels, strict=True) if label == c) / sum(weights) for c in range(3)]
    assert shares == pytest.approx([1 / 3] * 3)


def test_auto_balances_imbalanced_classes_only() -> None:
    assert not is_imbalanced([10, 6]) and is_imbalanced([10, 5]) and not is_imbalanced([7])
    assert applied_method("auto", [10, 6], distributed=False, freeze_backbone=False)[0] == "off"
    assert applied_method("auto", [10, 5], distributed=False, freeze_backbone=False)[0] == "loss"
    assert applied_method("sampler", [10, 5], distributed=False, freeze_backbone=False)[0] == "sampler"
    method, why = applied_method("sampler", [10, 5], distributed=True, freeze_backbone=False)
    assert method == "loss" and "torchrun" in why
    assert applied_method("off", [100, 1], distributed=False, freeze_backbone=False)[0] == "off"


def test_warnings_for_imbalance_a_tiny_class_and_a_tiny_val_split() -> None:
    lines = data_warnings(["cat", "dog", "fox"], [300, 40, 6], val_photos=40)
    assert [line.split(":")[0] for line in lines] == ["imbalanced", "tiny classes", "small val split"]
    assert "cat has 300 train photos, fox 6" in lines[0] and "fox (6)" in lines[1] and "dog" not in lines[1]
    assert "40 photos" in lines[2] and "±11 points" in lines[2]
    assert data_warnings(["cat", "dog"], [300, 300], val_photos=400) == []


def test_the_sampler_draws_each_class_about_equally_often_and_as_many_photos_as_the_set() -> None:
    labels = [0] * 60 + [1] * 30 + [2] * 10
    options = {"batch_size": 10, "num_workers": 0, "collate_fn": None}
    train_loader, _, train_sampler = make_loaders(labels, [0], options, 42, torch.Generator().manual_seed(42),
                                                  sample_weights(labels, [60, 30, 10]))
    assert train_loader.sampler is train_sampler and len(train_sampler) == 100
    draws = []
    for epoch in range(1, 21):  # 2,000 draws, with replacement: another draw every epoch
        train_sampler.set_epoch(epoch)
        draws += [labels[i] for i, _ in train_sampler]
    assert all(abs(draws.count(c) / len(draws) - 1 / 3) < 0.05 for c in range(3))


def test_weighted_mcnemar_by_hand() -> None:
    """Balanced accuracy's paired test: 60 cats, 6 dogs, 4 foxes; the earlier epoch got 25 cats wrong that the later
    got right, and every dog and fox right that the later got wrong. D = (1/3)(−25/60 + 6/6 + 4/4) = 0.5278,
    Var = (1/9)(25/60² + 6/6² + 4/4²) = 0.04707, z = D/√Var = 2.4327, p = 2(1 − Φ(z)) = 0.01499."""
    lead, p = weighted_mcnemar({0: (0, 25, 60), 1: (6, 0, 6), 2: (4, 0, 4)})
    assert lead == pytest.approx(19 / 36) and p == pytest.approx(0.014987, abs=1e-6)
    assert weighted_mcnemar({0: (0, 25, 60), 1: (0, 6, 6), 2: (0, 4, 4)})[0] < 0  # the later one leads
    assert weighted_mcnemar({0: (0, 0, 60), 1: (0, 0, 6)}) == (0.0, 1.0)  # no photo splits them
