"""Fine-tune a torchvision ResNet on your photos, logging to SwanLab.

    python train.py                          # the tutorial: ResNet50, ImageNet weights, 20 epochs
    python train.py --weights none --epochs 5  # offline: train from scratch
    swanlab watch swanlog                    # the dashboard, in another terminal
    torchrun --standalone --nproc_per_node=4 train.py  # 4 GPUs: DistributedDataParallel, see the README

Reads datasets/train.csv and datasets/val.csv (rows `relative/path.jpg,label`) and writes
checkpoint/latest_checkpoint.pth after every epoch and checkpoint/best_checkpoint.pth
whenever the mean validation accuracy of the last --best-window evaluations reaches a new high.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from cats_dogs import distributed, tracking
from cats_dogs.augmentation import AUGMENT_CHOICES
from cats_dogs.checkpoint import read_checkpoint
from cats_dogs.checkpoint_writes import wait_for_writes
from cats_dogs.class_balance import BALANCE_CHOICES, class_counts, sample_weights
from cats_dogs.engine_build import ENGINE_SHARE, build_after_training
from cats_dogs.epochs import evaluate, train_one_epoch
from cats_dogs.frozen_backbone import INT8_FEATURES_MIN_PHOTOS, Int8Backbone, feature_loaders, served_from_backbone
from cats_dogs.intervals import accuracy_metrics, describe_metrics
from cats_dogs.loaders import EpochSampler, loader_options, make_loaders
from cats_dogs.lr_finder import find_lr, learning_rate, log_lr_find
from cats_dogs.model import MODEL_NAMES
from cats_dogs.photo_batches import CACHE_MODES, load_gallery, report_unreadable
from cats_dogs.process import keep_freed_memory, make_console_safe
from cats_dogs.random_state import restore_random_states, seed_everything
from cats_dogs.recipe import (
    BEST_RULES,
    best_fields,
    make_scheduler,
    set_backbone_frozen,
    setup_model,
    step_speed,
    stop_early,
    train_criterion,
    windowed_val_accs,
)
from cats_dogs.resume import mid_epoch_saves, resume_point, start_output, swanlab_continuation
from cats_dogs.run_folder import (
    log_run_start,
    log_validation,
    print_setup,
    print_summary,
    save_checkpoints,
    save_latest,
    save_train_batch,
    save_training_curves,
    start_swanlab,
)
from cats_dogs.served_epoch import right_wrong
from cats_dogs.settings import TrainSettings, amp_type, resolve_settings
from load_datasets import DatasetLoader, load_train_val

# The defaults of the flags whose parser default is None ("not given"): --resume takes the checkpoint's instead,
# and --weight-decay's depends on --optimizer. Stated once, here; --help shows them and settings.py applies them.
# best_rule is the parser's own default, kept here so that choosing another is one line (docs/recipes.md).
DEFAULTS = {"model": "resnet50", "image_size": 256, "weights": "IMAGENET1K_V2", "freeze_epochs": 0,
            "lr_decay_per_stage": 1.0, "weight_decay": {"adam": 0.0, "adamw": 0.05, "sgd": 1e-4},
            "best_rule": "paired"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Fine-tune a ResNet on a CSV dataset (the SwanLab cats-vs-dogs tutorial).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default="datasets", help="folder with train.csv, val.csv and optionally classes.txt")
    parser.add_argument("--epochs", type=positive_int, default=20, help="total number of epochs (also with --resume)")
    parser.add_argument("--batch-size", type=int, default=8, help="photos per step (per process under torchrun)")
    parser.add_argument("--lr", type=learning_rate, default=1e-4, help="peak learning rate, or auto: the lr finder's (--lr-find)")
    recipe = parser.add_argument_group("recipe (--scheduler none --no-augment is the tutorial's exactly; "
                                       "from scratch, add --no-zero-init-residual)")
    recipe.add_argument("--optimizer", default="adam", choices=("adam", "adamw", "sgd"))
    recipe.add_argument("--weight-decay", type=float, default=None,
                        help="default: " + ", ".join(f"{decay:g} for {name}"
                                                     for name, decay in DEFAULTS["weight_decay"].items()))
    recipe.add_argument("--scheduler", default="cosine", choices=("none", "cosine", "step"),
                        help="learning rate over the run: cosine decay to 0, or ×0.1 at 1/2 and 3/4 of the epochs")
    recipe.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up from 0 (with cosine or step)")
    recipe.add_argument("--label-smoothing", type=float, default=0.0)
    recipe.add_argument("--balance", default="auto", choices=BALANCE_CHOICES,
                        help="imbalanced classes (the largest at least 2× the smallest): auto balances them, with the "
                             "class-weighted loss, and does nothing on balanced ones; loss: cross-entropy weighted "
                             "n/(k·n_c); sampler: each class drawn equally often (docs/training.md)")
    recipe.add_argument("--zero-init-residual", action=argparse.BooleanOptionalAction, default=True,
                        help="from scratch (--weights none): each residual block starts as the identity; steadier on few photos")
    recipe.add_argument("--best-window", type=positive_int, default=3, metavar="N",
                        help="--best-rule window, and --early-stopping: judged on the mean val accuracy of the last N "
                             "evaluations (1 = the single highest, a lucky spike on a small val set)")
    recipe.add_argument("--best-rule", default=DEFAULTS["best_rule"], choices=BEST_RULES,
                        help="best_checkpoint.pth: paired, the latest epoch unless an earlier one did better on the same "
                             "val photos beyond the uncertainty (McNemar p < 0.05, photos weighted by class on imbalanced "
                             "classes; the trained weights); window, the best windowed val accuracy; val-loss, the lowest "
                             "val loss; last (docs/recipes.md)")
    recipe.add_argument("--ema", action="store_true", help="also average the weights (EMA, as timm) and evaluate the "
                        "average every epoch; with --best-rule window, val-loss or last, it is kept as best_checkpoint.pth "
                        "when it scores better")
    recipe.add_argument("--ema-decay", type=float, default=0.999, help="the EMA's decay per step (after a warm-up)")
    recipe.add_argument("--augment", default="light", choices=AUGMENT_CHOICES,
                        help="light: random crop and flip; strong: also TrivialAugmentWide and random erasing")
    recipe.add_argument("--save-candidates", action="store_true", help="for study_checkpoints.py: see recipe.checkpoints_due")
    recipe.add_argument("--early-stopping", type=int, default=0, metavar="N",
                        help="stop after N evaluations without a better (windowed) val accuracy (0 = never)")
    parser.add_argument("--image-size", type=positive_int, default=None,
                        help=f"photos are resized to this many pixels square (default: {DEFAULTS['image_size']}; "
                             "with --resume, the checkpoint's)")
    parser.add_argument("--model", default=None, choices=MODEL_NAMES,
                        help=f"default: {DEFAULTS['model']}; with --resume, the checkpoint's")
    parser.add_argument("--weights", default=None,
                        help=f"{DEFAULTS['weights']} (the default), IMAGENET1K_V1, none (from scratch), or a path to a local "
                             ".pth state dict; with --resume, the checkpoint's")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="processes preparing photos in the background; default: 0 with --cache, else cores-1 (at most 4)")
    parser.add_argument("--eval-interval", type=int, default=1, help="evaluate on val every N epochs (and after the last)")
    parser.add_argument("--seed", type=int, default=42, help="same seed, same machine: same val accuracy")
    parser.add_argument("--output-dir", default="checkpoint", help="where the checkpoints are written")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/latest_checkpoint.pth up to --epochs, with its model, image size "
                             "and weights: on a CPU, the same weights bit for bit as a run never stopped")
    parser.add_argument("--save-every", type=positive_float, default=10.0, metavar="MINUTES",
                        help="also write latest_checkpoint.pth inside an epoch every MINUTES (fractions allowed): "
                             "--resume then goes on from the next batch")
    parser.add_argument("--no-augment", dest="augment", action="store_const", const="none",
                        help="the same as --augment none: the tutorial's exact preprocessing")
    parser.add_argument("--swanlab-mode", default="local", choices=("local", "cloud", "offline", "disabled"),
                        help="local: dashboard on this machine via `swanlab watch swanlog`; cloud needs a SwanLab account")
    parser.add_argument("--project", default="cats-vs-dogs", help="SwanLab project name")
    parser.add_argument("--experiment-name", default=None, help="SwanLab experiment name (default: the model name)")
    parser.add_argument("--tensorboard", nargs="?", const="runs", default=None, metavar="DIR",
                        help="also log to TensorBoard, in DIR/<experiment>-<time>/ (DIR: runs); --resume continues "
                             "the run's folder. View: tensorboard --logdir runs (pip install tensorboard)")
    tuning = parser.add_argument_group("learning rate and fine-tuning (docs/training.md)")
    tuning.add_argument("--lr-find", action="store_true", help="learning-rate range test: plot in OUTPUT_DIR/lr_find.png, "
                        "suggested rate printed, then exit (with --lr auto: train with it)")
    tuning.add_argument("--lr-find-steps", type=positive_int, default=100, metavar="N", help="steps of the lr finder")
    tuning.add_argument("--freeze-epochs", type=int, default=None, metavar="N",
                        help=f"train the head alone for the first N epochs (backbone frozen), then every layer "
                             f"(default {DEFAULTS['freeze_epochs']})")
    tuning.add_argument("--lr-decay-per-stage", type=float, default=None, metavar="D",
                        help="each ResNet stage below the head trains at D × the rate of the one above, e.g. 0.5 "
                             f"(default {DEFAULTS['lr_decay_per_stage']:g}: one rate)")
    speed = parser.add_argument_group("speed (defaults: the fastest safe choice for the device found)")
    speed.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                       help="mixed precision: bf16 on CUDA (fp16 where bf16 is missing) and on CPUs where it is faster")
    speed.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="NHWC memory layout, faster convolutions on CPU and CUDA")
    speed.add_argument("--cache", nargs="?", const="memory", default="auto", choices=CACHE_MODES,
                       help="decode and resize every photo once, into DATA_DIR/.cache/, and read it from memory or disk "
                            "in later epochs and runs (auto: memory when it fits in 3 GB, else disk)")
    speed.add_argument("--no-cache", dest="cache", action="store_const", const="off", help="the same as --cache off")
    speed.add_argument("--freeze-backbone", action="store_true",
                       help="train only the new head on features computed once: seconds per epoch on a CPU (no augmentation); "
                            f"from {INT8_FEATURES_MIN_PHOTOS} train photos on a CPU, with the engine: their features "
                            "from an INT8 backbone, which then serves with the head")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster steps on GPUs)")
    speed.add_argument("--sync-bn", action="store_true",
                       help="under torchrun on GPUs: BatchNorm statistics over every GPU's photos (for small per-GPU batches)")
    speed.add_argument("--no-engine", dest="engine", action="store_false",
                       help="do not build the serving engine (OpenVINO INT8, on a CPU) after the last epoch; predict.py "
                            "and app.py then build it when it pays (docs/speed.md)")
    speed.add_argument("--build-engine", default="auto", choices=["auto", "now", "background"],
                       help=f"auto: here after the last epoch where that costs at most {ENGINE_SHARE * 100:.0f}%% of "
                            "the run, else in a low-priority background process that predict.py and app.py wait for "
                            "when it is nearly done; background: also no INT8 features with --freeze-backbone")
    return parser


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def val_and_train_losses(settings: TrainSettings, train_set: DatasetLoader, num_classes: int,
                         device: torch.device) -> tuple[nn.Module, nn.Module]:
    """Val's criterion (unweighted: comparable across runs) and the training loss (--balance loss: weighted per class)."""
    criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    loss = train_criterion(settings.balance_applied, [label for _, label in train_set.samples], num_classes,
                           settings.label_smoothing, device)
    return criterion, loss


def report_test_split(model: nn.Module, settings: TrainSettings, class_names: list[str], criterion: nn.Module,
                      device: torch.device, unreadable: set[str], best_epoch: int) -> None:
    """With a test.csv: the best checkpoint's accuracy on photos that chose nothing (val chose the epoch)."""
    test_csv, best_path = Path(settings.data_dir) / "test.csv", Path(settings.output_dir) / "best_checkpoint.pth"
    if not (test_csv.is_file() and best_path.is_file()):
        return
    model.load_state_dict(read_checkpoint(best_path)["model_state"])
    test_set = DatasetLoader(test_csv, settings.image_size, num_classes=len(class_names))
    options = loader_options(settings.batch_size, settings.num_workers, device)
    test_loader = DataLoader(test_set, **{**options, "persistent_workers": False})
    # In fp32, so that the number is exactly what evaluate.py reports for the same checkpoint.
    _, _, predictions = evaluate(model.float(), test_loader, criterion, device, unreadable)
    test_metrics = val_accuracies(predictions, test_set, len(class_names), "test", settings.imbalanced)
    tracking.log(test_metrics)  # test_acc and its interval's bounds
    print(f"{describe_metrics(test_metrics, 'test')} (best checkpoint, epoch {best_epoch})")


def prepare_loaders(settings: TrainSettings, model: nn.Module, train_set: DatasetLoader, val_set: DatasetLoader,
                    class_names: list[str], device: torch.device, amp_dtype: torch.dtype | None,
                    generator: torch.Generator) -> tuple[DataLoader, DataLoader, EpochSampler, list, set[str]]:
    """The train and val loaders (of features computed once with --freeze-backbone), the train sampler (its
    set_epoch before every epoch), the val photos shown in SwanLab, and the photos found unreadable so far. On the
    way: empty files reported, every photo decoded once into the cache, and train_batch.jpg: what the model sees,
    its first batch de-normalised and labelled."""
    options = loader_options(settings.batch_size, settings.num_workers, device)
    labels = [label for _, label in train_set.samples]
    weights = sample_weights(labels, class_counts(labels, len(class_names))) \
        if settings.balance_applied == "sampler" else None
    train_loader, val_loader, train_sampler = make_loaders(train_set, val_set, options, settings.seed, generator, weights)
    gallery = load_gallery(val_set) if distributed.is_main_process() else []
    unreadable: set[str] = set()
    report_unreadable([f"{path}: empty file" for path in train_set.empty_files + val_set.empty_files], unreadable)
    if settings.cache != "off":
        with distributed.main_process_first():  # one process builds the disk cache, the others then read it
            train_set.cache_images(settings.cache, progress=distributed.is_main_process())
            val_set.cache_images(settings.cache, progress=distributed.is_main_process())
    if distributed.is_main_process():
        save_train_batch(train_loader, class_names, Path(settings.output_dir) / "train_batch.jpg")
    int8_backbone = None  # --freeze-backbone's, where the serving engine is built here from it
    if settings.freeze_backbone:  # the train set was made without augmentation: the features of the photos as they are
        train_loader, val_loader, problems, int8_backbone = feature_loaders(
            model, train_set, val_loader, options, device, amp_dtype, settings.channels_last, generator,
            int8=settings.engine and settings.build_engine != "background")
        report_unreadable(problems, unreadable)
    return train_loader, val_loader, train_sampler, gallery, unreadable, int8_backbone


def validate(model: nn.Module, ema: AveragedModel | None, loader: DataLoader, criterion: nn.Module,
             device: torch.device, unreadable: set[str], settings: TrainSettings, history: list[dict], epoch: int,
             speed: dict, val_set: DatasetLoader, num_classes: int) -> tuple[dict[str, float], str, dict[int, int]]:
    """One evaluation on val, of the model and of its EMA: the metrics (accuracies with their 95% intervals, the
    balanced accuracy on imbalanced classes, each val photo right or wrong: val_right), their line for the log, the
    predictions (under torchrun, every process's, gathered)."""
    sharded, key, window = distributed.is_distributed(), settings.score_key, settings.best_window
    distributed.broadcast_buffers(model)  # under torchrun: evaluate with what the checkpoint will hold (rank 0's)
    val_loss, _, predictions = evaluate(model, loader, criterion, device, unreadable, sharded=sharded, **speed)
    labels = [label for _, label in val_set.samples]
    metrics = {"val_loss": val_loss, **val_accuracies(predictions, val_set, num_classes, "val", settings.imbalanced),
               "val_right": right_wrong(predictions, labels)}  # for --best-rule paired and the summary's comparison
    windowed = windowed_val_accs([*history, {"epoch": epoch, **metrics}], window, key)[-1][1]
    metrics[f"{key}_windowed"] = windowed
    summary = f"  val_loss {val_loss:.4f}  {describe_metrics(metrics)}"
    summary += f" (mean of last {window}: {windowed:.2f}%)" if window > 1 else ""
    if ema is not None:  # under torchrun: rank 0's averaged BatchNorm statistics, as for the model
        distributed.broadcast_buffers(ema.module)
        ema_loss, _, ema_predictions = evaluate(ema.module, loader, criterion, device, unreadable, sharded=sharded,
                                                **speed)
        metrics.update(ema_val_loss=ema_loss, **val_accuracies(ema_predictions, val_set, num_classes, "ema_val",
                                                               settings.imbalanced),
                       ema_val_right=right_wrong(ema_predictions, labels))
        summary += f"  ema_val_acc {metrics['ema_val_acc']:.2f}%"
    return metrics, summary, predictions


def val_accuracies(predictions: dict[int, int], val_set: DatasetLoader, num_classes: int, prefix: str,
                   balanced: bool) -> dict[str, float]:
    """intervals.accuracy_metrics of {val index: predicted label}: accuracy (and balanced accuracy) with intervals."""
    labels = [val_set.samples[index][1] for index in predictions]
    return accuracy_metrics(labels, list(predictions.values()), num_classes, prefix, balanced)


def finish_run(model: nn.Module, settings: TrainSettings, class_names: list[str], criterion: nn.Module,
               device: torch.device, unreadable: set[str], history: list[dict], paired_labels: list[int] | None,
               int8_backbone: Int8Backbone | None = None) -> None:
    """After the last epoch, on rank 0: the curves of every epoch, the test split's report (with the best
    checkpoint), the summary, then the serving engine built once (--no-engine skips it), so that the first
    predict.py and app.py start fast: from --freeze-backbone's INT8 backbone with the head, else here or in the
    background (--build-engine)."""
    # best_checkpoint.pth on disk before the test split reads it (a full disk's one line raised here);
    # latest_checkpoint.pth is still being written meanwhile
    wait_for_writes(Path(settings.output_dir) / "best_checkpoint.pth")
    best_epoch = best_fields(history, settings.best_rule, settings.best_window, settings.ema, settings.score_key,
                             paired_labels)["best_epoch"]
    save_training_curves(history, Path(settings.output_dir) / "training_curves.png")  # every epoch's, at last
    report_test_split(model, settings, class_names, criterion, device, unreadable, best_epoch)
    tracking.finish()
    print_summary(settings, history, unreadable, paired_labels)
    wait_for_writes()  # latest_checkpoint.pth too: a run killed during the engine build resumes as finished
    if settings.engine:
        best_path = Path(settings.output_dir) / "best_checkpoint.pth"
        if int8_backbone is None or not served_from_backbone(int8_backbone, best_path, settings.data_dir):
            build_after_training(best_path, settings.data_dir, settings.amp, settings.build_engine)


def main(args: argparse.Namespace) -> None:
    keep_freed_memory()  # Linux: 1.2× faster steps on a CPU
    ddp_device = distributed.init_distributed(args.device, args.sync_bn, args.freeze_backbone)  # None without torchrun
    settings, resume_from = resolve_settings(args, DEFAULTS, ddp_device)  # the command line decided once; read only
    if start_output(resume_from, settings):  # --resume of a finished run: at most its engine is left to build
        return
    device = torch.device(settings.device)
    amp_dtype = amp_type(device, settings.amp)  # None: fp32
    class_names, train_set, val_set = load_train_val(settings.data_dir, settings.image_size, settings.train_augment)
    generator = seed_everything(settings.seed + distributed.get_rank())  # each process its own augmentation
    print_setup(settings, amp_dtype, class_names, train_set, val_set)

    model, optimizer, ema, scaler = setup_model(settings, len(class_names), device, amp_dtype, resume_from)
    criterion, loss = val_and_train_losses(settings, train_set, len(class_names), device)
    paired_labels = [label for _, label in val_set.samples] if settings.imbalanced else None  # paired: by class
    train_loader, val_loader, train_sampler, gallery, unreadable, int8_backbone = prepare_loaders(
        settings, model, train_set, val_set, class_names, device, amp_dtype, generator)
    start_epoch, history, global_step, mid_epoch = resume_point(
        resume_from, Path(settings.output_dir) / "latest_checkpoint.pth", len(train_loader))
    trained, evaluated = distributed.wrap_model(model, device, settings.freeze_backbone, settings.compile)
    speed = step_speed(settings.freeze_backbone, settings.channels_last, amp_dtype)
    set_backbone_frozen(model, start_epoch <= settings.freeze_epochs)  # the lr finder tries the first epoch's phase
    lr, lr_found = find_lr(settings, trained, train_loader, optimizer, loss, device, speed, resume_from)
    scheduler = make_scheduler(optimizer, len(train_loader), settings.scheduler, settings.epochs, settings.warmup_epochs,
                               settings.freeze_epochs, resume_from and resume_from.get("scheduler_state"))
    config = start_swanlab(settings, lr, lr_found, class_names, train_set, val_set,  # also writes args.json
                           swanlab_continuation(resume_from, settings.swanlab_mode))
    if log_lr_find(lr_found, settings.output_dir):  # --lr-find alone: it ends here
        return tracking.finish()

    log_run_start(settings, model, device, global_step)  # --tensorboard's writer and model graph; train_batch.jpg
    restore_random_states(resume_from and resume_from.get("random_state"), generator)  # as they were when saved
    saves = mid_epoch_saves(settings, functools.partial(  # --save-every: --resume goes on from the batch after it
        save_latest, model, optimizer, scheduler, settings, config, class_names, history, ema, paired_labels,
        scaler=scaler, generator=generator))
    for epoch in range(start_epoch, settings.epochs + 1):
        started = time.perf_counter()
        set_backbone_frozen(model, epoch <= settings.freeze_epochs)  # --freeze-epochs: head only, then every layer
        done = mid_epoch if epoch == start_epoch else None  # the batches trained before the resumed checkpoint
        train_sampler.set_epoch(epoch, skip=(done or {}).get("batches", 0) * settings.batch_size)  # a new order
        train_loss, global_step, seen = train_one_epoch(trained, train_loader, optimizer, loss, device, epoch,
                                                        settings.epochs, global_step, unreadable, scaler=scaler,
                                                        scheduler=scheduler, ema=ema, done=done, after_step=saves,
                                                        **speed)
        metrics = {"train_loss": train_loss, "train_images_per_s": seen / (time.perf_counter() - started)}
        summary = f"epoch {epoch}/{settings.epochs}  train_loss {train_loss:.4f}"
        if epoch % settings.eval_interval == 0 or epoch == settings.epochs:
            val_metrics, val_summary, predictions = validate(evaluated, ema, val_loader, criterion, device, unreadable,
                                                             settings, history, epoch, speed, val_set, len(class_names))
            metrics.update(val_metrics)
            summary += val_summary
            log_validation(val_metrics, epoch, global_step, predictions, gallery, val_set, class_names)
        metrics["epoch_time_s"] = time.perf_counter() - started
        print(f"{summary}  time {metrics['epoch_time_s']:.1f}s", flush=True)
        history.append({"epoch": epoch, **metrics})

        if distributed.is_main_process():  # the weights are the same in every process: one writes them
            save_checkpoints(model, optimizer, scheduler, settings, config, class_names, history, ema, paired_labels,
                             dict(global_step=global_step, scaler=scaler, generator=generator), saves)
        if stop_early(history, settings.best_window, settings.early_stopping, settings.score_key):  # windowed mean
            break

    unreadable = distributed.gather_set(unreadable)  # every process's, for rank 0's list below
    if distributed.is_main_process():  # rank 0 alone reports on the test split, with the best checkpoint it wrote
        finish_run(model, settings, class_names, criterion, device, unreadable, history, paired_labels, int8_backbone)


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    try:
        main(get_args_parser().parse_args())
    finally:
        distributed.cleanup_distributed()
