"""Random generators: seeded at the start of a run, and put back after a look ahead (the lr finder, train_batch.jpg),
so that the training that follows is the one it would have been."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader


def seed_everything(seed: int) -> torch.Generator:
    """Python's and torch's generators seeded, and a generator for the DataLoader's shuffle."""
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


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
