"""train.py killed (SIGKILL) anywhere and resumed ends with the same weights, bit for bit, as a run never stopped.

Each configuration trains once without a stop (the reference), then again with kills at points seen from outside,
as a learner's closed lid would hit them: inside an epoch (once a checkpoint inside it exists, --save-every), during a
checkpoint's write (its temporary file is there), during the engine's build (its line is printed).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cats_dogs.atomic import TEMPORARY_MARK
from cats_dogs.checkpoint import read_checkpoint
from cats_dogs.engines import engine_cached
from cats_dogs.loaders import EpochSampler
from conftest import FAST_TRAIN_FLAGS, REPO, make_dataset, run_script
from load_datasets import DatasetLoader

# The engine is built after the last epoch, in train.py (--build-engine now), in the run killed during its build;
# skipped elsewhere (--no-engine).
FLAGS = [*(flag for flag in FAST_TRAIN_FLAGS if flag != "--no-engine"), "--model", "resnet18", "--epochs", "3",
         "--swanlab-mode", "disabled", "--build-engine", "now"]
CONFIGURATIONS = {  # the loader's ways: a shuffle in the training process with the photos cached in memory; the
    # --balance sampler's draws with one data worker that persists across epochs, photos decoded every time, and
    # the strong augmentation, which draws from torch's generator
    "shuffle": [],
    "sampler-worker": ["--balance", "sampler", "--num-workers", "1", "--no-cache", "--augment", "strong"],
}


def train(workdir: Path, output: str, *flags: str) -> subprocess.CompletedProcess:
    return run_script("train.py", *FLAGS, "--output-dir", output, *flags, cwd=workdir, timeout=600)


@pytest.fixture(scope="module", params=list(CONFIGURATIONS))
def reference(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A folder with photos and the reference run's checkpoint (reference/), and the configuration's flags."""
    workdir = tmp_path_factory.mktemp(request.param)
    make_dataset(workdir / "datasets", per_class_train=6, per_class_val=2)
    train(workdir, "reference", *CONFIGURATIONS[request.param], "--no-engine")
    return workdir, CONFIGURATIONS[request.param]


def start_killable(workdir: Path, output: str, *flags: str) -> tuple[subprocess.Popen, Path]:
    """train.py started, its stdout going to a file that the test reads as it grows."""
    log = workdir / f"{output}-{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
    with open(log, "w", encoding="utf-8") as stdout:
        process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *FLAGS, "--output-dir", output, *flags],
                                   cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                                   stderr=subprocess.DEVNULL)
    return process, log


def kill_when(process: subprocess.Popen, log: Path, seen: Callable[[str], bool], timeout: float = 300) -> None:
    """SIGKILL as soon as `seen(stdout so far)`; fails if the run ends first."""
    deadline = time.monotonic() + timeout
    while not seen(log.read_text(encoding="utf-8")):
        assert process.poll() is None, f"train.py ended before the kill point:\n{log.read_text(encoding='utf-8')}"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


def checkpoint_inside_epoch(latest: Path, epoch: int) -> Callable[[str], bool]:
    """Seen once latest_checkpoint.pth was written inside `epoch` (--save-every)."""
    last_seen = [0]

    def seen(_: str) -> bool:
        if not latest.is_file() or latest.stat().st_mtime_ns == last_seen[0]:
            return False
        last_seen[0] = latest.stat().st_mtime_ns
        mid_epoch = read_checkpoint(latest).get("mid_epoch")
        return bool(mid_epoch) and mid_epoch["epoch"] == epoch
    return seen


def leftovers(folder: Path) -> list[Path]:
    return list(folder.rglob(f"*{TEMPORARY_MARK}*"))


def assert_same_run(workdir: Path, output: str) -> None:
    """The resumed run's weights are the reference's, bit for bit; results.csv has each epoch once."""
    resumed = read_checkpoint(workdir / output / "latest_checkpoint.pth")
    reference = read_checkpoint(workdir / "reference/latest_checkpoint.pth")
    assert resumed["epoch"] == 3 and resumed["mid_epoch"] is None
    assert resumed["model_state"].keys() == reference["model_state"].keys()
    different = [key for key, tensor in reference["model_state"].items()
                 if not torch.equal(tensor, resumed["model_state"][key])]
    assert not different, f"weights differ from the uninterrupted run's: {different[:5]}"
    assert resumed["optimizer_state"]["state"].keys() == reference["optimizer_state"]["state"].keys()
    for key, state in reference["optimizer_state"]["state"].items():
        assert all(torch.equal(value, resumed["optimizer_state"]["state"][key][name]) for name, value in state.items())
    assert resumed["global_step"] == reference["global_step"]
    # The same epochs' losses, each once (the time taken differs: not compared).
    assert [(h["epoch"], h["train_loss"], h["val_loss"]) for h in resumed["history"]] == \
        [(h["epoch"], h["train_loss"], h["val_loss"]) for h in reference["history"]]
    rows = (workdir / output / "results.csv").read_text(encoding="utf-8").splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3"]


def test_an_epochs_order_and_augmentation_depend_on_the_seed_epoch_and_photo_alone(tmp_path: Path) -> None:
    sampler = EpochSampler(10, seed=5, weights=[1.0] * 5 + [3.0] * 5)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.set_epoch(3)
    assert list(sampler) != whole  # another draw every epoch
    sampler.set_epoch(2, skip=4)  # resumed after 4 photos: the rest, in the same order, with the same seeds
    assert list(sampler) == whole[4:] and len(sampler) == 6
    photos = DatasetLoader(make_dataset(tmp_path / "data", 5, 1) / "train.csv", 32, train=True, augment="strong")
    first = photos.__getitems__(whole[:3]).images
    random.seed(0)  # whatever the process's generators did before (a worker's history)
    torch.manual_seed(0)
    photos.__getitems__(whole[3:])
    assert torch.equal(photos.__getitems__(whole[:3]).images, first)
    assert not torch.equal(photos.__getitems__([(i, s + 1) for i, s in whole[:3]]).images, first)


def test_killed_inside_an_epoch_during_a_write_and_during_the_engine_build_resumes_to_the_same_weights(
        reference: tuple[Path, list[str]]) -> None:
    workdir, flags = reference
    run, latest = "killed", workdir / "killed/latest_checkpoint.pth"
    # Inside epoch 2, once a checkpoint inside it exists (--save-every 0.001 minutes: after every step).
    process, log = start_killable(workdir, run, *flags, "--save-every", "0.001", "--no-engine")
    kill_when(process, log, checkpoint_inside_epoch(latest, epoch=2))
    if flags:  # the sampler and worker configuration: that kill alone
        resumed = train(workdir, run, *flags, "--no-engine", "--resume")
        assert "resuming from killed/latest_checkpoint.pth at batch" in resumed.stdout
        assert_same_run(workdir, run)
        return

    process, log = start_killable(workdir, run, "--resume")
    writing = f"{TEMPORARY_MARK}{process.pid}-"  # atomic.atomic_path's name for this process's file being written
    kill_when(process, log, lambda _: any(writing in path.name for path in leftovers(workdir / run)))
    assert any(writing in path.name for path in leftovers(workdir / run))  # as big as a checkpoint
    process, log = start_killable(workdir, run, "--resume")
    kill_when(process, log, lambda out: "preparing the serving engine" in out)  # during the engine's build
    assert not any(writing in path.name for path in leftovers(workdir / run))  # swept at the start
    best = workdir / run / "best_checkpoint.pth"
    assert not engine_cached("auto", read_checkpoint(best), best, workdir / "datasets")

    finished = train(workdir, run, "--resume")
    assert "has already been trained for 3 epochs" in finished.stdout
    assert engine_cached("auto", read_checkpoint(best), best, workdir / "datasets")  # built, not left out
    assert not leftovers(workdir / run)
    assert_same_run(workdir, run)
