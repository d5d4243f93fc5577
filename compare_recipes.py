"""The tutorial's training recipe against this project's defaults, judged on photos neither has seen.

    python compare_recipes.py --from ../shared/data/cats_dogs_kaggle -- --weights none --epochs 12 --image-size 128

Splits SRC 60/20/20 with a fixed seed (prepare_data.py), then trains twice on the same split with
the same epoch budget: the tutorial's recipe (constant learning rate, no augmentation, the last
epoch kept) and this project's defaults (warm-up + cosine schedule, augmentation, the best epoch
on val kept). Both are measured on test.csv with evaluate.py. Everything after `--` goes to both
train.py runs. The table is printed and written to OUT/recipes.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RECIPES = {
    "tutorial (constant lr, no augmentation, last epoch)": (["--scheduler", "none", "--no-augment"], "latest"),
    "this project's defaults (warm-up + cosine, augmentation, best epoch)": ([], "best"),
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Compare the tutorial's recipe with this project's on a test split.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, help="photos, in any layout prepare_data.py accepts")
    parser.add_argument("--out", default="recipes", help="folder for the split, the checkpoints and recipes.md")
    parser.add_argument("--seed", type=int, default=42, help="for the split and for both trainings")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: flags passed to both train.py runs")
    return parser


def run(script: str, *args: str) -> None:
    print(f"\n=== {script} {' '.join(args)}", flush=True)
    if subprocess.run([sys.executable, str(HERE / script), *args]).returncode != 0:
        raise SystemExit(f"{script} failed; the comparison stops here")


def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    data = out / "data"
    run("prepare_data.py", "--from", args.source, "--out", str(data), "--split", "0.6", "0.2", "0.2",
        "--seed", str(args.seed))
    train_args = [a for a in args.train_args if a != "--"]
    rows = []
    for index, (name, (recipe_flags, kept)) in enumerate(RECIPES.items()):
        output = out / f"recipe{index}"
        started = time.perf_counter()
        run("train.py", "--data-dir", str(data), "--output-dir", str(output), "--seed", str(args.seed),
            "--project", "cats-vs-dogs-recipes", "--experiment-name", name.split(" (")[0], *train_args, *recipe_flags)
        wall_time = time.perf_counter() - started
        run("evaluate.py", "--checkpoint", str(output / f"{kept}_checkpoint.pth"), "--csv", str(data / "test.csv"),
            "--out", str(output / "test_eval"))
        report = json.loads((output / "test_eval" / "report.json").read_text(encoding="utf-8"))
        latest = torch.load(output / "latest_checkpoint.pth", map_location="cpu", weights_only=True)
        kept_epoch = latest["epoch"] if kept == "latest" else latest["best_epoch"]
        rows.append(f"| {name} | {100 * report['accuracy']:.2f}% | {kept_epoch} of {latest['epoch']} | {wall_time:.0f} s |")
    table = "\n".join(["| recipe | test accuracy | epoch kept | wall time |", "|---|---|---|---|", *rows])
    (out / "recipes.md").write_text(table + "\n", encoding="utf-8")
    print("\n" + table + f"\n\nwrote {out / 'recipes.md'}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
