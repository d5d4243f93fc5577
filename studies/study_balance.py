"""Imbalanced classes: train.py --balance off against loss and sampler, judged on photos the runs never saw.

    python studies/study_balance.py --from ../shared/data/cats_dogs_kaggle --test-from ../shared/data/cats_dogs_tutorial \\
        --ratios 5 10 1 --seeds 42 43 44 -- --model resnet18 --weights none --image-size 64 --epochs 15

--from: photos named `cat.N.jpg` / `dog.N.jpg` (Kaggle's names). Each class is split 80/20 into train and val with a
fixed seed; at ratio R the dogs keep 1/R of the cats' count in train and in val (the cats all of theirs). --test-from:
a folder with train.csv and val.csv (the tutorial's layout); all its photos, minus those byte-identical to one in
--from, make test.csv. Every (ratio, method, seed) run is measured with evaluate.py on test.csv; each result is kept in
OUT/results.jsonl as it comes (a run already there is not run again), and the table goes to OUT/balance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python studies/study_balance.py`: the package is one folder up

from cats_dogs.csv_rows import read_csv_rows  # noqa: E402
from cats_dogs.process import make_console_safe  # noqa: E402

CLASSES = ("cat", "dog")  # the dogs are the minority
METHODS = ("off", "loss", "sampler")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Measure --balance on imbalanced cats:dogs training sets.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, help="a folder of cat.N.jpg and dog.N.jpg photos")
    parser.add_argument("--test-from", required=True, help="a folder with train.csv and val.csv: the test photos")
    parser.add_argument("--out", default="balance_study", help="folder for the data sets, the runs and balance.md")
    parser.add_argument("--ratios", type=int, nargs="+", default=[5], help="cats per dog in train and val (1: balanced)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: flags passed to every train.py run")
    return parser


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_split(folder: Path, split: str, photos: dict[str, list[Path]]) -> None:
    """Copies the photos into folder/split/<class>/ and writes folder/split.csv."""
    rows = []
    for label, name in enumerate(CLASSES):
        (folder / split / name).mkdir(parents=True, exist_ok=True)
        for index, photo in enumerate(photos[name]):
            relative = f"{split}/{name}/{index:04d}{photo.suffix.lower()}"
            shutil.copyfile(photo, folder / relative)
            rows.append(f"{relative},{label}\n")
    (folder / f"{split}.csv").write_text("".join(rows), encoding="utf-8")


def build_data(source: Path, test_from: Path, out: Path, ratio: int) -> Path:
    """OUT/data-RATIO: train/val at RATIO cats per dog from --from, test.csv from --test-from (disjoint by bytes)."""
    folder = out / f"data-{ratio}to1"
    if (folder / "test.csv").is_file():
        return folder
    shuffled = random.Random(0)
    train, val = {}, {}
    for name in CLASSES:
        photos = sorted(source.glob(f"{name}.*.jpg"))
        shuffled.shuffle(photos)
        cut = len(photos) * 4 // 5
        keep = 1 if name == CLASSES[0] else ratio
        train[name], val[name] = photos[:cut][:cut // keep], photos[cut:][:(len(photos) - cut) // keep]
    seen = {digest(photo) for photos in (*train.values(), *val.values()) for photo in photos}
    test = {name: [] for name in CLASSES}
    for csv_name in ("train.csv", "val.csv"):
        for photo, label in read_csv_rows(test_from / csv_name):
            if digest(photo) not in seen:
                test[CLASSES[label]].append(photo)
    for split, photos in (("train", train), ("val", val), ("test", test)):
        write_split(folder, split, photos)
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return folder


def train_and_test(data: Path, output: Path, method: str, seed: int, train_args: list[str]) -> dict:
    """One run: train.py --balance METHOD, then evaluate.py's report of its best checkpoint on test.csv."""
    for script, *args in (("train.py", "--data-dir", str(data), "--output-dir", str(output), "--seed", str(seed),
                           "--balance", method, "--swanlab-mode", "disabled", *train_args),
                          ("evaluate.py", "--checkpoint", str(output / "best_checkpoint.pth"),
                           "--csv", str(data / "test.csv"), "--out", str(output / "test_eval"))):
        print(f"\n=== {script} {' '.join(args)}", flush=True)
        if subprocess.run([sys.executable, str(REPO / script), *args]).returncode != 0:
            raise SystemExit(f"{script} failed; the study stops here")
    return json.loads((output / "test_eval" / "report.json").read_text(encoding="utf-8"))


def percent_with_interval(value: float, interval: list[float]) -> str:
    return f"{value:.1%} ({interval[0]:.0%}–{interval[1]:.0%})"


def table(results: list[dict]) -> str:
    """One row per (ratio, method): the means over seeds, then each seed's value with its 95% interval."""
    lines = ["| cats:dogs | --balance | dog recall, mean | balanced acc., mean | accuracy, mean | "
             "dog recall per seed (95% CI) | balanced acc. per seed (95% CI) |", "|---|---|---|---|---|---|---|"]
    keys = list(dict.fromkeys((r["ratio"], r["method"]) for r in results))
    for ratio, method in keys:
        runs = [r for r in results if (r["ratio"], r["method"]) == (ratio, method)]
        dogs = [r["report"]["per_class"]["dog"] for r in runs]
        lines.append(
            f"| {ratio}:1 | {method} | {statistics.mean(d['recall'] for d in dogs):.1%} | "
            f"{statistics.mean(r['report']['balanced_accuracy'] for r in runs):.1%} | "
            f"{statistics.mean(r['report']['accuracy'] for r in runs):.1%} | "
            + ", ".join(percent_with_interval(d["recall"], d["recall_ci95"]) for d in dogs) + " | "
            + ", ".join(percent_with_interval(r["report"]["balanced_accuracy"], r["report"]["balanced_accuracy_ci95"])
                        for r in runs) + " |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_args = [a for a in args.train_args if a != "--"]
    log = out / "results.jsonl"
    results = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.is_file() else []
    for ratio in args.ratios:
        data = build_data(Path(args.source), Path(args.test_from), out, ratio)
        for seed in args.seeds:  # every method of a seed before the next seed: an interrupted study stays comparable
            for method in args.methods:
                if any((r["ratio"], r["method"], r["seed"]) == (ratio, method, seed) for r in results):
                    continue
                report = train_and_test(data, out / f"{ratio}to1-{method}-seed{seed}", method, seed, train_args)
                results.append({"ratio": ratio, "method": method, "seed": seed, "report": report})
                with log.open("a", encoding="utf-8") as file:
                    file.write(json.dumps(results[-1], ensure_ascii=False) + "\n")
                (out / "balance.md").write_text(table(results) + "\n", encoding="utf-8")
    print("\n" + table(results) + f"\n\nwrote {out / 'balance.md'}")


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    main(get_args_parser().parse_args())
