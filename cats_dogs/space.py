"""export.py --space DIR: a Hugging Face Space folder that serves the page anywhere, without this repository.

    DIR/app.py                          this repository's app.py, unchanged
    DIR/cats_dogs/…                     only the package modules app.py's imports reach
    DIR/checkpoint/best_checkpoint.pth  the weights, without the optimizer state (app.py's default checkpoint)
    DIR/datasets/val/<class>/…          two example photos per class (app.py's default --data-dir)
    DIR/requirements.txt                the page's packages, pinned as in requirements.txt
    DIR/README.md                       the Spaces header (sdk: gradio, its version, app_file: app.py)
    DIR/.gitattributes                  the checkpoint through Git LFS, which a git push to a Space needs

A Space runs `python app.py` in that folder with no flags, so everything sits where app.py looks by default.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

from cats_dogs.checkpoint import Checkpoint, read_checkpoint, save_checkpoint
from cats_dogs.images import IMAGE_EXTENSIONS

REPO = Path(__file__).resolve().parent.parent
EXAMPLES_PER_CLASS = 2  # as app.py shows them
# What app.py imports at the top and when serving (Grad-CAM: captum, matplotlib; the CPU engine: openvino
# from an ONNX export). nncf (INT8) is left out: it calibrates on the train photos, which a Space does not have.
SPACE_PACKAGES = ("torch", "torchvision", "gradio", "pillow", "matplotlib", "captum", "onnx", "onnxscript", "openvino")


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


def space_readme(meta: Checkpoint, gradio_version: str) -> str:
    """README.md with the Spaces configuration header (https://huggingface.co/docs/hub/spaces-config-reference)."""
    classes = meta["class_names"]
    title = " vs ".join(name.capitalize() for name in classes)
    accuracy = meta.get("best_val_acc")
    header = {"title": title[:60], "emoji": "🐾", "colorFrom": "yellow", "colorTo": "blue", "sdk": "gradio",
              "sdk_version": gradio_version, "python_version": "3.11", "app_file": "app.py", "pinned": False,
              "short_description": f"{meta['arch']}: {', '.join(classes)}"[:60]}
    # JSON's strings and booleans are YAML too, so class names with colons or Chinese need no escaping rules.
    lines = ["---", *(f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in header.items()), "---"]
    return "\n".join([
        *lines, "",
        f"# {title}", "",
        f"A {meta['arch']} trained to tell apart: {', '.join(classes)} "
        f"({meta['image_size']}×{meta['image_size']} pixels"
        + (f", {accuracy:.1f}% on its validation photos" if accuracy is not None else "") + ").",
        "Upload a photo for the probabilities, a \"not sure\" below the threshold and a heat map of where the model",
        "looked; the \"Many photos\" tab takes files or a zip. The page is in Chinese for Chinese browsers.", "",
        "From a script:", "",
        "```python",
        "from gradio_client import Client, handle_file",
        "Client(\"<user>/<space>\").predict(handle_file(\"cat.jpg\"), api_name=\"/predict\")",
        "```", "",
        "Made with `python export.py --space DIR` (cats vs dogs with PyTorch, SwanLab and Gradio).", ""])


def example_photos(data_dir: Path | None) -> list[Path]:
    """The first photos of each class folder under DATA_DIR/val/, the ones app.py would show."""
    val_dir = data_dir / "val" if data_dir else None
    if val_dir is None or not val_dir.is_dir():
        return []
    photos = []
    for folder in sorted(p for p in val_dir.iterdir() if p.is_dir()):
        photos += sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[:EXAMPLES_PER_CLASS]
    return photos


def write_space(checkpoint_path: Path, space_dir: Path, data_dir: Path | None) -> list[Path]:
    """Write the Space folder (see the module's docstring); returns the example photos it copied."""
    if space_dir.exists() and any(space_dir.iterdir()):
        raise SystemExit(f"--space {space_dir}: the folder is not empty; give a new one (nothing in it was changed)")
    meta = read_checkpoint(checkpoint_path)
    requirements = pinned_requirements(REPO / "requirements.txt")
    gradio_version = next(line.split("==")[1] for line in requirements if line.startswith("gradio=="))
    for module in ["cats_dogs", *imported_modules(REPO / "app.py")]:
        source = REPO.joinpath(*module.split("."))
        source = source / "__init__.py" if source.is_dir() else source.with_suffix(".py")
        target = space_dir / source.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    shutil.copy2(REPO / "app.py", space_dir / "app.py")
    save_checkpoint(meta, space_dir / "checkpoint" / "best_checkpoint.pth", training_state=False)
    photos = example_photos(data_dir)
    for photo in photos:
        target = space_dir / "datasets" / "val" / photo.parent.name / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(photo, target)
    (space_dir / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    (space_dir / "README.md").write_text(space_readme(meta, gradio_version), encoding="utf-8")
    (space_dir / ".gitattributes").write_text("*.pth filter=lfs diff=lfs merge=lfs -text\n", encoding="utf-8")
    return photos


def folder_size_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6
