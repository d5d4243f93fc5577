"""Turn the photos you have into the tutorial's dataset: train.csv, val.csv (+ test.csv), classes.txt.

    python prepare_data.py --download                    # a tutorial-sized sample of Kaggle's cats vs dogs
    python prepare_data.py --from my_photos              # my_photos/<class>/*.jpg
    python prepare_data.py --from kaggle_train.zip --split 0.6 0.2 0.2

Accepted sources: a folder of class folders (SRC/<class>/…), a folder that already has splits
(SRC/train|val|test/<class>/…), a flat folder of Kaggle-style names (<class>.<n>.jpg), or a .zip
of any of these. Every photo is decoded once; unreadable ones are left out and listed, and
byte-identical copies are kept only once. The source is never modified.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import random
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

from tqdm import tqdm

from common import IMAGE_EXTENSIONS, UNREADABLE_IMAGE_ERRORS, explain_unreadable, open_image, zip_member_name

DEFAULT_URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
TUTORIAL_SAMPLE = {"train": 275, "val": 70}  # the tutorial's dataset size, split evenly over the classes
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
IGNORED_NAMES = ("__MACOSX", "Thumbs.db", "desktop.ini")
LEFT_OUT_FILE = "left_out.txt"
SHOWN_LEFT_OUT = 10  # Microsoft's set has ~1,700 broken photos: the console shows this many, the file has them all


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Import photos into the tutorial's CSV dataset layout.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="source", help="a folder (class folders, split folders or Kaggle names) or a .zip")
    source.add_argument("--download", nargs="?", const=DEFAULT_URL, metavar="URL",
                        help=f"download a .zip of photos and import it (default URL: {DEFAULT_URL})")
    parser.add_argument("--full", action="store_true", help="with --download: keep every photo, not a 275/70 sample")
    parser.add_argument("--out", default="datasets", help="dataset folder to write (default: datasets)")
    ratios = parser.add_mutually_exclusive_group()
    ratios.add_argument("--val-ratio", type=float, default=0.2, help="share of each class kept for validation (default: 0.2)")
    ratios.add_argument("--split", nargs=3, type=float, metavar=("TRAIN", "VAL", "TEST"),
                        help="train/val/test shares, e.g. 0.6 0.2 0.2 (writes test.csv too)")
    parser.add_argument("--seed", type=int, default=42, help="the same seed gives the same split (default: 42)")
    return parser


# --------------------------------------------------------------------------- getting the source
def download(url: str, cache_dir: Path) -> Path:
    """Download once into cache_dir; a partial file never takes the final name."""
    target = cache_dir / (Path(urllib.request.url2pathname(url.split("?")[0])).name or "download.zip")
    if target.is_file() and zipfile.is_zipfile(target):
        print(f"using {target}, downloaded before")
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as file:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {target.name}") as progress:
                while chunk := response.read(1 << 20):
                    file.write(chunk)
                    progress.update(len(chunk))
        if not zipfile.is_zipfile(partial):
            raise SystemExit(f"{url} did not send a .zip archive; nothing was written to the dataset.")
        os.replace(partial, target)
    except (urllib.error.URLError, OSError) as error:
        raise SystemExit(
            f"Could not download {url} ({getattr(error, 'reason', error)}).\n"
            "Nothing was written to the dataset. Without internet, import photos you already have:\n"
            "  python prepare_data.py --from path/to/photos      (class folders, Kaggle names, or a .zip)"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def dataset_root(folder: Path) -> Path:
    """Step into wrapper folders (a zip's top folder, say) until something is there."""
    while True:
        entries = [p for p in folder.iterdir() if p.name not in IGNORED_NAMES and not p.name.startswith(".")]
        if len(entries) == 1 and entries[0].is_dir():
            folder = entries[0]
        else:
            return folder


def is_image_name(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def photos_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_image_name(p) and not any(part in IGNORED_NAMES for part in p.parts))


def find_photos(root: Path) -> dict[str | None, dict[str, list[Path]]]:
    """{split or None: {class name: photos}} for the three layouts we accept."""
    subfolders = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name not in IGNORED_NAMES]
    splits = {SPLIT_NAMES[p.name.lower()]: p for p in subfolders if p.name.lower() in SPLIT_NAMES}
    if "train" in splits and len(splits) >= 2:
        return {split: {c.name: photos_under(c) for c in sorted(folder.iterdir()) if c.is_dir()}
                for split, folder in splits.items()}
    class_folders = {p.name: photos_under(p) for p in subfolders}
    class_folders = {name: photos for name, photos in class_folders.items() if photos}
    if len(class_folders) >= 2:
        return {None: class_folders}
    by_prefix: dict[str, list[Path]] = defaultdict(list)
    for photo in sorted(p for p in root.iterdir() if is_image_name(p)):
        if photo.name.count(".") >= 2:  # cat.123.jpg
            by_prefix[photo.name.split(".")[0].lower()].append(photo)
    if len(by_prefix) >= 2:
        return {None: dict(by_prefix)}
    raise SystemExit(
        f"Found no classes in {root}. Expected one of:\n"
        "  SRC/cat/*.jpg, SRC/dog/*.jpg               (a folder per class)\n"
        "  SRC/train/cat/*.jpg, SRC/val/cat/*.jpg     (folders that already hold splits)\n"
        "  SRC/cat.1.jpg, SRC/dog.1.jpg               (Kaggle-style names: <class>.<number>.jpg)"
    )


# --------------------------------------------------------------------------- cleaning
def check_photo(data: bytes) -> str | None:
    """None when the photo's bytes decode fully (the way training will open them), else why not."""
    if not data:
        return "empty file"
    try:
        open_image(io.BytesIO(data))
    except UNREADABLE_IMAGE_ERRORS as error:
        return explain_unreadable(error)
    return None


def clean(photos: dict[str | None, dict[str, list[Path]]]) -> tuple[dict, list[tuple[Path, str]]]:
    """Decode every photo once; leave out the broken ones and all but the first of identical copies."""
    all_photos = [(split, name, p) for split, classes in photos.items() for name, paths in classes.items() for p in paths]
    kept: dict[str | None, dict[str, list[Path]]] = {split: {name: [] for name in classes} for split, classes in photos.items()}
    excluded: list[tuple[Path, str]] = []
    first_seen: dict[str, Path] = {}
    for split, name, path in tqdm(all_photos, desc="checking photos", unit="photo"):
        data = path.read_bytes()
        reason = check_photo(data)
        if reason is None:
            digest = hashlib.sha1(data).hexdigest()
            if digest in first_seen:
                reason = f"byte-identical duplicate of {first_seen[digest]}"
            else:
                first_seen[digest] = path
        if reason:
            excluded.append((path, reason))
        else:
            kept[split][name].append(path)
    return kept, excluded


# --------------------------------------------------------------------------- splitting
def split_photos(photos: dict[str, list[Path]], shares: dict[str, float], seed: int) -> dict[str, dict[str, list[Path]]]:
    """Stratified: each class is shuffled with the seed and cut by the shares."""
    result: dict[str, dict[str, list[Path]]] = {split: {} for split in shares}
    for name, paths in sorted(photos.items()):
        shuffled = sorted(paths)
        random.Random(f"{seed}-{name}").shuffle(shuffled)
        counts = {split: round(share * len(shuffled)) for split, share in shares.items() if split != "train"}
        start = 0
        for split in [s for s in shares if s != "train"]:
            result[split][name] = sorted(shuffled[start:start + counts[split]])
            start += counts[split]
        result["train"][name] = sorted(shuffled[start:])
    return result


def sample(splits: dict[str, dict[str, list[Path]]], seed: int) -> dict[str, dict[str, list[Path]]]:
    """A tutorial-sized subset: 275 train / 70 val photos, split evenly over the classes."""
    sampled = {}
    for split, classes in splits.items():
        total = TUTORIAL_SAMPLE.get(split)
        names = sorted(classes)
        sampled[split] = {}
        for i, name in enumerate(names):
            wanted = total // len(names) + (i < total % len(names)) if total else len(classes[name])
            paths = sorted(classes[name])
            random.Random(f"{seed}-{split}-{name}").shuffle(paths)
            sampled[split][name] = sorted(paths[:wanted])
    return sampled


# --------------------------------------------------------------------------- writing
def write_dataset(splits: dict[str, dict[str, list[Path]]], class_names: list[str], out: Path) -> None:
    """Copy photos under out/<split>/<class>/ (those already inside `out` stay where they are), then the CSVs."""
    out_resolved = out.resolve()
    label_of = {name: label for label, name in enumerate(class_names)}
    for split, classes in splits.items():
        rows, used_names = [], set()
        for name in class_names:
            for path in tqdm(classes.get(name, []), desc=f"writing {split}/{name}", unit="photo", leave=False):
                if out_resolved in path.resolve().parents:
                    relative = path.resolve().relative_to(out_resolved)
                else:
                    relative = Path(split) / name / path.name
                    stem, suffix, n = path.stem, path.suffix, 1
                    while relative in used_names:  # same file name in two source folders
                        relative = Path(split) / name / f"{stem}_{n}{suffix}"
                        n += 1
                    (out / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, out / relative)
                used_names.add(relative)
                rows.append((relative.as_posix(), label_of[name]))
        write_atomically(out / f"{split}.csv", rows)
    (out / "classes.txt.tmp").write_text("\n".join(class_names) + "\n", encoding="utf-8")
    os.replace(out / "classes.txt.tmp", out / "classes.txt")


def write_atomically(path: Path, rows: list[tuple[str, int]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as file:
        csv.writer(file, lineterminator="\n").writerows(rows)
    os.replace(tmp, path)


def write_left_out(excluded: list[tuple[Path, str]], out: Path) -> None:
    """Every file left out, one per line: with Microsoft's set that is ~1,700 lines, too many for the console."""
    path = out / LEFT_OUT_FILE
    if excluded:
        path.write_text("".join(f"{name}: {reason}\n" for name, reason in excluded), encoding="utf-8")
    else:
        path.unlink(missing_ok=True)  # a list from an earlier run would mislead


def print_summary(splits: dict[str, dict[str, list[Path]]], class_names: list[str], excluded: list[tuple[Path, str]],
                  out: Path) -> None:
    order = [s for s in ("train", "val", "test") if s in splits]
    width = max(len(name) for name in [*class_names, "total"]) + 2
    print("\n" + "class".ljust(width) + "".join(s.rjust(8) for s in order))
    for name in class_names:
        print(name.ljust(width) + "".join(str(len(splits[s].get(name, []))).rjust(8) for s in order))
    print("total".ljust(width) + "".join(str(sum(len(v) for v in splits[s].values())).rjust(8) for s in order))
    if excluded:
        reasons = Counter("duplicate" if r.startswith("byte-identical") else r.split(" (")[0] for _, r in excluded)
        print(f"\nleft out {len(excluded)} file(s):")
        for reason, count in sorted(reasons.items()):
            print(f"{count:>8}  {reason}")
        for name, reason in excluded[:SHOWN_LEFT_OUT]:
            print(f"  {name}: {reason}")
        if len(excluded) > SHOWN_LEFT_OUT:
            print(f"  ... and {len(excluded) - SHOWN_LEFT_OUT} more")
        print(f"  The full list is in {out / LEFT_OUT_FILE}.")
    print(f"\nwrote {', '.join(f'{s}.csv' for s in order)} and classes.txt to {out}/")
    print(f"next: python train.py --data-dir {out}")


def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    shares = dict(zip(("train", "val", "test"), args.split, strict=True)) if args.split else \
        {"train": 1 - args.val_ratio, "val": args.val_ratio}
    if any(share < 0 for share in shares.values()) or abs(sum(shares.values()) - 1) > 1e-6 or shares["val"] <= 0:
        raise SystemExit(f"the split shares must be positive and add up to 1, got {list(shares.values())}")

    source = download(args.download, out / ".downloads") if args.download else Path(args.source)
    if not source.exists():
        raise SystemExit(f"--from {source}: no such file or folder")
    with tempfile.TemporaryDirectory(prefix="prepare_data_") as scratch:
        if source.is_file():
            if not zipfile.is_zipfile(source):
                raise SystemExit(f"--from {source}: a file must be a .zip archive; give a folder otherwise")
            print(f"unpacking {source}")
            with zipfile.ZipFile(source) as archive:
                members = archive.infolist()
                for member in members:  # Chinese names from Windows' own zip would otherwise unpack garbled
                    member.filename = zip_member_name(member)
                archive.extractall(scratch, members)  # zipfile drops "../" and absolute parts: nothing lands outside
            source = Path(scratch)
        root = dataset_root(source)
        photos, excluded = clean(find_photos(root))

        if None in photos:
            splits = split_photos(photos[None], shares, args.seed)
        else:
            splits = {split: classes for split, classes in photos.items()}
            if "val" not in splits:  # e.g. train/ + test/: take val out of train
                splits.update(split_photos(splits["train"], {"train": 1 - args.val_ratio, "val": args.val_ratio},
                                           args.seed))
            print("kept the split the source already had")
        if args.download and not args.full:
            splits = sample(splits, args.seed)
        class_names = sorted({name for classes in splits.values() for name in classes})
        if not any(splits["train"].values()):
            raise SystemExit(f"no usable photos found in {root}")
        out.mkdir(parents=True, exist_ok=True)
        write_dataset(splits, class_names, out)
    write_left_out(excluded, out)
    print_summary(splits, class_names, excluded, out)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
