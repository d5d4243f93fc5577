"""Class names: classes.txt, or cat/dog, or class_0, class_1, …"""

from __future__ import annotations

import os
from pathlib import Path

from cats_dogs.csv_rows import CsvError


def default_class_names(num_classes: int) -> list[str]:
    return ["cat", "dog"] if num_classes == 2 else [f"class_{i}" for i in range(num_classes)]



def read_class_names(data_dir: str | os.PathLike, num_classes: int) -> list[str]:
    """`classes.txt` (line i names label i) when present, else cat/dog or class_0, class_1, …"""
    classes_file = Path(data_dir) / "classes.txt"
    if not classes_file.is_file():
        return default_class_names(num_classes)
    names = [line.strip() for line in classes_file.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if len(names) < num_classes:
        raise CsvError(f"{classes_file} names {len(names)} classes, but the CSVs use labels up to {num_classes - 1}")
    return names

