"""train.py run for real, in a subprocess, on generated photos (and real ones when available)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import psutil
import pytest
import torch

from cats_dogs.checkpoint import load_checkpoint, read_checkpoint
from cats_dogs.engine_build import background_build
from cats_dogs.engines import engine_cached
from cats_dogs.recipe import best_evaluation, windowed_val_accs
from conftest import FAST_TRAIN_FLAGS, make_broken_files, make_dataset, read_swanlab_runs, run_script


def test_training_writes_both_checkpoints_with_what_the_app_needs(trained_run: Path) -> None:
    latest = read_checkpoint(trained_run / "checkpoint/latest_checkpoint.pth")
    best = read_checkpoint(trained_run / "checkpoint/best_checkpoint.pth")
    assert latest["epoch"] == 2
    assert latest["arch"] == "resnet50" and latest["class_names"] == ["cat", "dog"] and latest["image_size"] == 32
    assert latest["mean"] == [0.485, 0.456, 0.406] and latest["std"] == [0.229, 0.224, 0.225]
    # A balanced set: accuracy with its 95% interval and photo count, no balanced accuracy.
    assert set(latest["metrics"]) == {"train_loss", "val_loss", "val_acc", "val_acc_low", "val_acc_high", "val_count",
                                      "val_acc_windowed", "train_images_per_s", "epoch_time_s"}
    assert latest["metrics"]["val_acc_low"] <= latest["metrics"]["val_acc"] <= latest["metrics"]["val_acc_high"]
    assert latest["config"]["balance"] == "auto" and latest["config"]["balance_applied"] == "off"
    assert [h["epoch"] for h in latest["history"]] == [1, 2] and latest["history"][-1]["val_acc"] == latest["metrics"]["val_acc"]
    assert 0 <= latest["metrics"]["val_acc"] <= 100
    assert "optimizer_state" in latest and latest["config"]["lr"] == 1e-4 and latest["config"]["batch_size"] == 4
    assert best["metrics"]["val_acc"] == latest["best_val_acc"] == max(best["metrics"]["val_acc"], latest["metrics"]["val_acc"])
    assert "optimizer_state" not in best and best["class_names"] == ["cat", "dog"]
    assert not list((trained_run / "checkpoint").glob("*.tmp"))
    from PIL import Image

    with Image.open(trained_run / "checkpoint/training_curves.png") as curves:
        assert curves.size == (1000, 400)


def test_training_logs_metrics_and_a_captioned_gallery_to_swanlab(trained_run: Path) -> None:
    [run] = read_swanlab_runs(trained_run / "swanlog")
    assert run["name"] == "resnet50"
    assert len(run["metrics"]["train_loss"]) == 2 * 4  # 16 photos, batch 4, 2 epochs
    assert len(run["metrics"]["val_acc"]) == 2 and len(run["metrics"]["val_loss"]) == 2
    assert run["metrics"]["lr"][0] == pytest.approx(1e-4 / 4)  # warm-up over the first epoch's 4 steps
    assert max(run["metrics"]["lr"]) == pytest.approx(1e-4)
    captions = run["captions"]["val_examples"]
    assert len(captions) == 2 * 8  # every val photo (8 < 30), at each evaluation
    assert all(caption.split(" / ")[0] in ("cat", "dog") and caption.split(" / ")[1] in ("cat", "dog")
               for caption in captions)
    assert {caption.split(" / ")[1] for caption in captions} == {"cat", "dog"}
    latest = read_checkpoint(trained_run / "checkpoint/latest_checkpoint.pth")
    assert run["metrics"]["val_acc"][-1] == pytest.approx(latest["metrics"]["val_acc"])


def test_resume_continues_up_to_the_new_epoch_count(tmp_path: Path) -> None:
    make_dataset(tmp_path / "datasets")
    run_script("train.py", *FAST_TRAIN_FLAGS, "--epochs", "1", cwd=tmp_path)
    first = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    result = run_script("train.py", *FAST_TRAIN_FLAGS, "--epochs", "2", "--resume", "--best-rule", "window", cwd=tmp_path)
    assert "resuming from" in result.stdout and "epoch 2/2" in result.stdout and "epoch 1/2" not in result.stdout
    second = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    assert second["epoch"] == 2
    assert [h["epoch"] for h in second["history"]] == [1, 2]  # the curves span both runs
    assert second["history"][0] == first["history"][0]
    # The best epoch is chosen over both runs' evaluations (two of them: shorter windows than 3 compete).
    val_accs = [h["val_acc"] for h in second["history"]]
    assert second["best_epoch"] == (2 if (val_accs[0] + val_accs[1]) / 2 > val_accs[0] else 1)
    assert not torch.equal(first["model_state"]["fc.weight"], second["model_state"]["fc.weight"])
    # Adam's step counter carried on rather than restarting at zero.
    steps = [state["step"] for state in second["optimizer_state"]["state"].values()]
    assert all(step == 8 for step in steps)
    done = run_script("train.py", *FAST_TRAIN_FLAGS, "--epochs", "2", "--resume", cwd=tmp_path)
    assert "already been trained for 2 epochs" in done.stdout


def test_same_seed_gives_the_same_result(tmp_path: Path) -> None:
    make_dataset(tmp_path / "datasets")
    results = []
    for name in ("a", "b"):
        run_script("train.py", *FAST_TRAIN_FLAGS, "--epochs", "1", "--output-dir", name, "--swanlab-mode", "disabled",
                   cwd=tmp_path)
        results.append(read_checkpoint(tmp_path / name / "latest_checkpoint.pth"))
    for metric in ("train_loss", "val_loss", "val_acc"):
        assert results[0]["metrics"][metric] == results[1]["metrics"][metric]
    assert torch.equal(results[0]["model_state"]["fc.weight"], results[1]["model_state"]["fc.weight"])


def test_missing_csv_says_what_to_do(tmp_path: Path) -> None:
    result = run_script("train.py", *FAST_TRAIN_FLAGS, cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "No train.csv in" in result.stderr and "datasets/README.md" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_csv_stops_before_anything_is_written(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "datasets")
    with open(data / "train.csv", "a", encoding="utf-8") as csv:
        csv.write("train/cat/nope.jpg,0\ntrain/cat/cat.0.jpg,5\n")
    result = run_script("train.py", *FAST_TRAIN_FLAGS, cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "2 bad row(s)" in result.stderr and "line 17: file not found" in result.stderr
    assert "line 18: label 5 is out of range 0..1" in result.stderr
    assert not (tmp_path / "checkpoint").exists() and not (tmp_path / "swanlog").exists()


def test_help_lists_every_flag(tmp_path: Path) -> None:
    out = run_script("train.py", "--help", cwd=tmp_path).stdout
    for flag in ("--data-dir", "--epochs", "--batch-size", "--lr", "--image-size", "--model", "--weights", "--device",
                 "--num-workers", "--eval-interval", "--seed", "--output-dir", "--resume", "--save-every", "--no-augment",
                 "--swanlab-mode", "--project", "--experiment-name", "--best-window", "--early-stopping"):
        assert flag in out


def test_resnet18_with_eval_interval_and_class_names(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "datasets", per_class_train=4, per_class_val=2, class_names=("a", "b", "c"))
    (data / "classes.txt").write_text("apple\nbanana\ncherry\n", encoding="utf-8")
    result = run_script("train.py", *FAST_TRAIN_FLAGS, "--model", "resnet18", "--epochs", "3", "--eval-interval", "2",
                        "--num-workers", "1", "--no-augment", "--swanlab-mode", "disabled", cwd=tmp_path)
    assert "val_acc" in result.stdout.splitlines()[-2]  # the last epoch is always evaluated
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert ["val_acc" in line for line in lines] == [False, True, True]
    model, meta = load_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    assert meta["arch"] == "resnet18" and meta["class_names"] == ["apple", "banana", "cherry"]
    assert model.fc.out_features == 3


def test_unreadable_photos_are_skipped_named_and_counted(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "datasets")
    broken = make_broken_files(data / "broken")
    with open(data / "train.csv", "a", encoding="utf-8") as csv:
        csv.write(f"broken/{broken['truncated'].name},0\nbroken/{broken['text'].name},1\nbroken/{broken['empty'].name},0\n")
    with open(data / "val.csv", "a", encoding="utf-8") as csv:
        csv.write(f"broken/{broken['bomb'].name},1\n")
    result = run_script("train.py", *FAST_TRAIN_FLAGS, "--epochs", "2", "--num-workers", "1", cwd=tmp_path)
    assert "skipped 4 unreadable photo(s)" in result.stdout
    for kind, reason in (("truncated", "the file is cut short"), ("text", "not an image file"), ("empty", "empty file"),
                         ("bomb", "too many pixels")):
        assert f"{Path('datasets/broken') / broken[kind].name}: {reason}" in result.stdout
    # Warned once per photo, not once per epoch.
    assert result.stdout.count("warning: skipped unreadable photo datasets/broken/text.jpg") == 1
    checkpoint = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    assert checkpoint["epoch"] == 2
    # val accuracy counts the 8 readable val photos only.
    assert checkpoint["metrics"]["val_acc"] * 8 / 100 == pytest.approx(round(checkpoint["metrics"]["val_acc"] * 8 / 100))


def test_every_speed_lever_can_be_switched_off_and_learns_the_same(tmp_path: Path) -> None:
    make_dataset(tmp_path / "datasets")
    runs = {}
    levers = {"fast": ["--amp", "--channels-last", "--cache"], "fp32": ["--no-amp", "--channels-last", "--cache"],
              "plain": ["--no-amp", "--no-channels-last", "--no-cache"]}
    for name, flags in levers.items():
        result = run_script("train.py", *FAST_TRAIN_FLAGS, "--epochs", "2", "--output-dir", name, *flags, cwd=tmp_path)
        runs[name] = (result.stdout, read_checkpoint(tmp_path / name / "latest_checkpoint.pth"))
    assert "speed: mixed precision bfloat16, channels_last, photos cached in memory, 0 data workers" in runs["fast"][0]
    assert "speed: fp32, 0 data workers" in runs["plain"][0]
    fast, plain = runs["fast"][1], runs["plain"][1]
    assert fast["config"]["amp"] is True and plain["config"]["cache"] == "off"
    # Same seed, same photos: the cache and the memory layout change nothing but rounding, so the
    # first step's loss agrees closely (Adam's updates then amplify rounding). bf16 against fp32 is
    # checked on predictions in test_common: on an untrained 50-layer network it moves the loss itself.
    fast_losses, fp32_losses, plain_losses = (run["metrics"]["train_loss"] for run in read_swanlab_runs(tmp_path / "swanlog"))
    assert fp32_losses[0] == pytest.approx(plain_losses[0], abs=1e-3)
    assert len(fast_losses) == len(plain_losses) == 8 and all(math.isfinite(loss) for loss in fast_losses)


def test_freeze_backbone_trains_only_the_head(tmp_path: Path) -> None:
    import random

    from cats_dogs.model import build_model

    make_dataset(tmp_path / "datasets")
    result = run_script("train.py", *FAST_TRAIN_FLAGS, "--epochs", "3", "--freeze-backbone", "--swanlab-mode", "disabled",
                        cwd=tmp_path)
    assert "backbone frozen (head only)" in result.stdout and "epoch 3/3" in result.stdout
    checkpoint = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    random.seed(42)
    torch.manual_seed(42)  # train.py's --seed default: the same initial weights
    initial = build_model("resnet50", 2, zero_init_residual=True).state_dict()  # train.py's default from scratch
    trained = checkpoint["model_state"]
    assert all(torch.equal(trained[k], initial[k]) for k in initial if not k.startswith("fc."))
    assert not torch.equal(trained["fc.weight"], initial["fc.weight"])
    assert checkpoint["history"][-1]["epoch_time_s"] < 2  # the head alone on cached features
    resumed = run_script("train.py", *FAST_TRAIN_FLAGS, "--epochs", "4", "--resume", "--swanlab-mode", "disabled",
                         cwd=tmp_path, check=False)
    assert resumed.returncode != 0 and "resume it the same way" in resumed.stderr


@pytest.mark.parametrize("recipe", [["--optimizer", "adamw", "--scheduler", "cosine", "--label-smoothing", "0.1"],
                                    ["--optimizer", "sgd", "--scheduler", "step", "--weight-decay", "0.001"],
                                    ["--optimizer", "adam", "--scheduler", "none", "--no-zero-init-residual"]])
def test_each_optimizer_and_scheduler_trains(tmp_path: Path, recipe: list[str]) -> None:
    make_dataset(tmp_path / "datasets", per_class_train=4, per_class_val=2)
    run_script("train.py", *FAST_TRAIN_FLAGS, "--model", "resnet18", "--epochs", "2", "--warmup-epochs", "1",
               "--no-augment", *recipe, cwd=tmp_path)
    checkpoint = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    groups = checkpoint["optimizer_state"]["param_groups"]
    [run] = read_swanlab_runs(tmp_path / "swanlog")
    lrs = run["metrics"]["lr"]  # the rate each of the 4 steps used (2 steps per epoch)
    assert len(lrs) == 4
    if "none" in recipe:
        assert lrs == [pytest.approx(1e-4)] * 4 and groups[0]["weight_decay"] == 0
    elif "cosine" in recipe:  # linear warm-up over the first epoch's 2 steps, then cosine towards 0
        assert lrs == pytest.approx([0.5e-4, 1e-4, 1e-4, 1e-4 * 0.5 * (1 + math.cos(math.pi / 2))], rel=1e-6)
        assert groups[0]["weight_decay"] == 0.05
    else:  # warm-up, then ×0.1 at half the run (step 2 of 4) and again at three quarters (step 3)
        assert lrs == pytest.approx([0.5e-4, 1e-4, 1e-5, 1e-6], rel=1e-6)
        assert groups[0]["weight_decay"] == 0.001 and groups[0]["momentum"] == 0.9
    assert checkpoint["config"]["optimizer"] == recipe[1]
    # Zero-initialized residual blocks start with their last BatchNorm's scale at 0; 4 steps of lr ≤ 1e-4 keep it near 0.
    last_bn_scale = checkpoint["model_state"]["layer1.0.bn2.weight"].abs().mean().item()
    assert last_bn_scale > 0.5 if "--no-zero-init-residual" in recipe else last_bn_scale < 0.01
    assert checkpoint["config"]["zero_init_residual"] == ("--no-zero-init-residual" not in recipe)
    assert checkpoint["config"]["weight_decay"] == groups[0]["weight_decay"]  # the value used, not "default"


def test_early_stopping_and_the_test_split_report(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "datasets")
    rows = (data / "val.csv").read_text(encoding="utf-8")
    (data / "test.csv").write_text(rows, encoding="utf-8")  # a test split (here the val photos again)
    result = run_script("train.py", *FAST_TRAIN_FLAGS, "--epochs", "12", "--lr", "0", "--early-stopping", "2",
                        cwd=tmp_path)
    checkpoint = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    best = best_evaluation(checkpoint["history"], 3)[0]  # early stopping's: the windowed mean, whatever --best-rule
    # With lr 0 the val accuracy soon stops improving: two evaluations later the run stops.
    assert checkpoint["epoch"] == best + 2 < 12
    assert (f"early stopping: no better val accuracy (mean of last 3) for 2 evaluations; its high was at epoch {best} "
            in result.stdout)
    test_line = [line for line in result.stdout.splitlines() if line.startswith("test_acc")][0]
    test_acc = float(test_line.split()[1].rstrip("%"))
    [run] = read_swanlab_runs(tmp_path / "swanlog")
    assert run["metrics"]["test_acc"] == [pytest.approx(test_acc)]
    # The report is the best checkpoint's accuracy on test.csv, exactly as evaluate.py measures it.
    served = read_checkpoint(tmp_path / "checkpoint/best_checkpoint.pth")["epoch"]  # --best-rule paired's choice
    assert f"(best checkpoint, epoch {served})" in test_line and served == checkpoint["best_epoch"]
    run_script("evaluate.py", "--checkpoint", "checkpoint/best_checkpoint.pth", "--csv", "datasets/test.csv", cwd=tmp_path)
    report = json.loads((tmp_path / "eval/report.json").read_text(encoding="utf-8"))
    assert test_acc == pytest.approx(100 * report["accuracy"])


def test_the_best_epoch_is_chosen_on_the_windowed_val_accuracy_not_on_a_lucky_spike() -> None:
    # A from-scratch run on 160 val photos: a spike at epoch 2, then a steadier climb.
    curve = [50.0, 79.0, 60.0, 70.0, 72.0, 74.0, 71.0]
    history = [{"epoch": e, "train_loss": 0.5, "val_acc": acc} for e, acc in enumerate(curve, start=1)]
    history.insert(2, {"epoch": 2.5, "train_loss": 0.5})  # an epoch without evaluation (--eval-interval) counts for nothing
    means = [mean for _, mean in windowed_val_accs(history, 3)]
    assert means == pytest.approx([50.0, 64.5, 63.0, 69.6667, 67.3333, 72.0, 72.3333], abs=1e-4)
    assert best_evaluation(history, 3) == (7, pytest.approx(72.3333, abs=1e-4), 0)
    assert best_evaluation(history, 1) == (2, 79.0, 5)  # the spike, 5 evaluations ago: what early stopping counts
    assert best_evaluation(history[:5], 3) == (4, pytest.approx(69.6667, abs=1e-4), 0)
    # The same accuracies in another order make exactly the same mean: the earlier epoch keeps the tie.
    # (Summed left to right, 7/12 + 8/12 + 12/12 and 8/12 + 12/12 + 7/12 of 12 photos differ in the last bit.)
    tie = [{"epoch": e, "val_acc": 100 * right / 12} for e, right in enumerate([6, 7, 8, 12, 7], start=1)]
    assert windowed_val_accs(tie, 3)[3][1] == windowed_val_accs(tie, 3)[4][1]
    assert best_evaluation(tie, 3)[0] == 4
    assert best_evaluation([{"epoch": 1, "train_loss": 0.7}], 3) == (0, -1.0, 0)  # nothing evaluated yet
    # A lucky first evaluation is one evaluation too: it wins only until a full window exists.
    early_spike = [{"epoch": e, "val_acc": acc} for e, acc in enumerate([80.0, 50.0, 55.0, 60.0, 62.0, 66.0], start=1)]
    assert best_evaluation(early_spike[:2], 3) == (1, 80.0, 1)
    assert best_evaluation(early_spike[:4], 3) == (3, pytest.approx(61.6667, abs=1e-4), 1)  # not epoch 1 alone
    assert best_evaluation(early_spike, 3) == (6, pytest.approx(62.6667, abs=1e-4), 0)


@pytest.mark.parametrize("window", [1, 3])
def test_the_best_checkpoint_is_the_epoch_with_the_best_windowed_val_accuracy(tmp_path: Path, window: int) -> None:
    # The model is right on every val photo from the first epoch on; val.csv's labels are swapped for the first
    # two epochs (then the run is resumed), so the val curve is known: 0, 0, 100, 100, 100, 100. The best epoch
    # is then neither the first that competes nor the last (ties keep the earlier epoch).
    data = make_dataset(tmp_path / "datasets", per_class_train=6, per_class_val=4)
    right = (data / "val.csv").read_text(encoding="utf-8")
    swapped = right.replace(",0\n", ",cat\n").replace(",1\n", ",0\n").replace(",cat\n", ",1\n")
    flags = [*FAST_TRAIN_FLAGS, "--model", "resnet18", "--lr", "3e-3", "--scheduler", "none", "--best-rule", "window",
             "--best-window", str(window)]
    (data / "val.csv").write_text(swapped, encoding="utf-8")
    run_script("train.py", *flags, "--epochs", "2", cwd=tmp_path)
    (data / "val.csv").write_text(right, encoding="utf-8")
    result = run_script("train.py", *flags, "--epochs", "6", "--resume", cwd=tmp_path)
    latest = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    best = read_checkpoint(tmp_path / "checkpoint/best_checkpoint.pth")
    val_accs = [h["val_acc"] for h in latest["history"]]
    assert val_accs == [0, 0, 100, 100, 100, 100]
    expected = [sum(val_accs[max(0, i + 1 - window):i + 1]) / len(val_accs[max(0, i + 1 - window):i + 1])
                for i in range(len(val_accs))]
    assert [h["val_acc_windowed"] for h in latest["history"]] == pytest.approx(expected)
    candidates = range(window - 1, 6)  # with 6 evaluations, only the full windows compete
    first_best = max(candidates, key=expected.__getitem__) + 1  # ties keep the earlier epoch
    assert latest["best_epoch"] == best["epoch"] == first_best == {1: 3, 3: 5}[window]
    assert latest["best_val_acc"] == best["metrics"]["val_acc"] == val_accs[first_best - 1]
    assert latest["best_val_acc_windowed"] == pytest.approx(expected[first_best - 1])
    assert latest["config"]["best_window"] == window
    runs = read_swanlab_runs(tmp_path / "swanlog")  # the first run's two epochs, then the resumed run's four
    assert [mean for run in runs for mean in run["metrics"]["val_acc_windowed"]] == pytest.approx(expected)
    assert f"done. best epoch {first_best}: val_acc {val_accs[first_best - 1]:.2f}% (mean of last {window}:" in result.stdout
    # Whatever the rule, the summary says whether the served epoch can be told from the last on the same val photos.
    assert (f"best_checkpoint.pth: epoch {first_best} (val_acc 100.0%); against the last epoch (6, 100.0%): 0 photos "
            f"right only at epoch {first_best}, 0 only at epoch 6, McNemar p = 1: not distinguishable on 8 val photos"
            ) in result.stdout


def test_best_rule_paired_keeps_an_epoch_better_beyond_the_uncertainty_across_a_resume(tmp_path: Path) -> None:
    # The model is right on every val photo from the first epoch on; val.csv's labels are swapped after two epochs
    # (then the run is resumed), so every photo is right at epochs 1-2 and wrong at 3-4. Epoch 2 ties epoch 1 and is
    # served; epochs 3 and 4 lose all 8 photos to it: McNemar p = 2/2^8 = 0.0078, epoch 2 stays served.
    data = make_dataset(tmp_path / "datasets", per_class_train=6, per_class_val=4)
    right = (data / "val.csv").read_text(encoding="utf-8")
    swapped = right.replace(",0\n", ",cat\n").replace(",1\n", ",0\n").replace(",cat\n", ",1\n")
    flags = [*FAST_TRAIN_FLAGS, "--model", "resnet18", "--lr", "3e-3", "--scheduler", "none", "--best-rule", "paired",
             "--save-candidates"]
    first = run_script("train.py", *flags, "--epochs", "2", cwd=tmp_path)
    assert "best_checkpoint.pth: epoch 2 (val_acc 100.0%), the last epoch" in first.stdout
    (data / "val.csv").write_text(swapped, encoding="utf-8")
    result = run_script("train.py", *flags, "--epochs", "4", "--resume", cwd=tmp_path)
    latest = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    assert [h["val_acc"] for h in latest["history"]] == [100, 100, 0, 0]
    assert [h["val_right"] for h in latest["history"]] == ["1" * 8] * 2 + ["0" * 8] * 2  # in val order, kept by --resume
    assert latest["best_epoch"] == 2 == read_checkpoint(tmp_path / "checkpoint/best_checkpoint.pth")["epoch"]
    assert read_checkpoint(tmp_path / "checkpoint/candidates/paired.pth")["epoch"] == 2
    assert ("best_checkpoint.pth: epoch 2 (val_acc 100.0%); against the last epoch (4, 0.0%): 8 photos right only at "
            "epoch 2, 0 only at epoch 4, McNemar p = 0.0078: better beyond the uncertainty on 8 val photos") in result.stdout
    # The per-photo strings stay out of results.csv, SwanLab and the checkpoint's metrics.
    assert "val_right" not in (tmp_path / "checkpoint/results.csv").read_text(encoding="utf-8")
    assert all("val_right" not in run["metrics"] for run in read_swanlab_runs(tmp_path / "swanlog"))
    assert "val_right" not in latest["metrics"]


def test_a_best_window_below_one_is_refused(tmp_path: Path) -> None:
    make_dataset(tmp_path / "datasets", per_class_train=2, per_class_val=1)
    result = run_script("train.py", *FAST_TRAIN_FLAGS, "--best-window", "0", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "--best-window: expected a whole number of at least 1, got '0'" in result.stderr
    assert not (tmp_path / "checkpoint").exists()


RECORD_INPUT_SIZES = """
import json, os, runpy, sys

import torchvision.models.resnet as resnet

sizes = set()
forward = resnet.ResNet._forward_impl


def recording(self, images):
    sizes.add(tuple(images.shape[-2:]))  # what really reaches the model, whatever train.py recorded
    return forward(self, images)


resnet.ResNet._forward_impl = recording
script, sys.argv = sys.argv[1], sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))  # as `python train.py` does
try:
    runpy.run_path(script, run_name="__main__")
finally:
    with open("input_sizes.json", "w") as file:
        json.dump(sorted(sizes), file)
"""


def test_resume_trains_at_the_checkpoints_image_size_without_repeating_the_flag(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import REPO

    make_dataset(tmp_path / "datasets", per_class_train=4, per_class_val=2)
    flags = ["--weights", "none", "--batch-size", "4", "--num-workers", "0", "--no-engine", "--model", "resnet18",
             "--swanlab-mode", "disabled"]
    run_script("train.py", *flags, "--image-size", "32", "--epochs", "1", cwd=tmp_path)
    # Resumed without --image-size: the photos that reach the model must be 32×32, not the default 256×256.
    resumed = subprocess.run([sys.executable, "-c", RECORD_INPUT_SIZES, str(REPO / "train.py"), *flags, "--epochs", "2",
                              "--resume"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((tmp_path / "input_sizes.json").read_text()) == [[32, 32]]
    assert "photos at 32×32" in resumed.stdout
    checkpoint = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    assert checkpoint["epoch"] == 2 and checkpoint["image_size"] == 32 and checkpoint["config"]["image_size"] == 32
    assert checkpoint["arch"] == "resnet18" and checkpoint["weights"] == "none"  # also taken from the checkpoint


def test_resume_refuses_a_flag_that_contradicts_the_checkpoint(tmp_path: Path) -> None:
    make_dataset(tmp_path / "datasets", per_class_train=2, per_class_val=1)
    flags = ["--batch-size", "4", "--num-workers", "0", "--no-engine", "--swanlab-mode", "disabled"]
    run_script("train.py", *flags, "--weights", "none", "--image-size", "32", "--model", "resnet18", "--epochs", "1",
               cwd=tmp_path)
    before = (tmp_path / "checkpoint/latest_checkpoint.pth").read_bytes()
    for flag, value, recorded in (("--image-size", "48", "32"), ("--model", "resnet34", "resnet18"),
                                  ("--weights", "IMAGENET1K_V2", "none")):
        result = run_script("train.py", *flags, "--epochs", "2", "--resume", flag, value, cwd=tmp_path, check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        [message] = result.stderr.strip().splitlines()  # one line, naming both values
        assert f"was trained with {flag} {recorded}, but this command says {flag} {value}" in message
        assert (tmp_path / "checkpoint/latest_checkpoint.pth").read_bytes() == before  # nothing already saved is lost


def test_ema_is_evaluated_kept_when_better_and_resumed_and_evaluate_says_so(tmp_path: Path) -> None:
    make_dataset(tmp_path / "datasets")
    flags = [*FAST_TRAIN_FLAGS, "--model", "resnet18", "--swanlab-mode", "disabled", "--ema", "--best-rule", "last"]
    run_script("train.py", *flags, "--epochs", "1", "--augment", "strong", cwd=tmp_path)
    result = run_script("train.py", *flags, "--epochs", "2", "--resume", cwd=tmp_path)
    assert "ema_val_acc" in result.stdout
    latest = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    assert latest["ema_state"]["updates"] == 8  # 16 photos in batches of 4, twice: the count went on after --resume
    assert latest["config"]["augment"] == "light" and not latest["ema_weights"]
    last = latest["history"][-1]
    best = read_checkpoint(tmp_path / "checkpoint/best_checkpoint.pth")
    assert best["epoch"] == 2 and best["ema_weights"] == (last["ema_val_acc"] > last["val_acc"])
    kept = latest["ema_state"]["model_state"] if best["ema_weights"] else latest["model_state"]
    assert all(torch.equal(best["model_state"][k], kept[k]) for k in kept)
    assert "ema_state" not in best and "optimizer_state" not in best

    evaluated = run_script("evaluate.py", "--csv", "datasets/val.csv", "--out", "eval", "--tta", cwd=tmp_path)
    assert ("(EMA weights)" in evaluated.stdout) == best["ema_weights"] and "flip TTA" in evaluated.stdout
    assert json.loads((tmp_path / "eval/report.json").read_text(encoding="utf-8"))["tta"] is True
    refused = run_script("train.py", *flags, "--freeze-backbone", "--output-dir", "frozen", cwd=tmp_path, check=False)
    assert refused.returncode != 0 and "--ema averages the whole network" in refused.stderr


def test_freeze_epochs_then_every_layer_with_lr_auto_and_a_run_folder_that_explains_itself(tmp_path: Path) -> None:
    import csv
    import random

    from PIL import Image

    from cats_dogs.model import build_model

    data = make_dataset(tmp_path / "datasets", per_class_train=4, per_class_val=2)
    (data / "classes.txt").write_text("猫\ndog\n", encoding="utf-8")
    flags = [*FAST_TRAIN_FLAGS, "--model", "resnet18", "--swanlab-mode", "disabled", "--lr", "auto", "--lr-find-steps", "20"]
    first = run_script("train.py", *flags, "--epochs", "1", "--freeze-epochs", "1", "--lr-decay-per-stage", "0.5",
                       cwd=tmp_path)
    assert "backbone frozen: the head trains alone" in first.stdout
    frozen = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    random.seed(42)
    torch.manual_seed(42)  # train.py's --seed default: the same initial weights
    initial = build_model("resnet18", 2, zero_init_residual=True).state_dict()
    backbone = [k for k in initial if not k.startswith("fc.")]
    # The lr finder and the frozen epoch left every backbone weight and BatchNorm buffer as it was.
    assert all(torch.equal(frozen["model_state"][k], initial[k]) for k in backbone)
    assert not torch.equal(frozen["model_state"]["fc.weight"], initial["fc.weight"])
    lr = frozen["config"]["lr"]
    assert lr == frozen["config"]["lr_suggested"] and f"suggested lr {lr:.2e}" in first.stdout
    groups = frozen["optimizer_state"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [0.5**k for k in range(6)] and groups[0]["stage"] == "fc"

    # Resumed without repeating the flags: epoch 2 trains every layer, at the rate found at the start.
    resumed = run_script("train.py", *flags, "--epochs", "2", "--resume", cwd=tmp_path)
    assert "lr finder" not in resumed.stdout and "backbone frozen" not in resumed.stdout
    latest = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    assert latest["config"]["freeze_epochs"] == 1 and latest["config"]["lr"] == lr
    assert not torch.equal(latest["model_state"]["layer1.0.conv1.weight"], initial["layer1.0.conv1.weight"])
    assert not torch.equal(latest["model_state"]["bn1.running_mean"], initial["bn1.running_mean"])
    contradicting = run_script("train.py", *flags, "--epochs", "3", "--resume", "--freeze-epochs", "2", cwd=tmp_path,
                               check=False)
    assert "was trained with --freeze-epochs 1, but this command says --freeze-epochs 2" in contradicting.stderr

    # The run folder: the resolved configuration, one row per epoch, and the first batch as the model saw it.
    run_dir = tmp_path / "checkpoint"
    config = json.loads((run_dir / "args.json").read_text(encoding="utf-8"))
    assert config["lr"] == lr and config["cache"] == "memory" and config["amp"] in (True, False)
    assert config["class_names"] == ["猫", "dog"] and config["freeze_epochs"] == 1 and config["resume"] is True
    with open(run_dir / "results.csv", encoding="utf-8", newline="") as file:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(file)]
    # The checkpoint's history, less each val photo's right/wrong (val_right, for --best-rule paired).
    assert all(len(h["val_right"]) == 4 for h in latest["history"])
    assert rows == [{k: v for k, v in h.items() if k != "val_right"} for h in latest["history"]]
    assert [row["epoch"] for row in rows] == [1, 2]
    with Image.open(run_dir / "train_batch.jpg") as grid:
        assert grid.size[0] == 4 * 128 and grid.size[1] > 128  # 4 photos enlarged to 128 px, their labels below
        tiles = [grid.crop((i * 128 + 40, 40, i * 128 + 88, 88)).resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
                 for i in range(4)]
    assert all(max(tile) > 100 and tile[0] != tile[2] for tile in tiles)  # de-normalised: reddish cats, bluish dogs


def test_the_serving_engine_is_built_after_the_last_epoch_here_or_in_the_background(tmp_path: Path) -> None:
    """OpenVINO INT8 built and checked once after training, so that the first predict.py and app.py find it cached:
    in train.py (--build-engine now), or, where that would cost more than 5% of the run (auto, as for this tiny
    model's seconds-long run), in a low-priority process of its own that outlives train.py and that the next run in
    the folder stops first, and that predict.py suspends while it answers without it. --no-engine builds none."""
    make_dataset(tmp_path / "datasets")
    flags = [*FAST_TRAIN_FLAGS, "--model", "resnet18", "--epochs", "1", "--swanlab-mode", "disabled"]
    flags.remove("--no-engine")

    built = run_script("train.py", *flags, "--build-engine", "now", cwd=tmp_path)
    lines = built.stdout.splitlines()
    assert lines[-2].startswith("preparing the serving engine for checkpoint/best_checkpoint.pth")
    assert lines[-1].startswith("engine: openvino "), built.stdout  # int8, or fp32/bf16 with the check's reason
    checkpoint = tmp_path / "checkpoint/best_checkpoint.pth"
    assert engine_cached("auto", load_checkpoint(checkpoint)[1], checkpoint, tmp_path / "datasets")
    predicted = run_script("predict.py", str(tmp_path / "datasets/val/cat/cat.0.jpg"), cwd=tmp_path)
    assert predicted.stderr.strip() == lines[-1].rsplit("  (", 1)[0]  # the same engine, found in the cache
    assert "quantizing" not in predicted.stderr

    builds = {}
    for run in ("background", "stopped"):  # auto: this run is far shorter than 20 builds
        line = run_script("train.py", *flags, "--output-dir", run, cwd=tmp_path).stdout.splitlines()[-1]
        assert line.startswith("engine: building OpenVINO INT8 in the background at the lowest priority (pid "), line
        assert f"log: {Path(run) / 'engines/build.log'}" in line
        builds[run] = psutil.Process(int(re.search(r"\(pid (\d+)\)", line)[1]))
        builds[run].suspend()  # held until the next command, as a predict.py killed outright would leave it
        if run == "background":  # resumed by predict.py, suspended again while predict.py answers without it (held
            # at once, it has done almost none of its work), and resumed as predict.py ends
            predicted = run_script("predict.py", str(tmp_path / "datasets/val/cat/cat.0.jpg"), "--checkpoint",
                                   str(tmp_path / run / "best_checkpoint.pth"), cwd=tmp_path)
            assert f"(pid {builds[run].pid}, about " in predicted.stderr
            assert "this job answers without it, the build paused meanwhile" in predicted.stderr, predicted.stderr
            assert builds[run].status() != psutil.STATUS_STOPPED
            assert not (tmp_path / run / "engines/build.paused-by").exists()
    build = builds["stopped"]
    assert "cats_dogs.engine_build" in " ".join(build.cmdline()) and build.nice() == 19
    again = run_script("train.py", *flags, "--output-dir", "stopped", "--no-engine", cwd=tmp_path)  # the same folder
    assert f"stopped the serving engine's background build of the previous run (pid {build.pid})" in again.stdout
    assert not build.is_running() or build.status() == psutil.STATUS_ZOMBIE
    assert not re.search(r"^(preparing the serving engine|engine:)", again.stdout, re.M)  # --no-engine: none again
    assert background_build(tmp_path / "stopped/best_checkpoint.pth") is None

    background = tmp_path / "background/best_checkpoint.pth"
    builds["background"].wait(timeout=300)
    assert engine_cached("auto", load_checkpoint(background)[1], background, tmp_path / "datasets")
    assert not (tmp_path / "background/engines/build.pid").exists()  # removed by the build as it ended
    predicted = run_script("predict.py", str(tmp_path / "datasets/val/cat/cat.0.jpg"), "--checkpoint", str(background),
                           cwd=tmp_path)
    assert predicted.stderr.startswith("engine: openvino ") and "quantizing" not in predicted.stderr
    # The Space's copy of the checkpoint has the same weights: export.py --space ships that engine, not a new build.
    space = run_script("export.py", "--checkpoint", str(background), "--space", "space", cwd=tmp_path)
    assert f"the serving engine built for {background} is the Space's: copied, not built again" in space.stdout
    assert "quantizing" not in space.stdout and "the Space answers with openvino " in space.stdout, space.stdout
    assert any((tmp_path / "space/checkpoint/engines").glob("best_checkpoint-*-openvino*.xml"))


def imbalanced_dataset(root: Path) -> Path:
    """3 classes, 8 / 4 / 2 train photos and 4 val photos each: imbalanced, a tiny class, a tiny val split."""
    data = make_dataset(root, per_class_train=8, per_class_val=4, class_names=("cat", "dog", "fox"))
    rows = (data / "train.csv").read_text(encoding="utf-8").splitlines()
    kept = [row for row in rows if not (row.startswith("train/dog/") and int(row.split(".")[1]) >= 4)
            and not (row.startswith("train/fox/") and int(row.split(".")[1]) >= 2)]
    (data / "train.csv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    (data / "classes.txt").write_text("cat\ndog\nfox\n", encoding="utf-8")
    return data


def test_imbalanced_classes_are_named_balanced_and_judged_on_balanced_accuracy(tmp_path: Path) -> None:
    imbalanced_dataset(tmp_path / "datasets")
    result = run_script("train.py", *FAST_TRAIN_FLAGS, "--model", "resnet18", "--epochs", "2", "--best-rule", "window",
                        cwd=tmp_path)
    out = result.stdout
    assert "warning: imbalanced: cat has 8 train photos, fox 2" in out
    assert "warning: tiny classes: cat (8), dog (4), fox (2)" in out and "warning: small val split: 12 photos" in out
    # n / (k · n_c) with n = 14, k = 3: 14/24, 14/12, 14/6
    assert "balance: class-weighted loss (cat 0.58, dog 1.17, fox 2.33) (--balance auto" in out
    assert "judge on val_balanced_acc" in out
    epoch_line = next(line for line in out.splitlines() if line.startswith("epoch 2/2"))
    assert "val_acc " in epoch_line and "(95% CI " in epoch_line and ", 12 photos)  val_balanced_acc " in epoch_line
    latest = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    assert latest["config"]["balance"] == "auto" and latest["config"]["balance_applied"] == "loss"
    assert latest["config"]["train_class_counts"] == [8, 4, 2]
    args = json.loads((tmp_path / "checkpoint/args.json").read_text(encoding="utf-8"))
    assert (args["balance"], args["balance_applied"], args["imbalanced"]) == ("auto", "loss", True)
    header = (tmp_path / "checkpoint/results.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert {"val_acc_low", "val_acc_high", "val_balanced_acc", "val_balanced_acc_low", "val_balanced_acc_high",
            "val_balanced_acc_windowed"} <= set(header)
    history = latest["history"]
    assert latest["best_epoch"] == best_evaluation(history, 3, "val_balanced_acc")[0]
    assert latest["best_val_acc_windowed"] == pytest.approx(history[latest["best_epoch"] - 1]["val_balanced_acc_windowed"])


def test_balance_sampler_draws_as_many_photos_and_is_recorded(tmp_path: Path) -> None:
    imbalanced_dataset(tmp_path / "datasets")
    result = run_script("train.py", *FAST_TRAIN_FLAGS, "--model", "resnet18", "--epochs", "1", "--balance", "sampler",
                        cwd=tmp_path)
    assert "balance: each class drawn equally often, 14 draws an epoch (--balance sampler)" in result.stdout
    latest = read_checkpoint(tmp_path / "checkpoint/latest_checkpoint.pth")
    assert latest["config"]["balance_applied"] == "sampler"


def test_balance_auto_on_a_balanced_set_trains_exactly_as_off(tmp_path: Path) -> None:
    make_dataset(tmp_path / "datasets", per_class_train=6, per_class_val=2)
    states = {}
    for balance in ("auto", "off"):
        output = f"checkpoint-{balance}"
        result = run_script("train.py", *FAST_TRAIN_FLAGS, "--model", "resnet18", "--epochs", "1", "--balance", balance,
                            "--output-dir", output, cwd=tmp_path)
        assert "balance:" not in result.stdout and "warning: imbalanced" not in result.stdout
        checkpoint = read_checkpoint(tmp_path / output / "latest_checkpoint.pth")
        assert checkpoint["config"]["balance_applied"] == "off"
        states[balance] = checkpoint["model_state"]
    assert all(torch.equal(states["auto"][key], states["off"][key]) for key in states["off"])
