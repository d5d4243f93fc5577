"""checkpoint.py: the one writer and the one reader of checkpoints."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from cats_dogs.checkpoint import (
    CHECKPOINT_FORMAT,
    TRAINING_STATE_KEYS,
    Checkpoint,
    checkpoint_transform,
    load_checkpoint,
    make_checkpoint,
    read_checkpoint,
    read_checkpoint_or_exit,
    save_checkpoint,
)
from cats_dogs.model import build_model
from cats_dogs.weights import read_state_dict
from conftest import make_photo, run_script


def test_checkpoint_round_trip_keeps_weights_and_metadata(tmp_path: Path) -> None:
    model = build_model("resnet18", 3)
    checkpoint = make_checkpoint(model, arch="resnet18", class_names=["a", "b", "c"], image_size=64,
                                 epoch=4, metrics={"val_acc": 75.0})
    path = tmp_path / "out" / "model.pth"
    save_checkpoint(checkpoint, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pth"]  # no temp file left behind
    loaded, meta = load_checkpoint(path)
    assert meta["class_names"] == ["a", "b", "c"] and meta["epoch"] == 4 and meta["metrics"]["val_acc"] == 75.0
    assert not loaded.training
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert checkpoint_transform(meta)(Image.new("RGB", (10, 10))).shape == (3, 64, 64)


def test_the_tutorials_bare_state_dict_loads(tmp_path: Path) -> None:
    model = build_model("resnet50", 2)
    torch.save(model.state_dict(), tmp_path / "latest_checkpoint.pth")  # what the tutorial's train.py saved
    loaded, meta = load_checkpoint(tmp_path / "latest_checkpoint.pth")
    assert meta["arch"] == "resnet50" and meta["class_names"] == ["cat", "dog"] and meta["image_size"] == 256
    assert torch.equal(loaded.fc.weight, model.fc.weight)


def test_load_checkpoint_names_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pth is not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "broken.pth")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pth")

def test_every_key_is_filled_for_an_old_file_and_the_tutorials(tmp_path: Path) -> None:
    model = build_model("resnet18", 2)
    old = {"model_state": model.state_dict(), "arch": "resnet18", "num_classes": 2, "image_size": 64,
           "metrics": {"val_acc": 90.0}}  # an early checkpoint: no format, mean/std, weights, history or config
    torch.save(old, tmp_path / "old.pth")
    torch.save(model.state_dict(), tmp_path / "tutorial.pth")
    for name, expected_format, size in (("old.pth", 0, 64), ("tutorial.pth", 0, 256)):
        checkpoint = read_checkpoint(tmp_path / name)
        assert set(Checkpoint.__annotations__) - set(checkpoint) <= set(TRAINING_STATE_KEYS)  # only for resuming
        assert checkpoint["format"] == expected_format and checkpoint["image_size"] == size
        assert checkpoint["mean"] == [0.485, 0.456, 0.406] and checkpoint["std"] == [0.229, 0.224, 0.225]
        assert checkpoint["class_names"] == ["cat", "dog"] and checkpoint["history"] == [] and checkpoint["config"] == {}
        assert checkpoint["weights"] is None
    assert read_checkpoint(tmp_path / "old.pth")["best_val_acc"] == 90.0


def test_a_checkpoint_from_a_newer_version_is_refused_with_what_to_do(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(build_model("resnet18", 2), arch="resnet18", class_names=["cat", "dog"], image_size=32,
                                 epoch=1, metrics={})
    checkpoint["format"] = CHECKPOINT_FORMAT + 1
    save_checkpoint(checkpoint, tmp_path / "future.pth")
    with pytest.raises(ValueError, match=f"future.pth was written by a newer version .*format {CHECKPOINT_FORMAT + 1}.*git pull"):
        read_checkpoint(tmp_path / "future.pth")
    with pytest.raises(ValueError, match="newer version"):
        load_checkpoint(tmp_path / "future.pth")


def test_the_writer_refuses_unknown_keys_and_can_leave_out_the_training_state(tmp_path: Path) -> None:
    model = build_model("resnet18", 2)
    with pytest.raises(TypeError, match="not checkpoint keys: best_acc"):
        make_checkpoint(model, arch="resnet18", class_names=["cat", "dog"], image_size=32, epoch=1, metrics={}, best_acc=1.0)
    checkpoint = make_checkpoint(model, arch="resnet18", class_names=["cat", "dog"], image_size=32, epoch=1, metrics={},
                                 optimizer_state={"state": {}, "param_groups": []}, scheduler_state=None)
    save_checkpoint(checkpoint, tmp_path / "best.pth", training_state=False)
    saved = read_checkpoint(tmp_path / "best.pth")
    assert "optimizer_state" not in saved and "scheduler_state" not in saved
    assert torch.equal(saved["model_state"]["fc.weight"], model.fc.weight)


def test_read_state_dict_takes_a_bare_state_dict_or_one_of_ours(tmp_path: Path) -> None:
    model = build_model("resnet18", 2)
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    save_checkpoint(make_checkpoint(model, arch="resnet18", class_names=["cat", "dog"], image_size=32, epoch=1, metrics={}),
                    tmp_path / "ours.pth")
    for name in ("bare.pth", "ours.pth"):
        assert torch.equal(read_state_dict(tmp_path / name)["fc.weight"], model.fc.weight)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth does not hold weights"):
        read_state_dict(tmp_path / "list.pth")


def test_two_writers_of_one_checkpoint_never_collide_and_it_is_always_whole(tmp_path: Path) -> None:
    """Two runs (or a run and the page) saving one path: a fixed temporary name made the second rename find the
    file gone (FileNotFoundError), or rename the other's half-written file into place."""
    checkpoints = [make_checkpoint(build_model("resnet18", 2), arch="resnet18", class_names=["cat", "dog"],
                                   image_size=32, epoch=epoch, metrics={}) for epoch in (1, 2)]
    path = tmp_path / "best_checkpoint.pth"
    errors: list[BaseException] = []

    def save_many(checkpoint: Checkpoint) -> None:
        try:
            for _ in range(15):
                save_checkpoint(checkpoint, path, training_state=False)
                assert read_checkpoint(path)["epoch"] in (1, 2)  # always one whole file or the other
        except BaseException as error:  # noqa: BLE001 -- reported below, from the main thread
            errors.append(error)

    writers = [threading.Thread(target=save_many, args=(checkpoint,)) for checkpoint in checkpoints]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert not errors, errors
    assert [p.name for p in tmp_path.iterdir()] == ["best_checkpoint.pth"]  # no temporary file left behind


def test_a_truncated_checkpoint_gives_one_line_naming_it_in_every_script(tmp_path: Path) -> None:
    save_checkpoint(make_checkpoint(build_model("resnet18", 2), arch="resnet18", class_names=["cat", "dog"],
                                    image_size=32, epoch=1, metrics={}), tmp_path / "cut.pth")
    data = (tmp_path / "cut.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])  # an interrupted copy
    photo = make_photo(tmp_path / "photo.jpg", 0, seed=1)
    for script, *args in (("predict.py", str(photo)), ("evaluate.py",), ("export.py", "--info")):
        result = run_script(script, "--checkpoint", "cut.pth", *args, cwd=tmp_path, check=False)
        assert result.returncode != 0 and "Traceback" not in result.stderr, (script, result.stderr[-2000:])
        last_line = result.stderr.strip().splitlines()[-1]  # predict.py and evaluate.py read it first: see engines.py
        assert re.match(r"cannot (load|read) cut.pth: .*not a readable PyTorch checkpoint", last_line), (script, last_line)
    with pytest.raises(SystemExit, match="cannot read .*cut.pth: .*not a readable PyTorch checkpoint"):
        read_checkpoint_or_exit(tmp_path / "cut.pth")  # what the studies read their runs' checkpoints with


def test_checkpoints_written_later_are_copies_in_order_the_newest_once_and_a_failure_raised(tmp_path: Path,
                                                                                             monkeypatch) -> None:
    from cats_dogs import checkpoint_writes

    written, writing, first_write_may_end = [], threading.Event(), threading.Event()

    def slow_save(checkpoint: Checkpoint, path: Path, training_state: bool = True) -> None:
        writing.set()
        first_write_may_end.wait(timeout=30)  # the files below are handed over while the first is being written
        written.append((path.name, float(checkpoint["model_state"]["w"]), "optimizer_state" in checkpoint))
        if path.name == "broken.pth":
            raise SystemExit("cannot write broken.pth into the folder: the disk is full")

    monkeypatch.setattr(checkpoint_writes, "save_checkpoint", slow_save)
    weights = torch.zeros(1)

    def state(value: float) -> Checkpoint:
        weights.fill_(value)  # the same tensor each time, changed in place as training does
        return Checkpoint(model_state={"w": weights}, optimizer_state={"m": weights})

    best, latest = tmp_path / "best.pth", tmp_path / "latest.pth"
    checkpoint_writes.write_later([(state(1), best, False), (state(1), latest, True)])  # epoch 1
    assert writing.wait(timeout=30)
    checkpoint_writes.write_later([(state(2), latest, True)])  # epoch 2: best unchanged
    checkpoint_writes.write_later([(state(3), best, False), (state(3), latest, True)])  # epoch 3: a new best
    weights.fill_(4)  # training goes on
    first_write_may_end.set()
    checkpoint_writes.wait_for_writes()
    # epoch 1's best (being written), then epoch 3's best before epoch 3's latest; epoch 1's and 2's latest never
    assert written == [("best.pth", 1.0, False), ("best.pth", 3.0, False), ("latest.pth", 3.0, True)]

    written.clear()
    checkpoint_writes.write_later([(state(5), tmp_path / "broken.pth", False), (state(5), latest, True)])
    with pytest.raises(SystemExit, match="cannot write broken.pth"):
        checkpoint_writes.wait_for_writes()
    assert written == [("broken.pth", 5.0, False)]  # nothing after the failed file
    checkpoint_writes.wait_for_writes()  # raised once
