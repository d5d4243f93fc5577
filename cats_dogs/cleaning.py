"""Which photos of an import are usable: each is decoded once, and broken files, byte-identical copies and (for a
crawl) resized copies of a photo already kept are left out, each with its reason.

prepare_data.py's import and its crawl (crawl.py) both use this, so that a crawl counts the photos exactly as the
import that follows it will keep them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import multiprocessing
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import imagehash
from PIL import Image
from tqdm import tqdm

from cats_dogs.images import UNREADABLE_IMAGE_ERRORS, explain_unreadable, open_image

# Of the 64 bits of a difference hash. studies/study_near_duplicates.py on Kaggle's cats and dogs: of 800 copies of
# 200 photos (scaled to 1/4, 1/2 or 3/4, or re-saved at JPEG quality 50), 793 differ from their photo by 0 to 2 bits
# and 799 by at most 5 (one 1/4-size copy by 6), while no two of 800 distinct photos come closer than 7.
NEAR_DUPLICATE_BITS = 5


class Inspected(NamedTuple):
    digest: str | None  # SHA-1 of the bytes of a usable photo
    look: int | None  # 64-bit difference hash of its pixels, when near-duplicates are looked for
    reason: str | None  # why the photo cannot be used


@dataclass
class SeenPhotos:
    """The photos kept so far, to spot later copies of them."""

    near_duplicates: bool = False
    by_digest: dict[str, Path] = field(default_factory=dict)
    by_look: list[tuple[int, Path]] = field(default_factory=list)


def inspect_file(path: Path, looks: bool = False) -> Inspected:
    """The part of the check that runs in parallel: each photo is read and decoded once."""
    data = path.read_bytes()
    if not data:
        return Inspected(None, None, "empty file")
    try:
        with warnings.catch_warnings():
            # Many of Kaggle's photos have a damaged EXIF block. Pillow warns once per file, but the pixels decode
            # and training reads them fine: hundreds of such warnings would only hide the summary.
            warnings.simplefilter("ignore", UserWarning)
            image = open_image(io.BytesIO(data))  # the way training will open it: pixel limit, rotation, any mode
    except UNREADABLE_IMAGE_ERRORS as error:
        return Inspected(None, None, explain_unreadable(error))
    return Inspected(hashlib.sha1(data).hexdigest(), difference_hash(image) if looks else None, None)


def difference_hash(image: Image.Image) -> int:
    """64 bits that survive resizing and re-compression: is each pixel of a 9×8 gray thumbnail brighter than the next?"""
    return int(str(imagehash.dhash(image)), 16)


def check_file(path: Path, seen: SeenPhotos, inspected: Inspected | None = None) -> str | None:
    """Why this photo cannot be used, or None; seen spots later copies of it."""
    digest, look, reason = inspected or inspect_file(path, seen.near_duplicates)
    if reason is not None:
        return reason
    if digest in seen.by_digest:
        return f"byte-identical duplicate of {seen.by_digest[digest]}"
    if seen.near_duplicates and look is not None and seen.by_look:
        bits, original = min(((look ^ other).bit_count(), kept) for other, kept in seen.by_look)
        if bits <= NEAR_DUPLICATE_BITS:  # the words before " (" are what the import's summary counts
            return f"near-duplicate (a resized or re-saved copy of {original}: {bits} of 64 hash bits differ)"
    seen.by_digest[digest] = path
    if look is not None:
        seen.by_look.append((look, path))
    return None


def clean(photos: dict[str | None, dict[str, list[Path]]], near_duplicates: bool = False) -> tuple[dict, list[tuple[Path, str]]]:
    """Decode every photo once, one process per core; leave out the broken ones and all but the first of identical
    copies (the first in a fixed order, whatever process finished first), and of near-identical ones if asked."""
    all_photos = [(split, name, p) for split, classes in photos.items() for name, paths in classes.items() for p in paths]
    kept: dict[str | None, dict[str, list[Path]]] = {split: {name: [] for name in classes} for split, classes in photos.items()}
    excluded: list[tuple[Path, str]] = []
    seen = SeenPhotos(near_duplicates)
    inspect = functools.partial(inspect_file, looks=near_duplicates)
    processes = min(os.cpu_count() or 1, 1 + len(all_photos) // 200)  # a pool costs more than a few photos take
    with multiprocessing.get_context().Pool(processes) if processes > 1 else contextlib.nullcontext() as pool:
        paths = [path for *_, path in all_photos]
        inspected = pool.imap(inspect, paths, chunksize=32) if pool else map(inspect, paths)
        for (split, name, path), result in tqdm(zip(all_photos, inspected, strict=True), total=len(all_photos),
                                                desc="checking photos", unit="photo"):
            reason = check_file(path, seen, result)
            if reason:
                excluded.append((path, reason))
            else:
                kept[split][name].append(path)
    return kept, excluded
