"""The shared pieces: preprocessing, model building, device, mixed precision."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from cats_dogs.augmentation import augment_photo
from cats_dogs.device import autocast_dtype, pick_device
from cats_dogs.model import build_model
from cats_dogs.preprocessing import eval_transform, normalize, resize_photo
from conftest import REPO


def test_transforms_give_normalized_square_tensors() -> None:
    image = Image.new("RGB", (50, 30), (124, 116, 104))  # ≈ ImageNet mean color
    photo = resize_photo(image, 32)
    assert photo.shape == (32, 32, 3) and photo.dtype == torch.uint8
    augmented = augment_photo(photo)  # what training adds
    assert augmented.shape == (32, 32, 3) and augmented.dtype == torch.uint8 and augmented.is_contiguous()
    for tensor in (eval_transform(32)(image), normalize(augmented), normalize(torch.stack([photo, augmented]))[1]):
        assert tensor.shape == (3, 32, 32)
        assert tensor.abs().max() < 0.05


def test_normalize_is_the_same_arithmetic_as_torchvisions_and_augmentation_crops_and_flips() -> None:

    photo = torch.randint(0, 256, (24, 24, 3), dtype=torch.uint8)
    reference = v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(photo.permute(2, 0, 1).float() / 255)
    assert torch.allclose(normalize(photo), reference, atol=1e-5)
    random.seed(0)
    outputs = [augment_photo(photo) for _ in range(20)]
    assert len({tuple(o.flatten()[:50].tolist()) for o in outputs}) > 10  # random crops
    striped = torch.zeros(24, 24, 3, dtype=torch.uint8)
    striped[:, :12] = 255  # left half white: a flip makes the right half white
    lefts = {bool(augment_photo(striped)[:, 0].float().mean() > 127) for _ in range(40)}
    assert lefts == {True, False}


def test_strong_augmentation_is_the_light_crop_then_trivialaugment_and_erasing_on_uint8() -> None:
    photo = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8)
    changed = 0
    for seed in range(20):
        random.seed(seed)  # the crop and flip draw from `random`: the same ones for both strengths
        light = augment_photo(photo, "light")
        random.seed(seed)
        torch.manual_seed(seed)
        strong = augment_photo(photo, "strong")
        assert strong.shape == light.shape == (32, 32, 3) and strong.dtype == torch.uint8
        changed += not torch.equal(strong, light)
    assert changed >= 15  # TrivialAugmentWide leaves a photo as it is in 1 draw of its 14 (and strength 0)


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


def test_pick_device_auto_and_explicit() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA GPU"):
            pick_device("cuda")


def test_mixed_precision_only_where_the_cpu_has_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    from cats_dogs import device

    expected = torch.bfloat16 if device.has_native_bf16_cpu() else None
    assert autocast_dtype(torch.device("cpu")) == expected
    monkeypatch.setattr(device, "has_native_bf16_cpu", lambda: False)
    assert autocast_dtype(torch.device("cpu")) is None  # emulated bf16 would be slower than fp32


def test_resize_photo_gives_pils_bilinear_pixels() -> None:
    """The one resize (caches, page, scripts) is torch's uint8 kernel: the same filter as the tutorial's PIL Resize."""
    rng = np.random.default_rng(0)
    for size in ((500, 375), (120, 90), (256, 256)):  # down, up, same
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        reference = torch.from_numpy(np.array(image.resize((64, 64), Image.Resampling.BILINEAR)))
        resized = resize_photo(image, 64)
        assert resized.shape == (64, 64, 3) and resized.dtype == torch.uint8 and resized.is_contiguous()
        assert (resized.int() - reference.int()).abs().max() <= 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")
def test_keep_freed_memory_spares_the_page_faults_of_every_training_step() -> None:
    """Each step frees and takes again the same blocks: with keep_freed_memory they stay mapped."""
    script = """
import resource, sys, torch
from cats_dogs.model import build_model
from cats_dogs.process import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
model = build_model("resnet18", 2, "none")
optimizer = torch.optim.Adam(model.parameters())
images, labels = torch.randn(8, 3, 64, 64), torch.randint(0, 2, (8,))
def step():
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()
step(), step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = {}
    for mode in ("keep", "default"):
        result = subprocess.run([sys.executable, "-c", script, mode], cwd=REPO, capture_output=True, text=True, check=True)
        faults[mode] = int(result.stdout.split()[-1])
    assert faults["default"] > 10_000, faults  # glibc maps and unmaps the activations every step
    assert faults["keep"] * 10 < faults["default"], faults  # kept: a few one-time faults at most (0 to 2,300 seen)
