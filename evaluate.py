"""Measure a checkpoint on a labelled CSV: accuracy and balanced accuracy with their 95% intervals, per-class
precision/recall/F1 (recall with its interval), the weakest class, the confusion matrix.

    python evaluate.py --checkpoint checkpoint/best_checkpoint.pth --csv datasets/val.csv --out eval/

Writes OUT/report.json, OUT/confusion_matrix.png (counts and row-normalized) and
OUT/mistakes.png (the most confident wrong answers). --swanlab logs them to a SwanLab run too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torch.utils.data import DataLoader
from tqdm import tqdm

from cats_dogs.checkpoint import find_checkpoint, preprocessing, read_checkpoint_or_exit
from cats_dogs.csv_rows import CsvError
from cats_dogs.device import pick_device
from cats_dogs.engine_build import wait_for_background_build
from cats_dogs.engines import ENGINE_CHOICES, ENGINE_HELP, Engine, batch_size_for, load_model_or_engine
from cats_dogs.images import open_image
from cats_dogs.inference import BATCH_SIZE_HELP, class_probabilities
from cats_dogs.intervals import balanced_accuracy_interval, wilson_interval
from cats_dogs.photo_batches import collate_readable
from cats_dogs.preprocessing import to_device
from cats_dogs.process import make_console_safe
from load_datasets import DatasetLoader

MISTAKES_SHOWN = 16
NUMBERS_IN_CELLS = 20  # classes up to which the confusion-matrix PNG writes the numbers in the cells
CONSOLE_MATRIX_CLASSES = 12  # classes up to which the console shows the whole confusion matrix


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint on a labelled CSV.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="default: checkpoint/best_checkpoint.pth, else latest")
    parser.add_argument("--csv", default="datasets/val.csv", help="rows `relative/path.jpg,label`, as for training")
    parser.add_argument("--out", default="eval", help="folder for report.json and the PNGs")
    parser.add_argument("--batch-size", type=int, default=None, help=BATCH_SIZE_HELP)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--engine", choices=ENGINE_CHOICES, default="torch",
                        help="torch: the checkpoint itself in fp32, exactly as train.py reports its test accuracy. "
                             f"The others measure what the page answers with: {ENGINE_HELP}")
    parser.add_argument("--cache", default="auto", choices=("auto", "disk", "off"),
                        help="auto: read the photos from the disk cache train.py left beside the CSV when there is one "
                             "for this image size; disk: also build it (see train.py --cache)")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation: average with the flipped photo")
    parser.add_argument("--swanlab", action="store_true", help="also log the report and pictures to a local SwanLab run")
    parser.add_argument("--project", default="cats-vs-dogs", help="SwanLab project for --swanlab")
    return parser


@torch.inference_mode()
def predict_all(model: torch.nn.Module | None, loader: DataLoader, device: torch.device,
                tta: bool = False, engine: Engine | None = None) -> tuple[list[int], list[int], list[list[float]], list[str]]:
    """Dataset indices, true labels and class probabilities of every readable photo, and the unreadable ones.
    `engine` (engines.load_engine) answers instead of the model when given."""
    indices, labels, probabilities, problems = [], [], [], []
    for images, batch_labels, batch_indices, batch_problems in tqdm(loader, desc="evaluating", unit="batch"):
        problems += batch_problems
        if len(batch_labels) == 0:
            continue
        images = to_device(images, device, False, loader.dataset.mean, loader.dataset.std)
        probabilities += class_probabilities(engine or model, images, tta).cpu().tolist()
        labels += batch_labels.tolist()
        indices += batch_indices.tolist()
    return indices, labels, probabilities, problems


def build_report(labels: list[int], predictions: list[int], class_names: list[str]) -> dict:
    """Accuracy as a fraction, per-class and macro precision/recall/F1/support, confusion matrix (rows = true)."""
    classes = list(range(len(class_names)))
    matrix = confusion_matrix(labels, predictions, labels=classes)
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=classes, zero_division=0)
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i]),
                        "recall_ci95": list(wilson_interval(int(matrix[i, i]), int(support[i])))}
                 for i, name in enumerate(class_names)}
    balanced, balanced_low, balanced_high = balanced_accuracy_interval(
        [(int(matrix[i, i]), int(support[i])) for i in classes])
    present = [name for name in class_names if per_class[name]["support"]]
    return {
        "accuracy": float(matrix.trace() / max(matrix.sum(), 1)),
        "accuracy_ci95": list(wilson_interval(int(matrix.trace()), int(matrix.sum()))),
        "count": int(matrix.sum()),
        "balanced_accuracy": balanced,
        "balanced_accuracy_ci95": [balanced_low, balanced_high],
        "weakest_class": min(present, key=lambda name: per_class[name]["recall"]) if present else None,
        "per_class": per_class,
        "macro_avg": {key: float(sum(c[key] for c in per_class.values()) / len(per_class))
                      for key in ("precision", "recall", "f1")},
        "class_names": class_names,
        "confusion_matrix": matrix.tolist(),
    }


def save_confusion_matrix(matrix: list[list[int]], class_names: list[str], path: Path) -> None:
    """Counts and row-normalized, side by side. Readable from 2 to 50 classes: the cells shrink, the fonts with
    them, the x labels turn upright, and above NUMBERS_IN_CELLS classes the colours alone tell the numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts, k = np.array(matrix), len(class_names)
    normalized = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 3 + k * (0.6 if k <= 12 else 0.3)
    font = max(6.0, min(10.0, 120 / k))
    figure, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for axis, values, title, fmt in ((axes[0], counts, "Counts", "d"), (axes[1], normalized, "Row-normalized", ".2f")):
        image = axis.imshow(values, cmap="Blues", vmin=0)
        figure.colorbar(image, ax=axis, fraction=0.046)
        axis.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=title)
        axis.set_xticklabels(class_names, fontsize=font, rotation=90 if k > 6 else 0)
        axis.set_yticklabels(class_names, fontsize=font)
        if k > NUMBERS_IN_CELLS:
            continue
        threshold = values.max() / 2
        for (row, column), value in np.ndenumerate(values):
            axis.text(column, row, format(value, fmt), ha="center", va="center", fontsize=font,
                      color="white" if value > threshold else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_mistakes(mistakes: list[tuple[Path, str, float, str]], path: Path) -> None:
    """A grid of photos, each captioned `predicted probability / true`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 4
    rows = max(1, -(-len(mistakes) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (photo, predicted, probability, true) in zip(axes.flat, mistakes, strict=False):
        image = open_image(photo)
        image.thumbnail((256, 256))
        axis.imshow(image)
        axis.set_title(f"{predicted} {probability:.0%} / true {true}\n{photo.name}", fontsize=9)
    if not mistakes:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=14)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def print_report(report: dict) -> None:
    """The per-class table (recall with its 95% interval), accuracy and balanced accuracy with theirs, the weakest
    class, and the confusion matrix, or its largest confusions when it has too many columns for a console."""
    width = max(len(name) for name in [*report["class_names"], "macro avg"]) + 2
    print(f"\n{'':{width}}precision    recall  recall 95% CI        f1   support")
    for name, metrics in report["per_class"].items():
        low, high = metrics["recall_ci95"]
        print(f"{name:{width}}{metrics['precision']:9.3f} {metrics['recall']:9.3f}  {f'{low:.0%}–{high:.0%}':>13} "
              f"{metrics['f1']:9.3f} {metrics['support']:9d}")
    macro = report["macro_avg"]
    print(f"{'macro avg':{width}}{macro['precision']:9.3f} {macro['recall']:9.3f}  {'':13} {macro['f1']:9.3f} "
          f"{report['count']:9d}")
    low, high = report["accuracy_ci95"]
    print(f"\naccuracy {report['accuracy']:.4f} ({report['accuracy']:.2%}, 95% CI {low:.0%}–{high:.0%}) "
          f"on {report['count']} photos")
    low, high = report["balanced_accuracy_ci95"]
    print(f"balanced accuracy {report['balanced_accuracy']:.4f} ({report['balanced_accuracy']:.2%}, 95% CI "
          f"{low:.0%}–{high:.0%}): the mean recall of the classes, each class counting the same")
    weakest = report["weakest_class"]
    if weakest is not None:
        metrics = report["per_class"][weakest]
        print(f"weakest class: {weakest}, recall {metrics['recall']:.1%} on {metrics['support']} photos")
    print_confusions(report["confusion_matrix"], report["class_names"], width)


def print_confusions(matrix: list[list[int]], class_names: list[str], width: int) -> None:
    """The confusion matrix up to CONSOLE_MATRIX_CLASSES classes; beyond, its 10 largest off-diagonal cells."""
    if len(class_names) <= CONSOLE_MATRIX_CLASSES:
        print("confusion matrix (rows = true, columns = predicted):")
        for name, row in zip(class_names, matrix, strict=True):
            print(f"  {name:{width}}" + " ".join(f"{count:6d}" for count in row))
        return
    confusions = sorted(((count, true, predicted) for true, row in enumerate(matrix)
                         for predicted, count in enumerate(row) if true != predicted and count), reverse=True)[:10]
    print("the most frequent confusions (the whole matrix is in confusion_matrix.png and report.json):")
    for count, true, predicted in confusions:
        print(f"  {count:6d}  {class_names[true]} taken for {class_names[predicted]}")


def main(args: argparse.Namespace) -> None:
    checkpoint_path = find_checkpoint(args.checkpoint)
    device = pick_device(args.device)
    checkpoint = read_checkpoint_or_exit(checkpoint_path)  # its classes and preprocessing, for the dataset
    class_names = checkpoint["class_names"]
    try:
        dataset = DatasetLoader(args.csv, num_classes=len(class_names), **preprocessing(checkpoint))
    except CsvError as error:
        raise SystemExit(f"Cannot evaluate on this CSV: {error}") from None
    if args.cache != "off":  # decoded by an earlier run: no JPEG to decode again
        dataset.cache_images("disk", build=args.cache == "disk")
    wait_for_background_build(args.engine, checkpoint_path, device, len(dataset))  # train.py's, when nearly done
    batch_size = args.batch_size or batch_size_for(args.engine, checkpoint, checkpoint_path, device, len(dataset))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=args.num_workers, collate_fn=collate_readable)
    # A cached engine answers without the PyTorch model (None then); auto builds one only for a job that repays it
    model, meta, engine, engine_line = load_model_or_engine(args.engine, checkpoint_path, device, photos=len(dataset),
                                                            checkpoint=checkpoint)
    print(f"evaluating {checkpoint_path}{' (EMA weights)' if meta['ema_weights'] else ''} on {args.csv} "
          f"({len(dataset)} photos) with {device}{', flip TTA' if args.tta else ''}, {engine_line}")

    indices, labels, probabilities, problems = predict_all(model, loader, device, args.tta, engine)
    problems += [f"{path}: empty file" for path in dataset.empty_files]
    predictions = [max(range(len(p)), key=p.__getitem__) for p in probabilities]
    report = build_report(labels, predictions, class_names)
    report.update(checkpoint=str(checkpoint_path), csv=str(args.csv), engine=engine_line, unreadable=sorted(problems),
                  tta=args.tta, ema_weights=meta["ema_weights"])

    wrong = [(probabilities[i][predictions[i]], i) for i in range(len(labels)) if predictions[i] != labels[i]]
    mistakes = [(dataset.samples[indices[i]][0], class_names[predictions[i]], confidence, class_names[labels[i]])
                for confidence, i in sorted(wrong, reverse=True)[:MISTAKES_SHOWN]]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    save_confusion_matrix(report["confusion_matrix"], class_names, out / "confusion_matrix.png")
    save_mistakes(mistakes, out / "mistakes.png")
    print_report(report)
    for problem in problems:
        print(f"skipped unreadable photo {problem}")
    print(f"\nwrote {out / 'report.json'}, {out / 'confusion_matrix.png'}, {out / 'mistakes.png'}")

    if args.swanlab:
        import swanlab

        swanlab.init(project=args.project, name=f"eval {checkpoint_path.parent.name}/{checkpoint_path.stem}",
                     mode="local", log_dir="swanlog", config={"checkpoint": str(checkpoint_path), "csv": str(args.csv)})
        swanlab.log({"eval_accuracy": report["accuracy"], "eval_macro_f1": report["macro_avg"]["f1"],
                     "eval_accuracy_low": report["accuracy_ci95"][0], "eval_accuracy_high": report["accuracy_ci95"][1],
                     "eval_balanced_accuracy": report["balanced_accuracy"],
                     "confusion_matrix": swanlab.Image(str(out / "confusion_matrix.png")),
                     "mistakes": swanlab.Image(str(out / "mistakes.png"))})
        swanlab.finish()


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    main(get_args_parser().parse_args())
