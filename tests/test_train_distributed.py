"""train.py under torchrun: two processes on the CPU, talking over gloo as they would over NCCL on two GPUs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader

from cats_dogs.checkpoint import load_checkpoint, read_checkpoint
from cats_dogs.epochs import evaluate
from cats_dogs.loaders import EpochSampler
from cats_dogs.photo_batches import collate_readable
from cats_dogs.served_epoch import right_wrong
from conftest import FAST_TRAIN_FLAGS, REPO, make_broken_files, make_dataset, read_swanlab_runs, run_script
from load_datasets import DatasetLoader

# resnet18 and fp32: the smallest model keeps two processes on two cores quick, and without bf16 the
# ranks' val accuracy can be compared exactly with evaluate.py's, which runs in fp32.
DDP_FLAGS = [*FAST_TRAIN_FLAGS, "--model", "resnet18", "--no-amp"]


def torchrun(*args: str, cwd: Path, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=2 train.py ARGS`, for real, with no stdin."""
    # One thread per process: two processes on two cores, not two times two threads.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(REPO / "train.py"),
               *args]
    with subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, encoding="utf-8") as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()  # torchrun passes it on to the training processes (SIGKILL would orphan them)
            stdout, stderr = process.communicate()
            raise AssertionError(f"torchrun train.py {' '.join(args)} still running after {timeout} s: the processes "
                                 f"are probably waiting for each other\n--- stdout\n{stdout[-4000:]}") from None
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"torchrun train.py {' '.join(args)} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}")
    return result


def rank_batches(epoch: int, size: int, batch_size: int = 4, seed: int = 42) -> list[list[list[int]]]:
    """The train rows each of the 2 processes gets in each step of `epoch`: the same sampler as train.py's."""
    batches = []
    for rank in range(2):
        sampler = EpochSampler(size, seed, rank=rank, world_size=2)
        sampler.set_epoch(epoch)
        order = [index for index, _ in sampler]
        batches.append([order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)])
    return batches


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One epoch under torchrun on data built to catch the two classic mistakes of data-parallel training.

    train.csv: 16 rows, three of them unreadable, placed so that only rank 1's first batch is left with a
    single photo; BatchNorm cannot train on that, so rank 1 must skip the step, and so must rank 0, or one
    of them would wait for the other's gradients forever.
    val.csv: 11 rows, 6 + 5 for the two processes (DistributedSampler would even them out by repeating
    a photo): 9 readable photos and 2 unreadable ones. The 9th row is the 1st photo again with the other
    label, so that exactly one of the twins is right and the accuracy is strictly between 0 and 100%.
    """
    workdir = tmp_path_factory.mktemp("ddp")
    data = make_dataset(workdir / "datasets", per_class_train=8, per_class_val=4)
    broken = make_broken_files(data / "broken")
    for name in ("notes.jpg", "memo.jpg"):
        (data / "broken" / name).write_text("not a photo either", encoding="utf-8")

    train_rows = (data / "train.csv").read_text(encoding="utf-8").splitlines()
    rank1_first_batch = rank_batches(epoch=1, size=len(train_rows))[1][0]
    for row, kind in zip(rank1_first_batch[:3], ("truncated", "text", "bomb"), strict=True):
        train_rows[row] = f"broken/{broken[kind].name},{train_rows[row].split(',')[1]}"
    (data / "train.csv").write_text("\n".join(train_rows) + "\n", encoding="utf-8")
    with open(data / "val.csv", "a", encoding="utf-8") as csv:
        csv.write("val/cat/cat.0.jpg,1\nbroken/notes.jpg,1\nbroken/memo.jpg,0\n")

    result = torchrun(*DDP_FLAGS, "--epochs", "1", "--tensorboard", cwd=workdir)
    return workdir, result


def test_torchrun_trains_once_logs_once_and_writes_once(ddp_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    workdir, result = ddp_run
    assert "torchrun: 2 processes (gloo), batch 4 per process = 8 photos per step" in result.stdout
    # Rank 0 alone prints.
    assert result.stdout.count("epoch 1/1  train_loss") == 1 and result.stdout.count("done. best epoch 1: val_acc") == 1
    assert list(workdir.rglob("latest_checkpoint.pth")) == [workdir / "checkpoint/latest_checkpoint.pth"]
    assert not list(workdir.rglob("*.tmp"))
    checkpoint = read_checkpoint(workdir / "checkpoint/latest_checkpoint.pth")
    assert checkpoint["epoch"] == 1 and checkpoint["config"]["world_size"] == 2
    # The plain ResNet's weights, not DDP's wrapper: app.py and evaluate.py load them as they are.
    assert not any(key.startswith("module.") for key in checkpoint["model_state"])

    [run] = read_swanlab_runs(workdir / "swanlog")
    assert run["metrics"]["val_acc"] == [pytest.approx(checkpoint["metrics"]["val_acc"])]
    # Of the two steps, the one where rank 1 had a single readable photo was skipped by both processes.
    assert len(run["metrics"]["train_loss"]) == 1
    assert all(state["step"] == 1 for state in checkpoint["optimizer_state"]["state"].values())
    # Every readable val photo is captioned, rank 1's share included.
    assert len(run["captions"]["val_examples"]) == 9
    # TensorBoard too: one folder, one event file (rank 0's), the same numbers.
    [events_file] = workdir.glob("runs/*/events.out.tfevents.*")
    events = EventAccumulator(str(events_file.parent)).Reload()
    assert len(events.Scalars("train_loss")) == 1 and len(events.Images("val_examples")) == 1
    assert [e.value for e in events.Scalars("val_acc")] == [np.float32(checkpoint["metrics"]["val_acc"])]

    # The unreadable photos only rank 1 met (train: 3, val: notes.jpg) are listed by rank 0 at the end.
    assert "skipped 5 unreadable photo(s)" in result.stdout
    for name in ("truncated.jpg", "text.jpg", "bomb.png", "notes.jpg", "memo.jpg"):
        assert f"datasets/broken/{name}: " in result.stdout


def test_torchrun_val_accuracy_equals_a_single_process_evaluation(ddp_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    workdir, _ = ddp_run
    checkpoint = read_checkpoint(workdir / "checkpoint/latest_checkpoint.pth")
    val_acc, val_loss = checkpoint["metrics"]["val_acc"], checkpoint["metrics"]["val_loss"]
    run_script("evaluate.py", "--checkpoint", "checkpoint/latest_checkpoint.pth", "--csv", "datasets/val.csv", cwd=workdir)
    report = json.loads((workdir / "eval/report.json").read_text(encoding="utf-8"))
    assert report["count"] == 9
    assert val_acc == pytest.approx(100 * report["accuracy"], abs=1e-9)
    assert 0 < val_acc < 100 and round(val_acc * 9 / 100) == pytest.approx(val_acc * 9 / 100)  # k/9: one twin right

    # The loss too, which an accuracy can hide: a photo counted twice, or a process evaluating with its own
    # BatchNorm statistics instead of those in the checkpoint, would move it.
    model, meta = load_checkpoint(workdir / "checkpoint/latest_checkpoint.pth")
    val_set = DatasetLoader(workdir / "datasets/val.csv", meta["image_size"], num_classes=2)
    loader = DataLoader(val_set, batch_size=4, collate_fn=collate_readable)
    loss, accuracy, predictions = evaluate(model, loader, nn.CrossEntropyLoss(), torch.device("cpu"), set())
    assert len(predictions) == 9 and accuracy == pytest.approx(val_acc)
    # Each val photo right or wrong, for --best-rule paired: rank 1's share gathered too, in val order, the two
    # unreadable photos (the last rows) marked "-".
    labels = [label for _, label in val_set.samples]
    assert checkpoint["history"][0]["val_right"] == right_wrong(predictions, labels)
    assert len(checkpoint["history"][0]["val_right"]) == 11 and checkpoint["history"][0]["val_right"].endswith("--")
    assert val_loss == pytest.approx(loss, rel=1e-5)


def test_torchrun_resume(ddp_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    workdir, _ = ddp_run
    shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)
    first = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    result = torchrun(*DDP_FLAGS, "--epochs", "2", "--resume", cwd=tmp_path)
    assert result.stdout.count("resuming from") == 1 and "epoch 2/2" in result.stdout and "epoch 1/2" not in result.stdout
    assert result.stdout.count("add --tensorboard to continue its curves there") == 1  # the first run logged there
    second = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    assert second["epoch"] == 2 and [h["epoch"] for h in second["history"]] == [1, 2]
    assert second["history"][0] == first["history"][0]
    assert not torch.equal(first["model_state"]["fc.weight"], second["model_state"]["fc.weight"])
    # Adam's step counter went on from the first run's, through the steps the second run logged.
    _, resumed = read_swanlab_runs(tmp_path / "swanlog")
    steps = len(resumed["metrics"]["train_loss"])
    assert steps >= 1 and all(state["step"] == 1 + steps for state in second["optimizer_state"]["state"].values())


@pytest.mark.parametrize(("flag", "message"), [("--freeze-backbone", "run it with `python train.py`, not torchrun"),
                                               ("--sync-bn", "--sync-bn needs GPUs")])
def test_torchrun_refuses_what_does_not_fit_several_processes(tmp_path: Path, flag: str, message: str) -> None:
    make_dataset(tmp_path / "datasets", per_class_train=2, per_class_val=1)
    result = torchrun(*DDP_FLAGS, "--epochs", "1", flag, cwd=tmp_path, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "checkpoint").exists() and not (tmp_path / "swanlog").exists()


def test_torchrun_balances_imbalanced_classes_with_the_loss(tmp_path: Path) -> None:
    """--balance sampler under torchrun: each process draws its share of a plain shuffle, and the class-weighted loss
    does the balancing instead; it says so and records it."""
    data = make_dataset(tmp_path / "datasets", per_class_train=8, per_class_val=2)
    rows = (data / "train.csv").read_text(encoding="utf-8").splitlines()
    kept = [row for row in rows if not (row.startswith("train/dog/") and int(row.split(".")[1]) >= 2)]  # 8 cats, 2 dogs
    (data / "train.csv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    result = torchrun(*DDP_FLAGS, "--epochs", "1", "--balance", "sampler", cwd=tmp_path)
    # n / (k · n_c) with n = 10, k = 2: 10/16 and 10/4
    assert "balance: class-weighted loss (cat 0.62, dog 2.50) (--balance sampler; the class-weighted loss instead of " \
           "the sampler under torchrun" in result.stdout
    args = json.loads((tmp_path / "checkpoint/args.json").read_text(encoding="utf-8"))
    assert (args["balance"], args["balance_applied"], args["world_size"]) == ("sampler", "loss", 2)
    assert "val_balanced_acc" in read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")["metrics"]
