"""How sure an accuracy is: its 95% interval and the photos it was measured on.

On 40 val photos one photo moves the accuracy by 2.5 points and the 95% interval is about ±12 points: a bare
percentage is read as truth, a percentage with its interval as what it is, a measurement.

    accuracy            Wilson's score interval for k right out of n (Wilson 1927): it stays inside 0-100% and
                        keeps close to 95% coverage on few photos, where the textbook p ± 1.96·√(p(1−p)/n) does not.
    balanced accuracy   the mean recall over the classes present. Its interval combines each class's Wilson
                        interval by MOVER (Zou & Donner 2008): low = mean − √Σ(r_c − low_c)² / k,
                        high = mean + √Σ(high_c − r_c)² / k. With one class it is that class's Wilson interval;
                        deterministic (no bootstrap, no seed), and a class whose photos are all right still
                        widens it through its own interval.
    two epochs          McNemar's exact test on the same photos (mcnemar_p): only the photos one epoch gets right
                        and the other wrong count, so it resolves differences two separate intervals cannot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z_95 = 1.959963984540054  # the normal distribution's 97.5% quantile: a two-sided 95% interval


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The 95% interval of a proportion `correct`/`total`, as fractions (0.0-1.0); (0.0, 1.0) with nothing measured."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    center = (p + z * z / (2 * total)) / (1 + z * z / total)
    half_width = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    # At 0 or all right the bound is exactly 0 or 1, not 1 − 1e-16.
    return (0.0 if correct == 0 else center - half_width), (1.0 if correct == total else center + half_width)


def per_class_counts(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> list[tuple[int, int]]:
    """(right, photos) for every class, by true label."""
    counts = [[0, 0] for _ in range(num_classes)]
    for label, predicted in zip(labels, predictions, strict=True):
        counts[label][0] += label == predicted
        counts[label][1] += 1
    return [(right, total) for right, total in counts]


def balanced_accuracy_interval(class_counts: Sequence[tuple[int, int]]) -> tuple[float, float, float]:
    """(balanced accuracy, low, high) as fractions from per_class_counts' (right, photos); classes without photos
    are left out (their recall is undefined), as scikit-learn's balanced_accuracy_score does."""
    present = [(right, total) for right, total in class_counts if total > 0]
    if not present:
        return 0.0, 0.0, 1.0
    recalls = [right / total for right, total in present]
    bounds = [wilson_interval(right, total) for right, total in present]
    k, mean = len(present), math.fsum(recalls) / len(present)
    low = mean - math.sqrt(math.fsum((r - lo) ** 2 for r, (lo, _) in zip(recalls, bounds, strict=True))) / k
    high = mean + math.sqrt(math.fsum((hi - r) ** 2 for r, (_, hi) in zip(recalls, bounds, strict=True))) / k
    return mean, max(0.0, low), min(1.0, high)


def accuracy_metrics(labels: Sequence[int], predictions: Sequence[int], num_classes: int,
                     prefix: str = "val", balanced: bool = True) -> dict[str, float]:
    """{prefix_acc, _acc_low, _acc_high, _count} and, with `balanced`, {_balanced_acc, _balanced_acc_low,
    _balanced_acc_high}, in percent (the count in photos): what train.py logs each evaluation."""
    counts = per_class_counts(labels, predictions, num_classes)
    right, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
    low, high = wilson_interval(right, total)
    mean, mean_low, mean_high = balanced_accuracy_interval(counts)
    metrics = {f"{prefix}_acc": 100.0 * right / max(total, 1), f"{prefix}_acc_low": 100 * low,
               f"{prefix}_acc_high": 100 * high, f"{prefix}_count": total}
    if balanced:
        metrics.update({f"{prefix}_balanced_acc": 100 * mean, f"{prefix}_balanced_acc_low": 100 * mean_low,
                        f"{prefix}_balanced_acc_high": 100 * mean_high})
    return metrics


def describe(name: str, percent: float, low: float, high: float, photos: int) -> str:
    """`val_acc 85.00% (95% CI 71–93%, 40 photos)`: a percentage with its interval (all in percent)."""
    return f"{name} {percent:.2f}% (95% CI {low:.0f}–{high:.0f}%, {photos} photos)"


def describe_metrics(metrics: dict[str, float], prefix: str = "val") -> str:
    """accuracy_metrics' numbers as describe's text, the balanced accuracy beside the accuracy when it is there."""
    photos = int(metrics[f"{prefix}_count"])
    text = describe(f"{prefix}_acc", metrics[f"{prefix}_acc"], metrics[f"{prefix}_acc_low"],
                    metrics[f"{prefix}_acc_high"], photos)
    key = f"{prefix}_balanced_acc"
    if key in metrics:
        text += "  " + describe(key, metrics[key], metrics[key + "_low"], metrics[key + "_high"], photos)
    return text


def half_width_points(accuracy: float, photos: int) -> float:
    """Half the width, in points, of the Wilson interval of `accuracy` (a fraction) measured on `photos` photos."""
    low, high = wilson_interval(round(accuracy * photos), photos)
    return 100 * (high - low) / 2


def weighted_mcnemar(split_by_class: dict[int, tuple[int, int, int]]) -> tuple[float, float]:
    """McNemar's test for balanced accuracy: (the earlier epoch's lead in balanced accuracy, its two-sided p).
    `split_by_class`: {class: (photos right only at the earlier epoch, right only at the later, photos of the class
    measured at both)}. Each photo weighs 1/(k·n_c), as in balanced accuracy; under "equally good" each photo that
    splits the epochs is a fair coin, so the lead D = Σ w_c (b_c − c_c) has variance Σ w_c² (b_c + c_c), and p is
    its normal approximation (the exact binomial does not apply to unequal weights). p = 1 when no photo splits them."""
    k = len(split_by_class)
    lead = variance = 0.0
    for only_earlier, only_later, photos in split_by_class.values():
        weight = 1 / (k * photos) if photos else 0.0
        lead += weight * (only_earlier - only_later)
        variance += weight ** 2 * (only_earlier + only_later)
    return lead, math.erfc(abs(lead) / math.sqrt(2 * variance)) if variance > 0 else 1.0


def mcnemar_p(earlier_right_later_wrong: int, earlier_wrong_later_right: int) -> float:
    """The exact two-sided McNemar p-value of two models judged on the same photos, from the discordant pairs only:
    under "equally good", each of the b + c photos that split them is a fair coin, so p = min(1, 2·P(X ≤ min(b, c)))
    with X ~ Binomial(b + c, ½); 1 when no photo splits them."""
    b, c = earlier_right_later_wrong, earlier_wrong_later_right
    if b + c == 0:
        return 1.0
    # Whole numbers divided once: exact, also for thousands of photos, where a float of comb(n, k) would overflow.
    tail = sum(math.comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c)
    return min(1.0, 2 * tail)

