"""train.py's DataLoaders: batch size, workers, pinned memory, and each process's share under torchrun."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Sampler, Subset

from cats_dogs import distributed
from cats_dogs.augmentation import PRIME, photo_seed
from cats_dogs.photo_batches import ImageList, collate_readable


def loader_options(batch_size: int, num_workers: int, device: torch.device) -> dict:
    """DataLoader settings from train.py's flags: batch size, workers, pinned memory for CUDA."""
    return dict(batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda",
                persistent_workers=num_workers > 0, collate_fn=collate_readable)


class EpochSampler(Sampler):
    """The training photos of an epoch, in an order that depends on (seed, epoch) alone, each given with the seed of
    its augmentation (augmentation.photo_seed): (index, seed) pairs for ImageList.__getitems__.

    Nothing carries over from one epoch to the next, so --resume needs only the epoch and how far it went:
    `set_epoch(epoch, skip)` leaves out the first `skip` photos of that epoch's order (the batches trained before a
    checkpoint inside the epoch), and the rest come as they would have. `weights` (--balance sampler): len(weights)
    photos drawn with replacement, each with its weight's chance, as WeightedRandomSampler; otherwise a shuffle.
    Under torchrun (`world_size` > 1) process `rank` takes every world_size-th photo of the same order, repeating a
    few to even out the shares, as DistributedSampler."""

    def __init__(self, num_photos: int, seed: int, weights: Sequence[float] | None = None, rank: int = 0,
                 world_size: int = 1) -> None:
        self.num_photos, self.seed, self.rank, self.world_size = num_photos, seed, rank, world_size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.epoch, self.skip = 1, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def order(self) -> list[int]:
        """This process's photos of the epoch, in order, none skipped."""
        generator = torch.Generator().manual_seed((self.seed * PRIME + self.epoch) % 2**63)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.num_photos, replacement=True, generator=generator).tolist()
        else:
            order = torch.randperm(self.num_photos, generator=generator).tolist()
        if self.world_size > 1:
            total = -(-len(order) // self.world_size) * self.world_size
            order = (order * (total // max(len(order), 1) + 1))[:total][self.rank::self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.order()[self.skip:]:
            yield index, photo_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return max(0, -(-self.num_photos // self.world_size) - self.skip)


def make_loaders(train_set: ImageList, val_set: ImageList, options: dict, seed: int, generator: torch.Generator,
                 sample_weights: list[float] | None = None) -> tuple[DataLoader, DataLoader, EpochSampler]:
    """The train and val loaders with loader_options' `options`, and the train loader's EpochSampler (set_epoch
    before every epoch); under torchrun each process gets its share of both, the train set's shuffled alike in
    every process (`seed`). `sample_weights` (--balance sampler): each epoch draws len(train_set) photos with
    replacement, each with its weight's chance. `generator`: the loader's, which only seeds the workers (each photo's
    augmentation has its own seed)."""
    val_part = val_set
    rank, world_size = distributed.get_rank(), distributed.get_world_size()
    train_sampler = EpochSampler(len(train_set), seed, sample_weights, rank, world_size)
    if distributed.is_distributed():
        # DistributedSampler would even out the shares by repeating photos, counting them twice: slice val instead.
        val_part = Subset(val_set, range(rank, len(val_set), world_size))
    train_loader = DataLoader(train_set, sampler=train_sampler, generator=generator,
                              drop_last=len(train_sampler) > options["batch_size"], **options)
    return train_loader, DataLoader(val_part, shuffle=False, **options), train_sampler
