"""Measure this project against the tutorial's own code, side by side, on the same photos.

    python bench.py --data-dir ../shared/data/cats_dogs_tutorial
    python bench.py --data-dir datasets --no-bf16          # as on a CPU without native bfloat16
    python bench.py --data-dir datasets --accuracy-epochs 3  # also: does the speed cost accuracy?

Training: (a) a loop written exactly like the tutorial (fp32, NCHW, one process, transforms
rebuilt for every photo) and (b) this project's training step at its defaults for this device,
the same number of steps after a warm-up. Then --freeze-backbone's whole 20-epoch run, and
single-photo inference: the tutorial's per-call path vs the web page's. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
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

import bench_engines
import common
import train
from checkpoint import make_checkpoint, read_checkpoint
from common import build_model, keep_freed_memory, make_console_safe, pick_device
from inference import compile_by_default, make_batch_predict
from load_datasets import DatasetLoader, collate_readable, read_csv_rows
from recipe import resolve_speed_settings


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
    """train.py's training step at its defaults for this device.

    Returns run(steps, offset), the dataset, whether train.py would cache it, and the settings in words.
    """
    args = train.get_args_parser().parse_args(["--batch-size", str(batch_size), "--image-size", str(image_size)]
                                              + (["--no-amp"] if no_bf16 else []) + (["--compile"] if compile_model else []))
    torch.manual_seed(0)
    dataset = DatasetLoader(csv_path, args.image_size, train=True)
    amp_dtype = resolve_speed_settings(args, device, dataset, dataset)
    model = build_model("resnet50", 2, "none").to(device, memory_format=torch.channels_last if args.channels_last
                                                  else torch.preserve_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))
    criterion = torch.nn.CrossEntropyLoss()
    trained = torch.compile(model) if args.compile else model  # compiled by the warm-up's first step

    def run(steps: int, offset: int) -> float:
        loader = subset_loader(dataset, steps, offset, batch_size, num_workers=args.num_workers,
                               collate_fn=collate_readable, pin_memory=device.type == "cuda")
        started = time.perf_counter()
        train.train_one_epoch(trained, loader, optimizer, criterion, device, 1, 1, 0, set(), amp_dtype=amp_dtype,
                              channels_last=args.channels_last)
        return time.perf_counter() - started

    settings = (f"amp {str(amp_dtype).replace('torch.', '') if amp_dtype else 'off'}, channels_last "
                f"{'on' if args.channels_last else 'off'}, cache {args.cache}, {args.num_workers} workers"
                f"{', torch.compile' if args.compile else ''}")
    return run, dataset, args.cache, settings


def serve_training_loop(connection, side: str, options: dict) -> None:
    """A child process that runs one side's training loop on request, so that each side has a process of its
    own, as in real use: the project's allocator setting (common.keep_freed_memory) must not speed up the
    tutorial's loop too. Sends its set-up first, then the seconds of each run(steps, offset) it is asked for."""
    swanlab.init(mode="disabled")  # train_one_epoch logs to SwanLab
    torch.set_num_threads(options.pop("threads"))
    warmup = options.pop("warmup")
    with PeakMemory() as memory:
        if side == "tutorial":
            run, settings, cache_seconds = tutorial_loop(**options), "", 0.0
        else:
            common.keep_freed_memory()  # as train.py does first
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


def freeze_backbone_run(data_dir: Path, epochs: int, no_bf16: bool) -> float:
    """Wall time of a whole `train.py --freeze-backbone` run, start-up included."""
    with tempfile.TemporaryDirectory() as output:
        command = [sys.executable, str(Path(__file__).with_name("train.py")), "--data-dir", str(data_dir.resolve()),
                   "--weights", "none", "--freeze-backbone", "--epochs", str(epochs), "--swanlab-mode", "disabled",
                   "--output-dir", output]
        started = time.perf_counter()
        run = subprocess.run(command + (["--no-amp"] if no_bf16 else []), capture_output=True, text=True, cwd=output)
        if run.returncode != 0:
            raise SystemExit(f"the --freeze-backbone run failed:\n{run.stderr[-2000:]}")
        return time.perf_counter() - started


def inference_latencies(photos: list[Path], device, no_bf16: bool, compile_model: bool) -> tuple[list[float], list[float]]:
    """Milliseconds per photo, path to probabilities: the tutorial's app function vs this project's.

    The app compiles its model in the background at start; here the compile is waited for first.
    """
    torch.manual_seed(0)
    model = build_model("resnet50", 2, "none").to(device).eval()
    meta = make_checkpoint(model, arch="resnet50", class_names=["cat", "dog"], image_size=256, epoch=0, metrics={})

    tutorial_predict = bench_engines.make_tutorial_predict(model, device, ["cat", "dog"])

    def timed(function, argument) -> float:
        started = time.perf_counter()
        function(argument)
        return (time.perf_counter() - started) * 1000

    batch_predict = make_batch_predict(model, meta, device, None if no_bf16 else common.autocast_dtype(device),
                                       compile_model, wait_for_compile=True)

    def predict(path: str) -> dict[str, float]:  # the page's /predict: the photo opened as app.py opens uploads
        return dict(zip(meta["class_names"], batch_predict([common.open_image(path)])[0].tolist(), strict=True))
    tutorial, project = [], []
    for photo in photos[:3] + photos:  # alternating, so that a busy or throttled moment hits both alike
        tutorial.append(timed(lambda p: tutorial_predict(Image.open(p).convert("RGB")), photo))
        project.append(timed(predict, str(photo)))
    return tutorial[3:], project[3:]  # the first three calls of each warm up caches and kernels


def accuracy_check(data_dir: Path, epochs: int) -> tuple[float, float]:
    """The best checkpoint's val accuracy from scratch with the fast defaults and with every speed lever off."""
    results = []
    for extra in ([], ["--no-amp", "--no-channels-last", "--no-cache"]):
        with tempfile.TemporaryDirectory() as output:
            command = [sys.executable, str(Path(__file__).with_name("train.py")), "--data-dir", str(data_dir.resolve()),
                       "--weights", "none", "--epochs", str(epochs), "--swanlab-mode", "disabled", "--output-dir", output]
            subprocess.run(command + extra, check=True, capture_output=True, cwd=output)
            results.append(read_checkpoint(Path(output) / "latest_checkpoint.pth")["best_val_acc"])
    return results[0], results[1]


def loader_rate(dataset: Dataset, device: torch.device, batch_size: int, num_workers: int, photos: int,
                collate=None) -> float:
    """Images per second delivered to the device as the training step takes them, with no model: the loader alone."""
    repeated = Subset(dataset, [i % len(dataset) for i in range(photos)])
    loader = DataLoader(repeated, batch_size=batch_size, shuffle=True, num_workers=num_workers, collate_fn=collate,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    started, delivered = time.perf_counter(), 0
    for images, *_ in loader:
        # The training step's format: this project's uint8 batches are normalized there, on the device.
        images = images.to(device, non_blocking=True)
        delivered += images.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return delivered / (time.perf_counter() - started)


def loader_throughput(data_dir: Path, device: torch.device, batch_size: int, image_size: int,
                      photos: int) -> list[tuple[str, float]]:
    """The tutorial's loader (decode, resize, normalize every photo in the main process, every epoch) against
    this project's from each cache, all augmented as training does, in one run."""
    samples = read_csv_rows(data_dir / "train.csv")
    tutorial = TutorialDataset(samples, image_size)
    rates = [("tutorial (decoded every epoch, 0 workers)",
              loader_rate(tutorial, device, batch_size, 0, max(batch_size * 2, photos // 20)))]
    cores = os.cpu_count() or 1
    keep_freed_memory()  # as train.py does before its loaders start (after the tutorial's, which has no such setting)
    for mode, workers in (("off", max(1, cores - 1)), ("off", cores), ("memory", 0), ("disk", 0), ("disk", cores)):
        dataset = DatasetLoader(data_dir / "train.csv", image_size, train=True)
        if mode != "off":
            dataset.cache_images(mode, progress=False)
        count = photos if mode != "off" else max(batch_size * 2, photos // 10)
        rate = loader_rate(dataset, device, batch_size, workers, count, collate_readable)
        rates.append((f"{mode} ({workers} workers)", rate))
    return rates


def cpu_description() -> str:
    """The CPU's model and the instruction sets that decide inference speed (Linux reports them; elsewhere the
    platform's name alone). ONEDNN_MAX_CPU_ISA=AVX2 makes PyTorch compute as on a laptop with AVX2 only."""
    try:
        info = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    named = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI", "avx512_bf16": "AVX512-BF16",
             "amx_tile": "AMX", "avx_vnni": "AVX-VNNI"}
    found = [name for flag, name in named.items() if flag in flags]
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{model or platform.machine()}: {', '.join(found) or 'none of AVX2/AVX-512/AMX'}" + (
        f"; ONEDNN_MAX_CPU_ISA={capped}" if capped else "")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main(args: argparse.Namespace) -> None:
    swanlab.init(mode="disabled")
    data_dir = Path(args.data_dir)
    device = pick_device(args.device)
    samples = read_csv_rows(data_dir / "train.csv")
    photos = [path for path, _ in read_csv_rows(data_dir / "val.csv")][: args.photos]
    print(f"## bench.py on {device} ({cpu_description()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"native bf16: {common.has_native_bf16_cpu()}{', bf16 forced off' if args.no_bf16 else ''})\n")

    if args.engines:
        bench_engines.report(data_dir, photos, device, args.no_bf16, compile_by_default(device, args.compile),
                             args.predict_photos, args.checkpoint, args.image_size)
        return

    if args.loader:
        print(f"Input pipeline alone (no model): batches of {args.batch_size} at {args.image_size}×{args.image_size}, "
              f"augmented (random resized crop, flip), moved to {device} as the training step takes them (this project: uint8, "
              "normalized on the device by the step; the tutorial: normalized floats):\n")
        rates = loader_throughput(data_dir, device, args.batch_size, args.image_size, args.loader_photos)
        for name, rate in rates:
            print(f"loader: {name} {rate:.0f} images/s ({os.cpu_count()} cores, image size {args.image_size}, "
                  f"batch {args.batch_size})")
        best = max(rate for name, rate in rates if name.startswith("disk"))
        print(f"\ndisk cache against the tutorial's loader: **{best / rates[0][1]:.1f}×**\n")
        return

    measured = training_throughput(samples, data_dir / "train.csv", device, args.steps, args.warmup, args.batch_size,
                                   args.image_size, args.no_bf16, args.train_compile)
    tutorial_ips, ours_ips = measured["tutorial"], measured["project"]
    print(f"Training, batch {args.batch_size}, {args.image_size}×{args.image_size}, {measured['steps']} steps each "
          f"after {args.warmup} warm-up, in alternating rounds:\n")
    print("| loop | images/s | peak memory increase |\n|---|---|---|")
    print(f"| tutorial (fp32, NCHW, transforms per photo, 1 process) | {tutorial_ips:.2f} | {measured['tutorial_mb']:.0f} MB |")
    print(f"| this project ({measured['settings']}) | {ours_ips:.2f} | {measured['project_mb']:.0f} MB |")
    print(f"\nspeed-up: **{ours_ips / tutorial_ips:.2f}×** (one-time decoding into the cache, included in the memory: "
          f"{measured['cache_s']:.1f} s for {len(samples)} photos)\n")

    if args.freeze_epochs:
        frozen = freeze_backbone_run(data_dir, args.freeze_epochs, args.no_bf16)
        tutorial_run = args.freeze_epochs * len(samples) / tutorial_ips
        print(f"{args.freeze_epochs} epochs on {len(samples)} photos: tutorial loop ≈ {tutorial_run:.0f} s "
              f"(from its images/s), `train.py --freeze-backbone` {frozen:.0f} s (measured, start-up included): "
              f"**{tutorial_run / frozen:.1f}× less**\n")

    compile_model = compile_by_default(device, args.compile)
    tutorial_ms, project_ms = inference_latencies(photos, device, args.no_bf16, compile_model)
    print(f"Single-photo inference over {len(photos)} val photos (path in, probabilities out), "
          f"the app's model {'compiled' if compile_model else 'not compiled'}:\n")
    print("| path | p50 | p90 |\n|---|---|---|")
    print(f"| tutorial app function | {statistics.median(tutorial_ms):.1f} ms | {percentile(tutorial_ms, 90):.1f} ms |")
    print(f"| this project's app | {statistics.median(project_ms):.1f} ms | {percentile(project_ms, 90):.1f} ms |")
    print(f"\np50 ratio: **{statistics.median(project_ms) / statistics.median(tutorial_ms):.2f}×**\n")

    if args.accuracy_epochs:
        fast, plain = accuracy_check(data_dir, args.accuracy_epochs)
        print(f"Accuracy, {args.accuracy_epochs} epochs from scratch, seed 42: fast defaults {fast:.2f}% "
              f"vs every lever off (fp32, NCHW, no cache) {plain:.2f}% ({fast - plain:+.2f} points)")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmark this project against the tutorial's loop and app.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default="datasets", help="a dataset with train.csv and val.csv")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--photos", type=int, default=40, help="photos for the inference latencies (at least 30)")
    parser.add_argument("--freeze-epochs", type=int, default=20, help="epochs of the --freeze-backbone run (0 = skip)")
    parser.add_argument("--accuracy-epochs", type=int, default=0, help="also compare accuracy after N epochs (0 = skip)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="the app's torch.compile'd model (default as in app.py: on CPUs)")
    parser.add_argument("--no-bf16", action="store_true", help="bf16 off, as on a CPU without native bf16")
    parser.add_argument("--train-compile", action="store_true", help="train.py --compile in the training measurement")
    parser.add_argument("--loader", action="store_true",
                        help="only the input pipeline, no model: images/s per cache mode against the tutorial's loader "
                             "(use --batch-size 64)")
    parser.add_argument("--engines", action="store_true",
                        help="only inference: the page's p50/p90 per engine (torch, onnxruntime, OpenVINO fp32 and INT8) "
                             "and predict.py's photos/s on a folder, against the tutorial's function per photo")
    parser.add_argument("--predict-photos", type=int, default=500, help="photos in the folder for --engines' predict.py")
    parser.add_argument("--checkpoint", default=None,
                        help="for --engines: a trained checkpoint (default: an untrained ResNet50 at 256²; speed does "
                             "not depend on the weights, INT8's accuracy check does)")
    parser.add_argument("--loader-photos", type=int, default=4000, help="photos delivered per --loader measurement")
    return parser


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    main(get_args_parser().parse_args())
