"""Where a run's numbers and pictures go: SwanLab, and TensorBoard's event files with --tensorboard
(cats_dogs.tensorboard_log). Training logs through `log`, which feeds both from one dict under the same names.

SwanLab is imported only by open_swanlab for a mode that keeps logs (importing it takes 0.8 s); until then, and for
--swanlab-mode disabled or where it is not installed (a bare GPU server), `tracking.swanlab` is a stand-in that logs
nowhere."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from PIL import Image

from cats_dogs import tensorboard_log
from cats_dogs.photo_grid import photo_grid

STAND_IN = SimpleNamespace(init=lambda mode, **_: mode == "disabled" or sys.exit("SwanLab is not installed: pip install "
                           "swanlab, or pass --swanlab-mode disabled"), log=lambda *_, **__: None, finish=lambda: None,
                           Image=lambda *_, **__: None)
swanlab = STAND_IN


def open_swanlab(mode: str, **init_args) -> None:
    """swanlab.init(mode=mode, ...): SwanLab itself for local, offline and online runs, the stand-in for disabled."""
    global swanlab
    if mode != "disabled":
        try:
            import swanlab as installed
        except ModuleNotFoundError:  # the stand-in's init says what to do
            installed = STAND_IN
        swanlab = installed
    swanlab.init(mode=mode, **init_args)


@dataclass(frozen=True)
class Picture:
    """A picture to log: a PIL image or the path of one, and its caption (SwanLab shows it under the picture;
    TensorBoard has none, so a list of pictures is drawn there as one grid with the captions written in)."""
    image: Image.Image | str | Path
    caption: str = ""


def log(values: dict[str, float | Picture | list[Picture]], step: int | None = None) -> None:
    """Numbers and pictures to SwanLab and, with --tensorboard, to TensorBoard; `step` None: SwanLab's next step,
    TensorBoard's last one."""
    if swanlab_keeps_logs():  # else its pictures are not even encoded: 3.4 s of a 96 s --freeze-backbone run
        swanlab.log({key: to_swanlab(value) for key, value in values.items()}, step=step)
    numbers = {key: value for key, value in values.items() if isinstance(value, int | float)}
    pictures = {key: to_tensorboard(value) for key, value in values.items() if isinstance(value, Picture | list) and value}
    tensorboard_log.log(numbers, pictures, step)


def swanlab_keeps_logs() -> bool:
    """A SwanLab run is open, in a mode that keeps what is logged (not --swanlab-mode disabled, not torchrun's other
    processes, not the stand-in)."""
    run = getattr(swanlab, "get_run", lambda: None)()
    return run is not None and getattr(run, "mode", "disabled") != "disabled"


def to_swanlab(value: float | Picture | list[Picture]):
    if isinstance(value, Picture):
        return swanlab.Image(str(value.image) if isinstance(value.image, Path) else value.image, caption=value.caption)
    if isinstance(value, list):
        return [to_swanlab(picture) for picture in value]
    return value


def to_tensorboard(value: Picture | list[Picture]) -> Image.Image:
    """One picture as it is; several as a grid, each caption under its photo."""
    if isinstance(value, Picture):
        if isinstance(value.image, Image.Image):
            return value.image
        with Image.open(value.image) as image:
            return image.convert("RGB")
    photos = [to_tensorboard(picture) for picture in value]
    tile = max(128, *(max(photo.size) for photo in photos))  # tiny test photos enlarged: room for the captions
    return photo_grid(photos, [picture.caption for picture in value], tile=tile)


def finish() -> None:
    """The end of the run's logging: SwanLab's run finished, TensorBoard's event file closed."""
    swanlab.finish()
    tensorboard_log.close()
