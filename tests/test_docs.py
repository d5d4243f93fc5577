"""The READMEs and docs/ stay true: file names from torchvision, commands the tests and CI run."""

from __future__ import annotations

import re

import torchvision

from conftest import REPO


def test_the_file_names_in_the_docs_are_torchvisions() -> None:
    text = (REPO / "docs/platforms.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        enum = torchvision.models.get_model_weights(arch)
        row = next(line for line in text.splitlines() if line.startswith(f"| {arch} |"))
        for name in ("IMAGENET1K_V2", "IMAGENET1K_V1"):
            if hasattr(enum, name):
                assert enum[name].url.rsplit("/", 1)[1] in row
                assert enum[name].url.rsplit("/", 1)[0] == "https://download.pytorch.org/models"
    default = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url
    assert default in text and default in readme


def test_the_chinese_readme_shows_only_commands_the_english_docs_show() -> None:
    def commands(text: str) -> set[str]:
        blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
        return {line.split("#")[0].strip() for block in blocks for line in block.splitlines() if line.split("#")[0].strip()}

    chinese = (REPO / "README.zh-CN.md").read_text(encoding="utf-8")
    english = "\n".join(path.read_text(encoding="utf-8") for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    shown = commands(chinese)
    assert len(shown) >= 10
    assert shown <= commands(english) | {line for line in shown if line in english}, shown - commands(english)
    assert "[English](README.md)" in chinese and "[简体中文](README.zh-CN.md)" in (REPO / "README.md").read_text("utf-8")
