"""What a photo's answer is, worded the same by the web page (app.py) and the desktop app (desktop.py): every
class's probability, a verdict only when the model is sure enough, a table row with its note, the table as a CSV,
and the engine that computes it. Nothing here imports Gradio or Qt, so that each front end loads only its own."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from cats_dogs.atomic import atomic_write_text
from cats_dogs.checkpoint import Checkpoint
from cats_dogs.engine_build import PausedWhileAnswering, build_at_low_priority
from cats_dogs.engines import load_engine
from cats_dogs.translations import columns, text

PET_HINT_BELOW = 0.3  # ImageNet's summed cat+dog probability under which a photo "does not look like" either
BATCH_SIZE = 8  # photos per forward pass in a table of many photos


def verdict(probabilities: dict[str, float], threshold: float, pet_share: float | None, language: str = "en") -> str:
    """The sentence beside the probabilities: a verdict only when the model is sure enough."""
    best = max(probabilities, key=probabilities.get)
    key = "sure" if probabilities[best] >= threshold else "not_sure"
    answer = text(key, language, best=best, p=probabilities[best], threshold=threshold)
    if pet_share is not None and pet_share < PET_HINT_BELOW:
        answer += "\n\n" + text("pet_hint", language, not_a_pet=text("not_a_pet", language), share=pet_share,
                                names=text("and", language).join(probabilities))
    return answer


def answer_batch(batch_predict: Callable, pet_share_of: Callable | None,
                 images: list[Image.Image]) -> list[tuple[list[float], float | None]]:
    """(every class's probability, the ImageNet pet share or None) for each photo, in one forward pass each."""
    probabilities = batch_predict(images).tolist()
    pet_shares = pet_share_of(images).tolist() if pet_share_of else [None] * len(images)
    return list(zip(probabilities, pet_shares, strict=True))


def table_row(probabilities: list[float], class_names: list[str], threshold: float, pet_share: float | None,
              language: str = "en") -> list:
    """A photo's row after its name in the results table and its CSV: class, probability, note."""
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    notes = [] if probabilities[best] >= threshold else [text("not_sure_note", language)]
    notes += [text("not_a_pet", language)] if pet_share is not None and pet_share < PET_HINT_BELOW else []
    return [class_names[best], round(probabilities[best], 4), text("notes_joined_by", language).join(notes)]


def write_results_csv(path: str | os.PathLike, rows: list[list], language: str = "en") -> None:
    """The results table as a CSV, its column names in `language`, written whole or not at all. With a BOM:
    Excel reads Chinese names in a UTF-8 file only with one."""
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows([columns("results", language), *rows])
    atomic_write_text(Path(path), buffer.getvalue(), encoding="utf-8-sig", newline="")


def prepared_engine(engine: str, model: torch.nn.Module, meta: Checkpoint, checkpoint_path: Path,
                    device: torch.device, amp_dtype: torch.dtype | None, data_dir: str | None,
                    pauses: PausedWhileAnswering) -> tuple[Callable | None, str]:
    """The engine that answers instead of PyTorch once ready (None: PyTorch goes on), and the line that says which.

    On a CPU a child process at the lowest priority builds it first (on 2 cores, building here would slow every
    answer), suspended while `pauses` answers; a cached engine is only loaded. The line is printed too.
    """
    if device.type == "cpu" and (failed := build_at_low_priority(engine, meta, checkpoint_path, amp_dtype is not None,
                                                                  data_dir, pauses)):
        print(failed, flush=True)
        return None, failed
    run, line = load_engine(engine, model, meta, checkpoint_path, device, amp_dtype, data_dir)
    print(line, flush=True)
    return run, line
