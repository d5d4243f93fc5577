"""What exact resume costs (docs/training.md, "Exact resume"):

1. a training batch from the dataset (ImageList.__getitems__, photos cached in memory, light augmentation): each
   photo's random choices drawn from Python's generator (before) or from its own seed (after, loaders.EpochSampler's
   (index, seed) pairs), in interleaved rounds;
2. one latest_checkpoint.pth of a ResNet50 with Adam's state (what --save-every writes: temporary file, fsync,
   rename), against --save-every's default 10 minutes.

    python bench/bench_resume.py --data-dir /work/shared/data/cats_dogs_tutorial
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cats_dogs.augmentation import draw_augmentation, photo_seed  # noqa: E402
from cats_dogs.checkpoint import make_checkpoint, save_checkpoint  # noqa: E402
from cats_dogs.model import build_model  # noqa: E402
from cats_dogs.recipe import make_optimizer  # noqa: E402
from load_datasets import DatasetLoader  # noqa: E402


def load_average() -> str:
    return f"load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "load unknown"


def bench_batches(data_dir: Path, image_size: int, batch_size: int, rounds: int, cache_folder: Path) -> None:
    photos = DatasetLoader(data_dir / "train.csv", image_size, train=True, augment="light")
    photos.cache_folder = lambda: (cache_folder, "train")  # not into the data folder, which may be shared
    photos.cache_images("memory", progress=False)
    batches = [list(range(start, min(start + batch_size, len(photos)))) for start in range(0, len(photos), batch_size)]
    times = {"Python's generator (before)": [], "each photo's seed (after)": []}
    for round_ in range(rounds):
        for name in times:
            started = time.perf_counter()
            for batch in batches:
                photos.__getitems__(batch if "before" in name else [(i, photo_seed(42, round_, i)) for i in batch])
            times[name].append((time.perf_counter() - started) / len(photos))
    draws = 20000  # the part that changed, alone: drawing one photo's crop and flip
    shared = min(timeit.repeat(lambda: draw_augmentation(image_size, image_size), number=draws, repeat=5)) / draws
    own = min(timeit.repeat(lambda: draw_augmentation(image_size, image_size, photo_seed(42, 3, 123)), number=draws,
                            repeat=5)) / draws
    print(f"one photo's random choices: {shared * 1e6:.1f} µs from Python's generator, {own * 1e6:.1f} µs from its own "
          f"seed (a generator seeded for it) ({load_average()})")
    for name, per_photo in times.items():
        print(f"batch of {batch_size} at {image_size}², {len(photos)} photos cached in memory, {name}: "
              f"{statistics.median(per_photo) * 1e6:.1f} µs a photo (median of {rounds} rounds, {load_average()})")


def bench_save(folder: Path, repeats: int) -> None:
    model = build_model("resnet50", 2, weights="none")
    optimizer = make_optimizer("adam", 1e-4, 0.0, model.parameters(), torch.device("cpu"))
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()  # Adam's two moments exist: the checkpoint is as big as a resumable one
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        checkpoint = make_checkpoint(model, arch="resnet50", class_names=["cat", "dog"], image_size=256, epoch=1,
                                     metrics={}, optimizer_state=optimizer.state_dict(), scheduler_state=None)
        save_checkpoint(checkpoint, folder / "latest_checkpoint.pth")
        times.append(time.perf_counter() - started)
    size_mb = (folder / "latest_checkpoint.pth").stat().st_size / 1e6
    seconds = statistics.median(times)
    print(f"one ResNet50 latest_checkpoint.pth ({size_mb:.0f} MB, fsync'd): {seconds:.2f} s (median of {repeats}, "
          f"{', '.join(f'{t:.2f}' for t in times)}), {100 * seconds / 600:.2f}% of --save-every's 10 minutes "
          f"({load_average()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("datasets"))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--save-repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as folder:  # on the disk checkpoints go to, not a RAM tmpfs
        bench_batches(args.data_dir, args.image_size, args.batch_size, args.rounds, Path(folder))
        bench_save(Path(folder), args.save_repeats)


if __name__ == "__main__":
    main()
