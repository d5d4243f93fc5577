"""The default command, `python train.py` with IMAGENET1K_V2, and the page on its result, offline.

torchvision looks for the weights in TORCH_HOME/hub/checkpoints/<the file name of the weights' URL>
before it downloads. The tests put a stand-in there (a random ResNet50 with a 1000-class head) and
block the network: whatever tries to connect anywhere but this machine is recorded and refused.
The file name carries the first 8 hex digits of the file's SHA-256 (resnet50-11ad3fa6.pth), and a file
that does not match its name is refused: the stand-in is published under its own hash, by pointing the
weights' URL at that name in every process of the test (sitecustomize).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
import torch
import torchvision
from gradio_client import handle_file

from app import NOT_A_PET
from cats_dogs.checkpoint import read_checkpoint
from cats_dogs.weights import weights_cache_path
from conftest import make_dataset, run_app, run_script

STAND_IN_CLASS = 0  # ImageNet's "tench", a fish: the stand-in sees every photo as neither cat nor dog

# Loaded by every Python process of the test (PYTHONPATH): refuses and records any connection off this machine.
NETWORK_GUARD = '''
import os, socket

_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else str(address)
    if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
        with open(os.environ["NETWORK_ATTEMPTS"], "a", encoding="utf-8") as log:
            log.write(f"{host}\\n")
        raise OSError(f"network blocked by the test: {host}")
    return _connect(self, address)


socket.socket.connect = _guarded_connect

if os.environ.get("STAND_IN_WEIGHTS_URL"):  # the stand-in's file name carries its own hash, as the real one does
    import torchvision

    torchvision.models.ResNet50_Weights.IMAGENET1K_V2.value.url = os.environ["STAND_IN_WEIGHTS_URL"]
'''


@pytest.fixture
def offline_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    """A TORCH_HOME holding the stand-in IMAGENET1K_V2 file, and an environment with the network blocked."""
    torch_home, guard = tmp_path / "torch_home", tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETWORK_GUARD, encoding="utf-8")
    torch.manual_seed(0)
    stand_in = torchvision.models.resnet50()
    with torch.no_grad():
        stand_in.fc.bias[STAND_IN_CLASS] = 50.0
    saved = io.BytesIO()
    torch.save(stand_in.state_dict(), saved)
    # The URL's folder stays torchvision's; the name is resnet50-<the stand-in's own hash>.pth.
    entry = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    url = f"{entry.url.rsplit('/', 1)[0]}/resnet50-{hashlib.sha256(saved.getvalue()).hexdigest()[:8]}.pth"
    monkeypatch.setattr(entry.value, "url", url)
    env = {"STAND_IN_WEIGHTS_URL": url,
           "TORCH_HOME": str(torch_home), "PYTHONPATH": os.pathsep.join([str(guard), os.environ.get("PYTHONPATH", "")]),
           "NETWORK_ATTEMPTS": str(tmp_path / "network_attempts.log"),
           # Also through a proxy on a closed port: a download could not succeed by any route.
           "HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(torch_home)
    try:
        path = weights_cache_path(entry)
    finally:
        os.environ.pop("TORCH_HOME") if previous is None else os.environ.__setitem__("TORCH_HOME", previous)
    assert path == torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    path.parent.mkdir(parents=True)
    path.write_bytes(saved.getvalue())
    return path, env


def test_the_default_command_trains_from_the_cached_imagenet_file_and_the_page_uses_it(
        tmp_path: Path, offline_torch_home: tuple[Path, dict[str, str]]) -> None:
    weights_file, env = offline_torch_home
    make_dataset(tmp_path / "datasets", per_class_train=2, per_class_val=1)
    # No --weights: the tutorial's default. lr 0 leaves every trained parameter as it was loaded.
    result = run_script("train.py", "--epochs", "1", "--image-size", "32", "--batch-size", "4", "--num-workers", "0",
                        "--lr", "0", "--swanlab-mode", "disabled", cwd=tmp_path, env=env)
    assert "Could not download" not in result.stderr and "Downloading" not in result.stderr
    checkpoint = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    assert checkpoint["weights"] == "IMAGENET1K_V2" and checkpoint["config"]["weights"] == "IMAGENET1K_V2"
    stand_in = torch.load(weights_file, weights_only=True)
    backbone = [name for name in checkpoint["model_state"] if not name.startswith("fc.") and "running_" not in name
                and "num_batches" not in name]
    assert len(backbone) > 100
    assert all(torch.equal(checkpoint["model_state"][name], stand_in[name]) for name in backbone)
    assert checkpoint["model_state"]["fc.weight"].shape == (2, 2048)  # a new head for cat and dog

    # The page's "not a cat or dog" check loads the same cached file as the 1000-class ImageNet model.
    photo = tmp_path / "datasets/val/cat/cat.0.jpg"
    with run_app("--checkpoint", "checkpoint/latest_checkpoint.pth", cwd=tmp_path, env=env) as (client, _):
        _, verdict, _ = client.predict(handle_file(str(photo)), 0.5, False, api_name="/classify")
    assert NOT_A_PET in verdict  # the stand-in gives every photo to a fish: cats and dogs get almost nothing
    log = next(tmp_path.glob("app-*.log")).read_text(encoding="utf-8")
    assert "no 'not a cat or dog' warning" not in log
    assert not (tmp_path / "network_attempts.log").exists(), (tmp_path / "network_attempts.log").read_text()


def test_without_the_file_and_offline_the_message_names_the_exact_path(
        tmp_path: Path, offline_torch_home: tuple[Path, dict[str, str]]) -> None:
    weights_file, env = offline_torch_home
    weights_file.unlink()
    make_dataset(tmp_path / "datasets", per_class_train=2, per_class_val=1)
    result = run_script("train.py", "--epochs", "1", "--image-size", "32", "--swanlab-mode", "disabled", cwd=tmp_path,
                        env=env, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Could not download the resnet50 IMAGENET1K_V2 ImageNet weights" in result.stderr
    assert env["STAND_IN_WEIGHTS_URL"] in result.stderr
    assert f"Copy it to this exact path: {weights_file}" in result.stderr
    assert not (tmp_path / "checkpoint").exists()
