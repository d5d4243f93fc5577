"""export.py --space DIR: a Hugging Face Space folder that serves the page anywhere, without this repository.

    DIR/app.py                          this repository's app.py, unchanged
    DIR/cats_dogs/…                     only the package modules app.py's imports reach
    DIR/checkpoint/best_checkpoint.pth  the weights, without the optimizer state (app.py's default checkpoint), and
                                        without a path of the machine it was trained on (published_checkpoint)
    DIR/checkpoint/engines/…            the serving engine built here for that copy, where the train photos are:
                                        OpenVINO INT8 when it passes its check, else fp32 (ship_engine)
    DIR/datasets/val/<class>/…          two example photos per class (app.py's default --data-dir)
    DIR/requirements.txt                the packages its files import, pinned as in requirements.txt; PyTorch's
                                        CPU build unless --space-gpu
    DIR/README.md                       the Spaces header (sdk: gradio, its version, app_file: app.py) and a model
                                        card: which engine answers, its accuracy on the val photos with its interval
    DIR/.gitattributes                  the checkpoint and the engine through Git LFS, which a git push to a Space needs

A Space runs `python app.py` in that folder with no flags and GRADIO_SERVER_NAME=0.0.0.0, GRADIO_SERVER_PORT=7860,
after a pip install of requirements.txt alone: everything sits where app.py looks by default.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import torch

from cats_dogs.checkpoint import Checkpoint, load_checkpoint, read_checkpoint, save_checkpoint
from cats_dogs.engine_build import wait_for_background_build
from cats_dogs.engines import engine_path, load_engine
from cats_dogs.images import IMAGE_EXTENSIONS
from cats_dogs.intervals import wilson_interval

REPO = Path(__file__).resolve().parent.parent
EXAMPLES_PER_CLASS = 2  # as app.py shows them
# What the Space's files import (Grad-CAM: captum, matplotlib; the engine: openvino, and onnx with onnxscript to
# build it at start when none was shipped; engine_build: psutil). tests/test_share.py checks that these and what
# they depend on provide every import of the folder but OPTIONAL_IMPORTS.
SPACE_PACKAGES = ("torch", "torchvision", "gradio", "pillow", "matplotlib", "captum", "onnx", "onnxscript", "openvino",
                  "psutil")
# Imported by the Space's files, left out of its requirements on purpose: each has a fallback there.
OPTIONAL_IMPORTS = {
    "nncf": "only int8.nncf_int8 imports it, the reference the benchmarks compare against; never called on a Space",
    "onnxruntime": "an engine tried only when OpenVINO cannot load; PyTorch answers then",
}
# A CPU Space gets PyTorch's CPU wheels (about 2 GB installed, PyTorch's figure) instead of PyPI's CUDA build (this
# list installed 6.0 GB with it, measured; docs/share.md): their index beside PyPI, and +cpu pins, which only it has.
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
CPU_BUILDS = ("torch", "torchvision")
# Training's settings that name its folders: where it read the photos and wrote the checkpoints. A Space must neither
# show them nor look there (engines.find_data_dir would).
UNPUBLISHED_SETTINGS = ("data_dir", "output_dir")


def imported_modules(script: Path, package: str = "cats_dogs") -> list[str]:
    """The package's modules that `script` imports, directly or through each other (read from the source, not run)."""
    root, found = script.parent, set()
    pending = [script]
    while pending:
        tree = ast.parse(pending.pop().read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
                names = [node.module] if node.module != package else [f"{package}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.split(".")[0] == package]
            for name in names:
                path = root.joinpath(*name.split(".")).with_suffix(".py")
                if name not in found and path.is_file():
                    found.add(name)
                    pending.append(path)
    return sorted(found)


def space_requirements(requirements: Path, gpu: bool = False) -> list[str]:
    """The Space's requirements.txt: our pins of SPACE_PACKAGES; for a CPU Space, PyTorch's CPU builds from its index."""
    pins = pinned_requirements(requirements)
    if gpu:
        return pins
    return [f"--extra-index-url {CPU_TORCH_INDEX}",
            *(f"{pin}+cpu" if pin.split("==")[0].lower() in CPU_BUILDS else pin for pin in pins)]


def pinned_requirements(requirements: Path, packages: tuple[str, ...] = SPACE_PACKAGES) -> list[str]:
    """The lines of our requirements.txt that pin `packages`, comments left out."""
    if not requirements.is_file():
        raise SystemExit(f"--space copies the pins of {requirements}, which is missing: restore it (git checkout)")
    pins = {}
    for line in requirements.read_text(encoding="utf-8").splitlines():
        requirement = line.split("#")[0].strip()
        name = requirement.split("==")[0].split("[")[0].strip().lower()
        if name in packages:
            pins[name] = requirement
    missing = [name for name in packages if name not in pins]
    if missing:
        raise SystemExit(f"{requirements} pins no version of {', '.join(missing)}")
    return [pins[name] for name in packages]


def space_readme(meta: Checkpoint, gradio_version: str, card: list[str]) -> str:
    """README.md with the Spaces configuration header (https://huggingface.co/docs/hub/spaces-config-reference),
    and `card` (model_card) under it."""
    classes = meta["class_names"]
    title = " vs ".join(name.capitalize() for name in classes)
    header = {"title": title[:60], "emoji": "🐾", "colorFrom": "yellow", "colorTo": "blue", "sdk": "gradio",
              "sdk_version": gradio_version, "python_version": "3.11", "app_file": "app.py", "pinned": False,
              "short_description": f"{meta['arch']}: {', '.join(classes)}"[:60]}
    # JSON's strings and booleans are YAML too, so class names with colons or Chinese need no escaping rules.
    lines = ["---", *(f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in header.items()), "---"]
    return "\n".join([
        *lines, "",
        f"# {title}", "",
        f"A {meta['arch']} trained to tell apart: {', '.join(classes)} ({meta['image_size']}×{meta['image_size']} "
        "pixels). Upload a photo for the probabilities, a \"not sure\" below the threshold and a heat map of where",
        "the model looked; the \"Many photos\" tab takes files or a zip. The page is in Chinese for Chinese browsers.", "",
        *card, "",
        "From a script:", "",
        "```python",
        "from gradio_client import Client, handle_file",
        "Client(\"<user>/<space>\").predict(handle_file(\"cat.jpg\"), api_name=\"/predict\")",
        "```", "",
        "Made with `python export.py --space DIR` (cats vs dogs with PyTorch, SwanLab and Gradio).", ""])


def model_card(meta: Checkpoint, engine_line: str, report: dict | None, gpu: bool) -> list[str]:
    """The README's model card: the model, the engine that answers on the Space, and that engine's accuracy on the
    val photos with its 95% interval (Wilson's: on 70 photos one photo is 1.4 points), measured where it was built."""
    weights = str(meta["weights"] or "unknown")
    start = "trained from scratch" if weights.lower() == "none" else f"fine-tuned from {weights}"
    accuracy, photos = meta["metrics"].get("val_acc"), meta["metrics"].get("val_count")
    if gpu:
        engine = "PyTorch on the Space's GPU"
    elif report is not None and report["decision"] == "int8":
        engine = (f"OpenVINO INT8 (calibrated on {report['calibration_photos']} train photos; the same top "
                  f"class as fp32 PyTorch on {report['agreement']:.1%} of the val photos), shipped in checkpoint/engines/")
        accuracy, photos = report["int8_accuracy"], report["val_photos"]
    elif "engine: openvino" in engine_line:
        engine = "OpenVINO fp32 (the same answers as PyTorch within 1e-4), shipped in checkpoint/engines/" + (
            f"; INT8 was refused: {report['reason']}" if report else f" ({engine_line})")
        accuracy, photos = (report["fp32_accuracy"], report["val_photos"]) if report else (accuracy, photos)
    else:
        engine = f"PyTorch, until the page has built its engine at its first start ({engine_line})"
    if accuracy is None:
        measured = "not recorded in the checkpoint"
    elif photos:
        low, high = wilson_interval(round(accuracy / 100 * photos), int(photos))
        measured = f"{accuracy:.1f}% on {int(photos)} val photos (95% interval {100 * low:.0f}–{100 * high:.0f}%)"
    else:
        measured = f"{accuracy:.1f}% on its val photos (their number was not recorded: no interval)"
    lines = ["## Model card", "",
             f"- Model: {meta['arch']}, {start}, {meta['epoch']} epoch{'' if meta['epoch'] == 1 else 's'}; classes: "
             f"{', '.join(meta['class_names'])}",
             f"- Answers with: {engine}",
             f"- Accuracy: {measured}; photos unlike the training photos will do worse",
             "- It names one of its classes for any photo, also one that shows none of them"]
    if weights.lower() != "none" and sorted(name.lower() for name in meta["class_names"]) == ["cat", "dog"]:
        lines.append("- The \"not a cat or a dog\" hint is off here: it needs ImageNet's own classifier (about 100 MB more "
                     "for a ResNet50, and a second model run for every photo), which this folder does not ship")
    return lines


def published_name(value: object) -> object:
    """A path (the weights file training started from) as its file name alone; anything else as it is."""
    return re.split(r"[\\/]", value)[-1] if isinstance(value, str) and re.search(r"[\\/]", value) else value


def published_checkpoint(checkpoint: Checkpoint) -> Checkpoint:
    """The Space's copy: no folder of training (UNPUBLISHED_SETTINGS), every other path by its file name."""
    config = {key: published_name(value) for key, value in checkpoint["config"].items()
              if key not in UNPUBLISHED_SETTINGS}
    return Checkpoint(**{**checkpoint, "config": config, "weights": published_name(checkpoint["weights"])})


# An engine's files, each model's .bin before its .xml (the .xml marks a whole pair), the INT8 check's report last.
ENGINE_FILES = ("openvino.bin", "openvino.xml", "openvino-int8.bin", "openvino-int8.xml", "openvino-int8.json")


def reuse_engine(checkpoint_path: Path, space_checkpoint: Path) -> None:
    """The engine built for the checkpoint (by train.py, whose background build is waited for), copied for the Space's
    copy: the same weights at the same size make the same engine, checked on the same photos. ship_engine then finds
    it cached instead of building it again (about 20 s for a ResNet50 at 256² on 2 cores)."""
    wait_for_background_build("auto", checkpoint_path, torch.device("cpu"), None)
    copied = [name for name in ENGINE_FILES if engine_path(checkpoint_path, name).is_file()]
    for name in copied:
        target = engine_path(space_checkpoint, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(engine_path(checkpoint_path, name), target)
    if copied:
        print(f"the serving engine built for {checkpoint_path} is the Space's: copied, not built again")


def ship_engine(space_checkpoint: Path, data_dir: Path | None) -> tuple[dict | None, str]:
    """The serving engine built here for the Space's own copy of the checkpoint (engines.py keys it by the file's
    contents, which a git push keeps), calibrated and checked on the train and val photos, which a Space lacks.
    Only what the Space loads stays: INT8 alone when it passed, else fp32 with the report that says why.
    Returns the INT8 check's report (None when it was not tried) and the line that says what answers."""
    cpu = torch.device("cpu")
    model, meta = load_checkpoint(space_checkpoint, cpu)
    _, line = load_engine("auto", model, meta, space_checkpoint, cpu, None, data_dir)
    int8_xml = engine_path(space_checkpoint, "openvino-int8.xml")
    report = json.loads(int8_xml.with_suffix(".json").read_text(encoding="utf-8")) if int8_xml.with_suffix(
        ".json").is_file() else None
    unused = [engine_path(space_checkpoint, "model.onnx")]
    unused += ([engine_path(space_checkpoint, "openvino.xml"), engine_path(space_checkpoint, "openvino.bin")]
               if report and report["decision"] == "int8" else [int8_xml, int8_xml.with_suffix(".bin")])
    for path in unused:
        path.unlink(missing_ok=True)
    if report is not None:  # the report names where the photos were: not published
        report.pop("data_dir", None)
        int8_xml.with_suffix(".json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    engines = int8_xml.parent
    if engines.is_dir() and not any(engines.iterdir()):
        engines.rmdir()
    return report, line


def example_photos(data_dir: Path | None) -> list[Path]:
    """The first photos of each class folder under DATA_DIR/val/, the ones app.py would show."""
    val_dir = data_dir / "val" if data_dir else None
    if val_dir is None or not val_dir.is_dir():
        return []
    photos = []
    for folder in sorted(p for p in val_dir.iterdir() if p.is_dir()):
        photos += sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[:EXAMPLES_PER_CLASS]
    return photos


def write_space(checkpoint_path: Path, space_dir: Path, data_dir: Path | None, gpu: bool = False) -> tuple[list[Path], str]:
    """Write the Space folder (see the module's docstring); returns the example photos it copied and the engine's line."""
    if space_dir.exists() and any(space_dir.iterdir()):
        raise SystemExit(f"--space {space_dir}: the folder is not empty; give a new one (nothing in it was changed)")
    meta = published_checkpoint(read_checkpoint(checkpoint_path))
    requirements = space_requirements(REPO / "requirements.txt", gpu)
    gradio_version = next(line.split("==")[1] for line in requirements if line.startswith("gradio=="))
    for module in ["cats_dogs", *imported_modules(REPO / "app.py")]:
        source = REPO.joinpath(*module.split("."))
        source = source / "__init__.py" if source.is_dir() else source.with_suffix(".py")
        target = space_dir / source.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    shutil.copy2(REPO / "app.py", space_dir / "app.py")
    space_checkpoint = space_dir / "checkpoint" / "best_checkpoint.pth"
    save_checkpoint(meta, space_checkpoint, training_state=False)
    # Built for the copy just written, which is the file the Space loads. A GPU Space answers with PyTorch.
    if not gpu:
        reuse_engine(checkpoint_path, space_checkpoint)
    report, line = (None, "engine: torch (a GPU Space)") if gpu else ship_engine(space_checkpoint, data_dir)
    photos = example_photos(data_dir)
    for photo in photos:
        target = space_dir / "datasets" / "val" / photo.parent.name / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(photo, target)
    (space_dir / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    card = model_card(meta, line, report, gpu)
    (space_dir / "README.md").write_text(space_readme(meta, gradio_version, card), encoding="utf-8")
    (space_dir / ".gitattributes").write_text("".join(f"*.{suffix} filter=lfs diff=lfs merge=lfs -text\n"
                                                      for suffix in ("pth", "bin", "onnx")), encoding="utf-8")
    return photos, line


def folder_size_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6
