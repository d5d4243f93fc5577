"""review.py's decisions: saved click by click to DATA_DIR/review_decisions.json, then applied to the CSVs, each
backed up first, every untouched line kept byte for byte."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

from cats_dogs.atomic import atomic_write_text

BOM = "\ufeff"


def csv_key(path: str) -> str:
    """A CSV row's photo as decisions name it: its path as written, with Windows' backslashes made forward."""
    return path.strip().replace("\\", "/")


def load_decisions(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{split: {CSV path: {"decision": keep|relabel|exclude, "label": …}}} as saved so far; empty when none yet."""
    if not path.is_file():
        return {}
    try:
        decisions = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(decisions, dict) and all(isinstance(v, dict) for v in decisions.values())
    except (ValueError, AssertionError) as error:  # never overwrite what a user decided: stop instead
        raise SystemExit(f"{path} is not a review decisions file ({error or 'unexpected content'}). "
                         "Fix it, or move it away to start a new review.") from None
    return decisions


def save_decisions(path: Path, decisions: dict) -> None:
    """Write to a temporary file, then rename: a kill during the save never leaves a broken file."""
    atomic_write_text(path, json.dumps(decisions, indent=1, ensure_ascii=False))


def backup_path(csv_path: Path, stamp: str) -> Path:
    """CSV.bak-<time>, never one that exists: two applies in one second keep both old versions."""
    backup, n = csv_path.with_name(f"{csv_path.name}.bak-{stamp}"), 1
    while backup.exists():
        backup, n = csv_path.with_name(f"{csv_path.name}.bak-{stamp}-{n}"), n + 1
    return backup


def apply_to_csv(csv_path: Path, chosen: dict[str, dict[str, Any]], stamp: str) -> tuple[int, int, Path] | None:
    """Rewrite one CSV with its decisions: excluded rows left out, relabelled rows given the new label.

    Every other line stays byte for byte as it was (header, quoting, backslashes, CRLF, the BOM Excel wants).
    Returns (relabelled, excluded, backup), or None when nothing changes.
    """
    with open(csv_path, encoding="utf-8", newline="") as file:  # newline="": CRLF stays CRLF
        original = file.read()
    lines = io.StringIO(original.removeprefix(BOM), newline="").readlines()  # each line keeps its own ending
    kept, relabelled, excluded = [], 0, 0
    for line in lines:
        fields = next(csv.reader([line]), [])
        entry = chosen.get(csv_key(fields[0])) if len(fields) == 2 else None
        if entry and entry["decision"] == "exclude":
            excluded += 1
            continue
        if entry and entry["decision"] == "relabel" and fields[1].strip() != str(entry["label"]):
            body = line.rstrip("\r\n")
            line = f"{body.rsplit(',', 1)[0]},{entry['label']}{line[len(body):]}"  # labels hold no comma
            relabelled += 1
        kept.append(line)
    if not relabelled and not excluded:
        return None
    backup = backup_path(csv_path, stamp)
    shutil.copy2(csv_path, backup)
    atomic_write_text(csv_path, BOM * original.startswith(BOM) + "".join(kept), newline="")
    return relabelled, excluded, backup
