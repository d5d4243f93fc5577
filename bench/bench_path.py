"""A learner's fastest path from a folder of photos to a public page, each step a whole command, timed.

    python bench/bench_path.py                     # the shared 800 Kaggle photos (cat.N.jpg, dog.N.jpg)
    python bench/bench_path.py --photos FOLDER

In a temporary folder, as a learner would type them there: prepare_data.py --from FOLDER, train.py
--freeze-backbone on ImageNet-sized weights (a stand-in: a randomly initialised torchvision ResNet50 saved as .pth
by this script, the same cost to load as ImageNet's, which cannot be downloaded here), export.py --space (a Space
folder with its engine), --ncnn (the phone model) and --web (the in-browser page). Prints a Markdown table with
the load average beside each command, and the total against the 120 s target. Nothing is written into the repo.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, for bench_whole_commands
from bench_whole_commands import wait_for_build  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(r"\d+%\|")  # a tqdm progress bar: not a line worth reporting
TARGET_S = 120  # photos to a public page in two minutes (issue #35)


def load_average() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def save_standin_weights(path: Path) -> None:
    """A 1000-class ResNet50 state dict, as torchvision's ImageNet file holds (random: speed does not depend on it)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)


def path_commands(photos: Path, web_runtime: str | None) -> list[list[str]]:
    """The path's commands, each relative to the folder it runs in, as a learner types them."""
    checkpoint = ["--checkpoint", "checkpoint/best_checkpoint.pth"]
    return [
        ["prepare_data.py", "--from", str(photos), "--out", "datasets"],
        ["train.py", "--data-dir", "datasets", "--freeze-backbone", "--weights", "standin.pth", "--swanlab-mode",
         "disabled", "--output-dir", "checkpoint"],
        ["export.py", *checkpoint, "--space", "space"],
        ["export.py", *checkpoint, "--ncnn", "phone"],
        ["export.py", *checkpoint, "--web", "web", *(["--web-runtime", web_runtime] if web_runtime else [])],
    ]


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    """Seconds for the whole command (start-up included) and its last line of output."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / command[0]), *command[1:]], cwd=cwd, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed after {seconds:.0f} s:\n{(done.stdout + done.stderr)[-3000:]}")
    lines = [line.strip() for line in re.split(r"[\r\n]+", done.stdout) if line.strip() and not PROGRESS.search(line)]
    if command[0] == "train.py":  # what it built for serving, and in how many seconds
        lines = [line for line in lines if line.startswith("engine")] or lines
    return seconds, lines[-1] if lines else ""


def main(args: argparse.Namespace) -> None:
    photos = Path(args.photos).resolve()
    if not photos.is_dir():
        raise SystemExit(f"{photos}: not a folder of photos")
    count = sum(1 for _ in photos.iterdir())
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        save_standin_weights(work / "standin.pth")
        for command in path_commands(photos, args.web_runtime):
            load = load_average()
            seconds, last_line = timed(command, work)
            rows.append((command, seconds, last_line, f"{load}→{load_average()}"))
            print(f"{' '.join(command)}: {seconds:.1f} s (load {rows[-1][3]}); {last_line}", flush=True)
        after = wait_for_build(work / "checkpoint")
    print(f"\nPhotos to a public page, whole commands, start-up included, in one folder as a learner types them, "
          f"on {count} files of {photos.name} ({os.cpu_count()} cores); load: 1-minute load average before→after:\n")
    print("| command | seconds | last line | load |\n|---|---|---|---|")
    for command, seconds, last_line, load in rows:
        shown = " ".join(command).replace(str(photos), photos.name)
        print(f"| `{shown}` | {seconds:.1f} s | {last_line[:100].replace('|', '/')} | {load} |")
    total = sum(seconds for _, seconds, _, _ in rows)
    print(f"\ntotal **{total:.0f} s** against the {TARGET_S} s target "
          f"({'met' if total <= TARGET_S else 'missed'}){'; ' + after if after else ''}")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Time the path from photos to a public page, command by command.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--photos", default="../shared/data/cats_dogs_kaggle",
                        help="a folder prepare_data.py --from imports (Kaggle names, class folders or split folders)")
    parser.add_argument("--web-runtime", default=None,
                        help="passed to export.py --web: onnxruntime-web's .tgz or folder (default: its download, "
                             "once, from the npm registry into the cache; the first run's includes it)")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
