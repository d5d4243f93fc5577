"""bench.py's training measurement: the tutorial's training loop, written as it was (fp32, NCHW, one process,
transforms rebuilt for every photo), against train.py's training step at its defaults for this device. Each
runs in a process of its own, warmed up under a memory watch, then timed in alternating rounds.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import swanlab
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms

from cats_dogs.epochs import train_one_epoch
from cats_dogs.model import build_model
from cats_dogs.photo_batches import collate_readable
from cats_dogs.process import keep_freed_memory
from cats_dogs.settings import amp_type, speed_defaults
from load_datasets import DatasetLoader


class TutorialDataset(Dataset):
    """The tutorial's DatasetLoader, kept as it was: transforms built anew for every photo."""

    def __init__(self, samples: list[tuple[Path, int]], image_size: int = 256) -> None:
        self.samples, self.image_size = samples, image_size

    def preprocess_image(self, image_path: Path) -> torch.Tensor:
        image = Image.open(image_path).convert("RGB")  # the tutorial had no convert; it crashed on non-RGB files
        image_transform = transforms.Compose([
            transforms.Resize((self.image_size, self.image_size)),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])
        return image_transform(image)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image_path, label = self.samples[index]
        return self.preprocess_image(image_path), int(label)

    def __len__(self) -> int:
        return len(self.samples)


class PeakMemory:
    """Highest resident memory while the block runs, above what the process held when it began."""

    def __enter__(self) -> PeakMemory:
        self.process, self.start, self.peak, self.running = psutil.Process(), psutil.Process().memory_info().rss, 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *_) -> None:
        self.running = False
        self.thread.join()
        self.increase_mb = max(0, self.peak - self.start) / 1e6


def subset_loader(dataset: Dataset, steps: int, offset: int, batch_size: int, **options) -> DataLoader:
    """`steps` batches of the photos from `offset` on, so that every timed round sees other photos."""
    indices = [(offset + i) % len(dataset) for i in range(steps * batch_size)]
    return DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=True, **options)


def tutorial_loop(samples, device, batch_size: int, image_size: int) -> Callable[[int, int], float]:
    """The tutorial's training loop; returns run(steps, offset) -> seconds those steps took."""
    torch.manual_seed(0)
    model = build_model("resnet50", 2, "none").to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    dataset = TutorialDataset(samples, image_size)

    def run(steps: int, offset: int) -> float:
        started = time.perf_counter()
        model.train()
        for inputs, labels in subset_loader(dataset, steps, offset, batch_size):
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - started

    return run


def project_loop(csv_path: Path, device, batch_size: int, image_size: int, no_bf16: bool,
                 compile_model: bool = False) -> tuple[Callable[[int, int], float], DatasetLoader, str, str]:
    """train.py's training step at its defaults for this device (settings.speed_defaults, as train.py decides them;
    the train set stands for val too, as in the cache's memory budget).

    Returns run(steps, offset), the dataset, whether train.py would cache it, and the settings in words.
    """
    torch.manual_seed(0)
    dataset = DatasetLoader(csv_path, image_size, train=True)
    speed = speed_defaults(device, freeze_backbone=False, photo_bytes=2 * dataset.cache_bytes(),
                           amp=False if no_bf16 else None)
    amp_dtype, channels_last = amp_type(device, speed["amp"]), speed["channels_last"]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train.py: fixed image size, cuDNN picks the fastest kernels once
    model = build_model("resnet50", 2, "none").to(device, memory_format=torch.channels_last if channels_last
                                                  else torch.preserve_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))
    criterion = torch.nn.CrossEntropyLoss()
    trained = torch.compile(model) if compile_model else model  # compiled by the warm-up's first step

    def run(steps: int, offset: int) -> float:
        loader = subset_loader(dataset, steps, offset, batch_size, num_workers=speed["num_workers"],
                               collate_fn=collate_readable, pin_memory=device.type == "cuda")
        started = time.perf_counter()
        train_one_epoch(trained, loader, optimizer, criterion, device, 1, 1, 0, set(), amp_dtype=amp_dtype,
                        channels_last=channels_last)
        return time.perf_counter() - started

    settings = (f"amp {str(amp_dtype).replace('torch.', '') if amp_dtype else 'off'}, channels_last "
                f"{'on' if channels_last else 'off'}, cache {speed['cache']}, {speed['num_workers']} workers"
                f"{', torch.compile' if compile_model else ''}")
    return run, dataset, speed["cache"], settings


def serve_training_loop(connection, side: str, options: dict) -> None:
    """A child process that runs one side's training loop on request, so that each side has a process of its
    own, as in real use: the project's allocator setting (keep_freed_memory) must not speed up the
    tutorial's loop too. Sends its set-up first, then the seconds of each run(steps, offset) it is asked for."""
    swanlab.init(mode="disabled")  # train_one_epoch logs to SwanLab
    torch.set_num_threads(options.pop("threads"))
    warmup = options.pop("warmup")
    with PeakMemory() as memory:
        if side == "tutorial":
            run, settings, cache_seconds = tutorial_loop(**options), "", 0.0
        else:
            keep_freed_memory()  # as train.py does first
            run, dataset, cache_mode, settings = project_loop(**options)
            cache_started = time.perf_counter()
            if cache_mode != "off":
                dataset.cache_images(cache_mode, progress=False)
            cache_seconds = time.perf_counter() - cache_started
        run(warmup, 0)
    connection.send({"settings": settings, "mb": memory.increase_mb, "cache_s": cache_seconds})
    while (request := connection.recv()) is not None:
        connection.send(run(*request))


def training_throughput(samples, csv_path: Path, device, steps: int, warmup: int, batch_size: int, image_size: int,
                        no_bf16: bool, compile_model: bool = False, rounds: int = 4) -> dict:
    """Both loops, each in a process of its own, warmed up under a memory watch, then timed in alternating rounds.

    Alternating keeps a noisy or throttled moment of a shared machine from favouring either side.
    """
    context = multiprocessing.get_context("spawn")
    common_options = {"device": device, "batch_size": batch_size, "image_size": image_size, "warmup": warmup,
                      "threads": torch.get_num_threads()}
    sides = {"tutorial": {"samples": samples, **common_options},
             "project": {"csv_path": csv_path, "no_bf16": no_bf16, "compile_model": compile_model, **common_options}}
    connections, children, setups = {}, [], {}
    for side, options in sides.items():  # one after the other: their warm-ups must not overlap
        connections[side], child_end = context.Pipe()
        children.append(context.Process(target=serve_training_loop, args=(child_end, side, options), daemon=True))
        children[-1].start()
        child_end.close()  # the child's now: if it dies, recv() raises EOFError instead of waiting forever
        setups[side] = connections[side].recv()
    seconds = {"tutorial": 0.0, "project": 0.0}
    per_round = max(1, steps // rounds)
    for round_index in range(rounds):
        offset = (warmup + round_index * per_round) * batch_size
        for side, connection in connections.items():
            connection.send((per_round, offset))
            seconds[side] += connection.recv()
    for connection in connections.values():
        connection.send(None)
    for child in children:
        child.join()
    images = rounds * per_round * batch_size
    return {"tutorial": images / seconds["tutorial"], "project": images / seconds["project"],
            "settings": setups["project"]["settings"], "tutorial_mb": setups["tutorial"]["mb"],
            "project_mb": setups["project"]["mb"], "cache_s": setups["project"]["cache_s"], "steps": rounds * per_round}
