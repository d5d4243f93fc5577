"""The tutorial's CSV format: rows `relative/path.jpg,label`, paths relative to the CSV's folder.

CSVs come from everywhere (Excel on Windows adds a BOM and CRLF, people add a header,
paths have backslashes or commas), so the reader accepts all of that and refuses real
mistakes before training starts, naming every bad row by its line number.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path, PureWindowsPath


class CsvError(ValueError):
    """A CSV the training cannot use; the message lists every problem found."""


def parse_csv(csv_path: str | os.PathLike) -> tuple[list[tuple[int, str, int]], list[str]]:
    """Rows as (line number, path, label), and the rows that are not `path,integer`.

    A first row whose label is not a number is taken as a header.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise CsvError(f"{csv_path}: file not found")
    # utf-8-sig drops the BOM Excel writes; newline="" lets csv handle CRLF and quoted commas.
    with open(csv_path, newline="", encoding="utf-8-sig") as file:
        lines = list(csv.reader(file))

    rows: list[tuple[int, str, int]] = []
    problems: list[str] = []
    for line_number, fields in enumerate(lines, start=1):
        fields = [field.strip() for field in fields]
        if not any(fields):
            continue
        if len(fields) != 2:
            problems.append(f"line {line_number}: expected 2 fields (path,label), found {len(fields)}: {','.join(fields)!r}")
            continue
        path, label = fields
        is_first_row = not rows and not problems
        try:
            rows.append((line_number, path, int(label)))
        except ValueError:
            if is_first_row:
                continue  # a header such as "path,label"
            problems.append(f"line {line_number}: label {label!r} is not an integer")
    return rows, problems


def infer_num_classes(csv_path: str | os.PathLike) -> int:
    """Labels must be 0..N-1 with every class present: N is where the run of used labels stops.

    So a stray "5" in a cat/dog CSV is reported as a bad row instead of silently making 6 classes.
    """
    used = {label for _, _, label in parse_csv(csv_path)[0]}
    num_classes = 0
    while num_classes in used:
        num_classes += 1
    return max(num_classes, 2)


def is_inside(path: str) -> bool:
    """A row's path stays inside the CSV's folder: relative, no drive, never climbing out with '..'.
    (Checked on the text, not the resolved file: a dataset folder may hold symlinks to photos kept elsewhere.)"""
    windows = PureWindowsPath(path)  # reads both / and \ as separators
    return not (windows.drive or windows.root) and not os.path.normpath(windows.as_posix()).startswith("..")


def read_csv_rows(csv_path: str | os.PathLike, num_classes: int | None = None) -> list[tuple[Path, int]]:
    """Parse and check a `path,label` CSV; return absolute paths with integer labels.

    Every problem (missing file, label not an integer in 0..num_classes-1, wrong field
    count, a path outside the CSV's folder) is collected, then raised as one CsvError naming each line.
    """
    csv_path = Path(csv_path)
    rows, problems = parse_csv(csv_path)
    if not rows and not problems:
        raise CsvError(f"{csv_path}: no rows; expected lines like 'train/cat/cat.1.jpg,0'")

    max_label = max((label for _, _, label in rows), default=0)
    limit = num_classes if num_classes is not None else max_label + 1
    samples: list[tuple[Path, int]] = []
    for line_number, path, label in rows:
        full_path = csv_path.parent / path.replace("\\", "/")
        if not is_inside(path):
            problems.append(f"line {line_number}: {path} is outside the CSV's folder {csv_path.parent} "
                            "(paths are relative to it, without ..)")
        elif not 0 <= label < limit:
            problems.append(f"line {line_number}: label {label} is out of range 0..{limit - 1}")
        elif not full_path.is_file():
            problems.append(f"line {line_number}: file not found: {full_path}")
        else:
            samples.append((full_path, label))

    if problems:
        problems.sort(key=lambda problem: int(problem.split(":")[0].split()[1]))
        shown = problems[:50] + ([f"... and {len(problems) - 50} more"] if len(problems) > 50 else [])
        raise CsvError(f"{csv_path} has {len(problems)} bad row(s):\n  " + "\n  ".join(shown))
    return samples

