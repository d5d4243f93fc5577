"""The tutorial's dataset: photos listed in a CSV, rows `relative/path.jpg,label` (0 = cat, 1 = dog),
squashed to 256×256 and normalized with ImageNet's mean and std.

    from load_datasets import DatasetLoader
    train_set = DatasetLoader("datasets/train.csv", train=True)   # augmented: random crop and flip
    image, label, index, problem = train_set[0]                   # uint8 256×256×3, normalized on the device

What stands behind it lives in the package: the CSV checks that name every bad row (cats_dogs/csv_rows.py),
the batch builder that decodes each photo once and writes a whole batch in one block
(cats_dogs/photo_batches.py), and the one preprocessing that the page shares (cats_dogs/preprocessing.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from cats_dogs.classes import read_class_names
from cats_dogs.csv_rows import CsvError, infer_num_classes, read_csv_rows
from cats_dogs.photo_batches import ImageList
from cats_dogs.photo_cache import CACHE_FOLDER, writable_folder
from cats_dogs.preprocessing import IMAGENET_MEAN, IMAGENET_STD


class DatasetLoader(ImageList):
    """The tutorial's dataset, read from a `path,label` CSV.

    `train=True` adds the augmentation of `cats_dogs.augmentation.augment_photo`: `augment`, "light" (random
    crop and flip), "strong" or "none"; otherwise this is the tutorial's Resize + Normalize.
    `mean` and `std` default to ImageNet's (evaluate.py passes a checkpoint's own).
    """

    def __init__(self, csv_path: str | os.PathLike, image_size: int = 256, train: bool = False,
                 augment: str = "light", num_classes: int | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        self.csv_path = Path(csv_path)
        super().__init__(read_csv_rows(self.csv_path, num_classes), image_size, augment if train else "none", mean, std)

    def cache_folder(self) -> tuple[Path, str]:
        """DATA_DIR/.cache/, named after the CSV (train, val, test), or the user's cache if DATA_DIR is read-only."""
        return writable_folder(self.csv_path.parent / CACHE_FOLDER), self.csv_path.stem

    @property
    def num_classes(self) -> int:
        return max(label for _, label in self.samples) + 1


def load_train_val(data_dir: str | os.PathLike, image_size: int = 256,
                   augment: str = "light") -> tuple[list[str], DatasetLoader, DatasetLoader]:
    """The class names, train set (augmented: `augment`, none, light or strong) and val set of a data folder,
    for train.py.

    Every CSV there (test.csv too) is checked up front, so that a data mistake stops the run before
    anything is written, with a SystemExit that says what to fix.
    """
    data_dir = Path(data_dir)
    train_csv, val_csv = data_dir / "train.csv", data_dir / "val.csv"
    for csv_path in (train_csv, val_csv):
        if not csv_path.is_file():
            raise SystemExit(
                f"No {csv_path.name} in {data_dir.resolve()}. You can make one with one of these commands:\n"
                "  python prepare_data.py --download              (a sample of Kaggle's cats vs dogs photos)\n"
                "  python prepare_data.py --from your_folder      (your photos: a folder per class, or cat.1.jpg names)\n"
                "You can also write train.csv and val.csv yourself. datasets/README.md describes the format.\n"
                "If your CSV files are in another folder, give that folder with --data-dir."
            )
    try:
        class_file = data_dir / "classes.txt"
        num_classes = None if class_file.is_file() else infer_num_classes(train_csv)
        class_names = read_class_names(data_dir, num_classes or 0)
        num_classes = len(class_names)
        train_set = DatasetLoader(train_csv, image_size, train=True, augment=augment, num_classes=num_classes)
        val_set = DatasetLoader(val_csv, image_size, train=False, num_classes=num_classes)
        if (data_dir / "test.csv").is_file():  # reported at the end: its mistakes should stop the run now
            read_csv_rows(data_dir / "test.csv", num_classes)
    except CsvError as error:
        raise SystemExit(f"Cannot train on this data: {error}") from None
    return class_names, train_set, val_set

