"""Measure this project against the tutorial's own code, side by side, on the same photos.

    python bench.py --data-dir ../shared/data/cats_dogs_tutorial
    python bench.py --data-dir datasets --no-bf16          # as on a CPU without native bfloat16
    python bench.py --data-dir datasets --accuracy-epochs 3  # also: does the speed cost accuracy?

Training: (a) a loop written exactly like the tutorial (fp32, NCHW, one process, transforms
rebuilt for every photo) and (b) this project's training step at its defaults for this device,
the same number of steps after a warm-up (bench_training.py). Then --freeze-backbone's whole
20-epoch run, and single-photo inference: the tutorial's per-call path vs the web page's.
Prints a Markdown report.

    python bench/bench.py --data-dir ../shared/data/cats_dogs_tutorial --first-run ../shared/data/cats_dogs_kaggle

--first-run: whole commands side by side, start-up included (bench_whole_commands.py): the tutorial's train.py
(bench/tutorial_train.py) against train.py for each --train-epochs, the first predict.py right after it against
the tutorial's function, and --freeze-backbone against the tutorial's epochs, in --rounds interleaved rounds per
CPU regime this CPU has; with --page-photos N also bench_first_run.py's page measurement.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python bench/bench.py`: the package is one folder up

import swanlab  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset, Subset  # noqa: E402

import bench_engines  # noqa: E402
from bench_first_run import REGIMES, first_run_report  # noqa: E402
from bench_training import TutorialDataset, training_throughput  # noqa: E402
from bench_whole_commands import whole_command_report  # noqa: E402
from cats_dogs.checkpoint import make_checkpoint, read_checkpoint  # noqa: E402
from cats_dogs.csv_rows import read_csv_rows  # noqa: E402
from cats_dogs.device import autocast_dtype, bf16_beats_fp32_cpu, has_native_bf16_cpu, pick_device  # noqa: E402
from cats_dogs.images import open_image  # noqa: E402
from cats_dogs.inference import compile_by_default, make_batch_predict  # noqa: E402
from cats_dogs.model import build_model  # noqa: E402
from cats_dogs.photo_batches import collate_readable  # noqa: E402
from cats_dogs.process import keep_freed_memory, make_console_safe  # noqa: E402
from load_datasets import DatasetLoader  # noqa: E402


def freeze_backbone_run(data_dir: Path, epochs: int, no_bf16: bool) -> float:
    """Wall time of a whole `train.py --freeze-backbone` run, start-up included."""
    with tempfile.TemporaryDirectory() as output:
        command = [sys.executable, str(REPO / "train.py"), "--data-dir", str(data_dir.resolve()),
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
        time.sleep(0.05)  # a pause, as between a user's photos: the other path's OpenMP threads stop spinning
        started = time.perf_counter()
        function(argument)
        return (time.perf_counter() - started) * 1000

    batch_predict = make_batch_predict(model, meta, device, None if no_bf16 else autocast_dtype(device),
                                       compile_model, wait_for_compile=True)

    def predict(path: str) -> dict[str, float]:  # the page's /predict: the photo opened as app.py opens uploads
        return dict(zip(meta["class_names"], batch_predict([open_image(path)])[0].tolist(), strict=True))
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
            command = [sys.executable, str(REPO / "train.py"), "--data-dir", str(data_dir.resolve()),
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
          f"native bf16: {has_native_bf16_cpu()}, bf16 faster than fp32: {bf16_beats_fp32_cpu()}"
          f"{', bf16 forced off' if args.no_bf16 else ''})\n")

    if args.first_run:
        whole_command_report(data_dir, Path(args.first_run), args.first_run_photos, args.train_epochs, args.rounds,
                             args.regimes, args.freeze_epochs)
        if args.page_photos:
            first_run_report(data_dir, Path(args.first_run), args.first_run_photos, args.page_photos, args.rounds)
        return

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
    parser.add_argument("--first-run", metavar="PHOTO_DIR", default=None,
                        help="only first runs, as whole commands, per CPU regime: the tutorial's train.py against "
                             "train.py on DATA_DIR for each --train-epochs, then predict.py on PHOTO_DIR's first "
                             "--first-run-photos photos against the tutorial's function, and --freeze-epochs of "
                             "--freeze-backbone against the tutorial's epochs (bench_whole_commands.py)")
    parser.add_argument("--first-run-photos", type=int, default=300)
    parser.add_argument("--train-epochs", type=int, nargs="+", default=[1, 3], help="--first-run: epochs per training")
    parser.add_argument("--regimes", nargs="+", choices=list(REGIMES), default=None,
                        help="--first-run: CPU regimes to measure (default: every one this CPU has)")
    parser.add_argument("--page-photos", type=int, default=0,
                        help="--first-run: also train.py 1 epoch per regime, then the page's first N answers and "
                             "predict.py with and without the engine cache (bench_first_run.py; 0 = skip)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --first-run")
    parser.add_argument("--loader-photos", type=int, default=4000, help="photos delivered per --loader measurement")
    return parser


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    main(get_args_parser().parse_args())
