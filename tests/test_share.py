"""export.py --space and --ncnn run for real: a Space folder that starts and installs as Hugging Face Spaces do it,
from anywhere, and a phone model that answers like PyTorch in ncnn's own runtime."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
import yaml
from gradio_client import Client, handle_file
from packaging.requirements import Requirement

from cats_dogs.checkpoint import read_checkpoint
from cats_dogs.space import OPTIONAL_IMPORTS, imported_modules, published_checkpoint, space_requirements
from cats_dogs.translations import describe
from conftest import REPO, free_port, make_dataset, make_photo, run_script


def read_front_matter(readme: Path) -> dict:
    _, header, _ = readme.read_text(encoding="utf-8").split("---\n", 2)
    return yaml.safe_load(header)


@pytest.fixture(scope="module")
def exported_space(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`export.py --space` of trained_run (its engine built there, on its photos), copied elsewhere as a user would
    copy it into a Space's repository; and export.py's output."""
    tmp_path = tmp_path_factory.mktemp("space")
    result = run_script("export.py", "--space", str(tmp_path / "space"), cwd=trained_run)
    return shutil.copytree(tmp_path / "space", tmp_path / "elsewhere" / "my-space"), result.stdout


def serve_as_a_space(space: Path, port: int, log_path: Path) -> tuple[subprocess.Popen, Client]:
    """`python app.py` inside the folder as Hugging Face Spaces start it: no flags, the address and the port in
    GRADIO_SERVER_NAME and GRADIO_SERVER_PORT, and nothing of this repository on the path."""
    log = open(log_path, "w+", encoding="utf-8")
    path = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if entry and Path(entry).resolve() != REPO]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1",
           "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(port)}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise AssertionError(f"the Space's app.py exited {process.returncode}:\n{log.read()}")
        try:  # requests go to this machine only, as everywhere in the tests
            return process, Client(f"http://127.0.0.1:{port}/", verbose=False)
        except Exception:
            if time.monotonic() > deadline:
                process.terminate()
                raise
            time.sleep(0.5)


def listening_addresses(pid: int, port: int) -> set[str]:
    return {connection.laddr.ip for connection in psutil.Process(pid).net_connections(kind="inet")
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port}


def wait_for_line(log_path: Path, start: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in log_path.read_text(encoding="utf-8").splitlines() if line.startswith(start)]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no line starting {start!r} in {log_path}:\n{log_path.read_text(encoding='utf-8')}")


def files_under(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_size for path in folder.rglob("*") if path.is_file()}


def test_space_starts_as_spaces_start_it_and_answers_from_its_shipped_engine(exported_space: tuple[Path, str],
                                                                              trained_run: Path, tmp_path: Path) -> None:
    copied, output = exported_space
    assert "4 example photos" in output and "the Space answers with openvino" in output
    header = read_front_matter(copied / "README.md")
    assert header["sdk"] == "gradio" and header["sdk_version"] == "6.31.0" and header["app_file"] == "app.py"
    assert header["title"] == "Cat vs Dog"
    # Lean: only what app.py's imports reach, not training's modules.
    assert (copied / "cats_dogs/engines.py").is_file() and not (copied / "cats_dogs/photo_batches.py").exists()
    assert sorted(p.name for p in (copied / "datasets/val").rglob("*.jpg")) == ["cat.0.jpg", "cat.1.jpg", "dog.0.jpg",
                                                                                "dog.1.jpg"]
    shipped = files_under(copied / "checkpoint/engines")
    assert any(name.endswith(".bin") for name in shipped) and not any(name.endswith(".onnx") for name in shipped)
    assert "*.bin filter=lfs" in (copied / ".gitattributes").read_text(encoding="utf-8")

    port, log_path = free_port(), tmp_path / "space.log"
    process, client = serve_as_a_space(copied, port, log_path)
    try:
        assert listening_addresses(process.pid, port) == {"0.0.0.0"}  # every address, at the port it was given
        engine_line = wait_for_line(log_path, "engine: ")
        photo = make_photo(tmp_path / "red.jpg", 0, seed=5)
        answer = client.predict(handle_file(str(photo)), api_name="/predict")
        assert answer["label"] in ("cat", "dog") and len(answer["confidences"]) == 2
        probabilities, verdict, heatmap = client.predict(handle_file(str(photo)), 0.7, True, False, api_name="/classify")
        assert verdict and Path(heatmap).is_file()
        page = [requests.get(f"http://127.0.0.1:{port}/{path}", timeout=30).text for path in ("", "config")]
    finally:
        process.terminate()
        process.wait(timeout=30)
    log = log_path.read_text(encoding="utf-8")
    assert f"loaded checkpoint{os.sep}best_checkpoint.pth" in log  # the copy's own checkpoint, found by default
    assert "warning: --host 0.0.0.0: anyone who can reach this machine on port" in log
    # The shipped engine answered, loaded as it came: nothing was built or added at the start.
    assert engine_line.startswith("engine: openvino") and "exporting the model" not in log
    assert files_under(copied / "checkpoint/engines") == shipped
    card = (copied / "README.md").read_text(encoding="utf-8")
    assert re.search(r"- Accuracy: [\d.]+% on 8 val photos \(95% interval \d+–\d+%\)", card), card
    # No path of the machine it was trained on: not in the folder's files (the checkpoint, the engine's report), nor
    # in the page.
    trained_here = str(trained_run.resolve())
    for name in files_under(copied):
        assert trained_here.encode() not in (copied / name).read_bytes(), name
    assert page[1].startswith("{") and not any(trained_here in text for text in page)
    assert "data_dir" not in read_checkpoint(copied / "checkpoint/best_checkpoint.pth")["config"]

    again = run_script("export.py", "--space", str(copied), cwd=trained_run, check=False)
    assert again.returncode != 0 and "is not empty" in again.stderr  # nothing already there is overwritten


def distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def provided_distributions(requirement_lines: list[str]) -> set[str]:
    """The distributions that a pip install of these lines installs: each line's, and what they require, recursively
    (read from this environment's metadata: requirements.txt installed the same versions here)."""
    pending = [Requirement(line) for line in requirement_lines if line and not line.startswith(("-", "#"))]
    provided = set()
    while pending:
        requirement = pending.pop()
        name = distribution(requirement.name)
        if name in provided:
            continue
        provided.add(name)
        extras = requirement.extras or {""}
        for dependency in map(Requirement, importlib.metadata.requires(name) or []):
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": extra}) for extra in extras):
                pending.append(dependency)
    return provided


def imported_names(folder: Path) -> dict[str, set[str]]:
    """The top-level name of every module that the folder's .py files import (at the top or inside a function), and
    the files that import it."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(folder)))
    return found


def test_space_requirements_provide_every_import_of_its_files(exported_space: tuple[Path, str]) -> None:
    copied, _ = exported_space
    lines = (copied / "requirements.txt").read_text(encoding="utf-8").splitlines()
    provided = provided_distributions(lines)
    sources = importlib.metadata.packages_distributions()
    local = {path.stem for path in copied.glob("*.py")} | {path.name for path in copied.iterdir() if path.is_dir()}
    imported = imported_names(copied)
    missing = {name: sorted(files) for name, files in imported.items()
               if name not in sys.stdlib_module_names and name not in local and name not in OPTIONAL_IMPORTS
               and not {distribution(found) for found in sources.get(name, [])} & provided}
    assert not missing, f"imported in the Space's folder, installed by no line of its requirements.txt: {missing}"
    assert set(OPTIONAL_IMPORTS) <= set(imported)  # an optional import no longer there is taken off the list

    # A CPU Space gets PyTorch's CPU build from PyTorch's index; --space-gpu the CUDA build from PyPI.
    assert lines[0] == "--extra-index-url https://download.pytorch.org/whl/cpu"
    assert "torch==2.14.1+cpu" in lines and "torchvision==0.29.1+cpu" in lines and "gradio==6.31.0" in lines
    assert not any("swanlab" in line for line in lines)
    gpu = space_requirements(REPO / "requirements.txt", gpu=True)
    assert "torch==2.14.1" in gpu and not any(line.startswith("--") or "+cpu" in line for line in gpu)


def test_published_checkpoint_names_no_path_of_the_training_machine() -> None:
    weights = "/home/ada/models/resnet50-imagenet.pth"
    checkpoint = {"weights": weights, "config": {"data_dir": "/home/ada/photos", "output_dir": "/home/ada/runs/1",
                                                 "weights": weights, "lr": 0.01, "log_dir": r"C:\Users\ada\tb"}}
    published = published_checkpoint(checkpoint)
    assert published["weights"] == "resnet50-imagenet.pth"
    assert published["config"] == {"weights": "resnet50-imagenet.pth", "lr": 0.01, "log_dir": "tb"}
    header = describe(published | {"arch": "resnet50", "class_names": ["cat", "dog"], "metrics": {}, "epoch": 1,
                                   "saved_at": None}, Path("checkpoint/best_checkpoint.pth"))
    assert "fine-tuned from resnet50-imagenet.pth" in header and "/home/ada" not in header


def test_space_modules_are_the_import_graph_of_app(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "app.py").write_text("from pkg.a import x\nimport os\n", encoding="utf-8")
    (tmp_path / "pkg/a.py").write_text("def f():\n    from pkg.b import y\n", encoding="utf-8")
    (tmp_path / "pkg/b.py").write_text("from pkg import c\n", encoding="utf-8")
    (tmp_path / "pkg/c.py").write_text("", encoding="utf-8")
    (tmp_path / "pkg/unused.py").write_text("", encoding="utf-8")
    assert imported_modules(tmp_path / "app.py", "pkg") == ["pkg.a", "pkg.b", "pkg.c"]
    assert "cats_dogs.translations" in imported_modules(REPO / "app.py")


def real_or_generated_photos(tmp_path: Path) -> Path:
    """The tutorial's real photos when the shared data is there (CI has it), else generated ones."""
    real = os.environ.get("CATS_DOGS_TUTORIAL_DIR")
    return Path(real) if real and (Path(real) / "val.csv").is_file() else make_dataset(tmp_path / "photos")


def test_ncnn_export_parity_on_photos_and_preprocessing_json(trained_run: Path, tmp_path: Path) -> None:
    if not os.environ.get("CI"):  # CI installs requirements-export.txt, and fails here rather than skip
        pytest.importorskip("ncnn", reason="pip install -r requirements-export.txt")
    photos = real_or_generated_photos(tmp_path)
    result = run_script("export.py", "--ncnn", str(tmp_path / "phone"), "--data-dir", str(photos), cwd=trained_run)
    found = re.search(r"ncnn parity on (\d+) photo\(s\): max \|Δ probability\| = (\S+) .* on (\d+)/(\d+)", result.stdout)
    assert found, result.stdout
    checked, difference, agreeing = int(found.group(1)), float(found.group(2)), int(found.group(3))
    assert checked >= 8 and agreeing == checked and difference <= 1e-2
    info = json.loads((tmp_path / "phone/model.json").read_text(encoding="utf-8"))
    assert info["class_names"] == ["cat", "dog"] and info["size"] == 32 and info["input"] == "in0"
    assert info["mean"] == pytest.approx([0.485, 0.456, 0.406]) and info["ncnn_mean_vals"][0] == pytest.approx(123.675)
    assert (tmp_path / "phone/model.ncnn.param").is_file() and (tmp_path / "phone/model.ncnn.bin").stat().st_size > 1e6


def test_ncnn_export_names_the_requirements_file_when_the_exporters_are_missing(trained_run: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"  # modules named ncnn and pnnx that fail to import, as when they are not installed
    for name in ("ncnn", "pnnx"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text("raise ImportError('not installed')\n", encoding="utf-8")
    result = run_script("export.py", "--ncnn", str(tmp_path / "phone"), cwd=trained_run, check=False,
                        env={"PYTHONPATH": str(blocker)})
    assert result.returncode != 0 and "pip install -r requirements-export.txt" in result.stderr
    assert "Traceback" not in result.stderr


def test_app_takes_its_address_from_gradios_variables_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import get_args_parser

    for name in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    args = get_args_parser().parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 7860)  # as before: this machine only
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # as Hugging Face Spaces start app.py
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8123")
    args = get_args_parser().parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 8123)
    args = get_args_parser().parse_args(["--host", "127.0.0.1", "--port", "9000"])
    assert (args.host, args.port) == ("127.0.0.1", 9000)  # a flag wins
