"""What training and serving must agree on: the model, the preprocessing, the device, mixed precision.

Keeping these in one place is what guarantees that the web page sees a photo exactly
the way the model saw photos during training.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import random
import socket
import sys
import urllib.error
import urllib.parse
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import torch
import torchvision
import torchvision.transforms.v2
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODEL_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
WEIGHTS_CHOICES = ("IMAGENET1K_V2", "IMAGENET1K_V1", "none")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# What Pillow raises for a file that is not a usable image: truncated, empty, not an image, too large.
UNREADABLE_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning)


# --------------------------------------------------------------------------- device
def pick_device(name: str = "auto") -> torch.device:
    """`auto` prefers cuda, then Apple's mps, then cpu; anything else is taken as given."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"--device {name} was asked for, but PyTorch sees no CUDA GPU. Use --device auto or cpu.")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise SystemExit(f"--device {name} was asked for, but MPS is not available here. Use --device auto or cpu.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# --------------------------------------------------------------------------- console
def keep_freed_memory() -> None:
    """On Linux, let glibc's malloc keep the memory PyTorch frees, for the next step to take again.

    By default glibc gives large blocks (over 128 KB, up to 32 MB as it adapts) back to the system when
    they are freed, so every training step maps its activations anew and pays a page fault on each 4 KB
    page. Keeping them made a training step 1.19× faster in fp32 (AVX2) and 1.14× in bf16 here: what
    preloading tcmalloc gives, with nothing to install. Other systems' allocators are left as they are.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, e.g. Alpine)
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # from glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest: blocks under 32 MB come from the heap
    libc.mallopt(m_trim_threshold, 1 << 30)  # free memory kept at the heap's top before it is given back
    libc.mallopt(m_top_pad, 256 << 20)  # grow the heap in big steps (untouched pages cost no memory)


def make_console_safe() -> None:
    """Print any file name, whatever the console's encoding.

    A Windows console or log file in GBK (code page 936) or cp1252 cannot encode every name (an emoji,
    Chinese under cp1252): Python would crash on printing it. Such characters are shown escaped
    instead (\\U0001f63a), so that the run goes on and the name can still be found.
    """
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):  # not when replaced by a non-file (an IDE's console, a test's capture)
            stream.reconfigure(errors="backslashreplace")


# --------------------------------------------------------------------------- images
def open_image(path: str | os.PathLike | IO[bytes]) -> Image.Image:
    """Open any photo a user may have as an upright RGB image.

    Phones store rotation in EXIF instead of rotating pixels, and user folders hold
    grayscale, palette, CMYK and transparent files: all become plain RGB here.
    Transparent areas are put on white, since black would look like a dark photo.
    Images over Pillow's pixel limit (~89 megapixels) are refused as possible
    decompression bombs: one such file could take gigabytes of memory.
    Raises one of UNREADABLE_IMAGE_ERRORS for anything that is not a usable image.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(path)
    with image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        return image.convert("RGB")


def zip_member_name(info: zipfile.ZipInfo) -> str:
    """A zip member's real name: Windows' built-in zip writes Chinese names in the local code page (GBK),
    without the UTF-8 flag, and zipfile then reads them as cp437 mojibake."""
    if info.flag_bits & 0x800:  # the UTF-8 flag: zipfile decoded it right
        return info.filename
    raw = info.filename.encode("cp437")
    for encoding in ("utf-8", "gbk"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return info.filename


def explain_unreadable(error: Exception) -> str:
    """Plain words for why a file could not be used as a photo."""
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (f"too many pixels (over {Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels), "
                "refused as a possible decompression bomb")
    if "truncated" in str(error) or "broken data stream" in str(error):
        return "the file is cut short (truncated, e.g. by an interrupted download)"
    if isinstance(error, UnidentifiedImageError):
        return "not an image file, or a format Pillow cannot read"
    return f"cannot be decoded ({error})"


# Part of the disk cache's key (photo_cache.py): a change here must never reuse pixels resized the old way.
RESIZE_METHOD = "torch uint8 bilinear with antialiasing (PIL-compatible), squashed to size x size, uint8 HWC"
AUGMENT_SCALE, AUGMENT_RATIO = (0.6, 1.0), (3 / 4, 4 / 3)  # of RandomResizedCrop: share of the area, aspect ratio


def resize_photo(image: Image.Image, image_size: int = 256) -> torch.Tensor:
    """Stage 1, the expensive one: squash a photo to size×size (the tutorial's Resize) as uint8, height×width×3.

    Its output is what the memory and disk caches keep, so cached and uncached runs see the same pixels.
    torch's uint8 channels-last kernel gives PIL's bilinear filter (pixels within 1 of Image.resize) in
    a quarter of the time: on a 500×375 Kaggle photo 0.26 ms against 1.04 ms, more than the JPEG decode.
    """
    photo = torch.from_numpy(np.array(image)).unsqueeze(0).permute(0, 3, 1, 2)  # 1×3×H×W, channels-last memory
    resized = torch.nn.functional.interpolate(photo, size=(image_size, image_size), mode="bilinear", antialias=True,
                                              align_corners=False)
    return resized[0].permute(1, 2, 0).contiguous()


def random_crop_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop covering AUGMENT_SCALE of the area with an aspect ratio in
    AUGMENT_RATIO (log-uniform): torchvision's RandomResizedCrop.get_params, with Python's random (10× faster).
    DataLoader seeds `random` in every worker, and train.py in the main process."""
    log_ratio = (math.log(AUGMENT_RATIO[0]), math.log(AUGMENT_RATIO[1]))
    for _ in range(10):
        area = height * width * random.uniform(*AUGMENT_SCALE)
        aspect = math.exp(random.uniform(*log_ratio))
        crop_width, crop_height = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            return random.randint(0, height - crop_height), random.randint(0, width - crop_width), crop_height, crop_width
    return 0, 0, height, width  # as torchvision falls back (its centre crop is the whole square photo here)


AUGMENT_CHOICES = ("none", "light", "strong")
# --augment strong, after the crop and flip: one of TrivialAugmentWide's 14 operations at a random strength, then
# a random rectangle blanked on 1 photo in 4 (timm's usual --reprob 0.25). Both take uint8 3×H×W and use torch's RNG,
# which DataLoader seeds in every worker as it does `random`.
STRONG_AUGMENT = torchvision.transforms.v2.Compose([torchvision.transforms.v2.TrivialAugmentWide(),
                                                    torchvision.transforms.v2.RandomErasing(p=0.25)])


def augment_photo(photo: torch.Tensor, strength: str = "light") -> torch.Tensor:
    """Stage 2 for training, on uint8 height×width×3: a random resized crop back to the same size, and a
    random horizontal flip (`light`, about 0.1 ms a photo: interpolating uint8 in channels-last layout is what
    torch does fastest on a CPU, 5× torchvision's transform on a 3×H×W uint8 tensor, measured here).
    `strong` adds STRONG_AUGMENT (see docs/recipes.md for its cost). A batch does the same photo by photo
    (load_datasets.ImageList.__getitems__), each written into its place."""
    augmented = torch.empty_like(photo)
    augment_into(photo, draw_augmentation(photo.shape[0], photo.shape[1]), strength, augmented)
    return augmented


def draw_augmentation(height: int, width: int) -> tuple[tuple[int, int, int, int], bool]:
    """One photo's random choices, drawn in this order: its crop box and whether it is mirrored."""
    return random_crop_box(height, width), random.random() < 0.5


def augment_into(photo: torch.Tensor, drawn: tuple[tuple[int, int, int, int], bool], strength: str,
                 out: torch.Tensor) -> None:
    """augment_photo with its random choices drawn beforehand (draw_augmentation), written into `out`."""
    crop_resize_into(photo, *drawn, out)
    if strength == "strong":
        out.copy_(STRONG_AUGMENT(out.permute(2, 0, 1)).permute(1, 2, 0))


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


def normalize(photos: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 photos, height×width×3 or N×height×width×3, to the model's float input: 3×H×W or N×3×H×W,
    scaled to 0..1 and normalized with the mean and std. The project's one normalization: training does
    it on the device, batch by batch, and the page and the scripts photo by photo, with the same arithmetic.

    (x / 255 - mean) / std is computed as x · 1/(255·std) − mean/std over the contiguous height×width×3
    memory, one multiply and one add per value (3× faster than broadcasting over channels); the result is
    a channels-last view, the layout the convolutions want.
    """
    std = torch.tensor(std, dtype=torch.float32, device=photos.device)
    mean = torch.tensor(mean, dtype=torch.float32, device=photos.device)
    return photos.float().mul_(1 / (255 * std)).add_(-mean / std).movedim(-1, -3)


def eval_transform(image_size: int = 256, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Callable[[Image.Image], torch.Tensor]:
    """The tutorial's preprocessing: squash to size×size, then ImageNet normalization. PIL in, 3×H×W tensor out."""
    return functools.partial(_eval_preprocess, image_size=image_size, mean=tuple(mean), std=tuple(std))


def _eval_preprocess(image: Image.Image, image_size: int, mean: tuple, std: tuple) -> torch.Tensor:
    return normalize(resize_photo(image, image_size), mean, std)


# --------------------------------------------------------------------------- speed
def has_native_bf16_cpu() -> bool:
    """True where the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX).

    Elsewhere bf16 is emulated and slower than fp32, so it must be detected, not assumed.
    Only Linux reports the flags; other systems stay on fp32 on the CPU.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision type worth using on this device, or None for plain fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and has_native_bf16_cpu():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast, or nothing when dtype is None."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


# --------------------------------------------------------------------------- model
def pretrained_state_dict(arch: str, weights: str) -> dict[str, torch.Tensor]:
    """ImageNet weights through torchvision's weights API, or a local .pth for offline machines."""
    if weights not in ("IMAGENET1K_V1", "IMAGENET1K_V2"):
        path = Path(weights)
        if not path.is_file():
            raise SystemExit(
                f"--weights {weights!r}: no such file. Use IMAGENET1K_V2, IMAGENET1K_V1, none, or the path of a .pth file."
            )
        from checkpoint import read_state_dict  # checkpoint.py builds models with this module: imported when needed

        try:
            return read_state_dict(path)
        except ValueError as error:
            raise SystemExit(f"--weights {weights!r}: {error}") from None

    enum = torchvision.models.get_model_weights(arch)
    if not hasattr(enum, weights):
        # resnet18/34 were only ever published as V1.
        print(f"{arch} has no {weights} weights; using IMAGENET1K_V1.")
        weights = "IMAGENET1K_V1"
    weight_entry = enum[weights]
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a blocked network should fail in seconds, not hang forever
    try:
        # torchvision first looks for the file in its cache (weights_cache_path) and downloads only without it.
        return weight_entry.get_state_dict(progress=True, check_hash=False)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise SystemExit(
            f"Could not download the {arch} {weights} ImageNet weights ({error}).\n"
            "You can fix this in one of three ways:\n"
            f"  1. Download this file on a computer with internet access: {weight_entry.url}\n"
            f"     Copy it to this exact path: {weights_cache_path(weight_entry)}\n"
            "     Then run the same command again. Nothing will be downloaded.\n"
            "  2. Or pass the downloaded file directly: --weights path/to/file.pth\n"
            "  3. Or train from scratch: --weights none (much lower accuracy on small datasets)."
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def weights_cache_path(weight_entry: torchvision.models.WeightsEnum) -> Path:
    """Where torchvision keeps (and first looks for) downloaded weights: TORCH_HOME/hub/checkpoints/<the URL's file name>.

    An offline user who copies the official file there gets the default command working unchanged.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(weight_entry.url).path).name


def build_model(arch: str = "resnet50", num_classes: int = 2, weights: str = "none",
                zero_init_residual: bool = False) -> nn.Module:
    """A torchvision ResNet with its ImageNet head replaced by `num_classes` outputs. `zero_init_residual`
    starts each residual block as the identity (from scratch only: loaded weights replace it)."""
    if arch not in MODEL_NAMES:
        raise SystemExit(f"--model {arch!r} is not supported; choose one of {', '.join(MODEL_NAMES)}.")
    model = torchvision.models.get_model(arch, weights=None, zero_init_residual=zero_init_residual)
    if weights and weights.lower() != "none":
        state = pretrained_state_dict(arch, weights)
        own = model.state_dict()
        # A head trained for other classes cannot be reused: keep only tensors that fit.
        fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if len(fitting) < len(own) - 2:
            raise SystemExit(f"--weights {weights}: that file does not hold {arch} weights "
                             f"({len(fitting)} of {len(own)} tensors match).")
        model.load_state_dict(fitting, strict=False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def count_parameters_and_flops(model: nn.Module, image_size: int) -> tuple[int, int]:
    """Parameters, and floating-point operations of one forward pass on one image (a multiply-add = 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    parameters = sum(p.numel() for p in model.parameters())
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    model.train(was_training)
    return parameters, counter.get_total_flops()


def to_device(images: torch.Tensor, device: torch.device, channels_last: bool, mean=IMAGENET_MEAN,
              std=IMAGENET_STD) -> torch.Tensor:
    """A batch as the model takes it on the device. Photos come as uint8 N×H×W×3: 4× fewer bytes to copy than
    floats, normalized once there. Anything else (the frozen backbone's features) is only moved."""
    images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = normalize(images, mean, std)
    if images.dim() != 4:
        return images
    return images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


# --------------------------------------------------------------------------- classes
def default_class_names(num_classes: int) -> list[str]:
    return ["cat", "dog"] if num_classes == 2 else [f"class_{i}" for i in range(num_classes)]


