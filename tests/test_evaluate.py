"""evaluate.py run for real; its numbers checked against a confusion matrix computed here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from cats_dogs.checkpoint import checkpoint_transform, load_checkpoint
from cats_dogs.images import open_image
from conftest import read_swanlab_runs, run_script
from evaluate import build_report, print_report, save_confusion_matrix


def test_report_matches_a_confusion_matrix_computed_by_hand(separating_run: Path, tmp_path: Path) -> None:
    data = separating_run / "datasets"
    csv_text = (data / "val.csv").read_text(encoding="utf-8")
    (tmp_path / "broken.jpg").write_text("not a photo", encoding="utf-8")
    # A CSV's paths stay inside its folder (csv_rows refuses absolute ones): the val photos are copied beside it.
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
    # All 8 right: Wilson's interval is n / (n + z²) to 100%, and so is each class's recall on its 4 photos.
    assert report["accuracy_ci95"] == [pytest.approx(8 / (8 + 1.96 ** 2), abs=1e-4), 1.0]
    assert report["per_class"]["dog"]["recall_ci95"] == [pytest.approx(4 / (4 + 1.96 ** 2), abs=1e-4), 1.0]
    assert report["balanced_accuracy"] == 1.0 and report["weakest_class"] == "cat"  # the first of equal recalls
    assert "accuracy 1.0000 (100.00%, 95% CI 68%–100%) on 8 photos" in result.stdout
    assert "balanced accuracy 1.0000" in result.stdout and "weakest class: cat, recall 100.0% on 4 photos" in result.stdout
    for picture in ("confusion_matrix.png", "mistakes.png"):
        with Image.open(tmp_path / "eval" / picture) as image:
            assert image.width > 300
    [run] = read_swanlab_runs(tmp_path / "swanlog")
    assert run["name"] == "eval checkpoint/latest_checkpoint" and run["metrics"]["eval_accuracy"] == [report["accuracy"]]
    assert run["metrics"]["eval_accuracy_low"] == [pytest.approx(report["accuracy_ci95"][0])]
    assert set(run["captions"]) == {"confusion_matrix", "mistakes"}


def test_bad_csv_is_refused_by_line(trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text(f"{trained_run}/datasets/val/cat/cat.0.jpg,0\nnope.jpg,1\n", encoding="utf-8")
    result = run_script("evaluate.py", "--csv", "bad.csv", "--checkpoint", str(trained_run / "checkpoint/best_checkpoint.pth"),
                        cwd=tmp_path, check=False)
    assert result.returncode != 0 and "line 2: file not found" in result.stderr and "Traceback" not in result.stderr


def test_fifty_classes_stay_readable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = [f"class {i}" for i in range(50)]
    labels = [c for c in range(50) for _ in range(4)]
    predictions = [c if i % 4 else (c + 1) % 50 for i, c in enumerate(labels)]  # one in 4 taken for the next class
    predictions[labels.index(7)] = predictions[labels.index(7) + 1] = 3  # class 7: two of its 4 wrong
    report = build_report(labels, predictions, names)
    assert report["weakest_class"] == "class 7" and report["per_class"]["class 7"]["recall"] == 0.5
    print_report(report)
    out = capsys.readouterr().out
    assert "weakest class: class 7, recall 50.0% on 4 photos" in out
    # No 50-column matrix in the console: its largest confusions instead, and every line fits a terminal.
    assert "the most frequent confusions" in out and "class 7 taken for class 3" in out
    assert max(len(line) for line in out.splitlines()) < 120
    save_confusion_matrix(report["confusion_matrix"], names, tmp_path / "matrix.png")
    with Image.open(tmp_path / "matrix.png") as image:
        assert image.width <= 4000 and image.height <= 2000  # 3 + 0.3 inches a class, not 0.6: 1,800 px high
