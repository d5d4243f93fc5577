"""Classes with unequal numbers of photos: seeing it (prepare_data.py's and train.py's warnings) and handling it
(train.py --balance).

A model trained on 300 photos of one class and 40 of another learns to say the big class. Two remedies:
    loss      cross-entropy weighted per class by n / (k · n_c) (scikit-learn's "balanced" weights): a photo of a
              class with half the photos counts twice; the epoch sees every photo once.
    sampler   each class drawn equally often (a weighted random sampler, with replacement, as many draws per
              epoch as there are train photos): the small classes' photos are seen several times an epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cats_dogs.csv_rows import CsvError, read_csv_rows
from cats_dogs.intervals import half_width_points

BALANCE_CHOICES = ("auto", "off", "loss", "sampler")  # train.py --balance
# The one rule of `auto`, of the warnings and of judging epochs on balanced accuracy: the largest class has at
# least this many times the train photos of the smallest.
IMBALANCE_RATIO = 2.0
AUTO_METHOD = "loss"  # what --balance auto applies to imbalanced classes: docs/recipes.md, "Imbalanced classes"
TINY_CLASS = 10  # fewer train photos than this: too few to learn a class from
# Val "can tell 5 points apart" when the 95% interval of an accuracy around 85% is at most ±5 points.
TYPICAL_ACCURACY, RESOLUTION_POINTS = 0.85, 5.0


def class_counts(labels: Sequence[int], num_classes: int) -> list[int]:
    """The photos of each class, 0 for a class without any."""
    counts = [0] * num_classes
    for label in labels:
        counts[label] += 1
    return counts


def csv_class_counts(csv_path: str | Path) -> list[int]:
    """class_counts of a `path,label` CSV; [] when it is missing or has mistakes (load_datasets names them next)."""
    try:
        labels = [label for _, label in read_csv_rows(csv_path)]
    except (CsvError, OSError):
        return []
    return class_counts(labels, max(labels) + 1)


def is_imbalanced(counts: Sequence[int]) -> bool:
    """The largest class has at least IMBALANCE_RATIO times the photos of the smallest."""
    return len(counts) > 1 and max(counts) >= IMBALANCE_RATIO * min(counts)


def applied_method(balance: str, counts: Sequence[int], distributed: bool, freeze_backbone: bool) -> tuple[str, str]:
    """(the method train.py applies: off, loss or sampler; the reason, for its start-up line)."""
    if balance == "off":
        return "off", "--balance off"
    if balance == "auto":
        if not is_imbalanced(counts):
            return "off", f"balanced enough (largest class < {IMBALANCE_RATIO:g}× the smallest): --balance auto does nothing"
        balance, why = AUTO_METHOD, f"--balance auto: largest class at least {IMBALANCE_RATIO:g}× the smallest"
    else:
        why = f"--balance {balance}"
    if balance == "sampler" and (distributed or freeze_backbone):
        return "loss", f"{why}; the class-weighted loss instead of the sampler under torchrun and --freeze-backbone"
    return balance, why


def class_weights(counts: Sequence[int]) -> list[float]:
    """n / (k · n_c) for each class (scikit-learn's compute_class_weight("balanced")): 1.0 each on a balanced set.
    A class without train photos gets 0: nothing of it is ever weighted."""
    total, k = sum(counts), len(counts)
    return [total / (k * count) if count else 0.0 for count in counts]


def sample_weights(labels: Sequence[int], counts: Sequence[int]) -> list[float]:
    """Each photo's chance to be drawn, up to a factor: 1 / n_c, so that every class is drawn equally often."""
    return [1.0 / counts[label] for label in labels]


def data_warnings(class_names: Sequence[str], train_counts: Sequence[int], val_photos: int) -> list[str]:
    """One line each, with its advice: imbalanced classes, a class with fewer than TINY_CLASS train photos, a val
    split too small to tell RESOLUTION_POINTS points apart."""
    lines = []
    if is_imbalanced(train_counts):
        big, small = max(range(len(train_counts)), key=train_counts.__getitem__), \
            min(range(len(train_counts)), key=train_counts.__getitem__)
        lines.append(f"imbalanced: {class_names[big]} has {train_counts[big]} train photos, {class_names[small]} "
                     f"{train_counts[small]} (at least {IMBALANCE_RATIO:g}×). train.py balances the classes (--balance auto) "
                     "and judges epochs on balanced accuracy; more photos of the small classes help most.")
    tiny = [f"{name} ({count})" for name, count in zip(class_names, train_counts, strict=False) if count < TINY_CLASS]
    if tiny:
        lines.append(f"tiny classes: {', '.join(tiny)} with fewer than {TINY_CLASS} train photos; "
                     "collect more of them, or expect their answers to be guesses.")
    spread = half_width_points(TYPICAL_ACCURACY, val_photos) if val_photos else 100.0
    if spread > RESOLUTION_POINTS:
        lines.append(f"small val split: {val_photos} photos give an accuracy near {TYPICAL_ACCURACY:.0%} a 95% "
                     f"interval of ±{spread:.0f} points, too wide to tell {RESOLUTION_POINTS:g} points apart; "
                     f"~200 val photos would, or compare runs over several seeds.")
    return lines
