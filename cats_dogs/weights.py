"""Weights files from outside: torchvision's ImageNet downloads, a user's .pth, this project's checkpoints.
Every one is read with torch.load(weights_only=True): tensors and plain Python only, never code."""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.error
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # imported where it is used, as in model.build_model: its import takes about a second
    import torchvision

WEIGHTS_CHOICES = ("IMAGENET1K_V2", "IMAGENET1K_V1", "none")


def pretrained_state_dict(arch: str, weights: str, download: bool = True) -> dict[str, torch.Tensor]:
    """ImageNet weights through torchvision's weights API, or a local .pth for offline machines.

    torchvision's own loader unpickles with weights_only=False (a planted file would run code): the file is
    downloaded to torchvision's cache here, its hash checked, and read like every other weights file.
    download=False: only a file already on this machine (SystemExit when there is none)."""
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

    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    if not hasattr(enum, weights):
        # resnet18/34 were only ever published as V1.
        print(f"{arch} has no {weights} weights; using IMAGENET1K_V1.")
        weights = "IMAGENET1K_V1"
    weight_entry = enum[weights]
    path = weights_cache_path(weight_entry)
    if path.is_file():
        check_hash_prefix(path, weight_entry.url)  # a download is checked by torch.hub as it arrives
    elif not download:
        raise SystemExit(f"the {arch} {weights} ImageNet weights are not on this machine ({path})")
    else:
        download_weights(weight_entry, path, f"{arch} {weights}")
    try:
        return read_state_dict(path)
    except ValueError as error:
        raise SystemExit(f"{error}\nDelete that file and run the same command again, or download it again from "
                         f"{weight_entry.url}") from None


def download_weights(weight_entry: torchvision.models.WeightsEnum, path: Path, name: str) -> None:
    """torchvision's download to its cache: a temporary file, checked against the hash in its name, then renamed."""
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a blocked network should fail in seconds, not hang forever
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weight_entry.url, str(path), hash_prefix=expected_hash_prefix(path), progress=True)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise SystemExit(
            f"Could not download the {name} ImageNet weights ({error}).\n"
            "You can fix this in one of three ways:\n"
            f"  1. Download this file on a computer with internet access: {weight_entry.url}\n"
            f"     Copy it to this exact path: {path}\n"
            "     Then run the same command again. Nothing will be downloaded.\n"
            "  2. Or pass the downloaded file directly: --weights path/to/file.pth\n"
            "  3. Or train from scratch: --weights none (much lower accuracy on small datasets)."
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def expected_hash_prefix(path: Path) -> str | None:
    """torchvision names its files <name>-<the first hex digits of the file's SHA-256>.pth (resnet50-11ad3fa6.pth)."""
    match = torch.hub.HASH_REGEX.search(path.name)
    return match.group(1) if match and match.group(1) else None


def check_hash_prefix(path: Path, url: str) -> None:
    """A file in torchvision's cache must be the one its name promises: a file copied in by hand may be another
    download, a damaged one, or planted. Refused with what to do; nothing in it is read."""
    expected = expected_hash_prefix(path)
    if expected is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    if not digest.hexdigest().startswith(expected):
        raise SystemExit(
            f"{path} is not the file its name promises (its SHA-256 starts with {digest.hexdigest()[:len(expected)]}, "
            f"not {expected}): a damaged or different download, so it was not loaded.\n"
            f"Delete it and run the same command again to download it, or download it again from {url}\n"
            "A file you trust under another name can be given as --weights path/to/file.pth."
        )


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
