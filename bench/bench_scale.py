"""The full Kaggle size on this machine: 25,000 training photos and 12,500 to predict, generated, then timed.

    python bench_scale.py                        # 25,000 + 12,500 photos in a temporary folder, deleted at the end
    python bench_scale.py --train 2000 --test 500   # a quick look

Generates Kaggle-style photos (cat.N.jpg / dog.N.jpg, sizes around 500×375, a few broken files), then
times each step a user would run on them and reports the peak resident memory of each, children
included: prepare_data.py, the disk cache build (against one process decoding, the tutorial's way and
this project's), one epoch of the training loader from the disk cache, train.py's first minute (the
memory of a training run), evaluate.py on 2,000 photos and predict.py --csv on the 12,500. Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python bench/bench_scale.py`: the package is one folder up

import psutil  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from cats_dogs.checkpoint import make_checkpoint, save_checkpoint  # noqa: E402
from cats_dogs.images import open_image  # noqa: E402
from cats_dogs.model import build_model  # noqa: E402
from cats_dogs.photo_batches import collate_readable  # noqa: E402
from cats_dogs.photo_cache import build_cache, writable_folder  # noqa: E402
from cats_dogs.preprocessing import resize_photo  # noqa: E402
from cats_dogs.process import make_console_safe  # noqa: E402
from load_datasets import DatasetLoader  # noqa: E402


def make_photo(task: tuple[Path, int, int]) -> None:
    """A smooth, JPEG-like photo (gradients and shapes, not noise), reddish for cats and bluish for dogs."""
    path, label, seed = task
    rng = random.Random(seed)
    width, height = rng.randint(320, 500), rng.randint(240, 500)
    base = (200, 90, 60) if label == 0 else (60, 100, 200)
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    image = Image.blend(image, Image.new("RGB", (width, height), base), 0.6)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randint(0, width), rng.randint(0, height)
        draw.ellipse((x, y, x + rng.randint(20, 120), y + rng.randint(20, 120)),
                     fill=tuple(rng.randint(0, 255) for _ in range(3)))
    image.save(path, quality=85)


def generate(folder: Path, train: int, test: int) -> tuple[Path, Path]:
    """Kaggle's layout: train/ with cat.N.jpg and dog.N.jpg (a few of them broken), test1/ with N.jpg."""
    train_dir, test_dir = folder / "train", folder / "test1"
    train_dir.mkdir(parents=True)
    test_dir.mkdir()
    tasks = [(train_dir / f"{('cat', 'dog')[i % 2]}.{i // 2}.jpg", i % 2, i) for i in range(train)]
    tasks += [(test_dir / f"{i + 1}.jpg", i % 2, train + i) for i in range(test)]
    with multiprocessing.get_context().Pool() as pool:
        pool.map(make_photo, tasks, chunksize=64)
    for i, path in enumerate(sorted(train_dir.glob("cat.1[0-9].jpg"))[:10]):  # broken files, as Kaggle has
        path.write_bytes(path.read_bytes()[:300] if i % 2 else b"")
    return train_dir, test_dir


def run_measured(command: list[str], cwd: Path, limit: float | None = None) -> tuple[float, float, str]:
    """Run a command; its wall time, the peak resident memory of it and its children (MB), and its output.
    With `limit`, it is stopped after that many seconds (for a measure of steady-state memory)."""
    started = time.perf_counter()
    log = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
    process = psutil.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    peak = 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        if limit is not None and time.perf_counter() - started > limit:
            for child in process.children(recursive=True):
                child.kill()
            process.kill()
            process.wait()
            break
        time.sleep(0.1)
    log.seek(0)
    output = log.read()
    if limit is None and process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return time.perf_counter() - started, peak / 1e6, output


def script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / name), *args]


def decode_rate(paths: list[Path], image_size: int, count: int = 400, tutorial: bool = False) -> float:
    """Photos per second decoded and resized by one process: this project's way (images.open_image and
    resize_photo), or the tutorial's (PIL open, convert, PIL's bilinear Resize, as torchvision's Resize does it)."""
    started = time.perf_counter()
    for path in paths[:count]:
        try:
            if tutorial:
                with Image.open(path) as image:
                    image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
            else:
                resize_photo(open_image(path), image_size)
        except OSError:
            pass
    return min(count, len(paths)) / (time.perf_counter() - started)


def loader_epoch(dataset: DatasetLoader, batch_size: int, workers: int) -> float:
    """Images per second over one whole augmented epoch from the disk cache, uint8 batches as training takes them."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         collate_fn=collate_readable)
    started, seen = time.perf_counter(), 0
    for images, *_ in loader:
        seen += images.shape[0]
    return seen / (time.perf_counter() - started)


def time_cache_build(data: Path, image_size: int) -> tuple[tuple, list[DatasetLoader]]:
    """The disk cache of train and val built with a process per core, against one process's decode rate."""
    datasets = [DatasetLoader(data / f"{split}.csv", image_size, train=split == "train") for split in ("train", "val")]
    paths = [path for dataset in datasets for path, _ in dataset.samples]
    tutorial, single = decode_rate(paths, image_size, tutorial=True), decode_rate(paths, image_size)
    process = psutil.Process()
    before, started = process.memory_info().rss, time.perf_counter()
    for dataset in datasets:
        folder, name = dataset.cache_folder()
        build_cache([path for path, _ in dataset.samples], image_size, writable_folder(folder), name)
    seconds = time.perf_counter() - started
    row = (f"disk cache build, {len(paths)} photos at {image_size}² ({os.cpu_count()} processes)", seconds,
           f"{len(paths) / seconds:.0f} photos/s: {len(paths) / seconds / tutorial:.2f}× one process decoding the "
           f"tutorial's way ({tutorial:.0f} photos/s), {len(paths) / seconds / single:.2f}× one process decoding this "
           f"project's way ({single:.0f} photos/s)",
           (process.memory_info().rss - before) / 1e6)
    return row, datasets


def time_training_memory(folder: Path, data: Path, photos: int, seconds: float) -> list[tuple]:
    """train.py's peak memory in its first `seconds` on every photo, and on 200 photos (the model's own share)."""
    flags = ["--weights", "none", "--epochs", "1", "--swanlab-mode", "disabled", "--data-dir"]
    _, peak, output = run_measured(script("train.py", *flags, "ds"), folder, limit=seconds)
    speed = next((line for line in output.splitlines() if line.startswith("speed:")), "speed: ?")
    small = data / "small"
    small.mkdir()
    val_rows = (data / "val.csv").read_text(encoding="utf-8").splitlines()
    for split in ("train", "val"):
        (small / f"{split}.csv").write_text("".join(f"../{row}\n" for row in val_rows[:200]), encoding="utf-8")
    _, small_peak, _ = run_measured(script("train.py", *flags, "ds/small"), folder, limit=seconds)
    return [(f"`train.py` on {photos} photos, first {seconds:.0f} s ({speed})", seconds, "", peak),
            (f"`train.py` on 200 photos, first {seconds:.0f} s (the model's own memory)", seconds, "", small_peak)]


def time_inference(folder: Path, data: Path, test_dir: Path, args: argparse.Namespace) -> list[tuple]:
    """evaluate.py on --evaluate val photos and predict.py --csv on the test folder, with an untrained ResNet50."""
    checkpoint = folder / "model.pth"
    save_checkpoint(make_checkpoint(build_model("resnet50", 2), arch="resnet50", class_names=["cat", "dog"],
                                    image_size=args.image_size, epoch=0, metrics={}), checkpoint)
    val_rows = (data / "val.csv").read_text(encoding="utf-8").splitlines()
    (data / "eval.csv").write_text("\n".join(val_rows[:args.evaluate]) + "\n", encoding="utf-8")
    seconds, peak, _ = run_measured(script("evaluate.py", "--checkpoint", str(checkpoint), "--csv", "ds/eval.csv",
                                           "--cache", "off"), folder)
    rows = [(f"`evaluate.py` on {args.evaluate} photos", seconds, f"{args.evaluate / seconds:.1f} photos/s", peak)]
    seconds, peak, _ = run_measured(script("predict.py", str(test_dir), "--checkpoint", str(checkpoint), "--csv",
                                           "predictions.csv", "--batch-size", "32"), folder)
    return rows + [(f"`predict.py --csv` on {args.test} photos", seconds, f"{args.test / seconds:.1f} photos/s", peak)]


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.tmp))
    try:
        started = time.perf_counter()
        train_dir, test_dir = generate(folder, args.train, args.test)
        print(f"generated {args.train} + {args.test} photos in {time.perf_counter() - started:.0f} s", flush=True)
        seconds, peak, _ = run_measured(script("prepare_data.py", "--from", str(train_dir), "--out", "ds"), folder)
        rows = [(f"`prepare_data.py --from` on {args.train} photos", seconds, f"{args.train / seconds:.0f} photos/s", peak)]
        data = folder / "ds"
        cache_row, (train_set, _) = time_cache_build(data, args.image_size)
        train_set.cache_images("disk", progress=False)
        before = psutil.Process().memory_info().rss
        rate = loader_epoch(train_set, 64, args.workers)
        rows += [cache_row, (f"one loader epoch from the disk cache ({len(train_set)} photos, batch 64, augmented, "
                             f"{args.workers} workers)", len(train_set) / rate, f"{rate:.0f} images/s",
                             (psutil.Process().memory_info().rss - before) / 1e6)]
        rows += time_training_memory(folder, data, len(train_set), args.train_seconds)
        rows += time_inference(folder, data, test_dir, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n*bench_scale.py on {os.cpu_count()} cores, torch {torch.__version__}*\n")
    print("| step | wall time | rate | peak resident memory |\n|---|---|---|---|")
    for name, seconds, rate, peak in rows:
        print(f"| {name} | {seconds:.0f} s | {rate} | {peak:.0f} MB |")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Time every step on a generated Kaggle-sized dataset.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--train", type=int, default=25_000, help="labelled photos (Kaggle's train/)")
    parser.add_argument("--test", type=int, default=12_500, help="unlabelled photos to predict (Kaggle's test1/)")
    parser.add_argument("--evaluate", type=int, default=2000, help="photos for evaluate.py")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="loader workers for the epoch timing")
    parser.add_argument("--train-seconds", type=float, default=60, help="how long train.py runs for its memory")
    parser.add_argument("--tmp", default=None, help="where the photos are generated (default: the system's temp folder)")
    return parser


if __name__ == "__main__":
    make_console_safe()
    main(get_args_parser().parse_args())
