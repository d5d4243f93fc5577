"""weights.py: weights files from outside are read as tensors only, and torchvision's cached file must match its name.

A pickle can run any code while it is read. The "weights" planted here write a marker file when unpickled the
unsafe way (torch.load with weights_only=False, what torchvision's own get_state_dict does).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
import torchvision

from cats_dogs.model import build_model
from cats_dogs.weights import read_state_dict, weights_cache_path
from conftest import make_dataset, run_script

RESNET50_V2 = torchvision.models.ResNet50_Weights.IMAGENET1K_V2


class RunsCode:
    """Unpickled with weights_only=False, this runs `exec` on its code: here, writing a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('the weights file ran code')",)


def malicious_weights(marker: Path) -> bytes:
    saved = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": RunsCode(marker)}, saved)
    return saved.getvalue()


def hub_file(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where torchvision keeps resnet50's IMAGENET1K_V2 download under this TORCH_HOME: .../resnet50-11ad3fa6.pth."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    path = weights_cache_path(RESNET50_V2)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_a_pickle_planted_in_torchvisions_cache_runs_nothing_when_train_starts(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    planted = tmp_path / "torch_home/hub/checkpoints" / RESNET50_V2.url.rsplit("/", 1)[1]
    planted.parent.mkdir(parents=True)
    planted.write_bytes(malicious_weights(marker))
    make_dataset(tmp_path / "datasets", per_class_train=2, per_class_val=1)
    result = run_script("train.py", "--epochs", "1", "--image-size", "32", "--swanlab-mode", "disabled", cwd=tmp_path,
                        env={"TORCH_HOME": str(tmp_path / "torch_home")}, check=False)
    assert not marker.exists()
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{planted} is not the file its name promises" in result.stderr
    assert "Delete it" in result.stderr and RESNET50_V2.url in result.stderr


def test_a_cached_file_that_does_not_match_its_hash_is_refused_even_when_it_holds_only_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = hub_file(tmp_path, monkeypatch)
    torch.save(torchvision.models.resnet50().state_dict(), path)  # harmless, but not the file its name promises
    with pytest.raises(SystemExit, match=f"(?s){path.name} is not the file its name promises.*Delete it"):
        build_model("resnet50", 2, weights="IMAGENET1K_V2")


def test_a_pickle_whose_name_carries_its_own_hash_is_still_read_as_tensors_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash only says the file is the one named; what keeps code from running is weights_only."""
    marker = tmp_path / "ran.txt"
    content = malicious_weights(marker)
    name = f"resnet50-{hashlib.sha256(content).hexdigest()[:8]}.pth"
    monkeypatch.setattr(RESNET50_V2.value, "url", f"{RESNET50_V2.url.rsplit('/', 1)[0]}/{name}")
    path = hub_file(tmp_path, monkeypatch)
    assert path.name == name
    path.write_bytes(content)
    with pytest.raises(SystemExit, match=f"{name} is not a readable PyTorch checkpoint"):
        build_model("resnet50", 2, weights="IMAGENET1K_V2")
    assert not marker.exists()


def test_a_weights_file_given_by_path_is_read_as_tensors_only(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    (tmp_path / "evil.pth").write_bytes(malicious_weights(marker))
    with pytest.raises(ValueError, match="evil.pth is not a readable PyTorch checkpoint"):
        read_state_dict(tmp_path / "evil.pth")
    make_dataset(tmp_path / "datasets", per_class_train=2, per_class_val=1)
    result = run_script("train.py", "--epochs", "1", "--image-size", "32", "--weights", "evil.pth",
                        "--swanlab-mode", "disabled", cwd=tmp_path, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr and "evil.pth" in result.stderr
    assert not marker.exists()
