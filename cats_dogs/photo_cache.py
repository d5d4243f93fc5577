"""Decoded photos kept on disk: every photo decoded and resized once, for every later epoch, run and script.

Decoding a JPEG and resizing it costs a few milliseconds per photo and core, every epoch. The cache
does it once, with one process per core, and writes the uint8 pixels of all photos into one file
beside the CSVs (size × size × 3 bytes a photo, photo i at offset i × that). Reading a photo back is
one 196 kB read at 256², with no decoding. Photos that could not be decoded are recorded with their
reason, so they are reported again without being opened.

The file is named after a key of everything that changes the pixels: the image size, the resize
method, and each photo's path, size in bytes and modification time. Change a photo, the CSV or the
size and the key changes, so a stale cache is never used. The pixels are written to a temporary file
that takes its final name only when complete, and the index (a JSON file, the proof of completeness)
is written last: a killed build leaves nothing that looks complete, and the next run starts it again.
A damaged index is rebuilt, with one line saying so.

A build removes the older caches of the same photos (same name and size, another key: the photos changed),
unless a live process has one open (a run still training on it), and killed builds' temporary files. It
leaves every other cache alone: the user's cache folder (a read-only data folder's fallback) holds the
caches of many datasets under the same names.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import multiprocessing
import os
import stat
import sys
from pathlib import Path

import numpy as np
import psutil
import torch
from tqdm import tqdm

from cats_dogs.atomic import atomic_path, atomic_write_text, writer_pid
from cats_dogs.images import UNREADABLE_IMAGE_ERRORS, explain_unreadable, open_image
from cats_dogs.preprocessing import RESIZE_METHOD, resize_photo
from cats_dogs.user_cache import cache_home

CACHE_FOLDER = ".cache"  # inside the data folder, beside the CSVs
CHUNK = 64  # photos per task given to a worker process


def cache_key(paths: list[Path], image_size: int) -> str:
    """A hash of what changes the pixels: size, resize method, and each photo's path, bytes and modification time."""
    files = [(str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns) for path in paths]
    text = json.dumps({"method": RESIZE_METHOD, "image_size": image_size, "files": files})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def writable_folder(preferred: Path) -> Path:
    """`preferred`, or a folder in the user's cache when the data folder is read-only (a shared dataset).

    Read-only is judged by the folder's write permission bits as well as by trying, since root (a
    container, CI) can write into a folder whose owner made it read-only.
    """
    existing = preferred if preferred.exists() else preferred.parent
    try:
        if not existing.stat().st_mode & stat.S_IWUSR:
            raise PermissionError(f"{existing} is read-only")
        preferred.mkdir(parents=True, exist_ok=True)
        probe = preferred / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return preferred
    except OSError:
        fallback = cache_home() / "resnet-cats-dogs" / "photos"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


class DiskCache:
    """Photos by index from a finished cache file: a uint8 size×size×3 tensor, or why the photo is unreadable.

    Each process opens the file on first use (DataLoader workers included) and reads with pread, so
    the pixels are not counted in the process's memory as a memory map's pages would be.
    """

    def __init__(self, pixels: Path, count: int, image_size: int, unreadable: dict[int, str]) -> None:
        self.pixels, self.count, self.image_size, self.unreadable = pixels, count, image_size, unreadable
        self.photo_bytes = image_size * image_size * 3
        self._fd: tuple[int, int] | None = None  # (process id, file descriptor)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}  # a worker process opens its own

    def descriptor(self) -> int:
        """This process's descriptor of the pixel file, opened on first use."""
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), os.open(self.pixels, os.O_RDONLY | getattr(os, "O_BINARY", 0)))
        return self._fd[1]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor | str:
        return self.read(index)

    def read(self, index: int, photo: torch.Tensor | None = None) -> torch.Tensor | str:
        """The photo, read into `photo` (a dense uint8 size×size×3 tensor) when given: a batch's slot or a buffer."""
        if index in self.unreadable:
            return self.unreadable[index]
        if photo is None:
            photo = torch.empty(self.image_size, self.image_size, 3, dtype=torch.uint8)
        buffer = memoryview(photo.numpy()).cast("B")  # read straight into the tensor: no copy in between
        if hasattr(os, "preadv"):
            os.preadv(self.descriptor(), [buffer], index * self.photo_bytes)
        else:  # Windows
            with open(self.pixels, "rb") as file:
                file.seek(index * self.photo_bytes)
                file.readinto(buffer)
        return photo

    def load_all(self) -> torch.Tensor:
        """Every photo in one N×size×size×3 tensor: the memory cache."""
        array = np.fromfile(self.pixels, dtype=np.uint8).reshape(self.count, self.image_size, self.image_size, 3)
        return torch.from_numpy(array)


def open_cache(paths: list[Path], image_size: int, folder: Path, name: str, key: str | None = None) -> DiskCache | None:
    """The finished cache of these photos at this size in `folder`, or None when there is none.
    `key`: their cache_key, when the caller has it (it reads every photo's size and time)."""
    key = key or cache_key(paths, image_size)
    index_file = folder / f"{name}-{image_size}px-{key[:16]}.json"
    if not index_file.is_file():
        return None
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        unreadable = {int(i): str(reason) for i, reason in index["unreadable"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # a disk full, a hand edit, a crash
        print(f"the photo cache's index {index_file} is damaged ({type(error).__name__}); decoding the photos again",
              file=sys.stderr, flush=True)
        return None
    pixels = index_file.with_suffix(".u8")
    if index.get("key") != key or not pixels.is_file() or pixels.stat().st_size != len(paths) * image_size**2 * 3:
        return None
    return DiskCache(pixels, len(paths), image_size, unreadable)


def _decode_into(task: tuple[str, int, list[tuple[int, str]]]) -> tuple[int, list[tuple[int, str]]]:
    """A worker's share: decode, resize and write each photo at its offset; returns the number of photos done
    and (index, reason) of the unreadable ones."""
    pixels, image_size, photos = task
    unreadable = []
    fd = os.open(pixels, os.O_WRONLY | getattr(os, "O_BINARY", 0))
    try:
        for index, path in photos:
            try:
                data = resize_photo(open_image(path), image_size).numpy().tobytes()
            except UNREADABLE_IMAGE_ERRORS as error:
                unreadable.append((index, f"{path}: {explain_unreadable(error)}"))
                continue
            os.lseek(fd, index * len(data), os.SEEK_SET)
            if os.write(fd, data) != len(data):  # a disk that is nearly full may take only a part
                raise OSError(errno.ENOSPC, "no space left for a whole photo", pixels)
    finally:
        os.close(fd)
    return len(photos), unreadable


def remove_stale_caches(folder: Path, name: str, image_size: int, stem: str, paths: list[Path]) -> None:
    """Before building `stem`: remove killed builds' temporary files and older caches of these same photos
    that no live process has open. Several runs can start on one data folder at once."""
    ours = {str(path) for path in paths}
    candidates = []
    for found in folder.glob(f"{name}-{image_size}px-*"):
        pid = writer_pid(found)
        if pid is not None:  # a temporary file: in use while the process it names lives
            if not psutil.pid_exists(pid):
                found.unlink(missing_ok=True)
        elif found.suffix == ".json" and found.stem != stem and _same_photos(found, ours):
            candidates.append(found)
    in_use = _open_elsewhere(folder) if candidates else set()
    for index_file in candidates:
        pixels = index_file.with_suffix(".u8")
        if str(pixels.resolve()) not in in_use:
            with contextlib.suppress(OSError):  # Windows refuses to delete a file that is open
                pixels.unlink(missing_ok=True)
                index_file.unlink(missing_ok=True)


def _same_photos(index_file: Path, ours: set[str]) -> bool:
    """Whether a cache holds (an older version of) some of these photos; a damaged index counts as one of ours."""
    try:
        return bool(ours.intersection(json.loads(index_file.read_text(encoding="utf-8"))["files"]))
    except (OSError, ValueError, KeyError, TypeError):
        return True


def _open_elsewhere(folder: Path) -> set[str]:
    """The files in `folder` that another live process has open, as far as this user may look."""
    folder, found = str(folder.resolve()), set()
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error, OSError):
            found.update(file.path for file in process.open_files() if file.path.startswith(folder))
    return found


def build_cache(paths: list[Path], image_size: int, folder: Path, name: str, processes: int | None = None,
                progress: bool = True, key: str | None = None) -> DiskCache:
    """Decode every photo once with one process per core into a new cache file, and return it."""
    key = key or cache_key(paths, image_size)
    stem = f"{name}-{image_size}px-{key[:16]}"
    remove_stale_caches(folder, name, image_size, stem, paths)
    pixels = folder / f"{stem}.u8"
    with atomic_path(pixels) as temporary:
        unreadable = _decode_all(paths, image_size, temporary, processes, progress, f"{folder / stem}.u8")
    atomic_write_text(folder / f"{stem}.json", json.dumps({  # last: from now on the cache counts as complete
        "key": key, "image_size": image_size, "count": len(paths), "method": RESIZE_METHOD,
        "unreadable": {str(i): reason for i, reason in sorted(unreadable.items())},
        "files": [str(path) for path in paths]}, ensure_ascii=False))
    return DiskCache(pixels, len(paths), image_size, unreadable)


def _decode_all(paths: list[Path], image_size: int, temporary: Path, processes: int | None, progress: bool,
                shown_name: str) -> dict[int, str]:
    """Every photo decoded into the pixel file `temporary`, one process per core; the unreadable ones' reasons."""
    with open(temporary, "wb") as file:
        file.truncate(len(paths) * image_size * image_size * 3)
    tasks = [(str(temporary), image_size, [(i, str(paths[i])) for i in range(start, min(start + CHUNK, len(paths)))])
             for start in range(0, len(paths), CHUNK)]
    processes = max(1, min(processes or os.cpu_count() or 1, len(tasks)))
    unreadable: dict[int, str] = {}
    with tqdm(total=len(paths), desc=f"decoding photos once into {shown_name}", unit="photo",
              dynamic_ncols=True, disable=not progress, leave=False) as bar:
        if processes == 1:
            results = map(_decode_into, tasks)
        else:
            pool = multiprocessing.get_context().Pool(processes)
            results = pool.imap_unordered(_decode_into, tasks)
        for done, problems in results:
            unreadable.update(problems)
            bar.update(done)
        if processes > 1:
            pool.close()
            pool.join()
    return unreadable
