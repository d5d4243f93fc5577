"""desktop.py's model: a checkpoint answering photos exactly as the web page answers them (the same fast copy, the
same engine built in the background, the same pet check and Grad-CAM), for a window instead of a browser.

Nothing here imports Qt or Gradio. The window calls it from one worker thread (desktop_window.Worker), so that Grad-CAM's
hooks and the model are never used by two photos at once, and the window never waits for it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil
import torch
from PIL import Image

from cats_dogs.answers import answer_batch, prepared_engine
from cats_dogs.checkpoint import load_checkpoint
from cats_dogs.device import autocast_dtype
from cats_dogs.engine_build import PausedWhileAnswering
from cats_dogs.explain import load_pet_check, make_heatmap
from cats_dogs.images import IMAGE_EXTENSIONS
from cats_dogs.inference import make_batch_predict

# What reading a checkpoint the user picked may raise; each ends as one line in the window.
CHECKPOINT_ERRORS = (ValueError, KeyError, RuntimeError, OSError, EOFError)


class PhotoClassifier:
    """One checkpoint, loaded on `device`. PyTorch answers until the `engine` (engines.ENGINE_CHOICES) is ready;
    `engine_line` says which answers now. close() ends the engine's build, if one is running."""

    def __init__(self, checkpoint_path: Path, device: torch.device, engine: str = "auto",
                 data_dir: str | None = None, pet_check: bool = True) -> None:
        self.checkpoint_path = Path(checkpoint_path)
        self.model, self.meta = load_checkpoint(self.checkpoint_path, device)
        self.class_names: list[str] = list(self.meta["class_names"])
        amp_dtype = autocast_dtype(device)
        self.pauses = PausedWhileAnswering()  # the engine's build is suspended while a photo is answered
        self.engine_line = "engine: torch" if engine == "torch" else f"engine: torch until {engine} is ready"
        self.closed = False

        def prepare_engine():
            if self.closed:
                return None
            run, self.engine_line = prepared_engine(engine, self.model, self.meta, self.checkpoint_path, device,
                                                    amp_dtype, data_dir, self.pauses)
            return None if self.closed else run

        self.batch_predict = make_batch_predict(self.model, self.meta, device, amp_dtype,
                                                engine=None if engine == "torch" else prepare_engine)
        self.pet_share_of = load_pet_check(self.meta, device, amp_dtype) if pet_check else None
        self.heatmap = self.pauses.pausing(make_heatmap(self.model, self.meta, device))

    def classify(self, images: list[Image.Image]) -> list[tuple[list[float], float | None]]:
        """(every class's probability, the ImageNet pet share or None) for each photo."""
        return self.pauses.pausing(answer_batch)(self.batch_predict, self.pet_share_of, images)

    def close(self) -> None:
        """End the engine's build now (another checkpoint is loaded): it must not take the cores from the next one.
        The next start of this checkpoint builds again, keeping the files this build had finished."""
        self.closed = True
        process = self.pauses.process
        if process is not None:
            with contextlib.suppress(psutil.Error):  # it has ended meanwhile
                process.kill()


def end_engine_builds() -> list[int]:
    """desktop.py's last step, however the window ended: every process it started (the engine's builds: a checkpoint
    may still be loading, its build already started) is ended, so that none outlives the window. Their ids."""
    ended = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # it has ended meanwhile
            child.kill()
            ended.append(child.pid)
    return ended


def photos_in(paths: list[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(name, path) of each photo to answer for what was opened or dropped: each file as given, named by its file
    name (one that is not a photo gets its reason in the table); each folder's photos, subfolders too
    (datasets/val/cat, datasets/val/dog), named by their path inside the folder, sorted."""
    photos = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            photos += [(p.relative_to(path).as_posix(), p) for p in found]
        else:
            photos.append((path.name, path))
    return photos
