"""What train.py, app.py and the later scripts share: model, preprocessing, device, recipe, checkpoints.

Keeping these in one place is what guarantees that the web page sees a photo exactly
the way the model saw photos during training.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import math
import os
import socket
import threading
import urllib.error
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
import torchvision
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODEL_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
WEIGHTS_CHOICES = ("IMAGENET1K_V2", "IMAGENET1K_V1", "none")
CHECKPOINT_FORMAT = 1
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


def resize_transform(image_size: int = 256) -> v2.Compose:
    """Stage 1, the expensive one: squash a PIL photo to size×size (the tutorial's Resize) as uint8.

    Its output is what the in-memory cache keeps, so cached and uncached runs see the same pixels.
    """
    return v2.Compose([v2.Resize((image_size, image_size)), v2.PILToTensor()])


def tensor_transform(image_size: int = 256, augment: bool = False, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """Stage 2, cheap, run every epoch: optional light augmentation, then ImageNet normalization."""
    steps = [v2.RandomResizedCrop(image_size, scale=(0.6, 1.0), antialias=True), v2.RandomHorizontalFlip()] if augment else []
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def eval_transform(image_size: int = 256, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """The tutorial's preprocessing: squash to size×size, then ImageNet normalization. PIL in, tensor out."""
    return v2.Compose([resize_transform(image_size), tensor_transform(image_size, False, mean, std)])


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


def prepare_for_inference(model: nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of `model` made for answering one photo at a time, fast.

    BatchNorm is folded into the convolutions before it, the layout is NHWC where that is
    faster (CPU, CUDA), and the weights are stored in `dtype` (bf16 or fp16) when given,
    so no per-call casting is needed. Predictions match fp32 within the dtype's precision.
    """
    from torch.fx.experimental.optimization import fuse

    fast = fuse(model.eval())  # traces the model; returns a folded copy, the original stays untouched
    if device.type in ("cpu", "cuda"):
        fast = fast.to(memory_format=torch.channels_last)
    return fast.to(device=device, dtype=dtype or torch.float32).eval()


def compile_for_inference(model: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """`model` compiled by torch.compile for inputs shaped like `example` (in one warm-up call), or None.

    Freezing makes the weights constants with ReLUs and residual additions fused into oneDNN's
    convolutions. It needs a C++ compiler, which many Windows laptops lack: any failure prints
    one line and the caller keeps the uncompiled model.
    """
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" is no news on a CPU
    try:
        import torch._inductor.config as inductor_config

        # Inductor reads `freezing` when the first call compiles; torch.compile(options=…) gave no gain.
        compiled = torch.compile(model, dynamic=False)
        with torch.inference_mode(), inductor_config.patch(freezing=True):
            compiled(example)
    except Exception as error:  # noqa: BLE001 -- compiler missing, unsupported platform, …: the eager model still works
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        print(f"note: torch.compile is not usable here ({type(error).__name__}: {reason}); "
              "the uncompiled model answers instead", flush=True)
        return None
    # Each photo is copied into one input tensor that stays at the same address: measured on this
    # project's CPU, the compiled ResNet50 then skips re-laying out its weights (32 ms instead of 41).
    # The lock keeps two requests from sharing that tensor at once.
    static_input, lock = example.clone(), threading.Lock()

    def run(batch: torch.Tensor) -> torch.Tensor:
        with lock:
            return compiled(static_input.copy_(batch)).clone()

    return run


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
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model_state" in state:  # one of our own checkpoints
            state = state["model_state"]
        return state

    enum = torchvision.models.get_model_weights(arch)
    if not hasattr(enum, weights):
        # resnet18/34 were only ever published as V1.
        print(f"{arch} has no {weights} weights; using IMAGENET1K_V1.")
        weights = "IMAGENET1K_V1"
    weight_entry = enum[weights]
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a blocked network should fail in seconds, not hang forever
    try:
        return weight_entry.get_state_dict(progress=True, check_hash=False)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise SystemExit(
            f"Could not download the {arch} {weights} ImageNet weights ({error}).\n"
            "Ways out:\n"
            f"  - connect to the internet once: the file is cached in {torch.hub.get_dir()}/checkpoints\n"
            f"  - download {weight_entry.url} elsewhere and pass --weights path/to/file.pth\n"
            "  - train from scratch with --weights none (much lower accuracy on small datasets)"
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


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


def to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last and images.dim() == 4 else images


# --------------------------------------------------------------------------- classes
def default_class_names(num_classes: int) -> list[str]:
    return ["cat", "dog"] if num_classes == 2 else [f"class_{i}" for i in range(num_classes)]


# --------------------------------------------------------------------------- training recipe
def make_optimizer(args: argparse.Namespace, parameters, device: torch.device) -> torch.optim.Optimizer:
    """train.py's --optimizer with its --lr and --weight-decay (default: the usual one for that optimizer).

    The weight decay used is written back into args, so that SwanLab and the checkpoint record a number.
    """
    defaults = {"adam": 0.0, "adamw": 0.05, "sgd": 1e-4}
    weight_decay = args.weight_decay = defaults[args.optimizer] if args.weight_decay is None else args.weight_decay
    if args.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=args.lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    # The fused kernels update all weights at once: the same algorithm, a few % faster per step.
    optimizer_class = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(parameters, lr=args.lr, weight_decay=weight_decay, fused=device.type in ("cpu", "cuda"))


def make_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR | None:
    """Linear warm-up, then cosine decay to zero or a ×0.1 step at 1/2 and 3/4 of the run; stepped every batch."""
    if args.scheduler == "none":
        return None
    total, warmup = args.epochs * steps_per_epoch, round(args.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if args.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
        return 0.1 ** sum(step >= total * milestone for milestone in (0.5, 0.75))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Write to a temporary file, then rename: a kill during the save never leaves a broken file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)


def make_checkpoint(model: nn.Module, *, arch: str, class_names: list[str], image_size: int,
                    epoch: int, metrics: dict[str, float], **extra: Any) -> dict[str, Any]:
    """Everything needed to use the weights later without the training command line."""
    model = getattr(model, "_orig_mod", model)  # torch.compile wraps the module
    return {
        "format": CHECKPOINT_FORMAT,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "arch": arch,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "image_size": image_size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "epoch": epoch,
        "metrics": dict(metrics),
        "saved_at": datetime.datetime.now().isoformat(timespec="seconds"),
        **extra,
    }


def save_training_curves(history: list[dict[str, float]], path: Path) -> None:
    """Loss and accuracy per epoch as a PNG, for those who never open SwanLab."""
    import matplotlib

    matplotlib.use("Agg")  # no window, also on machines without a display
    import matplotlib.pyplot as plt

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    loss_axis.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    evaluated = [h for h in history if "val_loss" in h]
    loss_axis.plot([h["epoch"] for h in evaluated], [h["val_loss"] for h in evaluated], "o-", label="val loss")
    accuracy_axis.plot([h["epoch"] for h in evaluated], [h["val_acc"] for h in evaluated], "o-", color="tab:green")
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy (%)", title="Validation accuracy")
    loss_axis.legend()
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def find_checkpoint(path: str | os.PathLike | None = None, output_dir: str | os.PathLike = "checkpoint") -> Path:
    """The checkpoint a user means: the one named, else the best one, else the latest one."""
    candidates = [Path(path)] if path else [Path(output_dir) / "best_checkpoint.pth", Path(output_dir) / "latest_checkpoint.pth"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SystemExit(f"no checkpoint at {' or '.join(map(str, candidates))}; train one first: python train.py")


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load one of our checkpoints, or the bare state dict the tutorial's train.py saved.

    Returns the model in eval mode on `device` and the checkpoint's metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({error})") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} is not a checkpoint (it holds a {type(checkpoint).__name__})")
    if "model_state" not in checkpoint:
        # The tutorial saved model.state_dict() of a 2-class ResNet50 and nothing else.
        num_classes = checkpoint["fc.weight"].shape[0] if "fc.weight" in checkpoint else 2
        checkpoint = {"model_state": checkpoint, "arch": "resnet50", "num_classes": num_classes,
                      "class_names": default_class_names(num_classes), "image_size": 256,
                      "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "epoch": None, "metrics": {}}
    model = build_model(checkpoint["arch"], checkpoint["num_classes"], weights="none")
    model.load_state_dict(checkpoint["model_state"])
    model.to(device).eval()
    meta = {k: v for k, v in checkpoint.items() if k not in ("model_state", "optimizer_state")}
    return model, meta


def checkpoint_transform(meta: dict[str, Any]) -> v2.Compose:
    """The evaluation preprocessing a checkpoint was trained with."""
    return eval_transform(meta["image_size"], meta.get("mean", IMAGENET_MEAN), meta.get("std", IMAGENET_STD))
