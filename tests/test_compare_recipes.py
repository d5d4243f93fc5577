"""compare_recipes.py run for real on a tiny Kaggle-style folder: split, two trainings, a test-accuracy table."""

from __future__ import annotations

from pathlib import Path

from conftest import make_photo, run_script
from load_datasets import read_csv_rows


def test_recipe_table_on_a_60_20_20_split(tmp_path: Path) -> None:
    for label, name in enumerate(("cat", "dog")):
        for i in range(10):
            make_photo(tmp_path / "kaggle" / f"{name}.{i}.jpg", label, seed=label * 100 + i, size=(24, 24))
    result = run_script("compare_recipes.py", "--from", "kaggle", "--", "--weights", "none", "--epochs", "2",
                        "--image-size", "32", "--batch-size", "4", "--model", "resnet18", "--swanlab-mode", "disabled",
                        cwd=tmp_path, timeout=600)
    assert [len(read_csv_rows(tmp_path / f"recipes/data/{split}.csv")) for split in ("train", "val", "test")] == [12, 4, 4]
    table = (tmp_path / "recipes/recipes.md").read_text(encoding="utf-8").splitlines()
    assert len(table) == 4 and table[0] == "| recipe | test accuracy | epoch kept | wall time |"
    assert table[2].startswith("| tutorial (constant lr, no augmentation, last epoch) |") and "| 2 of 2 |" in table[2]
    assert table[3].startswith("| this project's defaults")
    for row in table[2:]:
        accuracy = float(row.split("|")[2].strip().rstrip("%"))
        assert accuracy in (0.0, 25.0, 50.0, 75.0, 100.0)  # 4 test photos
    assert "\n".join(table) in result.stdout
