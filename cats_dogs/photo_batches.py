"""Photos in batches, as the training step takes them: uint8 N×size×size×3, decoded once (photo_cache.py),
augmented photo by photo into one block, broken files left out with their reason."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate, get_worker_info
from tqdm import tqdm

from cats_dogs import distributed
from cats_dogs.atomic import cannot_write_line
from cats_dogs.augmentation import AUGMENT_CHOICES, augment_into, draw_augmentation
from cats_dogs.images import UNREADABLE_IMAGE_ERRORS, explain_unreadable, open_image
from cats_dogs.photo_cache import DiskCache, build_cache, cache_key, open_cache, writable_folder
from cats_dogs.preprocessing import IMAGENET_MEAN, IMAGENET_STD, resize_photo
from cats_dogs.user_cache import cache_home

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

    Each photo is decoded and squashed to size×size (preprocessing.resize_photo), then, for training,
    augmented (augmentation.augment_photo). It stays uint8, height×width×3: the batch is normalized on the
    device (preprocessing.to_device with this list's mean and std), 4× fewer bytes to move than floats.
    `cache_images()` keeps the decoded photos in memory or on disk (photo_cache.py), so later epochs
    only augment. A photo that cannot be decoded yields None and the reason instead of crashing the
    run; `collate_readable` leaves it out of the batch. Empty files are left out at once and listed in
    `empty_files`.
    """

    def __init__(self, samples: list[tuple[Path, int]], image_size: int = 256, augment: str = "none",
                 mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        if augment not in AUGMENT_CHOICES:
            raise ValueError(f"augment={augment!r}: expected one of {', '.join(AUGMENT_CHOICES)}")
        # Empty files are common in interrupted downloads and cost nothing to find now.
        self.empty_files = [str(path) for path, _ in samples if path.stat().st_size == 0]
        self.samples = [(path, label) for path, label in samples if path.stat().st_size > 0]
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
        self.augment = augment  # augmentation.augment_photo's strength: none, light or strong
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
        """Where this list's disk cache goes, and its name: beside the photos' CSV (see ImageList)."""
        return writable_folder(cache_home() / "resnet-cats-dogs"), \
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
            try:
                disk = build_cache(paths, self.image_size, folder, name, progress=progress, key=key)
            except OSError as error:  # a full disk, a quota: the cache only saves time, the run goes on without it
                if (line := cannot_write_line(error, folder, self.cache_bytes())) is None:
                    raise
                print(f"photo cache: not written, {line.rstrip('.')}; the photos are read from their files instead", flush=True)
                return
        if mode == "memory":
            self.cache, self.unreadable = disk.load_all(), disk.unreadable
        else:
            disk.descriptor()  # held open while this process lives: another run's build sees the cache in use
            self.cache = disk

    def cache_bytes(self) -> int:
        return len(self) * 3 * self.image_size * self.image_size

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, int, str | None]:
        """(uint8 size×size×3 photo or None, label, index, why it could not be read)."""
        images, _, _, problems = self.__getitems__([index])
        return (images[0] if len(images) else None), self.samples[index][1], index, (problems or [None])[0]

    def write_photo(self, index: int, drawn: tuple | None, out: torch.Tensor,
                    buffer: torch.Tensor | None) -> str | None:
        """Photo `index` into `out`, augmented with its random choices `drawn` (augmentation.draw_augmentation; None:
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

    def __getitems__(self, indices: list[int] | list[tuple[int, int]]) -> PhotoBatch:
        """A whole batch, each photo written straight into one uint8 N×size×size×3 block (in shared memory
        in a worker process, which then hands it over without a copy).

        `indices`: dataset indices, or (index, seed) pairs as loaders.EpochSampler gives them for training, each
        photo's random choices then drawn from its own seed (augmentation.photo_seed) alone. With plain indices
        the random crops and flips are drawn here, in order, so a seed gives the same batches however the work
        is shared. In the training process (0 workers) it is shared by two threads, each with one torch thread:
        torch's kernels and JPEG decoding let go of Python's lock, and one photo is too small a job for torch
        to share between cores. Measured here: 2× the rate of one thread on 2 cores.
        """
        size = self.image_size
        seeds = [None] * len(indices)
        if indices and isinstance(indices[0], tuple):
            indices, seeds = [index for index, _ in indices], [seed for _, seed in indices]
        drawn = [draw_augmentation(size, size, seed) if self.augment != "none" else None for seed in seeds]
        images = new_batch(len(indices), size)
        problems: list[str | None] = [None] * len(indices)
        inference = torch.is_inference_mode_enabled()  # a thread's own setting: the helper threads take the caller's
        reads_to_buffer = isinstance(self.cache, DiskCache) and self.augment != "none"

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

        # Strong augmentation draws from torch's generator as it goes: one thread keeps its order (and, with seeds,
        # each photo takes that one generator for a moment).
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



def load_gallery(dataset: ImageList, size: int = GALLERY_SIZE) -> list[tuple[int, Image.Image]]:
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

