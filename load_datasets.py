"""The tutorial's CSV dataset: rows `relative/path.jpg,label`, paths relative to the CSV's folder.

CSVs come from everywhere (Excel on Windows adds a BOM and CRLF, people add a header,
paths have backslashes or commas), so the reader accepts all of that and refuses real
mistakes before training starts, naming every bad row by its line number.
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, default_collate, get_worker_info
from tqdm import tqdm

import distributed
from common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    UNREADABLE_IMAGE_ERRORS,
    augment_into,
    default_class_names,
    draw_augmentation,
    explain_unreadable,
    open_image,
    resize_photo,
)
from photo_cache import CACHE_FOLDER, DiskCache, build_cache, cache_key, open_cache, writable_folder


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


def read_csv_rows(csv_path: str | os.PathLike, num_classes: int | None = None) -> list[tuple[Path, int]]:
    """Parse and check a `path,label` CSV; return absolute paths with integer labels.

    Every problem (missing file, label not an integer in 0..num_classes-1, wrong field
    count) is collected, then raised as one CsvError naming each line.
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
        if not 0 <= label < limit:
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


def read_class_names(data_dir: str | os.PathLike, num_classes: int) -> list[str]:
    """`classes.txt` (line i names label i) when present, else cat/dog or class_0, class_1, …"""
    classes_file = Path(data_dir) / "classes.txt"
    if not classes_file.is_file():
        return default_class_names(num_classes)
    names = [line.strip() for line in classes_file.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if len(names) < num_classes:
        raise CsvError(f"{classes_file} names {len(names)} classes, but the CSVs use labels up to {num_classes - 1}")
    return names


GALLERY_SIZE = 30  # val photos shown in SwanLab with "pred / true" captions
CACHE_BUDGET_BYTES = 3 * 1024**3  # decoded photos kept in memory up to this size (--cache auto)
CACHE_MODES = ("auto", "memory", "disk", "off")


class PhotoBatch(NamedTuple):
    """A batch as the training step takes it: uint8 N×size×size×3 photos, labels, their dataset indices,
    and why the photos left out could not be read."""
    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    problems: list[str]


def new_batch(count: int, size: int) -> torch.Tensor:
    """An empty uint8 count×size×size×3 block; in shared memory in a DataLoader worker, as default_collate does."""
    if get_worker_info() is None:
        return torch.empty(count, size, size, 3, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(count * size * size * 3)
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(count, size, size, 3)


@functools.cache
def batch_threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(2, thread_name_prefix="photos")


class ImageList(Dataset):
    """(uint8 photo, label, index, problem) for a list of (path, label) pairs, robust to broken files.

    Each photo is decoded and squashed to size×size (common.resize_photo), then, for training,
    augmented (common.augment_photo). It stays uint8, height×width×3: the batch is normalized on the
    device (common.to_device with this list's mean and std), 4× fewer bytes to move than floats.
    `cache_images()` keeps the decoded photos in memory or on disk (photo_cache.py), so later epochs
    only augment. A photo that cannot be decoded yields None and the reason instead of crashing the
    run; `collate_readable` leaves it out of the batch. Empty files are left out at once and listed in
    `empty_files`.
    """

    def __init__(self, samples: list[tuple[Path, int]], image_size: int = 256, augment: bool | str = False,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        # Empty files are common in interrupted downloads and cost nothing to find now.
        self.empty_files = [str(path) for path, _ in samples if path.stat().st_size == 0]
        self.samples = [(path, label) for path, label in samples if path.stat().st_size > 0]
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
        # common.augment_photo's strength: "light" or "strong" (True means light), or None (False, "none") for none.
        self.augment = {True: "light", False: None, "none": None}.get(augment, augment)
        self.cache: torch.Tensor | DiskCache | None = None
        self.unreadable: dict[int, str] = {}  # of a memory cache: index -> reason

    def load_image(self, index: int) -> Image.Image:
        return open_image(self.samples[index][0])

    def resized(self, index: int, buffer: torch.Tensor | None = None) -> torch.Tensor | str:
        """The photo as a uint8 size×size×3 tensor, or why it cannot be read. A disk cache reads it into
        `buffer` when given, saving an allocation."""
        if isinstance(self.cache, DiskCache):
            return self.cache.read(index, buffer)
        if self.cache is not None:
            return self.unreadable.get(index) or self.cache[index]
        try:
            return resize_photo(self.load_image(index), self.image_size)
        except UNREADABLE_IMAGE_ERRORS as error:
            return f"{self.samples[index][0]}: {explain_unreadable(error)}"

    def cache_folder(self) -> tuple[Path, str]:
        """Where this list's disk cache goes, and its name: beside the photos' CSV (see DatasetLoader)."""
        return writable_folder(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resnet-cats-dogs"), \
            "photos"

    def cache_images(self, mode: str = "memory", progress: bool = True, build: bool = True) -> None:
        """Decode every photo once (or find them decoded by an earlier run) and keep them in memory or on disk.

        `build=False` only uses a cache that already exists.
        """
        paths = [path for path, _ in self.samples]
        folder, name = self.cache_folder()
        key = cache_key(paths, self.image_size)  # once: it stats every photo
        disk = open_cache(paths, self.image_size, folder, name, key)
        if disk is None and not build:
            return
        if disk is None:
            disk = build_cache(paths, self.image_size, folder, name, progress=progress, key=key)
        if mode == "memory":
            self.cache, self.unreadable = disk.load_all(), disk.unreadable
        else:
            self.cache = disk

    def cache_bytes(self) -> int:
        return len(self) * 3 * self.image_size * self.image_size

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, int, str | None]:
        """(uint8 size×size×3 photo or None, label, index, why it could not be read)."""
        images, _, _, problems = self.__getitems__([index])
        return (images[0] if len(images) else None), self.samples[index][1], index, (problems or [None])[0]

    def write_photo(self, index: int, drawn: tuple | None, out: torch.Tensor,
                    buffer: torch.Tensor | None) -> str | None:
        """Photo `index` into `out`, augmented with its random choices `drawn` (common.draw_augmentation; None:
        not augmented), or why it cannot be read. `buffer`: where a disk cache reads a photo that is then augmented."""
        photo = self.resized(index, out if drawn is None else buffer)
        if isinstance(photo, str):
            return photo
        if drawn is None:
            if photo.data_ptr() != out.data_ptr():
                out.copy_(photo)
        else:
            augment_into(photo, drawn, self.augment, out)
        return None

    def __getitems__(self, indices: list[int]) -> PhotoBatch:
        """A whole batch, each photo written straight into one uint8 N×size×size×3 block (in shared memory
        in a worker process, which then hands it over without a copy).

        The random crops and flips are drawn here, in order, so a seed gives the same batches however the work
        is shared. In the training process (0 workers) it is shared by two threads, each with one torch thread:
        torch's kernels and JPEG decoding let go of Python's lock, and one photo is too small a job for torch
        to share between cores. Measured here: 2× the rate of one thread on 2 cores.
        """
        size = self.image_size
        drawn = [draw_augmentation(size, size) if self.augment else None for _ in indices]
        images = new_batch(len(indices), size)
        problems: list[str | None] = [None] * len(indices)
        inference = torch.is_inference_mode_enabled()  # a thread's own setting: the helper threads take the caller's
        reads_to_buffer = isinstance(self.cache, DiskCache) and bool(self.augment)

        def fill(slots: range) -> None:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with torch.inference_mode(inference):
                    # Only a disk cache reads into it, and only an augmented photo needs it (others go to their slot).
                    buffer = torch.empty(size, size, 3, dtype=torch.uint8) if reads_to_buffer else None
                    for slot in slots:
                        problems[slot] = self.write_photo(indices[slot], drawn[slot], images[slot], buffer)
            finally:
                torch.set_num_threads(threads)

        # Strong augmentation draws from torch's generator as it goes: one thread keeps its order.
        if torch.get_num_threads() > 1 and len(indices) >= 4 and self.augment != "strong":
            halves = [range(0, len(indices) // 2), range(len(indices) // 2, len(indices))]
            if isinstance(self.cache, DiskCache):
                self.cache.descriptor()  # opened once here, not by both threads at once
            list(batch_threads().map(fill, halves))
        else:
            fill(range(len(indices)))
        readable = [slot for slot, problem in enumerate(problems) if problem is None]
        if len(readable) < len(indices):
            images = images[readable]
        labels = torch.tensor([self.samples[indices[slot]][1] for slot in readable], dtype=torch.long)
        return PhotoBatch(images, labels, torch.tensor([indices[slot] for slot in readable], dtype=torch.long),
                          [problem for problem in problems if problem is not None])

    def __len__(self) -> int:
        return len(self.samples)


class DatasetLoader(ImageList):
    """The tutorial's dataset, read from a `path,label` CSV.

    `train=True` adds the augmentation of `common.augment_photo` ("light" or True, "strong";
    none with augment=False or "none"); otherwise this is the tutorial's Resize + Normalize.
    `mean` and `std` default to ImageNet's (evaluate.py passes a checkpoint's own).
    """

    def __init__(self, csv_path: str | os.PathLike, image_size: int = 256, train: bool = False,
                 augment: bool | str = True, num_classes: int | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        self.csv_path = Path(csv_path)
        super().__init__(read_csv_rows(self.csv_path, num_classes), image_size, train and augment, mean, std)

    def cache_folder(self) -> tuple[Path, str]:
        """DATA_DIR/.cache/, named after the CSV (train, val, test), or the user's cache if DATA_DIR is read-only."""
        return writable_folder(self.csv_path.parent / CACHE_FOLDER), self.csv_path.stem

    @property
    def num_classes(self) -> int:
        return max(label for _, label in self.samples) + 1


def collate_readable(batch: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Stack the readable photos; pass the unreadable ones' reasons along so the run can report them.

    Returns images, labels, their dataset indices, and the problems of the photos left out.
    """
    if isinstance(batch, PhotoBatch):  # ImageList.__getitems__ made it whole
        return tuple(batch)
    readable = [(image, label, index) for image, label, index, problem in batch if problem is None]
    problems = [problem for *_, problem in batch if problem is not None]
    if not readable:
        return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), problems
    images, labels, indices = default_collate(readable)
    return images, labels, indices, problems


def report_unreadable(problems: list[str], unreadable: set[str]) -> None:
    """Warn once per photo that fails to decode (collate_readable's problems); the run goes on without it."""
    for problem in problems:
        if problem not in unreadable:
            unreadable.add(problem)
            if distributed.is_main_process():  # the other processes' photos are listed at the end of the run
                tqdm.write(f"warning: skipped unreadable photo {problem}")


def load_train_val(data_dir: str | os.PathLike, image_size: int = 256,
                   augment: bool | str = True) -> tuple[list[str], DatasetLoader, DatasetLoader]:
    """The class names, train set and val set of a data folder, for train.py.

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


def load_gallery(dataset: DatasetLoader, size: int = GALLERY_SIZE) -> list[tuple[int, Image.Image]]:
    """Small real-color copies of val photos spread over the CSV (it is often sorted by class)."""
    count = min(size, len(dataset))
    indices = sorted({round(i * (len(dataset) - 1) / max(count - 1, 1)) for i in range(count)})
    gallery = []
    for index in indices:
        try:
            image = dataset.load_image(index)
        except UNREADABLE_IMAGE_ERRORS:
            continue  # reported when the evaluation meets it
        image.thumbnail((160, 160))
        gallery.append((index, image))
    return gallery


# --------------------------------------------------------------------------- train.py's loaders
def loader_options(args: argparse.Namespace, device: torch.device) -> dict:
    """DataLoader settings from train.py's flags: batch size, workers, pinned memory for CUDA."""
    return dict(batch_size=args.batch_size, num_workers=args.num_workers, pin_memory=device.type == "cuda",
                persistent_workers=args.num_workers > 0, collate_fn=collate_readable)


def make_loaders(args: argparse.Namespace, train_set: DatasetLoader, val_set: DatasetLoader, device: torch.device,
                 generator: torch.Generator) -> tuple[DataLoader, DataLoader, DistributedSampler | None]:
    """The train and val loaders; under torchrun each process gets its share of both."""
    train_sampler, val_part = None, val_set
    if distributed.is_distributed():
        rank, world_size = distributed.get_rank(), distributed.get_world_size()
        # Each process trains on its 1/N of a shuffle that is the same in all of them (same seed, set_epoch).
        train_sampler = DistributedSampler(train_set, shuffle=True, seed=args.seed, drop_last=False)
        # DistributedSampler would even out the shares by repeating photos, counting them twice: slice val instead.
        val_part = Subset(val_set, range(rank, len(val_set), world_size))
    per_process = len(train_sampler) if train_sampler is not None else len(train_set)
    options = loader_options(args, device)
    train_loader = DataLoader(train_set, shuffle=train_sampler is None, sampler=train_sampler, generator=generator,
                              drop_last=per_process > args.batch_size, **options)
    return train_loader, DataLoader(val_part, shuffle=False, **options), train_sampler
