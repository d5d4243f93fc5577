"""compare_models.py run for real: one row, one checkpoint folder and one SwanLab experiment per model."""

from __future__ import annotations

from pathlib import Path

from conftest import FAST_TRAIN_FLAGS, make_dataset, read_swanlab_runs, run_script


def test_comparison_table_has_one_row_per_model(tmp_path: Path) -> None:
    make_dataset(tmp_path / "datasets", per_class_train=4, per_class_val=2)
    result = run_script("studies/compare_models.py", "--models", "resnet18", "resnet34", "--", *FAST_TRAIN_FLAGS,
                        "--epochs", "1", cwd=tmp_path, timeout=900)
    table = (tmp_path / "checkpoint/compare/comparison.md").read_text(encoding="utf-8").splitlines()
    assert table[0].startswith("| model | best val acc (%) | 95% CI | val loss | params (M) | GFLOPs | train time (s) | "
                               "images/s |")
    assert [line.split("|")[1].strip() for line in table[2:]] == ["resnet18", "resnet34"]
    assert table[2].split("|")[5].strip() == "11.18" and table[3].split("|")[5].strip() == "21.29"  # parameters, M
    assert table[2].split("|")[3].strip().endswith("(4 photos)")  # Wilson's interval on the 4 val photos
    assert "\n".join(table) in result.stdout
    for model in ("resnet18", "resnet34"):
        assert (tmp_path / "checkpoint/compare" / model / "best_checkpoint.pth").is_file()
    runs = read_swanlab_runs(tmp_path / "swanlog")
    assert [run["name"] for run in runs] == ["resnet18", "resnet34"]
