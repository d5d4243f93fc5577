"""--freeze-backbone: the backbone never changes, so its features are computed once and the head trains on them,
in milliseconds an epoch. The feature batches are shaped like photo_batches.collate_readable's."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, default_collate
from tqdm import tqdm

from cats_dogs.device import autocast
from cats_dogs.engines import Engine, openvino_engine, to_openvino
from cats_dogs.photo_batches import ImageList
from cats_dogs.preprocessing import to_device


def feature_loaders(model: nn.Module, train_set: ImageList, val_loader: DataLoader, options: dict,
                    device: torch.device, amp_dtype: torch.dtype | None, channels_last: bool,
                    generator: torch.Generator) -> tuple[DataLoader, DataLoader, list[str]]:
    """--freeze-backbone: the backbone never changes, so its features are computed once and the head trains
    on them. `train_set`: made with augment "none", the features of the photos as they are; `options`: the
    loaders' (loaders.loader_options). Returns the train and val loaders of features, and the photos that could
    not be read."""
    features, unreadable = [], []
    head, model.fc = model.fc, nn.Identity()
    backbone = backbone_engine(model.eval(), train_set.image_size, device, amp_dtype)
    model.fc = head
    for loader in (DataLoader(train_set, **{**options, "shuffle": False}), val_loader):
        dataset, problems = extract_features(model, loader, device, amp_dtype, channels_last, backbone)
        unreadable += problems
        features.append(dataset)
    batch_size = options["batch_size"]
    train_loader = DataLoader(features[0], batch_size=batch_size, shuffle=True, generator=generator,
                              drop_last=len(features[0]) > batch_size, collate_fn=collate_features)
    return train_loader, DataLoader(features[1], batch_size=batch_size, collate_fn=collate_features), unreadable


def collate_features(batch: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Batches of precomputed features, shaped like collate_readable's (nothing unreadable left)."""
    return (*default_collate(batch), [])


@torch.inference_mode()
def extract_features(model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None,
                     channels_last: bool, backbone: Engine | None = None) -> tuple[TensorDataset, list[str]]:
    """(features, label, index) for every readable photo, what the frozen backbone hands to the head,
    and the photos that could not be read. `backbone`: the backbone's engine (backbone_engine), else PyTorch's."""
    head, model.fc = model.fc, nn.Identity()
    model.eval()
    features, labels, indices, unreadable = [], [], [], []
    for images, batch_labels, batch_indices, problems in tqdm(loader, desc="computing features once", unit="batch",
                                                              leave=False, dynamic_ncols=True):
        unreadable += problems
        if len(batch_labels):
            if backbone is not None:
                features.append(backbone(to_device(images, device, channels_last=False)))
            else:
                with autocast(device, amp_dtype):
                    features.append(model(to_device(images, device, channels_last)).float().cpu())
            labels.append(batch_labels)
            indices.append(batch_indices)
    model.fc = head
    return TensorDataset(torch.cat(features), torch.cat(labels), torch.cat(indices)), unreadable


def backbone_engine(backbone: nn.Module, image_size: int, device: torch.device,
                    amp_dtype: torch.dtype | None) -> Engine | None:
    """The backbone converted to OpenVINO in memory (about 2 s for a ResNet50), which computes the features about
    1.8× as fast as PyTorch on a CPU (docs/speed.md, "--freeze-backbone"), the same within 1e-6 of their size; None
    where it cannot (a GPU, OpenVINO missing or failing): PyTorch computes them then, as its one line says."""
    if device.type != "cpu":
        return None
    try:
        return openvino_engine(to_openvino(backbone, image_size), amp_dtype)
    except Exception as error:  # noqa: BLE001 -- PyTorch computes the same features, slower
        print(f"features computed with PyTorch (OpenVINO could not convert the backbone: {type(error).__name__})")
        return None
