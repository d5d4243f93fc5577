"""notebooks/tutorial.ipynb run top to bottom, as a learner would, on tiny generated photos: a broken cell fails here."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO, free_port, make_photo


def copy_of_the_repository(folder: Path) -> Path:
    """The scripts and the package, where the notebook expects them (its cells run `python train.py` in its folder)."""
    folder.mkdir()
    for file in [*REPO.glob("*.py"), *REPO.glob("requirements*.txt")]:
        shutil.copy2(file, folder / file.name)
    shutil.copytree(REPO / "cats_dogs", folder / "cats_dogs", ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def test_tutorial_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = copy_of_the_repository(tmp_path / "project")
    for label, name in enumerate(("cat", "dog")):
        for i in range(10):
            make_photo(tmp_path / "my_photos" / name / f"{name}{i}.jpg", label, seed=label * 100 + i)
    parameters = {"EPOCHS": "1", "IMAGE_SIZE": "32", "WEIGHTS": "none", "MODEL": "resnet18", "DATA": "datasets",
                  "PHOTOS": str(tmp_path / "my_photos"), "PORT": str(free_port())}
    for name, value in parameters.items():
        monkeypatch.setenv(name, value)
    # `!python` in the cells must be this interpreter, as it is in an activated environment.
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    notebook = nbformat.read(REPO / "notebooks/tutorial.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()

    outputs = "\n".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert (workdir / "datasets/train.csv").is_file() and (workdir / "checkpoint/best_checkpoint.pth").is_file()
    assert "SwanLab dashboard: http://127.0.0.1:5092" in outputs
    assert "'label': 'cat'" in outputs or "'label': 'dog'" in outputs  # the page answered /predict
    assert (workdir / "eval/report.json").is_file() and (workdir / "model.onnx").is_file()
    assert (workdir / "space/README.md").is_file() and (workdir / "space/checkpoint/best_checkpoint.pth").is_file()
