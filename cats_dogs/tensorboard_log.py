"""--tensorboard: the run's numbers and pictures also written as TensorBoard event files, each run in its own folder
(runs/<experiment>-<time>), so that reruns and models overlay in `tensorboard --logdir runs`. tracking.log feeds
it and SwanLab from one dict, under the same names; under torchrun only rank 0 writes. TensorBoard is optional
(pip install tensorboard): this module imports it only when a run asks for it."""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from cats_dogs import distributed

INSTALL_HINT = "--tensorboard: TensorBoard is not installed: pip install tensorboard (or leave out --tensorboard)"

# The open writer of this process's run (None: not logging to TensorBoard), and the last step it wrote at: what a
# value logged without a step (the test split's accuracy, at the end) is drawn at.
_writer: Any = None
_last_step = 0


def run_folder(root: str | None, experiment_name: str, resumed_config: dict | None) -> str | None:
    """The folder of this run's event files: ROOT/<experiment>-<time>, or with --resume the folder of the run it
    continues (recorded in its checkpoint's config). None without --tensorboard. A missing TensorBoard is named here,
    before any work."""
    previous = (resumed_config or {}).get("tensorboard")
    if root is None:
        if previous and distributed.is_main_process():
            print(f"note: this run logged to TensorBoard ({previous}); add --tensorboard to continue its curves there")
        return None
    try:
        import tensorboard  # noqa: F401 — only whether it is there
    except ImportError:
        raise SystemExit(INSTALL_HINT) from None
    if previous:
        return previous
    safe_name = re.sub(r'[\\/:*?"<>|\s]+', "_", experiment_name)  # a folder name on Windows too
    return str(Path(root) / f"{safe_name}-{time.strftime('%Y%m%d-%H%M%S')}")


def start(folder: str | None, first_step: int, model: nn.Module, image_size: int, device: torch.device,
          balanced: bool) -> None:
    """Open the run's writer (rank 0, with --tensorboard); in a new folder, write the model graph and the charts
    that combine tags. `first_step`: the step the run goes on from; a resumed run purges what its folder holds
    past it (the steps a stopped run logged after its last checkpoint), so that no step is there twice."""
    global _writer, _last_step
    if folder is None or not distributed.is_main_process():
        return
    from torch.utils.tensorboard import SummaryWriter

    new_folder = not any(Path(folder).glob("events.out.tfevents.*"))
    _writer = SummaryWriter(folder, purge_step=first_step + 1 if first_step else None, flush_secs=10)
    _last_step = first_step
    if new_folder:  # once per folder: a resumed run's would replace it with the same
        write_graph_and_layout(model, image_size, device, balanced)
    print(f"TensorBoard: event files in {folder}; run `tensorboard --logdir {Path(folder).parent}` in another terminal")


def write_graph_and_layout(model: nn.Module, image_size: int, device: torch.device, balanced: bool) -> None:
    """The model graph, and the custom-scalar charts that combine tags: val_acc between its interval's bounds,
    train against val loss."""
    with warnings.catch_warnings(), torch.no_grad():  # the tracer's warnings are about tracing, not training
        warnings.simplefilter("ignore")
        try:  # traced in eval mode (add_graph's own doing): BatchNorm's statistics stay as they are
            _writer.add_graph(model, torch.zeros(1, 3, image_size, image_size, device=device))
        except RuntimeError as error:  # a picture of the model is not worth stopping the training for
            print(f"TensorBoard: no model graph, the tracer failed ({str(error).splitlines()[0]})")
    accuracy = {"val_acc and its 95% interval": ["Margin", ["val_acc", "val_acc_low", "val_acc_high"]]}
    if balanced:
        accuracy["val_balanced_acc and its 95% interval"] = ["Margin", ["val_balanced_acc", "val_balanced_acc_low",
                                                                         "val_balanced_acc_high"]]
    _writer.add_custom_scalars({"loss": {"train and val loss per epoch": ["Multiline", ["train_loss_epoch", "val_loss"]]},
                                "accuracy": accuracy})


def log(numbers: dict[str, float], pictures: dict[str, Image.Image], step: int | None) -> None:
    """Scalars and images at `step` (None: the last step logged), under the names they have in SwanLab."""
    global _last_step
    if _writer is None:
        return
    _last_step = _last_step if step is None else step
    for tag, value in numbers.items():
        _writer.add_scalar(tag, value, _last_step)
    for tag, picture in pictures.items():
        _writer.add_image(tag, np.asarray(picture.convert("RGB")), _last_step, dataformats="HWC")


def close() -> None:
    """Write what is pending and close the event file (the end of the run)."""
    global _writer
    if _writer is not None:
        _writer.close()
        _writer = None
