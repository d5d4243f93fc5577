"""desktop.py's worker: the model's work on a thread of its own (a QThread), so that the window never freezes.

The window asks by signals, which Qt queues to this thread and runs one at a time in the order sent: load a
checkpoint, classify a list of photos, draw one photo (its Grad-CAM heat map, or the photo itself). Every
answer comes back by a signal carrying the job it belongs to; the window keeps only the current job's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageOps
from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QImage

from cats_dogs.answers import BATCH_SIZE
from cats_dogs.desktop_classifier import CHECKPOINT_ERRORS, PhotoClassifier
from cats_dogs.images import UNREADABLE_IMAGE_ERRORS, open_image
from cats_dogs.photo_files import read_photo
from cats_dogs.translations import desktop_text

SHOWN_SIZE = 512  # the photo's longest side as drawn without its heat map, as explain.make_heatmap draws with it


def to_qimage(image: Image.Image) -> QImage:
    """A PIL image as a QImage that owns its pixels (QImage may be made on any thread; a QPixmap only on the window's)."""
    rgb = image.convert("RGB")
    return QImage(rgb.tobytes(), rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888).copy()


class Worker(QObject):
    """Owns the PhotoClassifier; its slots run on the worker thread. `current_job` is set by the window: a job that
    is no longer current (other photos were opened, the window closes) stops before its next batch."""

    loaded = Signal(object, str)  # the PhotoClassifier, or None and the line saying why it could not be loaded
    answered = Signal(int, int, object)  # job, row, (probabilities, pet share) or the reason the photo cannot be used
    job_done = Signal(int)
    picture_ready = Signal(int, int, bool, QImage)  # job, row, heat map (else the photo itself), the picture

    def __init__(self, device: torch.device, engine: str, data_dir: str | None, pet_check: bool, language: str) -> None:
        super().__init__()
        self.device, self.engine, self.data_dir, self.pet_check = device, engine, data_dir, pet_check
        self.language = language
        self.classifier: PhotoClassifier | None = None
        self.current_job = 0

    @Slot(str)
    def load(self, checkpoint_path: str) -> None:
        self.close()
        try:
            self.classifier = PhotoClassifier(Path(checkpoint_path), self.device, self.engine, self.data_dir,
                                              self.pet_check)
        except CHECKPOINT_ERRORS as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            self.loaded.emit(None, desktop_text("cannot_load", self.language, path=checkpoint_path, reason=reason))
            return
        self.loaded.emit(self.classifier, "")

    @Slot(int, object)
    def classify(self, job: int, paths: list[Path]) -> None:
        """Every photo's answer, BATCH_SIZE photos per forward pass, each sent back as soon as its batch is done."""
        classifier = self.classifier  # close() may drop it meanwhile, from the window's thread
        if classifier is None:
            return  # the window sends the photos again once a checkpoint has loaded
        for start in range(0, len(paths), BATCH_SIZE):
            if job != self.current_job:
                return
            photos = [read_photo(str(path), language=self.language) for path in paths[start:start + BATCH_SIZE]]
            images = [photo for photo in photos if not isinstance(photo, str)]
            answers = iter(classifier.classify(images) if images else [])
            for row, photo in enumerate(photos, start):
                self.answered.emit(job, row, photo if isinstance(photo, str) else next(answers))
        self.job_done.emit(job)

    @Slot(int, int, str, int, bool)
    def draw(self, job: int, row: int, path: str, class_index: int, heatmap: bool) -> None:
        """One photo as the window shows it: with the heat map for `class_index`, or as it is."""
        classifier = self.classifier
        if job != self.current_job or classifier is None:
            return
        try:
            image = open_image(path)
        except UNREADABLE_IMAGE_ERRORS:  # changed on the disk since it was answered: its row keeps the answer
            return
        picture = classifier.heatmap(image, class_index) if heatmap else ImageOps.contain(image, (SHOWN_SIZE,) * 2)
        self.picture_ready.emit(job, row, heatmap, to_qimage(picture))

    def close(self) -> None:
        """The checkpoint before, dropped for another: its engine's build ends (desktop.py ends every build at exit)."""
        if self.classifier is not None:
            self.classifier.close()
            self.classifier = None
