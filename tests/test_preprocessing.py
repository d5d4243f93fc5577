"""cats_dogs/preprocessing.py and augmentation.py: the one preprocessing, and training's crops and flips."""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from cats_dogs.augmentation import augment_photo
from cats_dogs.preprocessing import eval_transform, normalize, resize_photo


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


def test_resize_photo_gives_pils_bilinear_pixels() -> None:
    """The one resize (caches, page, scripts) is torch's uint8 kernel: the same filter as the tutorial's PIL Resize."""
    rng = np.random.default_rng(0)
    for size in ((500, 375), (120, 90), (256, 256)):  # down, up, same
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        reference = torch.from_numpy(np.array(image.resize((64, 64), Image.Resampling.BILINEAR)))
        resized = resize_photo(image, 64)
        assert resized.shape == (64, 64, 3) and resized.dtype == torch.uint8 and resized.is_contiguous()
        assert (resized.int() - reference.int()).abs().max() <= 1
