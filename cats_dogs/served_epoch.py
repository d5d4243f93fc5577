"""The paired rule for the served checkpoint (--best-rule paired), and how the served epoch compares to the last one.

A 160-photo val set cannot tell 68% from 70% (two separate 95% intervals are about ±7 points wide), so a rule that
serves the highest val accuracy jumps between early and late epochs on noise. Two epochs judged on the same photos
can be compared much more sharply: only the photos one gets right and the other wrong count (McNemar's test).

Every evaluated epoch of train.py's history keeps its val correctness as a string in val order, `val_right`
("1" right, "0" wrong, "-" unreadable; `ema_val_right` for the EMA weights), 160 characters for 160 photos: the
rule can be replayed after --resume. results.csv, SwanLab and the checkpoint's `metrics` leave these strings out.

On imbalanced classes, where epochs are judged on balanced accuracy, the comparison weighs each photo by its class
as balanced accuracy does (`labels`, the val photos' classes in val order: intervals.weighted_mcnemar); on
balanced classes it counts photos (intervals.mcnemar_p, exact).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cats_dogs.intervals import mcnemar_p, weighted_mcnemar

PER_PHOTO_KEYS = ("val_right", "ema_val_right")  # history keys holding strings, not numbers
PAIRED_ALPHA = 0.05  # "better beyond the uncertainty": McNemar p below this


def right_wrong(predictions: dict[int, int], labels: Sequence[int]) -> str:
    """{val index: predicted label} as one character per val photo, in val order: 1 right, 0 wrong, - not measured."""
    return "".join("-" if index not in predictions else "1" if predictions[index] == label else "0"
                   for index, label in enumerate(labels))


def compare(earlier_right: str | None, later_right: str | None,
            labels: Sequence[int] | None = None) -> tuple[int, int, int, float, bool] | None:
    """Two epochs on the same val photos, from their `val_right` strings: (photos right only at the earlier, right
    only at the later, photos measured at both, p, whether the earlier one leads); with `labels`, p and the lead are
    balanced accuracy's (weighted_mcnemar), else plain accuracy's (exact McNemar). None when either string is
    missing (a run from before this version) or they are not of the same val photos (val.csv changed on --resume)."""
    if not earlier_right or not later_right or len(earlier_right) != len(later_right):
        return None
    by_class = labels is not None and len(labels) == len(earlier_right)
    split_by_class: dict[int, tuple[int, int, int]] = {}  # class: (right only earlier, only later, measured at both)
    for a, b, label in zip(earlier_right, later_right, labels if by_class else [0] * len(earlier_right), strict=True):
        if a != "-" and b != "-":
            only_earlier, only_later, measured = split_by_class.get(label, (0, 0, 0))
            split_by_class[label] = (only_earlier + ((a, b) == ("1", "0")), only_later + ((a, b) == ("0", "1")),
                                     measured + 1)
    only_earlier, only_later, photos = (sum(counts[i] for counts in split_by_class.values()) for i in range(3))
    if not by_class:
        return only_earlier, only_later, photos, mcnemar_p(only_earlier, only_later), only_earlier > only_later
    lead, p = weighted_mcnemar(split_by_class)
    return only_earlier, only_later, photos, p, lead > 0


def better_beyond_doubt(earlier: dict[str, Any], later: dict[str, Any], labels: Sequence[int] | None = None) -> bool:
    """Whether the epoch `earlier` did better than `later` on the val photos, beyond the uncertainty: McNemar
    p < 0.05 on the photos that split them (weighted by class with `labels`)."""
    compared = compare(earlier.get("val_right"), later.get("val_right"), labels)
    if compared is None:  # nothing to judge on: the later epoch is served, as by --best-rule last
        return False
    *_, p, earlier_leads = compared
    return earlier_leads and p < PAIRED_ALPHA


def paired_epoch(history: list[dict[str, Any]], labels: Sequence[int] | None = None) -> int:
    """--best-rule paired: the latest epoch, unless an earlier one is better beyond the uncertainty. Walks the
    evaluations in order: the first is served; each later one replaces the served epoch unless the served epoch is
    better than it beyond the uncertainty. Judged on per-photo right and wrong of the trained weights, each photo
    weighted by its class with `labels` (imbalanced classes). 0 before the first evaluation."""
    served = None
    for entry in (h for h in history if "val_acc" in h):
        if served is None or not better_beyond_doubt(served, entry, labels):
            served = entry
    return served["epoch"] if served else 0


def against_last(history: list[dict[str, Any]], epoch: int, ema_weights: bool = False,
                 labels: Sequence[int] | None = None) -> tuple[int, int, int, float, bool] | None:
    """The epoch `epoch` (its EMA weights with `ema_weights`) against the last evaluated epoch's trained weights, on
    the same val photos: compare()'s (photos right only at `epoch`, right only at the last, photos compared, p,
    whether `epoch` leads); None without per-photo results for both."""
    entries = {h["epoch"]: h for h in history if "val_acc" in h}
    if epoch not in entries:
        return None
    last = entries[max(entries)]
    return compare(entries[epoch].get(("ema_" if ema_weights else "") + "val_right"), last.get("val_right"), labels)


def verdict(served_leads: bool, p: float) -> str:
    """"not distinguishable", or "better"/"worse beyond the uncertainty" (McNemar p < 0.05)."""
    if p >= PAIRED_ALPHA:
        return "not distinguishable"
    return f"{'better' if served_leads else 'worse'} beyond the uncertainty"


def against_last_epoch(history: list[dict[str, Any]], epoch: int, ema_weights: bool,
                       labels: Sequence[int] | None = None) -> str:
    """The summary's line on best_checkpoint.pth, whatever --best-rule chose: its epoch and val accuracy, and whether
    it is distinguishable from the last epoch's trained weights (McNemar on the same val photos; by class with
    `labels`, on imbalanced classes)."""
    evaluated = [h for h in history if "val_acc" in h]
    served = next((h for h in evaluated if h["epoch"] == epoch), None)
    if served is None:
        return "best_checkpoint.pth: no epoch evaluated"
    last, weights = evaluated[-1], " (EMA weights)" if ema_weights else ""
    line = f"best_checkpoint.pth: epoch {epoch}{weights} (val_acc {served[('ema_' if ema_weights else '') + 'val_acc']:.1f}%)"
    if served is last and not ema_weights:
        return line + ", the last epoch"
    line += f"; against the last epoch ({last['epoch']}, {last['val_acc']:.1f}%)"
    compared = against_last(history, epoch, ema_weights, labels)
    if compared is None:
        return line + ": no per-photo val results to compare"
    only_served, only_last, photos, p, served_leads = compared
    test = "McNemar, each photo weighted by its class," if labels is not None else "McNemar"
    return (f"{line}: {only_served} photos right only at epoch {epoch}{weights}, {only_last} only at epoch "
            f"{last['epoch']}, {test} p = {p:.2g}: {verdict(served_leads, p)} on {photos} val photos")
