"""study_checkpoints.py run for real, tiny: every recipe trained, every candidate measured, without SwanLab."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import make_dataset, make_photo, run_script


def test_study_runs_end_to_end_without_swanlab(tmp_path: Path) -> None:
    kaggle = tmp_path / "kaggle"  # Kaggle's flat layout: cat.N.jpg, dog.N.jpg
    for label, name in enumerate(("cat", "dog")):
        for i in range(10):
            make_photo(kaggle / f"{name}.{i}.jpg", label, seed=500 + label * 100 + i)
    tutorial = make_dataset(tmp_path / "tutorial", per_class_train=3, per_class_val=2)
    make_photo(tutorial / "train" / "cat" / "copy.jpg", 0, seed=500)  # the same bytes as kaggle/cat.0.jpg
    with open(tutorial / "train.csv", "a", encoding="utf-8") as rows:
        rows.write("train/cat/copy.jpg,0\n")
    blocked = tmp_path / "blocked" / "swanlab"  # as on a GPU server without SwanLab: importing it fails
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ModuleNotFoundError('no swanlab here')\n", encoding="utf-8")

    result = run_script("studies/study_checkpoints.py", "--data-dir", str(kaggle), "--test-dir", str(tutorial),
                        "--work", "work", "--out", "study.md", "--seeds", "1", "--epochs", "2", "--image-size", "32",
                        "--model", "resnet18", "--device", "cpu", "--jobs", "2", "--", "--batch-size", "4",
                        cwd=tmp_path, env={"PYTHONPATH": str(blocked.parent)}, timeout=600)

    assert "test set: 10 photos" in result.stdout and "1 also in the training photos" in result.stdout
    table = (tmp_path / "study.md").read_text(encoding="utf-8").splitlines()
    header, rows = table[2], table[4:7]
    assert "| last | last + TTA | window |" in header and "| ema | ema + TTA | best | best + TTA |" in header
    assert "| paired | paired + TTA |" in header
    assert [row.split(" | ")[0] for row in rows] == ["| defaults", "| strong augmentation", "| tutorial"]
    for row in rows:  # 12 accuracies, each a multiple of 10% on 10 photos
        cells = row.strip("|").split(" | ")[1:13]
        assert all(float(cell) % 10 == 0 for cell in cells), row
    # Then each run's served epochs, window's and paired's, each against the last epoch (2) on val.
    served = table[table.index("| recipe | seed | window | paired |") + 2:]
    assert [row.split(" | ")[:2] for row in served] == [["| defaults", "1"], ["| strong augmentation", "1"],
                                                        ["| tutorial", "1"]]
    for row in served:
        for cell in row.strip(" |").split(" | ")[2:]:
            assert cell == "2, the last" or re.fullmatch(r"1 \(\d+ vs \d+ photos, p = [\d.e-]+: (not distinguishable|"
                                                         r"(better|worse) beyond the uncertainty)\)", cell), row
    runs = tmp_path / "work" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["defaults-seed1", "strong-augmentation-seed1", "tutorial-seed1"]
    assert (runs / "strong-augmentation-seed1" / "candidates" / "ema.pth").is_file()
