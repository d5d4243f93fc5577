"""train.py's checkpoints written by a thread of their own while the next epoch trains.

Writing latest_checkpoint.pth (a ResNet50's weights and Adam's two moments: 283 MB) and best_checkpoint.pth (94 MB)
took 1 to 1.3 s after every epoch on 2 cores, and most of the 13 s of a 20-epoch --freeze-backbone run's epochs,
which take a tenth of a second each. So train.py hands an epoch's files to write_later together: the tensors are
copied at once (the next step changes the weights in place), and a thread writes the files in the order they were
handed over, each whole or not at all (checkpoint.save_checkpoint). A file handed over again before its turn is
written once, with the newer content, after the files still waiting from before: so best_checkpoint.pth still comes
before the latest_checkpoint.pth of the same epoch or a later one, and a run killed at any moment leaves files that
--resume goes on from to the same weights (it replays the epochs after the latest one written).

wait_for_writes returns once every file is on disk, and raises there what stopped a write (a full disk's one line);
write_later raises it too, at the next epoch's end. The thread is not a daemon and ends when nothing is left: a run
stopped by Ctrl-C still finishes the files it had handed over.
"""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path
from typing import Any

import torch

from cats_dogs.checkpoint import Checkpoint, save_checkpoint, without_training_state

_changed = threading.Condition()  # held to read or change what follows; notified after each file
_queued: dict[Path, tuple[Checkpoint, bool]] = {}  # path: (what to write, with the training state), in write order
_in_flight: Path | None = None
_writer: threading.Thread | None = None
_failure: BaseException | None = None


def write_later(files: list[tuple[Checkpoint, str | os.PathLike, bool]]) -> None:
    """save_checkpoint(checkpoint, path, training_state) for each of `files` in this order, by the writing thread,
    from copies taken now. Files handed over before and not yet written, whose paths are not among these, are written
    first; those whose paths are, are replaced by these."""
    global _writer
    raise_failure()
    copies, memo = [], {}
    for checkpoint, path, training_state in files:
        if not training_state:  # not copied for a file that leaves it out
            checkpoint = without_training_state(checkpoint)
        copies.append((Path(path), copied(checkpoint, memo), training_state))  # training changes the originals
    with _changed:
        for path, checkpoint, training_state in copies:
            _queued.pop(path, None)
            _queued[path] = (checkpoint, training_state)
        if _writer is None:
            _writer = threading.Thread(target=_write_queued, name="checkpoint writer")
            _writer.start()


def copied(value: Any, memo: dict[int, torch.Tensor]) -> Any:
    """`value` with every tensor cloned (once: `memo`, by id) and every dict, list and tuple rebuilt. copy.deepcopy
    took 0.13 s for a ResNet50's latest_checkpoint.pth (283 MB), against 0.09 s, most of it the bytes."""
    if isinstance(value, torch.Tensor):
        if id(value) not in memo:
            memo[id(value)] = value.detach().clone()
        return memo[id(value)]
    if isinstance(value, dict):
        return type(value)((key, copied(item, memo)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return type(value)(copied(item, memo) for item in value)
    return copy.deepcopy(value)


def _write_queued() -> None:
    global _writer, _failure, _in_flight
    while True:
        with _changed:
            _in_flight = None
            _changed.notify_all()
            if not _queued:
                _writer = None
                return
            _in_flight = next(iter(_queued))
            checkpoint, training_state = _queued.pop(_in_flight)
        try:
            save_checkpoint(checkpoint, _in_flight, training_state)
        except BaseException as error:  # noqa: BLE001 -- SystemExit of a full disk included: raised in train.py
            with _changed:
                _failure, _writer, _in_flight = error, None, None
                _queued.clear()  # nothing after a failed file: latest_checkpoint.pth must not outrun best
                _changed.notify_all()
            return


def wait_for_writes(path: str | os.PathLike | None = None) -> None:
    """Every file handed to write_later is on disk (`path`: that one); what stopped one is raised here."""
    path = Path(path) if path is not None else None
    with _changed:
        while (_queued or _in_flight) if path is None else (path in _queued or _in_flight == path):
            _changed.wait()
    raise_failure()


def raise_failure() -> None:
    global _failure
    with _changed:
        failure, _failure = _failure, None
    if failure is not None:
        raise failure
