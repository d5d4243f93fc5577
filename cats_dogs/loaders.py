"""train.py's DataLoaders: batch size, workers, pinned memory, and each process's share under torchrun."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset, WeightedRandomSampler

from cats_dogs import distributed
from cats_dogs.photo_batches import ImageList, collate_readable


def loader_options(batch_size: int, num_workers: int, device: torch.device) -> dict:
    """DataLoader settings from train.py's flags: batch size, workers, pinned memory for CUDA."""
    return dict(batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda",
                persistent_workers=num_workers > 0, collate_fn=collate_readable)


def make_loaders(train_set: ImageList, val_set: ImageList, options: dict, seed: int, generator: torch.Generator,
                 sample_weights: list[float] | None = None) -> tuple[DataLoader, DataLoader, DistributedSampler | None]:
    """The train and val loaders with loader_options' `options`; under torchrun each process gets its share of both,
    the train set's shuffled alike in every process (`seed`). `sample_weights` (--balance sampler, one process):
    each epoch draws len(train_set) photos with replacement, each with its weight's chance."""
    train_sampler, val_part = None, val_set
    weighted = None if sample_weights is None else WeightedRandomSampler(sample_weights, len(train_set),
                                                                         replacement=True, generator=generator)
    if distributed.is_distributed():
        rank, world_size = distributed.get_rank(), distributed.get_world_size()
        # Each process trains on its 1/N of a shuffle that is the same in all of them (same seed, set_epoch).
        train_sampler = DistributedSampler(train_set, shuffle=True, seed=seed, drop_last=False)
        # DistributedSampler would even out the shares by repeating photos, counting them twice: slice val instead.
        val_part = Subset(val_set, range(rank, len(val_set), world_size))
    per_process = len(train_sampler) if train_sampler is not None else len(train_set)
    train_loader = DataLoader(train_set, shuffle=train_sampler is None and weighted is None,
                              sampler=train_sampler or weighted, generator=generator,
                              drop_last=per_process > options["batch_size"], **options)
    return train_loader, DataLoader(val_part, shuffle=False, **options), train_sampler
