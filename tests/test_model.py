"""cats_dogs/model.py: a torchvision ResNet with one output per class, from ImageNet weights, a file, or scratch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cats_dogs.model import build_model
from conftest import REPO


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_build_model_replaces_the_head(arch: str) -> None:
    model = build_model(arch, num_classes=3, weights="none").eval()
    assert model.fc.out_features == 3
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_build_model_loads_a_local_state_dict(tmp_path: Path) -> None:
    imagenet_like = build_model("resnet18", num_classes=1000, weights="none")
    torch.save(imagenet_like.state_dict(), tmp_path / "resnet18.pth")
    model = build_model("resnet18", num_classes=2, weights=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.conv1.weight, imagenet_like.conv1.weight)
    assert model.fc.out_features == 2


def test_zero_init_residual_starts_each_block_as_the_identity_unless_weights_are_loaded(tmp_path: Path) -> None:
    zeroed = build_model("resnet50", 2, weights="none", zero_init_residual=True)
    last_bns = [block.bn3.weight for layer in (zeroed.layer1, zeroed.layer4) for block in layer]
    assert all(torch.count_nonzero(weight) == 0 for weight in last_bns)
    assert torch.count_nonzero(build_model("resnet50", 2, weights="none").layer1[0].bn3.weight) > 0
    block = zeroed.layer2[1].eval()  # a block that keeps its size: with a zero branch it is relu(x)
    x = torch.randn(1, 512, 8, 8)
    assert torch.equal(block(x), torch.relu(x))
    pretrained = build_model("resnet18", 1000, weights="none")
    torch.save(pretrained.state_dict(), tmp_path / "resnet18.pth")
    loaded = build_model("resnet18", 2, weights=str(tmp_path / "resnet18.pth"), zero_init_residual=True)
    assert torch.equal(loaded.layer1[0].bn2.weight, pretrained.layer1[0].bn2.weight)  # the file's values, not zeros


def test_build_model_refuses_weights_of_another_architecture(tmp_path: Path) -> None:
    torch.save(build_model("resnet18", 2).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(SystemExit, match="does not hold resnet50 weights"):
        build_model("resnet50", 2, weights=str(tmp_path / "r18.pth"))
    with pytest.raises(SystemExit, match="no such file"):
        build_model("resnet50", 2, weights=str(tmp_path / "missing.pth"))


def test_failed_weight_download_names_the_ways_out(tmp_path: Path) -> None:
    # A proxy on a closed port makes the download fail at once, with or without internet.
    env = {**os.environ, "TORCH_HOME": str(tmp_path), "HTTPS_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}
    code = "from cats_dogs.model import build_model; build_model('resnet18', 2, weights='IMAGENET1K_V2')"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Could not download the resnet18 IMAGENET1K_V1 ImageNet weights" in result.stderr
    assert "--weights none" in result.stderr and "--weights path/to/file.pth" in result.stderr
    assert "Traceback" not in result.stderr
