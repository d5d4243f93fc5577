"""Classify photos from the command line: files, or whole folders walked recursively.

    python predict.py my_cat.jpg
    python predict.py holiday_photos/ --csv predictions.csv --sort-into sorted/
    python predict.py photos/ --top-k 2 --checkpoint checkpoint/best_checkpoint.pth

--sort-into copies each photo into OUT/<class>/; the originals are never moved or deleted.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from cats_dogs.checkpoint import find_checkpoint, preprocessing, read_checkpoint_or_exit
from cats_dogs.device import autocast_dtype, pick_device
from cats_dogs.engine_build import resume_background_builds, wait_for_background_build
from cats_dogs.engines import ENGINE_CHOICES, ENGINE_HELP, Engine, batch_size_for, load_model_or_engine
from cats_dogs.images import IMAGE_EXTENSIONS
from cats_dogs.inference import BATCH_SIZE_HELP, class_probabilities, prepare_for_inference
from cats_dogs.photo_batches import ImageList, collate_readable
from cats_dogs.preprocessing import to_device
from cats_dogs.process import exit_without_teardown, make_console_safe


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Predict the class of photos with a trained checkpoint.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--checkpoint", default=None, help="default: checkpoint/best_checkpoint.pth, else latest")
    parser.add_argument("--csv", default=None, help="also write `path,class,probability` rows to this file")
    parser.add_argument("--sort-into", default=None, metavar="OUT_DIR", help="copy each photo into OUT_DIR/<class>/")
    parser.add_argument("--top-k", type=int, default=1, help="how many classes to print per photo")
    parser.add_argument("--batch-size", type=int, default=None, help=BATCH_SIZE_HELP)
    parser.add_argument("--num-workers", type=int, default=None,
                        help="processes decoding photos while the model computes (default: cores - 1, at most 4)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation: average with the flipped photo")
    parser.add_argument("--engine", choices=ENGINE_CHOICES, default="auto", help=f"{ENGINE_HELP}; cached beside the checkpoint")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                        help="bf16 where the device computes it faster than fp32 (--no-amp: fp32 everywhere)")
    return parser


def collect_images(arguments: list[str]) -> list[Path]:
    """The files named, and every image file under the folders named, in a stable order."""
    found: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            found.append(path)
        else:
            raise SystemExit(f"{path}: no such file or folder")
    return list(dict.fromkeys(found))


def start_decoding(photos: ImageList, batch_size: int, num_workers: int, device: torch.device) -> Iterator[tuple]:
    """The photos' batches (photo_batches.collate_readable's). With worker processes (the default on 2 cores or
    more) their decoding begins at once, while the engine or the model loads (a third of a second on 2 cores)."""
    loader = DataLoader(photos, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_readable,
                        pin_memory=device.type == "cuda")
    return iter(loader)


@torch.inference_mode()
def predict_batches(model: torch.nn.Module | None, photos: ImageList, batches: Iterator[tuple], device: torch.device,
                    tta: bool = False, engine: Engine | None = None,
                    amp: bool = True) -> Iterator[tuple[list[tuple[Path, list[float]]], list[str]]]:
    """Batch by batch, as soon as each is computed: (path, class probabilities) of its readable photos, and
    why the others could not be read. `engine` (engines.load_engine) answers instead of the PyTorch model when given."""
    amp_dtype = autocast_dtype(device) if amp else None
    # BatchNorm folded, channels-last, bf16 where native; not needed when another engine answers
    fast_model = None if engine else prepare_for_inference(model, device, amp_dtype)
    for images, _, indices, problems in batches:
        if len(indices) == 0:
            yield [], problems
            continue
        images = to_device(images, device, device.type in ("cpu", "cuda"), photos.mean, photos.std)
        answer = engine or (lambda batch: fast_model(batch.to(amp_dtype or torch.float32)))
        probabilities = class_probabilities(answer, images, tta).cpu().tolist()
        yield [(photos.samples[i][0], p) for i, p in zip(indices.tolist(), probabilities, strict=True)], problems


def copy_into(photo: Path, folder: Path) -> Path:
    """Copy without overwriting: a second `IMG_0001.jpg` becomes `IMG_0001_1.jpg`."""
    folder.mkdir(parents=True, exist_ok=True)
    target, n = folder / photo.name, 1
    while target.exists():
        target = folder / f"{photo.stem}_{n}{photo.suffix}"
        n += 1
    shutil.copy2(photo, target)
    return target


def main(args: argparse.Namespace) -> None:
    paths = collect_images(args.images)
    if not paths:
        raise SystemExit(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {' '.join(args.images)}")
    checkpoint_path = find_checkpoint(args.checkpoint)
    device = pick_device(args.device)
    wait_for_background_build(args.engine, checkpoint_path, device, len(paths))  # train.py's, when nearly done
    checkpoint = read_checkpoint_or_exit(checkpoint_path)
    photos = ImageList([(path, -1) for path in paths], **preprocessing(checkpoint))
    workers = args.num_workers if args.num_workers is not None else min(4, max(0, (os.cpu_count() or 1) - 1))
    batch_size = args.batch_size or batch_size_for(args.engine, checkpoint, checkpoint_path, device, len(paths))
    batches = start_decoding(photos, batch_size, workers, device)
    # auto builds an engine only for a job big enough to repay the build; a cached one answers whatever the size,
    # without the PyTorch model (None then)
    model, meta, engine, engine_line = load_model_or_engine(args.engine, checkpoint_path, device,
                                                            autocast_dtype(device) if args.amp else None, len(paths),
                                                            checkpoint)
    class_names = meta["class_names"]
    print(engine_line, file=sys.stderr, flush=True)  # stdout holds only the answers, for pipes

    problems, rows = [f"{path}: empty file" for path in photos.empty_files], []
    csv_file = open(args.csv, "w", newline="", encoding="utf-8") if args.csv else None  # noqa: SIM115
    writer = csv.writer(csv_file) if csv_file else None
    if writer:
        writer.writerow(["path", "class", "probability"])
    progress = tqdm(total=len(paths), unit="photo", desc="predicting", dynamic_ncols=True, disable=len(paths) < 100)
    try:
        for results, batch_problems in predict_batches(model, photos, batches, device, args.tta, engine, args.amp):
            problems += batch_problems
            for path, probabilities in results:
                ranked = sorted(enumerate(probabilities), key=lambda item: item[1], reverse=True)
                rows.append((path, class_names[ranked[0][0]], ranked[0][1]))
                shown = ", ".join(f"{class_names[i]} {p:.1%}" for i, p in ranked[: args.top_k])
                progress.write(f"{path}\t{shown}")
                if writer:
                    writer.writerow([str(path), rows[-1][1], f"{rows[-1][2]:.6f}"])
            if csv_file:
                csv_file.flush()  # a kill or Ctrl+C keeps every row written so far
            progress.update(len(results) + len(batch_problems))
    finally:
        progress.close()
        if csv_file:
            csv_file.close()
    if args.csv:
        print(f"wrote {len(rows)} rows to {args.csv}")
    if args.sort_into:
        for path, name, _ in rows:
            copy_into(path, Path(args.sort_into) / name)
        counts = {name: sum(1 for _, n, _ in rows if n == name) for name in class_names}
        print(f"copied into {args.sort_into}/: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    if problems:
        print(f"could not read {len(problems)} file(s):")
        for problem in problems:
            print(f"  {problem}")


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    try:
        main(get_args_parser().parse_args())
    except BrokenPipeError:  # the reader has gone away (`predict.py photos/ | head`): nothing more to say
        pass
    resume_background_builds()  # one that waited for this command (exit_without_teardown runs no atexit)
    exit_without_teardown()
