"""How often INT8 passes its check, before and after issue #35, on models trained from scratch.

    python studies/study_int8_check.py --data-dir ../shared/data/cats_dogs_tutorial --seeds 1 2 3 --epochs 3

For each seed, train.py (--weights none --no-engine) runs epoch after epoch through --resume (a resumed run gives
the same bits as an unstopped one), and each epoch's weights are kept. Each is converted to OpenVINO and quantized
as engines.py does (PHOTOS:BATCH:minmax, int8.minmax_int8) or by NNCF (PHOTOS:BATCH:bc with fast bias correction,
PHOTOS:BATCH:nobc without), each setting of --variants (BATCH photos per calibration sample),
then judged on the val photos by both rules:
- before: agreement with fp32 on at least 99% of the val photos and val accuracy within 0.5 points;
- now (engines.judge_int8): not worse than fp32 beyond the val set's uncertainty, agreement at least 95%.
The table and the pass counts are printed and written to OUTPUT_ROOT/int8_check.md.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python studies/study_int8_check.py`: the package is one folder up

from cats_dogs.checkpoint import load_checkpoint  # noqa: E402
from cats_dogs.engines import judge_int8, logits_of, read_photos, right_string, to_openvino  # noqa: E402
from cats_dogs.int8 import minmax_int8, nncf_int8  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="INT8's check before and after, on models trained from scratch.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=3, help="the weights after each epoch up to this one are judged")
    parser.add_argument("--variants", nargs="+", default=["300:1:bc", "64:8:nobc", "64:8:minmax"])
    parser.add_argument("--output-root", default="checkpoint/int8_study")
    return parser


def train_epochs(data_dir: str, seed: int, epochs: int, root: Path) -> list[Path]:
    """The weights after each epoch, as root/seed-S-epoch-E.pth."""
    output, kept = root / f"seed-{seed}", []
    for epoch in range(1, epochs + 1):
        kept.append(root / f"seed-{seed}-epoch-{epoch}.pth")
        if kept[-1].is_file():
            continue
        subprocess.run([sys.executable, str(REPO / "train.py"), "--data-dir", data_dir, "--weights", "none",
                        "--epochs", str(epoch), "--seed", str(seed), "--swanlab-mode", "disabled", "--no-engine",
                        "--output-dir", str(output), *(["--resume"] if epoch > 1 else [])],
                       check=True, capture_output=True, cwd=REPO)
        shutil.copy(output / "latest_checkpoint.pth", kept[-1])
    return kept


def quantized_classes(ov_model, calibration: torch.Tensor, val: torch.Tensor, variant: str) -> tuple[torch.Tensor, float]:
    import openvino

    photos, batch, bias = variant.split(":")
    picked = calibration[:: max(1, len(calibration) // int(photos))][: int(photos)]
    started = time.perf_counter()
    model = (minmax_int8(ov_model, picked, int(batch)) if bias == "minmax"
             else nncf_int8(ov_model, picked, int(batch), bias_correction=bias == "bc"))
    seconds = time.perf_counter() - started
    compiled = openvino.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return logits_of(lambda batch: torch.from_numpy(compiled(batch.numpy())[0]), val).argmax(1), seconds


def old_rule(result: dict) -> str:
    passed = result["agreement"] >= 0.99 and result["int8_accuracy"] >= result["fp32_accuracy"] - 0.5
    return "int8" if passed else "fp32"


def main(args: argparse.Namespace) -> None:
    import nncf

    nncf.set_log_level(logging.ERROR)
    root, data_dir = Path(args.output_root), Path(args.data_dir)
    lines = ["| seed | epoch | fp32 val acc | " + " | ".join(args.variants) + " |", "|---" * (3 + len(args.variants)) + "|"]
    passes = {(variant, rule): 0 for variant in args.variants for rule in ("before", "now")}
    checkpoints = [(seed, path) for seed in args.seeds for path in train_epochs(args.data_dir, seed, args.epochs, root)]
    for seed, path in checkpoints:
        model, meta = load_checkpoint(path, torch.device("cpu"))
        calibration, _ = read_photos(data_dir / "train.csv", meta, 300)
        val, labels = read_photos(data_dir / "val.csv", meta, 10**9)
        with torch.inference_mode():
            fp32_classes = logits_of(model.eval(), val).argmax(1)
        ov_model = to_openvino(model, meta["image_size"])
        cells = []
        for variant in args.variants:
            classes, seconds = quantized_classes(ov_model, calibration, val, variant)
            result = judge_int8(right_string(fp32_classes, labels), right_string(classes, labels))
            for rule, decision in (("before", old_rule(result)), ("now", result["decision"])):
                passes[variant, rule] += decision == "int8"
            cells.append(f"{result['only_fp32_right']}/{result['only_int8_right']} flips, {old_rule(result)} → "
                         f"{result['decision']}, {seconds:.0f} s")
        lines.append(f"| {seed} | {path.stem.rsplit('-', 1)[-1]} | {result['fp32_accuracy']:.1f}% | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    lines += ["", f"INT8 passed (of {len(checkpoints)}): " + "; ".join(
        f"{variant}: before {passes[variant, 'before']}, now {passes[variant, 'now']}" for variant in args.variants)]
    print(lines[-1])
    (root / "int8_check.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
