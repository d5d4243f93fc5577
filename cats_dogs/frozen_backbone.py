"""--freeze-backbone: the backbone never changes, so its features are computed once and the head trains on them,
in milliseconds an epoch. The feature batches are shaped like photo_batches.collate_readable's.

On a CPU, OpenVINO computes the features. Where train.py builds the serving engine (the default) and there are at
least INT8_FEATURES_MIN_PHOTOS train photos, their features come from the backbone quantized to INT8 (int8.py,
calibrated on CALIBRATION_PHOTOS of them), about 4× as fast a photo, and the serving engine is then that INT8
backbone with the trained head on top (engine_from_backbone), made in a second instead of by a process of its own
after training. The val photos' features come from the fp32 backbone, as PyTorch's would: the val accuracy train.py
reports is the checkpoint's own; and from the INT8 one too, for the served engine's check against it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset, default_collate
from tqdm import tqdm

from cats_dogs.atomic import atomic_write_text
from cats_dogs.checkpoint import read_checkpoint
from cats_dogs.device import autocast
from cats_dogs.engines import (
    CALIBRATION_PHOTOS,
    Engine,
    engine_path,
    judge_int8,
    openvino_engine,
    right_string,
    save_openvino,
    to_openvino,
)
from cats_dogs.int8 import minmax_int8
from cats_dogs.photo_batches import ImageList
from cats_dogs.preprocessing import to_device

# The calibration of a ResNet50 backbone at 256² takes about 2.5 s on 2 cores of an AVX-512 Xeon (3.6 s with AVX2
# only; 12–14 s while NNCF made it), and INT8 saves about 40 ms a photo against fp32 there (50 ms with AVX2 only),
# but the val photos then go through both backbones: it repays itself from about 150 train photos.
INT8_FEATURES_MIN_PHOTOS = 150


class Int8Backbone(NamedTuple):
    """The INT8 backbone the train features came from, and what its served engine's check needs."""

    model: Any  # openvino.Model: N×3×S×S photos in, N×features out
    fp32_model: Any  # the fp32 backbone it was made from
    val_features: torch.Tensor  # the INT8 backbone's, in the val loader's order
    fp32_val_features: torch.Tensor  # the fp32 backbone's, the same photos
    val_labels: torch.Tensor
    calibration_photos: int
    seconds: float


def feature_loaders(model: nn.Module, train_set: ImageList, val_loader: DataLoader, options: dict,
                    device: torch.device, amp_dtype: torch.dtype | None, channels_last: bool,
                    generator: torch.Generator, int8: bool = False,
                    ) -> tuple[DataLoader, DataLoader, list[str], Int8Backbone | None]:
    """--freeze-backbone: the backbone never changes, so its features are computed once and the head trains
    on them. `train_set`: made with augment "none", the features of the photos as they are; `options`: the
    loaders' (loaders.loader_options); `int8`: the train features from an INT8 backbone where OpenVINO
    can make one and there are INT8_FEATURES_MIN_PHOTOS train photos. Returns the train and val loaders of
    features, the photos that could not be read, and the INT8 backbone used (None: none)."""
    head, model.fc = model.fc, nn.Identity()
    fp32_model, fp32 = backbone_model(model.eval(), train_set.image_size, device, amp_dtype)
    model.fc = head
    int8 = int8 and fp32_model is not None and len(train_set) >= INT8_FEATURES_MIN_PHOTOS
    quantized = int8_backbone(fp32_model, train_set, options) if int8 else None
    int8_engine = openvino_engine(quantized[0], None) if quantized else None
    train_loader = DataLoader(train_set, **{**options, "shuffle": False})
    train, unreadable = extract_features(model, train_loader, device, amp_dtype, channels_last, int8_engine or fp32)
    if quantized:  # each val photo through both backbones in one pass: [fp32 | INT8] side by side
        both = side_by_side(fp32, int8_engine)
        val_both, problems = extract_features(model, val_loader, device, amp_dtype, channels_last, both)
        width = val_both.tensors[0].shape[1] // 2
        val = TensorDataset(val_both.tensors[0][:, :width].contiguous(), *val_both.tensors[1:])
        served = Int8Backbone(quantized[0], fp32_model, val_both.tensors[0][:, width:], val.tensors[0],
                              val.tensors[1], *quantized[1:])
    else:
        (val, problems), served = extract_features(model, val_loader, device, amp_dtype, channels_last, fp32), None
    batch_size = options["batch_size"]
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator,
                              drop_last=len(train) > batch_size, collate_fn=collate_features)
    val_loader = DataLoader(val, batch_size=batch_size, collate_fn=collate_features)
    return train_loader, val_loader, unreadable + problems, served


def side_by_side(first: Engine, second: Engine) -> Engine:
    return lambda batch: torch.cat([first(batch), second(batch)], dim=1)


def collate_features(batch: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Batches of precomputed features, shaped like collate_readable's (nothing unreadable left)."""
    return (*default_collate(batch), [])


@torch.inference_mode()
def extract_features(model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None,
                     channels_last: bool, backbone: Engine | None = None) -> tuple[TensorDataset, list[str]]:
    """(features, label, index) for every readable photo, what the frozen backbone hands to the head,
    and the photos that could not be read. `backbone`: the backbone's engine (backbone_model), else PyTorch's."""
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


def backbone_model(backbone: nn.Module, image_size: int, device: torch.device,
                   amp_dtype: torch.dtype | None) -> tuple[Any, Engine | None]:
    """The backbone converted to OpenVINO in memory (about 2 s for a ResNet50) and compiled, which computes the
    features about 1.8× as fast as PyTorch on a CPU (docs/speed.md, "--freeze-backbone"), the same within 1e-6 of
    their size; (None, None) where it cannot (a GPU, OpenVINO missing or failing): PyTorch computes them then, as
    its one line says."""
    if device.type != "cpu":
        return None, None
    try:
        converted = to_openvino(backbone, image_size)
        return converted, openvino_engine(converted, amp_dtype)
    except Exception as error:  # noqa: BLE001 -- PyTorch computes the same features, slower
        print(f"features computed with PyTorch (OpenVINO could not convert the backbone: {type(error).__name__})")
        return None, None


def int8_backbone(fp32_model, train_set: ImageList, options: dict) -> tuple[Any, int, float] | None:
    """The backbone quantized to INT8 (int8.minmax_int8), calibrated on CALIBRATION_PHOTOS train photos spread over the set (as
    engines.quantize_int8 does for a whole model), the photos it took and its seconds; None, with one line, where
    it cannot (fp32 features then, and the engine built after training as without --freeze-backbone)."""
    started = time.perf_counter()
    spread = list(range(len(train_set)))[:: max(1, len(train_set) // CALIBRATION_PHOTOS)][:CALIBRATION_PHOTOS]
    try:
        batches = DataLoader(Subset(train_set, spread), **{**options, "shuffle": False})
        photos = torch.cat([to_device(images, torch.device("cpu"), channels_last=False)
                            for images, labels, _, _ in batches if len(labels)])
        model = minmax_int8(fp32_model, photos)
    except Exception as error:  # noqa: BLE001 -- the fp32 features are the same, slower
        print(f"features computed in fp32 (no INT8 backbone could be made: {type(error).__name__})")
        return None
    seconds = time.perf_counter() - started
    print(f"features: the train photos through the backbone in INT8 (calibrated on {len(photos)} of them in "
          f"{seconds:.0f} s), the val photos in fp32 as PyTorch, and in INT8 for the served engine's check", flush=True)
    return model, len(photos), seconds


def engine_from_backbone(backbone: Int8Backbone, checkpoint_path: Path, data_dir: str) -> str:
    """train.py's serving engine after a --freeze-backbone run with an INT8 backbone: that backbone with the head of
    `checkpoint_path` (best_checkpoint.pth) on top, saved where engines.load_engine finds it, with its check against
    the fp32 model on the val photos (engines.judge_int8): their features through both backbones, then the head.
    Returns train.py's engine line."""
    started = time.perf_counter()
    state = read_checkpoint(checkpoint_path)["model_state"]
    weight, bias = state["fc.weight"].float(), state["fc.bias"].float()
    labels = backbone.val_labels.tolist()
    with torch.inference_mode():
        fp32_right, int8_right = (right_string((features @ weight.T + bias).argmax(1), labels)
                                  for features in (backbone.fp32_val_features, backbone.val_features))
    result = judge_int8(fp32_right, int8_right)
    xml_path = engine_path(checkpoint_path, "openvino-int8.xml")
    save_openvino(with_head(backbone.model, weight, bias), xml_path)
    if result["decision"] != "int8":  # what answers then: the fp32 backbone with the head, as engines would convert it
        save_openvino(with_head(backbone.fp32_model, weight, bias), engine_path(checkpoint_path, "openvino.xml"))
    result.update(calibration_photos=backbone.calibration_photos, data_dir=str(data_dir), from_int8_backbone=True,
                  seconds={"calibration": round(backbone.seconds, 1), "head": round(time.perf_counter() - started, 1)})
    atomic_write_text(xml_path.with_suffix(".json"), json.dumps(result, indent=2))
    used = "openvino int8" if result["decision"] == "int8" else "openvino fp32 (INT8 not used)"
    return (f"engine: {used}, the INT8 backbone the features came from with the trained head ({result['reason']}; "
            f"{time.perf_counter() - started:.1f} s)")


def with_head(backbone, weight: torch.Tensor, bias: torch.Tensor):
    """An OpenVINO backbone (N×features out) with a linear head on top: the whole model's logits out."""
    import openvino
    import openvino.opset13 as ops

    model = backbone.clone()
    [output] = model.get_results()
    features = output.input_value(0)
    model.remove_result(output)  # a result left hanging would still be asked for
    logits = ops.add(ops.matmul(features, ops.constant(weight.numpy()), False, True), ops.constant(bias.numpy()))
    return openvino.Model([logits], model.get_parameters(), "resnet")


def served_from_backbone(backbone: Int8Backbone, checkpoint_path: Path, data_dir: str) -> bool:
    """engine_from_backbone, its line printed; False, with one line, where it failed (train.py builds it then)."""
    try:
        print(engine_from_backbone(backbone, checkpoint_path, data_dir), flush=True)
    except Exception as error:  # noqa: BLE001 -- the checkpoints are saved; the engine is built the usual way
        print(f"engine: not made from the INT8 backbone ({type(error).__name__}: {error}); building it as usual")
        return False
    return True
