"""Training-time augmentation on uint8 photos: a random resized crop and flip (light), plus TrivialAugmentWide
and random erasing (strong)."""

from __future__ import annotations

import functools
import math
import random

import torch

AUGMENT_SCALE, AUGMENT_RATIO = (0.6, 1.0), (3 / 4, 4 / 3)  # of RandomResizedCrop: share of the area, aspect ratio


def random_crop_box(height: int, width: int, rng=random) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop covering AUGMENT_SCALE of the area with an aspect ratio in
    AUGMENT_RATIO (log-uniform): torchvision's RandomResizedCrop.get_params, with Python's random (10× faster).
    `rng`: the photo's own random.Random (photo_seed), else the module `random`, whose generator DataLoader seeds in
    every worker."""
    log_ratio = (math.log(AUGMENT_RATIO[0]), math.log(AUGMENT_RATIO[1]))
    for _ in range(10):
        area = height * width * rng.uniform(*AUGMENT_SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_width, crop_height = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            return rng.randint(0, height - crop_height), rng.randint(0, width - crop_width), crop_height, crop_width
    return 0, 0, height, width  # as torchvision falls back (its centre crop is the whole square photo here)


AUGMENT_CHOICES = ("none", "light", "strong")
# --augment strong, after the crop and flip: one of TrivialAugmentWide's 14 operations at a random strength, then
# a random rectangle blanked on 1 photo in 4 (timm's usual --reprob 0.25). Both take uint8 3×H×W and use torch's RNG,
# which DataLoader seeds in every worker as it does `random`.
@functools.cache
def strong_augment() -> torch.nn.Module:
    # torchvision is imported here, where it is used: its import takes about a second (it loads torch._dynamo), and
    # predict.py and app.py, which import this package's batch builder, never augment.
    import torchvision.transforms.v2

    return torchvision.transforms.v2.Compose([torchvision.transforms.v2.TrivialAugmentWide(),
                                              torchvision.transforms.v2.RandomErasing(p=0.25)])


def augment_photo(photo: torch.Tensor, strength: str = "light") -> torch.Tensor:
    """Stage 2 for training, on uint8 height×width×3: a random resized crop back to the same size, and a
    random horizontal flip (`light`, about 0.1 ms a photo: interpolating uint8 in channels-last layout is what
    torch does fastest on a CPU, 5× torchvision's transform on a 3×H×W uint8 tensor, measured here).
    `strong` adds strong_augment() (see docs/recipes.md for its cost); `none` leaves the photo as it is. A batch does
    the same photo by photo (photo_batches.ImageList.__getitems__), each written into its place."""
    if strength == "none":
        return photo.clone()
    augmented = torch.empty_like(photo)
    augment_into(photo, draw_augmentation(photo.shape[0], photo.shape[1]), strength, augmented)
    return augmented


# A photo's augmentation drawn from its own seed, (run seed, epoch, index): the same photo in the same epoch is
# augmented the same whichever process or worker prepares it and whatever that worker did before. So --resume,
# with fresh workers, continues bit for bit (docs/training.md, "Exact resume").
PRIME = 1_000_003


def photo_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of photo `index`'s random choices in `epoch` of a run seeded `seed` (a 63-bit number)."""
    return ((seed * PRIME + epoch) * PRIME + index) % 2**63


def draw_augmentation(height: int, width: int,
                      seed: int | None = None) -> tuple[tuple[int, int, int, int], bool, int | None]:
    """One photo's random choices, drawn in this order: its crop box, whether it is mirrored, and the seed of the
    strong augmentation's choices. `seed` (photo_seed): drawn from it alone; None: from Python's generator."""
    rng = random if seed is None else random.Random(seed)  # the module's functions: its generator
    return random_crop_box(height, width, rng), rng.random() < 0.5, seed


def augment_into(photo: torch.Tensor, drawn: tuple[tuple[int, int, int, int], bool, int | None], strength: str,
                 out: torch.Tensor) -> None:
    """augment_photo with its random choices drawn beforehand (draw_augmentation), written into `out`."""
    box, flip, seed = drawn
    crop_resize_into(photo, box, flip, out)
    if strength == "strong":
        if seed is None:
            out.copy_(strong_augment()(out.permute(2, 0, 1)).permute(1, 2, 0))
            return
        # TrivialAugmentWide and RandomErasing draw from torch's global generator: this photo's seed, for a moment.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            out.copy_(strong_augment()(out.permute(2, 0, 1)).permute(1, 2, 0))


def crop_resize_into(photo: torch.Tensor, box: tuple[int, int, int, int], flip: bool, out: torch.Tensor) -> None:
    """Write the crop `box` (top, left, height, width) of a uint8 height×width×3 photo, mirrored if `flip`,
    resized to out's height×width, into `out` (a photo's place in a batch: no copy afterwards)."""
    top, left, height, width = box
    crop = photo[top:top + height, left:left + width]
    if flip:
        crop = crop.flip(1)  # flipping the crop, then resizing, is the same as resizing, then flipping
    # One copy makes the crop a dense 1×3×h×w channels-last tensor: the layout of the fast uint8 kernel.
    # Unsqueeze before permuting: a flipped crop is already dense, and permuting first would give the
    # batch dimension a stride of 3, which interpolate takes for NCHW: a kernel and a copy 2× slower.
    crop = crop.unsqueeze(0).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    # interpolate(mode="bilinear", antialias=True) itself, with out=: it writes into the batch directly.
    torch._C._nn._upsample_bilinear2d_aa(crop, list(out.shape[:2]), False, out=out.unsqueeze(0).permute(0, 3, 1, 2))

