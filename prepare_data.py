"""Turn the photos you have into the tutorial's dataset: train.csv, val.csv (+ test.csv), classes.txt.

    python prepare_data.py --download                    # a tutorial-sized sample of Kaggle's cats vs dogs
    python prepare_data.py --download --source microsoft # the same, from Microsoft's copy only
    python prepare_data.py --from my_photos              # my_photos/<class>/*.jpg
    python prepare_data.py --from kaggle_train.zip --split 0.6 0.2 0.2
    python prepare_data.py --crawl 向日葵 玫瑰 --names sunflower rose --per-class 200   # photos from Baidu

Accepted sources: a folder of class folders (SRC/<class>/…), a folder that already has splits
(SRC/train|val|test/<class>/…), a flat folder of Kaggle-style names (<class>.<n>.jpg), or a .zip
of any of these, or photos crawled from Baidu or Bing (--crawl). Every photo is decoded once; unreadable ones are left
out and listed, and byte-identical copies are kept only once (resized copies too, in a crawl). The source is never
modified.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import shutil
import tempfile
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

from tqdm import tqdm

from cats_dogs.atomic import atomic_write_text, exit_when_cannot_write
from cats_dogs.class_balance import data_warnings
from cats_dogs.classes import class_name_problem
from cats_dogs.cleaning import SeenPhotos, check_file, clean
from cats_dogs.downloads import SOURCES, download_photos
from cats_dogs.images import IMAGE_EXTENSIONS, zip_member_name
from cats_dogs.process import make_console_safe
from cats_dogs.zips import MEMBER_READ_ERRORS, member_problem, read_problem

TUTORIAL_SAMPLE = {"train": 275, "val": 70}  # the tutorial's dataset size, split evenly over the classes
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
IGNORED_NAMES = ("__MACOSX", "Thumbs.db", "desktop.ini")
LEFT_OUT_FILE = "left_out.txt"
SHOWN_LEFT_OUT = 10  # Microsoft's set has ~1,700 broken photos: the console shows this many, the file has them all
MAX_UNPACKED_BYTES = 2 * 1024**3  # Kaggle's 25,000 photos unpack to 0.6 GB: more than this is refused unpacked
SPLIT_FILES = ("train", "val", "test")  # the CSVs of a dataset folder, written as one set


def get_args_parser() -> argparse.ArgumentParser:
    sources = "\n".join(f"  {name}: {source.about}\n    {source.url}" for name, source in SOURCES.items())
    parser = argparse.ArgumentParser(
        description="Import photos into the tutorial's CSV dataset layout.", formatter_class=argparse.RawTextHelpFormatter,
        epilog=f"--download without a URL tries these sources in order:\n{sources}\n"
               "The environment variables PREPARE_DATA_GOOGLE_URL and PREPARE_DATA_MICROSOFT_URL replace these URLs\n"
               "(for a mirror, or for the tests). PREPARE_DATA_BAIDU_URL and PREPARE_DATA_BING_URL replace --crawl's\n"
               "search URLs in the same way ({} {}: the keyword and the first result's number).")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from", dest="from_path", metavar="PATH",
                        help="a folder (class folders, split folders or Kaggle names) or a .zip")
    # None: not asked for; "": the built-in sources; anything else: the user's URL
    source.add_argument("--download", nargs="?", const="", metavar="URL",
                        help="download a .zip of photos and import it (default: the sources below)")
    source.add_argument("--crawl", nargs="+", metavar="KEYWORD",
                        help="search the web for photos of each keyword, a class each; the downloads stay in\n"
                             "OUT_crawl/ (with sources.csv), and the next run tops each class up")
    parser.add_argument("--source", dest="source_name", choices=list(SOURCES),
                        help="download from this source only, with no fallback (implies --download)")
    parser.add_argument("--full", action="store_true", help="with --download: keep every photo, not a 275/70 sample")
    parser.add_argument("--out", default="datasets", help="dataset folder to write (default: datasets)")
    ratios = parser.add_mutually_exclusive_group()
    ratios.add_argument("--val-ratio", type=float, default=0.2, help="share of each class kept for validation (default: 0.2)")
    ratios.add_argument("--split", nargs=3, type=float, metavar=("TRAIN", "VAL", "TEST"),
                        help="train/val/test shares, e.g. 0.6 0.2 0.2 (writes test.csv too)")
    parser.add_argument("--seed", type=int, default=42, help="the same seed gives the same split (default: 42)")
    crawl = parser.add_argument_group("with --crawl")
    crawl.add_argument("--names", nargs="+", metavar="NAME", help="class folder names, one per keyword (default: the keywords)")
    crawl.add_argument("--per-class", type=int, default=100, metavar="N",
                       help="photos per class, counted after broken ones and (near-)copies are left out (default: 100)")
    crawl.add_argument("--crawl-engine", choices=("baidu", "bing"), default="baidu", help="image search engine (default: baidu)")
    crawl.add_argument("--crawl-delay", type=float, default=1.0, metavar="SECONDS",
                       help="seconds between two requests to one server (default: 1)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.source_name and (args.from_path is not None or args.download or args.crawl):
        parser.error("--source picks one of the built-in downloads. It cannot be used with --from, --crawl or a URL.")
    if args.from_path is None and args.download is None and not args.source_name and not args.crawl:
        parser.error("give --from PATH (photos you have), --download, or --crawl KEYWORD...")
    if args.crawl and (args.per_class < 1 or len(set(args.names or args.crawl)) != len(args.crawl)):
        parser.error("--crawl needs --per-class 1 or more, and as many different --names as keywords")
    return args


# --------------------------------------------------------------------------- getting the source
def unpack(archive: Path, scratch: Path) -> tuple[Path, list[tuple[str, str]]]:
    """The zip unpacked into scratch, and the members left out with their reason (encrypted, deflate64, damaged,
    a path outside the zip): one bad member never ends the import. An archive that would unpack to more than
    MAX_UNPACKED_BYTES is refused before anything is written."""
    with zipfile.ZipFile(archive) as zipped:
        members = [(member, zip_member_name(member)) for member in zipped.infolist() if not member.is_dir()]
        refused = [(f"{archive}/{name}", problem) for member, name in members if (problem := member_problem(member))]
        members = [(member, name) for member, name in members if not member_problem(member)]
        total = sum(member.file_size for member, _ in members)
        if total > MAX_UNPACKED_BYTES:
            raise SystemExit(f"--from {archive}: unpacks to {total / 1024**3:.1f} GB, more than the "
                             f"{MAX_UNPACKED_BYTES // 1024**3} GB this script unpacks. Unpack it yourself, then give "
                             "the folder to --from.")
        for member, name in tqdm(members, desc=f"unpacking {archive.name}", unit="file"):
            target = scratch / name  # name: GBK names from Windows' own zip come out right; never outside scratch
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zipped.open(member) as source, open(target, "wb") as copy:
                    shutil.copyfileobj(source, copy)
            except MEMBER_READ_ERRORS as error:  # a bad CRC found at the end: drop what was written
                target.unlink(missing_ok=True)
                refused.append((f"{archive}/{name}", read_problem(error)))
    return scratch, refused


def dataset_root(folder: Path) -> Path:
    """Step into wrapper folders (a zip's top folder, say) until something is there.

    Loose files that are not photos do not count: Microsoft's zip has a licence PDF and a readme beside PetImages/.
    """
    while True:
        entries = [p for p in folder.iterdir() if p.name not in IGNORED_NAMES and not p.name.startswith(".")
                   and (p.is_dir() or is_image_name(p))]
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


def check_class_names(photos: dict[str | None, dict[str, list[Path]]], root: Path) -> None:
    """Class names become folders of the dataset: a folder or Kaggle prefix that is not a plain name is refused."""
    for split, classes in photos.items():
        for name in classes:
            if problem := class_name_problem(name):
                where = root / (f"{split}/" if split else "") / name
                raise SystemExit(f"{where}: {problem}. Rename it, then import again.")


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


def make_splits(photos: dict[str | None, dict[str, list[Path]]], shares: dict[str, float], val_ratio: float,
                seed: int) -> dict[str, dict[str, list[Path]]]:
    """Split photos that have no split yet. Keep the split a source already has, taking val out of train if needed."""
    if None in photos:
        return split_photos(photos[None], shares, seed)
    splits = {split: classes for split, classes in photos.items() if split is not None}
    if "val" not in splits:  # e.g. train/ + test/
        splits.update(split_photos(splits["train"], {"train": 1 - val_ratio, "val": val_ratio}, seed))
    print("kept the split the source already had")
    return splits


def sample(splits: dict[str, dict[str, list[Path]]], seed: int) -> tuple[dict, list[tuple[Path, str]]]:
    """A tutorial-sized subset: 275 train / 70 val photos, split evenly over the classes.

    Photos are checked in a seeded random order until each class has its share, and a broken one is replaced
    by the next: from Microsoft's 25,000 photos that decodes a few hundred, not all of them.
    """
    wanted = {}
    for split, classes in splits.items():
        total, names = TUTORIAL_SAMPLE.get(split), sorted(classes)
        for i, name in enumerate(names):
            share = total // len(names) + (i < total % len(names)) if total else len(classes[name])
            wanted[split, name] = min(share, len(classes[name]))
    sampled: dict[str, dict[str, list[Path]]] = {split: {} for split in splits}
    excluded: list[tuple[Path, str]] = []
    first_seen = SeenPhotos()
    with tqdm(total=sum(wanted.values()), desc="checking photos", unit="photo") as progress:
        for (split, name), count in wanted.items():
            paths = sorted(splits[split][name])
            random.Random(f"{seed}-{split}-{name}").shuffle(paths)
            kept: list[Path] = []
            for path in paths:
                if len(kept) == count:
                    break
                reason = check_file(path, first_seen)
                if reason:
                    excluded.append((path, reason))
                else:
                    kept.append(path)
                    progress.update()
            sampled[split][name] = sorted(kept)
    return sampled, excluded


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
    atomic_write_text(out / "classes.txt", "\n".join(class_names) + "\n")
    remove_stale_splits(out, written=list(splits))


def remove_stale_splits(out: Path, written: list[str]) -> None:
    """The folder's CSVs are one set: a split this import has not written (an earlier import's test.csv, whose photos
    may now be in train.csv) is removed, never left to be read beside the new ones. Its photos stay."""
    for split in SPLIT_FILES:
        if split not in written and (out / f"{split}.csv").is_file():
            (out / f"{split}.csv").unlink()
            print(f"removed the {split}.csv of an earlier import: this import has no {split} split")


def write_atomically(path: Path, rows: list[tuple[str, int]]) -> None:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    atomic_write_text(path, text.getvalue(), newline="")


def write_left_out(excluded: list[tuple[str, str]], out: Path) -> None:
    """Every file left out, one per line: with Microsoft's set that is ~1,700 lines, too many for the console."""
    path = out / LEFT_OUT_FILE
    if excluded:
        path.write_text("".join(f"{name}: {reason}\n" for name, reason in excluded), encoding="utf-8")
    else:
        path.unlink(missing_ok=True)  # a list from an earlier run would mislead


def print_summary(splits: dict[str, dict[str, list[Path]]], class_names: list[str], excluded: list[tuple[str, str]],
                  out: Path) -> None:
    order = [s for s in ("train", "val", "test") if s in splits]
    width = max(len(name) for name in [*class_names, "total"]) + 2
    print("\n" + "class".ljust(width) + "".join(s.rjust(8) for s in order))
    for name in class_names:
        print(name.ljust(width) + "".join(str(len(splits[s].get(name, []))).rjust(8) for s in order))
    print("total".ljust(width) + "".join(str(sum(len(v) for v in splits[s].values())).rjust(8) for s in order))
    train_counts = [len(splits["train"].get(name, [])) for name in class_names]
    for line in data_warnings(class_names, train_counts, sum(len(v) for v in splits["val"].values())):
        print(f"warning: {line}")
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

    download = "" if args.source_name else args.download  # --source: --download from its built-in URL
    if args.crawl:  # icrawler takes most of a second to import: only a crawl loads it
        try:
            from cats_dogs.crawl import crawl_photos
        except ImportError as error:
            raise SystemExit(f"--crawl needs the package {error.name}: pip install -r requirements.txt") from None
        (source, crawled), known = crawl_photos(args.crawl, args.names, args.per_class, args.crawl_engine,
                                                args.crawl_delay, out), None
    else:
        crawled = None
        source, known = (download_photos(download, args.source_name, out / ".downloads") if download is not None
                         else (Path(args.from_path), None))
    if not source.exists():
        raise SystemExit(f"--from {source}: no such file or folder")
    if source.is_file() and not zipfile.is_zipfile(source):
        raise SystemExit(f"--from {source}: a file must be a .zip archive; give a folder otherwise")
    with tempfile.TemporaryDirectory(prefix="prepare_data_") as scratch:
        unpacked, refused = unpack(source, Path(scratch)) if source.is_file() else (source, [])
        root = dataset_root(unpacked)
        photos = crawled or find_photos(root)
        check_class_names(photos, root)
        if known:  # Google's folders are cats/dogs, Microsoft's Cat/Dog: both give the tutorial's cat/dog
            photos = {split: {known.class_names.get(name, name): paths for name, paths in classes.items()}
                      for split, classes in photos.items()}
        if download is not None and not args.full:
            splits, excluded = sample(make_splits(photos, shares, args.val_ratio, args.seed), args.seed)
        else:
            photos, excluded = clean(photos, near_duplicates=crawled is not None)
            splits = make_splits(photos, shares, args.val_ratio, args.seed)
        excluded = refused + excluded
        class_names = sorted({name for classes in splits.values() for name in classes})
        if not any(splits["train"].values()):
            raise SystemExit(f"no usable photos found in {root}")
        # A full disk, a quota, a read-only folder: one line, and the CSVs of an earlier import are left as they were.
        needed = sum(path.stat().st_size for classes in splits.values() for paths in classes.values() for path in paths)
        with exit_when_cannot_write(out, needed, "Free some space, then run the same command again."):
            out.mkdir(parents=True, exist_ok=True)
            write_dataset(splits, class_names, out)
    # The temporary folder is gone now: name a file from a zip by the zip's path and its place inside it.
    left_out = [(str(path).replace(scratch, str(source)), reason.replace(scratch, str(source))) for path, reason in excluded]
    with exit_when_cannot_write(out, then="Free some space, then run the same command again."):
        write_left_out(left_out, out)
    print_summary(splits, class_names, left_out, out)


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    main(parse_args())
