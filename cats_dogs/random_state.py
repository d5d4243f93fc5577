"""Random generators: seeded at the start of a run, and put back after a look ahead (the lr finder, train_batch.jpg),
so that the training that follows is the one it would have been."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader


def seed_everything(seed: int) -> torch.Generator:
    """Python's, NumPy's and torch's generators seeded, and a generator for the DataLoader's shuffle."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def random_states(generator: torch.Generator | None) -> dict[str, Any]:
    """Every generator's state, for a checkpoint: Python's, NumPy's, torch's (CPU and each GPU) and the loader's
    `generator`. With each photo's augmentation and each epoch's order drawn from their own seeds
    (loaders.EpochSampler), training reads none of these; they are kept so that anything else that draws (a
    model with dropout, a new augmentation) continues as it would have."""
    name, keys, position, has_gauss, cached_gauss = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss)  # torch.load-able
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "loader": generator.get_state() if generator is not None else None}


def restore_random_states(states: dict[str, Any] | None, generator: torch.Generator | None) -> None:
    """random_states' generators put back (--resume); None (a checkpoint from before they were kept): nothing."""
    if not states:
        return
    random.setstate(states["python"])
    name, keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    if generator is not None and states["loader"] is not None:
        generator.set_state(states["loader"])


@contextlib.contextmanager
def same_random_state(loader: DataLoader) -> Iterator[None]:
    """Whatever runs inside leaves Python's, torch's and the loader's random generators as it found them: the
    training that follows shuffles and augments as it would have without it."""
    states = random.getstate(), torch.get_rng_state(), loader.generator.get_state() if loader.generator else None
    try:
        yield
    finally:
        random.setstate(states[0])
        torch.set_rng_state(states[1])
        if loader.generator is not None:
            loader.generator.set_state(states[2])
