"""evaluate.py run for real; its numbers checked against a confusion matrix computed here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from PIL import Image

from cats_dogs.checkpoint import checkpoint_transform, load_checkpoint
from cats_dogs.images import open_image
from conftest import read_swanlab_runs, run_script


def test_report_matches_a_confusion_matrix_computed_by_hand(separating_run: Path, tmp_path: Path) -> None:
    data = separating_run / "datasets"
    csv_text = (data / "val.csv").read_text(encoding="utf-8")
    (tmp_path / "broken.jpg").write_text("not a photo", encoding="utf-8")
    # A CSV's rows stay inside its folder (an absolute path is refused): the val photos are copied beside it.
    shutil.copytree(data / "val", tmp_path / "val")
    (tmp_path / "eval.csv").write_text(csv_text.rstrip("\n") + "\nbroken.jpg,1\n", encoding="utf-8")
    checkpoint = separating_run / "checkpoint/latest_checkpoint.pth"
    result = run_script("evaluate.py", "--checkpoint", str(checkpoint), "--csv", "eval.csv", "--out", "eval",
                        "--batch-size", "3", "--swanlab", cwd=tmp_path)

    model, meta = load_checkpoint(checkpoint)
    transform = checkpoint_transform(meta)
    expected = [[0, 0], [0, 0]]
    for line in csv_text.split():
        path, label = line.split(",")
        with torch.inference_mode():
            predicted = model(transform(open_image(data / path)).unsqueeze(0)).argmax(1).item()
        expected[int(label)][predicted] += 1

    report = json.loads((tmp_path / "eval/report.json").read_text(encoding="utf-8"))
    assert expected == [[4, 0], [0, 4]]  # the model tells them apart: both columns used, a cat is not a dog
    assert report["confusion_matrix"] == expected
    assert report["accuracy"] == (expected[0][0] + expected[1][1]) / 8 and report["count"] == 8
    cat_predicted = expected[0][0] + expected[1][0]
    assert report["per_class"]["cat"]["precision"] == (expected[0][0] / cat_predicted if cat_predicted else 0)
    assert report["per_class"]["cat"]["recall"] == expected[0][0] / 4
    assert report["per_class"]["dog"]["support"] == 4
    assert report["checkpoint"] == str(checkpoint) and report["csv"] == "eval.csv"
    assert len(report["unreadable"]) == 1 and "broken.jpg: not an image file" in report["unreadable"][0]
    assert "skipped unreadable photo broken.jpg: not an image file" in result.stdout
    assert f"accuracy {report['accuracy']:.4f}" in result.stdout
    for picture in ("confusion_matrix.png", "mistakes.png"):
        with Image.open(tmp_path / "eval" / picture) as image:
            assert image.width > 300
    [run] = read_swanlab_runs(tmp_path / "swanlog")
    assert run["name"] == "eval checkpoint/latest_checkpoint" and run["metrics"]["eval_accuracy"] == [report["accuracy"]]
    assert set(run["captions"]) == {"confusion_matrix", "mistakes"}


def test_bad_csv_is_refused_by_line(trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text(f"{trained_run}/datasets/val/cat/cat.0.jpg,0\nnope.jpg,1\n", encoding="utf-8")
    result = run_script("evaluate.py", "--csv", "bad.csv", "--checkpoint", str(trained_run / "checkpoint/best_checkpoint.pth"),
                        cwd=tmp_path, check=False)
    assert result.returncode != 0 and "line 2: file not found" in result.stderr and "Traceback" not in result.stderr
