"""Train several ResNets on the same split with the same seed and compare them in one table.

    python compare_models.py                                   # resnet18, resnet34, resnet50 with train.py's defaults
    python compare_models.py --models resnet18 resnet50 -- --epochs 5 --weights none

Everything after `--` goes to train.py unchanged. Each model is its own SwanLab experiment
in one project, so `swanlab watch swanlog` overlays their curves; checkpoints go to
OUTPUT_ROOT/<model>/. The table is printed and written to OUTPUT_ROOT/comparison.md.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python studies/compare_models.py`: the package is one folder up

from cats_dogs.checkpoint import load_checkpoint_or_exit, read_checkpoint_or_exit  # noqa: E402
from cats_dogs.model import MODEL_NAMES, count_parameters_and_flops  # noqa: E402
from cats_dogs.process import make_console_safe  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Compare ResNet depths on the same data, seed and settings.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet34", "resnet50"], choices=MODEL_NAMES)
    parser.add_argument("--output-root", default="checkpoint/compare", help="one sub-folder of checkpoints per model")
    parser.add_argument("--project", default="cats-vs-dogs-compare", help="SwanLab project holding every run")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: flags passed to train.py")
    return parser


def train(model_name: str, output_dir: Path, project: str, train_args: list[str]) -> float:
    """Run train.py for one model; returns its wall time in seconds."""
    # --no-engine: a serving engine built after one model would slow the next one's run, and its wall time here
    command = [sys.executable, str(REPO / "train.py"), "--no-engine", *train_args, "--model", model_name,
               "--output-dir", str(output_dir), "--project", project, "--experiment-name", model_name]
    print(f"\n=== {model_name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"training {model_name} failed; the comparison stops here")
    return time.perf_counter() - started


def table_row(model_name: str, output_dir: Path, wall_time: float) -> dict:
    history = read_checkpoint_or_exit(output_dir / "latest_checkpoint.pth")["history"]
    model, meta = load_checkpoint_or_exit(output_dir / "best_checkpoint.pth")
    parameters, flops = count_parameters_and_flops(model, meta["image_size"])
    return {
        "model": model_name,
        "best val acc (%)": meta["metrics"]["val_acc"],
        # Wilson's 95% interval on the val photos (checkpoints from before the intervals have none)
        "95% CI": f"{meta['metrics'].get('val_acc_low', math.nan):.0f}–{meta['metrics'].get('val_acc_high', math.nan):.0f}"
                  f" ({meta['metrics'].get('val_count', '?')} photos)",
        "val loss": meta["metrics"]["val_loss"],
        "params (M)": parameters / 1e6,
        "GFLOPs": flops / 1e9,
        "train time (s)": wall_time,
        "images/s": sum(h["train_images_per_s"] for h in history) / len(history),
    }


def format_table(rows: list[dict]) -> str:
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [value if isinstance(value, str) else f"{value:.2f}" for value in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    train_args = [a for a in args.train_args if a != "--"]
    output_root = Path(args.output_root)
    rows = []
    for model_name in args.models:
        wall_time = train(model_name, output_root / model_name, args.project, train_args)
        rows.append(table_row(model_name, output_root / model_name, wall_time))
    table = format_table(rows)
    output_root.mkdir(parents=True, exist_ok=True)
    (output_root / "comparison.md").write_text(table + "\n", encoding="utf-8")
    print("\n" + table)
    print(f"\nwrote {output_root / 'comparison.md'}; curves side by side: swanlab watch swanlog (project {args.project})")


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    main(get_args_parser().parse_args())
