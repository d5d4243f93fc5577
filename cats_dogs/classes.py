"""Class names: classes.txt, or cat/dog, or class_0, class_1, …

A class name becomes a folder name (prepare_data.py's DATA_DIR/train/<class>/, predict.py --sort-into OUT/<class>/),
so each is checked where it enters (classes.txt, a source folder, a checkpoint): a plain name, never a path.
"""

from __future__ import annotations

import os
from pathlib import Path

from cats_dogs.csv_rows import CsvError


def default_class_names(num_classes: int) -> list[str]:
    return ["cat", "dog"] if num_classes == 2 else [f"class_{i}" for i in range(num_classes)]


def class_name_problem(name: object) -> str | None:
    """Why this cannot be a class name (it would be a path, or no folder name at all), or None. Any language is fine."""
    if not isinstance(name, str) or not name.strip():
        return f"class name {name!r} is empty or not text"
    if name in (".", "..") or any(c in name for c in '/\\:\0'):
        return f"class name {name!r} is a path, not a plain name (no / \\ : and not . or ..)"
    return None


def read_class_names(data_dir: str | os.PathLike, num_classes: int) -> list[str]:
    """`classes.txt` (line i names label i) when present, else cat/dog or class_0, class_1, …"""
    classes_file = Path(data_dir) / "classes.txt"
    if not classes_file.is_file():
        return default_class_names(num_classes)
    lines = classes_file.read_text(encoding="utf-8-sig").splitlines()
    names = [line.strip() for line in lines if line.strip()]
    problems = [f"line {n}: {problem}" for n, line in enumerate(lines, start=1)
                if line.strip() and (problem := class_name_problem(line.strip()))]
    if problems:
        raise CsvError(f"{classes_file}: " + "; ".join(problems))
    if len(names) < num_classes:
        raise CsvError(f"{classes_file} names {len(names)} classes, but the CSVs use labels up to {num_classes - 1}")
    return names

