"""Weights files from outside: torchvision's ImageNet downloads, a user's .pth, this project's checkpoints.
Every one is read with torch.load(weights_only=True): tensors and plain Python only, never code."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any

import torch
import torchvision

WEIGHTS_CHOICES = ("IMAGENET1K_V2", "IMAGENET1K_V1", "none")


def pretrained_state_dict(arch: str, weights: str) -> dict[str, torch.Tensor]:
    """ImageNet weights through torchvision's weights API, or a local .pth for offline machines."""
    if weights not in ("IMAGENET1K_V1", "IMAGENET1K_V2"):
        path = Path(weights)
        if not path.is_file():
            raise SystemExit(
                f"--weights {weights!r}: no such file. Use IMAGENET1K_V2, IMAGENET1K_V1, none, or the path of a .pth file."
            )
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


def read_file(path: str | os.PathLike) -> Any:
    """The one torch.load of the project: tensors and plain Python only (weights_only), never code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({error})") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights in a .pth file: a bare state dict (torchvision's downloads, the tutorial's) or one of ours."""
    content = read_file(path)
    if isinstance(content, dict) and "model_state" in content:
        return content["model_state"]
    if not isinstance(content, dict):
        raise ValueError(f"{path} does not hold weights (it holds a {type(content).__name__})")
    return content
