"""Where a crawl's near-duplicate check draws its line (cats_dogs/cleaning.py, NEAR_DUPLICATE_BITS).

    python studies/study_near_duplicates.py ../shared/data/cats_dogs_kaggle --copies 200

For the first --copies photos of FOLDER, copies scaled to 1/4, 1/2 and 3/4 and one re-saved at JPEG quality 50: how
many of the 64 difference-hash bits differ from the photo's. Then, over all photos of FOLDER, the closest pairs of
distinct photos. The line must lie above the first and below the second.
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
from collections import Counter
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cats_dogs.cleaning import NEAR_DUPLICATE_BITS, difference_hash  # noqa: E402
from cats_dogs.images import IMAGE_EXTENSIONS, open_image  # noqa: E402

COPIES = {"1/4 size, JPEG 75": (0.25, 75), "1/2 size, JPEG 90": (0.5, 90), "3/4 size, JPEG 60": (0.75, 60),
          "same size, JPEG 50": (1.0, 50)}


def copy_of(image: Image.Image, scale: float, quality: int) -> Image.Image:
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    buffer = io.BytesIO()
    image.resize(size, Image.BILINEAR).save(buffer, "JPEG", quality=quality)
    return open_image(io.BytesIO(buffer.getvalue()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--copies", type=int, default=200, help="photos to make copies of (default: 200)")
    args = parser.parse_args()
    paths = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    images = {path: open_image(path) for path in paths}
    looks = {path: difference_hash(image) for path, image in images.items()}
    print(f"{len(paths)} photos in {args.folder}; the line: at most {NEAR_DUPLICATE_BITS} bits apart\n")
    print("| copy | bits apart: copies |\n|---|---|")
    for name, (scale, quality) in COPIES.items():
        apart = Counter((looks[p] ^ difference_hash(copy_of(images[p], scale, quality))).bit_count()
                        for p in paths[:args.copies])
        print(f"| {name} | " + ", ".join(f"{bits}: {count}" for bits, count in sorted(apart.items())) + " |")
    distinct = sorted((a_look ^ b_look).bit_count() for a_look, b_look in itertools.combinations(looks.values(), 2))
    print(f"\n{len(distinct):,} pairs of distinct photos: the closest are {distinct[:5]} bits apart; "
          f"{sum(bits <= NEAR_DUPLICATE_BITS for bits in distinct)} within the line")


if __name__ == "__main__":
    main()
