"""compare_recipes.py run for real on a tiny Kaggle-style folder: split, two trainings, a test-accuracy table."""

from __future__ import annotations

from pathlib import Path

from cats_dogs.checkpoint import read_checkpoint
from cats_dogs.csv_rows import read_csv_rows
from conftest import make_photo, run_script


def test_recipe_table_on_a_60_20_20_split(tmp_path: Path) -> None:
    for label, name in enumerate(("cat", "dog")):
        for i in range(10):
            make_photo(tmp_path / "kaggle" / f"{name}.{i}.jpg", label, seed=label * 100 + i, size=(24, 24))
    result = run_script("studies/compare_recipes.py", "--from", "kaggle", "--seeds", "1", "2", "--", "--weights", "none",
                        "--epochs", "2", "--image-size", "32", "--batch-size", "4", "--model", "resnet18",
                        "--swanlab-mode", "disabled", cwd=tmp_path, timeout=900)
    assert [len(read_csv_rows(tmp_path / f"recipes/data/{split}.csv")) for split in ("train", "val", "test")] == [12, 4, 4]
    lines = (tmp_path / "recipes/recipes.md").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "| recipe | test accuracy (mean ± sd) | per seed | epoch kept | wall time per run | 95% CI per seed |"
    tutorial, ours = lines[2], lines[3]
    assert tutorial.startswith("| tutorial (constant lr, no augmentation, torchvision init, last epoch) |")
    assert "| 2 of 2, 2 of 2 |" in tutorial  # the last epoch of each seed's run
    assert ours.startswith("| this project's defaults")
    per_seed = []
    for row in (tutorial, ours):
        cells = [cell.strip() for cell in row.split("|")]
        accuracies = [float(a) for a in cells[3].split(", ")]
        assert len(accuracies) == 2 and all(a in (0.0, 25.0, 50.0, 75.0, 100.0) for a in accuracies)  # 4 test photos
        assert cells[2].startswith(f"{sum(accuracies) / 2:.2f}% ± ")
        assert cells[6].count("(4 photos)") == 2  # each run's Wilson interval on its 4 test photos
        per_seed.append(accuracies)
    gains = [b - a for a, b in zip(*per_seed, strict=True)]
    assert lines[5] == (f"defaults − tutorial: {sum(gains) / 2:+.2f} points over 2 seed(s) (1, 2); "
                        f"per seed: {gains[0]:+.2f}, {gains[1]:+.2f}")
    for seed in (1, 2):  # each recipe trained once per seed, with that seed
        checkpoint = read_checkpoint(tmp_path / f"recipes/recipe1-seed{seed}/latest_checkpoint.pth")
        assert checkpoint["config"]["seed"] == seed and checkpoint["config"]["zero_init_residual"] is True
    tutorial_config = read_checkpoint(tmp_path / "recipes/recipe0-seed1/latest_checkpoint.pth")["config"]
    assert tutorial_config["scheduler"] == "none" and tutorial_config["augment"] == "none"
    assert not tutorial_config["zero_init_residual"]
    assert "\n".join(lines) in result.stdout
