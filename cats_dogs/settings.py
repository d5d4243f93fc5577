"""train.py's command line resolved once, before anything runs, into a frozen TrainSettings: the checkpoint that
--resume continues (its model, image size, weights and fine-tuning flags), the device, and what the defaults and
`auto` come to there. Nothing writes to it afterwards; args.json, the checkpoint's config and SwanLab's config
are its fields, in the parser's order.

train.py states every default once, beside its parser, and passes them in: this package never imports a script.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from cats_dogs import distributed
from cats_dogs.checkpoint import Checkpoint, read_checkpoint
from cats_dogs.class_balance import applied_method, csv_class_counts, is_imbalanced
from cats_dogs.csv_rows import CsvError, read_csv_rows
from cats_dogs.device import autocast_dtype, pick_device
from cats_dogs.photo_batches import CACHE_BUDGET_BYTES
from cats_dogs.tensorboard_log import run_folder

# The flags that --resume takes from the checkpoint when they are not given; None in the parser means "not given".
RESUMED_FLAGS = {"model": "--model", "image_size": "--image-size", "weights": "--weights",
                 # The optimizer's groups and the phase of each epoch depend on these two.
                 "freeze_epochs": "--freeze-epochs", "lr_decay_per_stage": "--lr-decay-per-stage"}


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Every flag of train.py, decided: no None, no `auto` left but --lr's. The fields are in the parser's order."""
    data_dir: str
    epochs: int
    batch_size: int
    # "auto": the rate is found once the model and the loader exist; lr_finder.find_lr returns it, and the configs
    # record that rate. The settings keep "auto": --resume must know the run found its rate.
    lr: float | str
    optimizer: str
    weight_decay: float
    scheduler: str
    warmup_epochs: float
    label_smoothing: float
    balance: str  # as given: auto, off, loss or sampler
    zero_init_residual: bool
    best_window: int
    best_rule: str
    ema: bool
    ema_decay: float
    augment: str  # none, light or strong
    save_candidates: bool
    early_stopping: int
    image_size: int
    model: str
    weights: str
    device: str  # the device found: cpu, cuda, cuda:1 (torch.device(settings.device))
    num_workers: int
    eval_interval: int
    seed: int
    output_dir: str
    resume: bool
    save_every: float  # minutes between the checkpoints inside an epoch
    swanlab_mode: str
    project: str
    experiment_name: str
    tensorboard: str | None  # the run's folder of event files (tensorboard_log.run_folder), None: not logged
    lr_find: bool
    lr_find_steps: int
    freeze_epochs: int
    lr_decay_per_stage: float
    amp: bool
    channels_last: bool
    cache: str  # memory, disk or off
    freeze_backbone: bool
    compile: bool
    sync_bn: bool
    engine: bool  # build the serving engine after the last epoch (engine_build.build_after_training)
    build_engine: str  # auto, now or background: where train.py builds it (engine_build.build_after_training)
    # Decided from train.csv, after the flags: what --balance applies (off, loss, sampler), and whether the classes
    # are imbalanced (class_balance.is_imbalanced), in which case epochs are judged on balanced accuracy.
    balance_applied: str = "off"
    imbalanced: bool = False

    @property
    def score_key(self) -> str:
        """The val metric the best checkpoint and early stopping judge on: balanced accuracy on imbalanced classes."""
        return "val_balanced_acc" if self.imbalanced else "val_acc"

    @property
    def train_augment(self) -> str:
        """The train set's augmentation: none with --freeze-backbone, whose features are computed once."""
        return "none" if self.freeze_backbone else self.augment


def resolve_settings(args: argparse.Namespace, defaults: dict[str, Any], ddp_device: torch.device | None,
                     ) -> tuple[TrainSettings, Checkpoint | None]:
    """The settings and the checkpoint --resume continues (None without --resume). `defaults`: train.py's DEFAULTS,
    the values of the flags left None (weight_decay: one per optimizer); `ddp_device`: torchrun's device for this
    process. Flags that cannot work together are refused here, before any work."""
    latest_path = Path(args.output_dir) / "latest_checkpoint.pth"
    resume_from = read_resumed_checkpoint(latest_path, args.freeze_backbone) if args.resume else None
    resumed = resumed_flags(args, defaults, resume_from, latest_path)
    check_flags(args.ema, args.freeze_backbone, args.lr, args.lr_find, resumed["freeze_epochs"],
                resumed["lr_decay_per_stage"])
    device = ddp_device or pick_device(args.device)
    weight_decay = defaults["weight_decay"][args.optimizer] if args.weight_decay is None else args.weight_decay
    # --cache auto weighs the decoded photos against the memory budget: as many as the CSVs list, at this size.
    photo_bytes = listed_photos(args.data_dir) * 3 * resumed["image_size"] ** 2 if args.cache == "auto" else 0
    speed = speed_defaults(device, args.freeze_backbone, photo_bytes, args.amp, args.channels_last, args.cache,
                           args.num_workers)
    train_counts = csv_class_counts(Path(args.data_dir) / "train.csv")
    balance_applied, _ = applied_method(args.balance, train_counts, distributed.is_distributed(), args.freeze_backbone)
    experiment_name = args.experiment_name or resumed["model"]
    tensorboard = run_folder(args.tensorboard, experiment_name, resume_from and resume_from["config"])
    settings = TrainSettings(**{**vars(args), **resumed, **speed, "weight_decay": weight_decay, "device": str(device),
                                "experiment_name": experiment_name, "tensorboard": tensorboard,
                                "balance_applied": balance_applied, "imbalanced": is_imbalanced(train_counts)})
    return settings, resume_from


def read_resumed_checkpoint(latest_path: Path, freeze_backbone: bool) -> Checkpoint:
    """--resume: the checkpoint to continue, refused when it is missing, or trained with or without --freeze-backbone
    where this command says otherwise. One trained for --epochs already is train.py's to finish
    (resume.finished_already)."""
    if not latest_path.is_file():
        raise SystemExit(f"--resume: no checkpoint at {latest_path}; run without --resume to start training.")
    try:
        checkpoint = read_checkpoint(latest_path)
    except ValueError as error:
        raise SystemExit(f"--resume: {error}") from None
    was_frozen = bool(checkpoint["config"].get("freeze_backbone", False))
    if was_frozen != freeze_backbone:
        raise SystemExit(f"--resume: {latest_path} was trained {'with' if was_frozen else 'without'} --freeze-backbone, "
                         f"but this command runs {'without' if was_frozen else 'with'} it; resume it the same way.")
    return checkpoint


def resumed_flags(args: argparse.Namespace, defaults: dict[str, Any], resume_from: Checkpoint | None,
                  latest_path: Path) -> dict[str, Any]:
    """RESUMED_FLAGS' values: as given, else the resumed checkpoint's, else the default. A flag given with
    another value than the checkpoint's is refused."""
    recorded = {}
    if resume_from:
        recorded = {"model": resume_from["arch"], "image_size": resume_from["image_size"],
                    "weights": resume_from["weights"] or resume_from["config"].get("weights"),
                    "freeze_epochs": resume_from["config"].get("freeze_epochs", 0),
                    "lr_decay_per_stage": resume_from["config"].get("lr_decay_per_stage", 1.0)}
    values = {}
    for name, flag in RESUMED_FLAGS.items():
        given, value = getattr(args, name), recorded.get(name)
        if given is not None and value is not None and given != value:
            raise SystemExit(f"--resume: {latest_path} was trained with {flag} {value}, but this command says "
                             f"{flag} {given}. Leave {flag} out to continue with {value}.")
        values[name] = (value if given is None else given) or defaults[name]
    return values


def check_flags(ema: bool, freeze_backbone: bool, lr: float | str, lr_find: bool, freeze_epochs: int,
                lr_decay_per_stage: float) -> None:
    """Combinations that cannot work, refused before any work."""
    if ema and freeze_backbone:
        raise SystemExit("--ema averages the whole network, but --freeze-backbone trains the head alone; drop one of them.")
    if freeze_epochs and freeze_backbone:
        raise SystemExit("--freeze-epochs and --freeze-backbone: choose one. --freeze-backbone trains the head alone "
                         "for the whole run; --freeze-epochs N for the first N epochs, then every layer.")
    if freeze_epochs < 0:
        raise SystemExit(f"--freeze-epochs {freeze_epochs}: expected 0 (no frozen phase) or more epochs.")
    if not 0 < lr_decay_per_stage <= 1:
        raise SystemExit(f"--lr-decay-per-stage {lr_decay_per_stage}: expected a factor in (0, 1], such as 0.5 "
                         "(1 = the same rate for every layer).")
    if distributed.is_distributed() and (freeze_epochs or lr_find or lr == "auto"):
        raise SystemExit("--freeze-epochs, --lr-find and --lr auto run in one process: use `python train.py` "
                         "(DistributedDataParallel needs the same trainable layers in every step).")


def listed_photos(data_dir: str | os.PathLike) -> int:
    """The photos train.csv and val.csv list, empty files left out (ImageList leaves them out too). A CSV with
    mistakes counts 0: load_datasets.load_train_val names them next."""
    try:
        return sum(path.stat().st_size > 0 for name in ("train.csv", "val.csv")
                   for path, _ in read_csv_rows(Path(data_dir) / name))
    except CsvError:
        return 0


def speed_defaults(device: torch.device, freeze_backbone: bool, photo_bytes: int, amp: bool | None = None,
                   channels_last: bool | None = None, cache: str = "auto",
                   num_workers: int | None = None) -> dict[str, Any]:
    """The speed flags left to `auto` (None) decided for this device: {amp, channels_last, cache, num_workers}.
    `photo_bytes`: the decoded train and val photos, which --cache auto keeps in memory when they fit."""
    if amp is None:
        amp = autocast_dtype(device) is not None
    if channels_last is None:
        channels_last = device.type in ("cpu", "cuda")
    # Under torchrun, the processes on this machine share its memory and cores.
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if cache == "auto":  # the frozen backbone sees each photo once: nothing to cache
        fits = photo_bytes * processes_here <= CACHE_BUDGET_BYTES
        # On a GPU, worker processes read the disk cache: a memory cache would be copied into each (spawn).
        cache = "off" if freeze_backbone else "memory" if fits and device.type != "cuda" else "disk"
    if num_workers is None:
        cores = max(1, (os.cpu_count() or 2) // processes_here)
        if device.type == "cuda":  # augmenting and collating in parallel, so that the GPU never waits for photos
            num_workers = min(8, max(1, cores - 1))
        else:  # cached photos only need augmenting (0.1 ms): workers would take cores from the model
            num_workers = 0 if cache != "off" else min(4, max(1, cores - 1))
    return {"amp": amp, "channels_last": channels_last, "cache": cache, "num_workers": num_workers}


def amp_type(device: torch.device, amp: bool) -> torch.dtype | None:
    """The mixed-precision type of the steps: None for fp32 (--no-amp, or where it would be slower)."""
    if not amp:
        return None
    return autocast_dtype(device) or (torch.float16 if device.type == "mps" else torch.bfloat16)
