"""The tutorial's training recipe against this project's defaults, judged on photos neither has seen.

    python compare_recipes.py --from ../shared/data/cats_dogs_kaggle --seeds 42 43 44 45 46 \\
        -- --weights none --epochs 30 --image-size 64

Splits SRC 60/20/20 with a fixed seed (prepare_data.py), then trains each recipe on that split with
the same epoch budget, once per training seed: the tutorial's recipe (constant learning rate, no
augmentation, torchvision's initialization, the last epoch kept) and this project's defaults
(warm-up + cosine schedule, augmentation, zero-initialized residual blocks, the best epoch on val
kept, chosen on the mean of 3 evaluations). Every run is measured on test.csv with evaluate.py.
One seed's test accuracy on a few hundred photos moves by several points with the seed alone,
hence the mean over seeds. Everything after `--` goes to every train.py run. The table is printed
and written to OUT/recipes.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python studies/compare_recipes.py`: the package is one folder up

from cats_dogs.checkpoint import read_checkpoint_or_exit  # noqa: E402
from cats_dogs.process import make_console_safe  # noqa: E402

RECIPES = {
    "tutorial (constant lr, no augmentation, torchvision init, last epoch)":
        (["--scheduler", "none", "--no-augment", "--no-zero-init-residual"], "latest"),
    "this project's defaults (warm-up + cosine, augmentation, zero-init residuals, best epoch)": ([], "best"),
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Compare the tutorial's recipe with this project's on a test split.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, help="photos, in any layout prepare_data.py accepts")
    parser.add_argument("--out", default="recipes", help="folder for the split, the checkpoints and recipes.md")
    parser.add_argument("--seed", type=int, default=42, help="for the split (and the training, without --seeds)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds: each recipe is trained once per seed")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: flags passed to every train.py run")
    return parser


def run(script: str, *args: str) -> None:
    print(f"\n=== {script} {' '.join(args)}", flush=True)
    if subprocess.run([sys.executable, str(REPO / script), *args]).returncode != 0:
        raise SystemExit(f"{script} failed; the comparison stops here")


def train_and_test(data: Path, output: Path, name: str, recipe_flags: list[str], kept: str, seed: int,
                   train_args: list[str]) -> tuple[float, int, int, float, str]:
    """One training run measured on test.csv: (test accuracy in %, epoch kept, epochs run, wall time in s, its 95%
    interval as text)."""
    started = time.perf_counter()
    run("train.py", "--data-dir", str(data), "--output-dir", str(output), "--seed", str(seed),
        "--project", "cats-vs-dogs-recipes", "--experiment-name", f"{name.split(' (')[0]} seed {seed}",
        "--no-engine", *train_args, *recipe_flags)  # no serving engine: its build would slow the next run
    wall_time = time.perf_counter() - started
    run("evaluate.py", "--checkpoint", str(output / f"{kept}_checkpoint.pth"), "--csv", str(data / "test.csv"),
        "--out", str(output / "test_eval"))
    report = json.loads((output / "test_eval" / "report.json").read_text(encoding="utf-8"))
    latest = read_checkpoint_or_exit(output / "latest_checkpoint.pth")
    kept_epoch = latest["epoch"] if kept == "latest" else latest["best_epoch"]
    low, high = report["accuracy_ci95"]
    return 100 * report["accuracy"], kept_epoch, latest["epoch"], wall_time, f"{low:.0%}–{high:.0%} ({report['count']} photos)"


def mean_and_spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f}%" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")


def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    data = out / "data"
    run("prepare_data.py", "--from", args.source, "--out", str(data), "--split", "0.6", "0.2", "0.2",
        "--seed", str(args.seed))
    train_args = [a for a in args.train_args if a != "--"]
    seeds = args.seeds or [args.seed]
    rows, accuracies = [], []
    for index, (name, (recipe_flags, kept)) in enumerate(RECIPES.items()):
        runs = [train_and_test(data, out / f"recipe{index}-seed{seed}", name, recipe_flags, kept, seed, train_args)
                for seed in seeds]
        accuracies.append([accuracy for accuracy, *_ in runs])
        rows.append(f"| {name} | {mean_and_spread(accuracies[-1])} | {', '.join(f'{a:.2f}' for a in accuracies[-1])} | "
                    f"{', '.join(f'{kept_epoch} of {epochs_run}' for _, kept_epoch, epochs_run, *_ in runs)} | "
                    f"{statistics.mean(r[3] for r in runs):.0f} s | {', '.join(r[4] for r in runs)} |")
    gains = [ours - tutorial for tutorial, ours in zip(*accuracies, strict=True)]
    table = "\n".join(["| recipe | test accuracy (mean ± sd) | per seed | epoch kept | wall time per run | "
                       "95% CI per seed |", "|---|---|---|---|---|---|", *rows, "",
                       f"defaults − tutorial: {statistics.mean(gains):+.2f} points over {len(seeds)} seed(s) "
                       f"({', '.join(map(str, seeds))}); per seed: {', '.join(f'{g:+.2f}' for g in gains)}"])
    (out / "recipes.md").write_text(table + "\n", encoding="utf-8")
    print("\n" + table + f"\n\nwrote {out / 'recipes.md'}")


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    main(get_args_parser().parse_args())
