"""--resume, exactly: where a run goes on (an epoch's end or a batch inside one), the checkpoint written inside an
epoch every --save-every minutes, a finished run's missing engine, and what killed writers left behind.

A resumed run ends with the same weights, bit for bit on a CPU, as the run that was never stopped: each epoch's
order and each photo's augmentation come from their own seeds (loaders.EpochSampler), and latest_checkpoint.pth
holds the rest (docs/training.md, "Exact resume").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import psutil

from cats_dogs import distributed
from cats_dogs.atomic import TEMPORARY_MARK, writer_pid
from cats_dogs.checkpoint import Checkpoint, read_checkpoint
from cats_dogs.engine_build import build_after_training, stop_background_build
from cats_dogs.engines import engine_cached
from cats_dogs.settings import TrainSettings


class RunPosition(NamedTuple):
    """Where a run starts: its first epoch, the history of the epochs before, the optimizer steps taken, and the
    part of the first epoch already trained (train_one_epoch's `done`; None: from its first batch)."""
    start_epoch: int
    history: list[dict]
    global_step: int
    mid_epoch: dict | None


def resume_point(resume_from: Checkpoint | None, latest_path: Path, steps_per_epoch: int) -> RunPosition:
    """The RunPosition of the resumed checkpoint, else epoch 1 with nothing done. Checkpoints from before the step
    count was kept count full epochs of `steps_per_epoch`."""
    if not resume_from:
        return RunPosition(1, [], 0, None)
    mid_epoch = resume_from.get("mid_epoch")
    start_epoch = resume_from["epoch"] + 1
    where = f"batch {mid_epoch['batches'] + 1} of epoch {start_epoch}" if mid_epoch else f"epoch {start_epoch}"
    print(f"resuming from {latest_path} at {where}")
    global_step = resume_from.get("global_step", resume_from["epoch"] * steps_per_epoch)
    return RunPosition(start_epoch, resume_from["history"], global_step, mid_epoch)


class MidEpochSaves:
    """--save-every: `save(global_step=…, mid_epoch=…)` (run_folder.save_latest) after the step that ends each
    `minutes`, counted from the last save; train_one_epoch calls it after every step. Writing a ResNet50's takes
    seconds (docs/training.md): every 10 minutes, well under 2% of the time."""

    def __init__(self, minutes: float, save: Callable[..., None]) -> None:
        self.interval_s, self.save, self.last = minutes * 60, save, time.monotonic()

    def __call__(self, position: dict) -> None:
        if time.monotonic() - self.last >= self.interval_s:
            mid_epoch = {key: position[key] for key in ("epoch", "batches", "total_loss", "seen")}
            self.save(global_step=position["global_step"], mid_epoch=mid_epoch)
            self.saved()

    def saved(self) -> None:
        """The epoch's own checkpoint was just written: the next one is due `minutes` from now."""
        self.last = time.monotonic()


def mid_epoch_saves(settings: TrainSettings, save: Callable[..., None]) -> MidEpochSaves | None:
    """--save-every's saver: latest_checkpoint.pth inside an epoch too, from rank 0 as at an epoch's end. None under
    --freeze-backbone, whose epochs take seconds, and in the other processes of torchrun."""
    if not distributed.is_main_process() or settings.freeze_backbone:
        return None
    return MidEpochSaves(settings.save_every, save)


def start_output(resume_from: Checkpoint | None, settings: TrainSettings) -> bool:
    """Every start: what a killed run was writing swept away (rank 0). True for --resume of a finished run
    (finished_already), which has nothing left to train."""
    if distributed.is_main_process():
        stop_background_build(Path(settings.output_dir))  # the checkpoints it reads are about to change
        remove_leftovers(Path(settings.output_dir))
    return finished_already(resume_from, settings)


def remove_leftovers(folder: Path) -> int:
    """Remove the temporary files (atomic.atomic_path's `<name>.tmp-<pid>-…`) under `folder` whose writer is dead:
    a run killed while writing a checkpoint or building the engine leaves one, as big as the file. Called at every
    start, so repeated kills never fill the disk. A live writer's (another run's) is left alone. Returns how many."""
    removed = 0
    for found in folder.rglob(f"*{TEMPORARY_MARK}*") if folder.is_dir() else ():
        pid = writer_pid(found)
        if pid is not None and found.is_file() and not psutil.pid_exists(pid):
            found.unlink(missing_ok=True)
            removed += 1
    return removed


def finished_already(resume_from: Checkpoint | None, settings: TrainSettings) -> bool:
    """--resume of a run that has trained its --epochs: nothing to train. Its serving engine is built here when the
    run was stopped before it was (train.py builds it last)."""
    if not resume_from or resume_from["epoch"] < settings.epochs or resume_from.get("mid_epoch"):
        return False
    output_dir = Path(settings.output_dir)
    print(f"{output_dir / 'latest_checkpoint.pth'} has already been trained for {resume_from['epoch']} epochs; "
          f"pass a larger --epochs to train further.")
    best_path = output_dir / "best_checkpoint.pth"
    if settings.engine and best_path.is_file() and distributed.is_main_process():
        if not engine_cached("auto", read_checkpoint(best_path), best_path, settings.data_dir):
            build_after_training(best_path, settings.data_dir, settings.amp, settings.build_engine)
    return True


def swanlab_continuation(resume_from: Checkpoint | None, mode: str) -> dict:
    """swanlab.init's arguments that continue the resumed run's experiment: SwanLab 0.10 continues one only in the
    cloud (`id`, resume="allow"); in local mode a resumed run starts a new experiment, and says so in one line."""
    run_id = resume_from.get("swanlab_run_id") if resume_from else None
    if run_id and mode == "cloud":
        return {"id": run_id, "resume": "allow"}
    if resume_from and mode != "disabled" and distributed.is_main_process():
        print(f"SwanLab: a new experiment starts (SwanLab continues one only in the cloud); its steps go on from "
              f"{resume_from.get('global_step', '')}".rstrip())
    return {}
