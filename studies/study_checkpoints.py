"""Which checkpoint to serve, and what EMA, strong augmentation and flip TTA are worth, on photos nothing chose on.

    python study_checkpoints.py --data-dir ../shared/data/cats_dogs_kaggle --test-dir ../shared/data/cats_dogs_tutorial \\
        --seeds 42 43 44 --epochs 30 --image-size 64 --device cuda --jobs 5 --out study.md -- --num-workers 2

Splits DATA_DIR 80/20 with prepare_data.py (seed 42) into train and val, and takes every row of TEST_DIR's train.csv
and val.csv as the test set (photos found in both folders, by their bytes, are left out of it and counted). Trains
each recipe once per seed, from scratch (--weights none), with --ema and --save-candidates: the EMA only watches, so
the trained weights are those of a run without it. Then measures on the test set, with and without flip TTA, each
run's candidates: `last` (latest_checkpoint.pth), `window` (the best windowed val accuracy), `val-loss` (the lowest
val loss), `paired` (the latest epoch unless an earlier one is better beyond the uncertainty, McNemar on val), `ema`
(the EMA after the last epoch) and `best` (best_checkpoint.pth: --best-rule window with the EMA competing), or only
those named by --candidates. Writes a Markdown table, mean ± sd over seeds, to OUT, then one row per run: the epochs
window and paired served, each against the last epoch on val (McNemar p). Everything after `--` goes to every
train.py run.
Imports neither SwanLab nor Gradio: it runs on a bare GPU server (train.py runs with --swanlab-mode disabled).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python studies/study_checkpoints.py`: the package is one folder up

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from cats_dogs.checkpoint import load_checkpoint_or_exit, read_checkpoint_or_exit  # noqa: E402
from cats_dogs.csv_rows import read_csv_rows  # noqa: E402
from cats_dogs.device import pick_device  # noqa: E402
from cats_dogs.inference import class_probabilities  # noqa: E402
from cats_dogs.intervals import half_width_points  # noqa: E402
from cats_dogs.photo_batches import collate_readable  # noqa: E402
from cats_dogs.preprocessing import to_device  # noqa: E402
from cats_dogs.process import make_console_safe  # noqa: E402
from cats_dogs.served_epoch import against_last, verdict  # noqa: E402
from load_datasets import DatasetLoader  # noqa: E402

RECIPES = {
    "defaults": [],
    "strong augmentation": ["--augment", "strong"],
    "tutorial": ["--scheduler", "none", "--no-augment", "--no-zero-init-residual"],
}
CANDIDATES = {"last": "latest_checkpoint.pth", "window": "candidates/window.pth", "val-loss": "candidates/val-loss.pth",
              "paired": "candidates/paired.pth", "ema": "candidates/ema.pth", "best": "best_checkpoint.pth"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Measure checkpoint choices, EMA, strong augmentation and TTA.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="training photos, any layout prepare_data.py accepts (Kaggle's)")
    parser.add_argument("--test-dir", required=True, help="a folder with train.csv and val.csv: all their rows are the test set")
    parser.add_argument("--work", default="study", help="folder for the split, the test CSV and the runs")
    parser.add_argument("--out", default="study.md", help="the Markdown table")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="training seeds")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", type=int, default=1, help="train.py runs at once (a GPU keeps several busy)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES),
                        help="the checkpoints measured, a column each (with and without TTA)")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: flags passed to every train.py run")
    return parser


def run(*args: str) -> None:
    print(f"=== {' '.join(args)}", flush=True)
    if subprocess.run([sys.executable, *args]).returncode != 0:
        raise SystemExit(f"{args[0]} failed; the study stops here")


def write_test_csv(test_dir: Path, training_csvs: list[Path], path: Path) -> tuple[int, int]:
    """TEST_DIR's train.csv and val.csv rows as one CSV, less any photo also in training; returns (photos kept,
    photos left out as shared). The kept photos are copied beside the CSV, into PATH's folder/test/: a CSV's rows
    stay inside its own folder (csv_rows.read_csv_rows), and TEST_DIR is never written to."""
    def digest(photo: Path) -> str:
        return hashlib.sha1(photo.read_bytes()).hexdigest()

    seen = {digest(photo) for csv_path in training_csvs for photo, _ in read_csv_rows(csv_path)}
    rows = [(photo, label) for name in ("train.csv", "val.csv") for photo, label in read_csv_rows(test_dir / name)]
    kept = [(photo, label) for photo, label in rows if digest(photo) not in seen]
    lines = []
    for photo, label in kept:
        relative = Path("test") / photo.relative_to(test_dir)  # read_csv_rows keeps rows inside TEST_DIR
        (path.parent / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(photo, path.parent / relative)
        lines.append(f"{relative.as_posix()},{label}\n")
    path.write_text("".join(lines), encoding="utf-8")
    return len(kept), len(rows) - len(kept)


def start_training(data: Path, output: Path, recipe_flags: list[str], seed: int, args: argparse.Namespace,
                   train_args: list[str]) -> subprocess.Popen:
    """One train.py run in the background, its output in OUTPUT/train.log."""
    output.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(REPO / "train.py"), "--data-dir", str(data), "--output-dir", str(output),
               "--seed", str(seed), "--epochs", str(args.epochs), "--image-size", str(args.image_size), "--model",
               args.model, "--weights", "none", "--device", args.device, "--swanlab-mode", "disabled", "--ema",
               "--save-candidates", "--no-engine", *train_args, *recipe_flags]  # no serving engine to build
    print(f"=== {' '.join(command[1:])}", flush=True)
    log = open(output / "train.log", "w", encoding="utf-8")  # noqa: SIM115 -- closed with the process, in train_all
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=output)


def train_all(data: Path, work: Path, args: argparse.Namespace, train_args: list[str]) -> float:
    """Every (recipe, seed) run, --jobs at a time; returns the wall time."""
    started, waiting, running = time.perf_counter(), [(r, s) for r in args.recipes for s in args.seeds], []
    while waiting or running:
        while waiting and len(running) < args.jobs:
            recipe, seed = waiting.pop(0)
            output = work / "runs" / f"{recipe.replace(' ', '-')}-seed{seed}"
            running.append((start_training(data.resolve(), output.resolve(), RECIPES[recipe], seed, args, train_args), output))
        time.sleep(0.5)
        for process, output in [(p, o) for p, o in running if p.poll() is not None]:
            running.remove((process, output))
            if process.returncode != 0:
                log = (output / "train.log").read_text(encoding="utf-8", errors="replace")
                raise SystemExit(f"train.py failed for {output.name} (exit {process.returncode}):\n{log[-3000:]}")
            print(f"done: {output.name} ({time.perf_counter() - started:.0f} s)", flush=True)
    return time.perf_counter() - started


@torch.inference_mode()
def test_accuracies(checkpoint: Path, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Accuracy in % of one checkpoint on the test photos, without and with flip TTA, in fp32 as evaluate.py."""
    model, meta = load_checkpoint_or_exit(checkpoint, device)
    correct, total = [0, 0], 0
    for images, labels, _, _ in loader:
        images = to_device(images, device, False, meta["mean"], meta["std"])
        for i, tta in enumerate((False, True)):
            correct[i] += (class_probabilities(model, images, tta).argmax(dim=1).cpu() == labels).sum().item()
        total += len(labels)
    return 100 * correct[0] / max(total, 1), 100 * correct[1] / max(total, 1)


def served_epochs(run_folder: Path) -> str:
    """The epochs window and paired served in one run, each against the last epoch on val: `epoch 12 (p = 0.21,
    not distinguishable)`, from latest_checkpoint.pth's history (val_right: each val photo right or wrong)."""
    history = read_checkpoint_or_exit(run_folder / CANDIDATES["last"])["history"]
    cells = []
    for rule in ("window", "paired"):
        epoch = read_checkpoint_or_exit(run_folder / CANDIDATES[rule])["epoch"]
        compared = against_last(history, epoch)
        if epoch == history[-1]["epoch"]:
            cells.append(f"{epoch}, the last")
        elif compared is None:
            cells.append(f"{epoch} (no per-photo val results)")
        else:
            only_served, only_last, _, p, served_leads = compared
            cells.append(f"{epoch} ({only_served} vs {only_last} photos, p = {p:.2g}: {verdict(served_leads, p)})")
    return " | ".join(cells)


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f}" + (f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else "")


def main(args: argparse.Namespace) -> None:
    work = Path(args.work)
    data = work / "data"
    run(str(REPO / "prepare_data.py"), "--from", args.data_dir, "--out", str(data), "--val-ratio", "0.2", "--seed", "42")
    kept, shared = write_test_csv(Path(args.test_dir), [data / "train.csv", data / "val.csv"], work / "test.csv")
    print(f"test set: {kept} photos of {args.test_dir} ({shared} also in the training photos, left out)")
    train_args = [a for a in args.train_args if a != "--"]
    wall_time = train_all(data, work, args, train_args)
    device = pick_device(args.device)
    test_set = DatasetLoader(work / "test.csv", args.image_size)  # decoded once, for every checkpoint
    test_set.cache_images("memory", progress=False)
    loader = DataLoader(test_set, batch_size=64, collate_fn=collate_readable)
    names = [f"{name}{tta}" for name in args.candidates for tta in ("", " + TTA")]
    lines = [f"Trained on {args.data_dir} (80/20, split seed 42), {args.model} from scratch, {args.epochs} epochs at "
             f"{args.image_size} px, seeds {', '.join(map(str, args.seeds))}; tested on {kept} photos of {args.test_dir} "
             f"({shared} shared photos left out). Test accuracy in %, mean ± sd over seeds; TTA = mean with the flipped "
             f"photo. One run's test accuracy near 85% has a 95% interval of ±{half_width_points(0.85, kept):.1f} points "
             f"on {kept} photos (Wilson). Training took {wall_time:.0f} s of wall time ({args.jobs} at once) on {device}.",
             "",
             f"| recipe | {' | '.join(names)} | epochs kept by window; by val-loss |", "|---" * (len(names) + 2) + "|"]
    served = ["", "Epochs served, against the last epoch on val (photos right only at the served epoch vs only at the "
              "last, exact McNemar p; distinguishable when p < 0.05):", "",
              "| recipe | seed | window | paired |", "|---|---|---|---|"]
    for recipe in args.recipes:
        runs = [work / "runs" / f"{recipe.replace(' ', '-')}-seed{seed}" for seed in args.seeds]
        served += [f"| {recipe} | {seed} | {served_epochs(r)} |" for seed, r in zip(args.seeds, runs, strict=True)]
        results = [[test_accuracies(r / CANDIDATES[name], loader, device) for r in runs] for name in args.candidates]
        cells = [spread([accuracies[tta] for accuracies in per_run]) for per_run in results for tta in (0, 1)]
        kept_epochs = [f"{read_checkpoint_or_exit(r / CANDIDATES['window'])['epoch']}; "
                       f"{read_checkpoint_or_exit(r / CANDIDATES['val-loss'])['epoch']}" for r in runs]
        lines.append(f"| {recipe} | " + " | ".join(cells) + f" | {', '.join(kept_epochs)} |")
        print(lines[-1], flush=True)
    lines += served
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n" + "\n".join(lines) + f"\n\nwrote {args.out}")


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    main(get_args_parser().parse_args())
