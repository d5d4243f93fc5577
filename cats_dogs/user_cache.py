"""The user's cache folder for what the project keeps between commands: ONNX Runtime Web's tarball (export.py --web)
and this CPU's bf16 verdict (device.bf16_beats_fp32_cpu); the photo caches' fallback folder lives under
cache_home() too."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "CATS_DOGS_CACHE"


def cache_home() -> Path:
    """$XDG_CACHE_HOME, else ~/.cache: where the project's cache folders go."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def cache_dir() -> Path:
    """$CATS_DOGS_CACHE, else $XDG_CACHE_HOME/cats_dogs, else ~/.cache/cats_dogs."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return cache_home() / "cats_dogs"
