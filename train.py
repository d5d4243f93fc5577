"""Fine-tune a torchvision ResNet on your photos, logging to SwanLab.

    python train.py                          # the tutorial: ResNet50, ImageNet weights, 20 epochs
    python train.py --weights none --epochs 5  # offline: train from scratch
    swanlab watch swanlog                    # the dashboard, in another terminal

Reads datasets/train.csv and datasets/val.csv (rows `relative/path.jpg,label`) and writes
checkpoint/latest_checkpoint.pth after every epoch and checkpoint/best_checkpoint.pth
whenever the validation accuracy improves.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from pathlib import Path

import swanlab
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from common import (
    MODEL_NAMES,
    UNREADABLE_IMAGE_ERRORS,
    autocast,
    autocast_dtype,
    build_model,
    collate_features,
    extract_features,
    make_checkpoint,
    pick_device,
    save_checkpoint,
    save_training_curves,
    to_device,
)
from load_datasets import (
    CACHE_BUDGET_BYTES,
    CsvError,
    DatasetLoader,
    collate_readable,
    infer_num_classes,
    read_class_names,
    read_csv_rows,
)

GALLERY_SIZE = 30  # val photos shown in SwanLab with "pred / true" captions
SWANLAB_LOG_DIR = "swanlog"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Fine-tune a ResNet on a CSV dataset (the SwanLab cats-vs-dogs tutorial).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default="datasets", help="folder with train.csv, val.csv and optionally classes.txt")
    parser.add_argument("--epochs", type=int, default=20, help="total number of epochs (also with --resume)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    recipe = parser.add_argument_group("recipe (--scheduler none --no-augment is the tutorial's exactly)")
    recipe.add_argument("--optimizer", default="adam", choices=("adam", "adamw", "sgd"))
    recipe.add_argument("--weight-decay", type=float, default=None,
                        help="default: 0 for adam, 0.05 for adamw, 1e-4 for sgd")
    recipe.add_argument("--scheduler", default="cosine", choices=("none", "cosine", "step"),
                        help="learning rate over the run: cosine decay to 0, or ×0.1 at 1/2 and 3/4 of the epochs")
    recipe.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up from 0 (with cosine or step)")
    recipe.add_argument("--label-smoothing", type=float, default=0.0)
    recipe.add_argument("--early-stopping", type=int, default=0, metavar="N",
                        help="stop after N evaluations without a better val accuracy (0 = never)")
    parser.add_argument("--image-size", type=int, default=256, help="photos are resized to this many pixels square")
    parser.add_argument("--model", default="resnet50", choices=MODEL_NAMES)
    parser.add_argument("--weights", default="IMAGENET1K_V2",
                        help="IMAGENET1K_V2, IMAGENET1K_V1, none (from scratch), or a path to a local .pth state dict")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="processes preparing photos in the background; default: 0 with --cache, else cores-1 (at most 4)")
    parser.add_argument("--eval-interval", type=int, default=1, help="evaluate on val every N epochs (and after the last)")
    parser.add_argument("--seed", type=int, default=42, help="same seed, same machine: same val accuracy")
    parser.add_argument("--output-dir", default="checkpoint", help="where the checkpoints are written")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/latest_checkpoint.pth up to --epochs")
    parser.add_argument("--no-augment", action="store_true", help="no random crop/flip: the tutorial's exact preprocessing")
    parser.add_argument("--swanlab-mode", default="local", choices=("local", "cloud", "offline", "disabled"),
                        help="local: dashboard on this machine via `swanlab watch swanlog`; cloud needs a SwanLab account")
    parser.add_argument("--project", default="cats-vs-dogs", help="SwanLab project name")
    parser.add_argument("--experiment-name", default=None, help="SwanLab experiment name (default: the model name)")
    speed = parser.add_argument_group("speed (defaults: the fastest safe choice for the device found)")
    speed.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                       help="mixed precision: bf16 on CUDA (fp16 where bf16 is missing) and on CPUs with native bf16")
    speed.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="NHWC memory layout, faster convolutions on CPU and CUDA")
    speed.add_argument("--cache", action=argparse.BooleanOptionalAction, default=None,
                       help="decode and resize every photo once and keep it in memory (default: when it fits in 3 GB)")
    speed.add_argument("--freeze-backbone", action="store_true",
                       help="train only the new head on features computed once: seconds per epoch on a CPU (no augmentation)")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster steps on GPUs)")
    return parser


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def report_unreadable(problems: list[str], unreadable: set[str]) -> None:
    """Warn once per photo that fails to decode; the run goes on without it."""
    for problem in problems:
        if problem not in unreadable:
            unreadable.add(problem)
            tqdm.write(f"warning: skipped unreadable photo {problem}")


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                    device: torch.device, epoch: int, epochs: int, global_step: int, unreadable: set[str],
                    amp_dtype: torch.dtype | None = None, channels_last: bool = False,
                    scaler: torch.amp.GradScaler | None = None,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> tuple[float, int, int]:
    """One pass over the training photos; returns the mean loss, the updated step count and the photos seen."""
    scaler = scaler or torch.amp.GradScaler(enabled=False)
    model.train()
    total_loss, seen, start = 0.0, 0, time.perf_counter()
    progress = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, dynamic_ncols=True)
    for images, labels, _, problems in progress:
        report_unreadable(problems, unreadable)
        if len(labels) < 2:  # BatchNorm cannot train on a single photo
            continue
        images, labels = to_device(images, device, channels_last), labels.to(device, non_blocking=True)
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp_dtype):
            loss = criterion(model(images).float(), labels)
        scaler.scale(loss).backward()  # a no-op scale unless fp16, whose small gradients would underflow
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()  # per step, so that warm-up and decay are smooth even over few epochs

        global_step += 1
        seen += labels.size(0)
        total_loss += loss.item() * labels.size(0)
        swanlab.log({"train_loss": loss.item(), "lr": lr}, step=global_step)
        progress.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / (time.perf_counter() - start):.1f}")
    return total_loss / max(seen, 1), global_step, seen


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device, unreadable: set[str],
             amp_dtype: torch.dtype | None = None, channels_last: bool = False) -> tuple[float, float, dict[int, int]]:
    """Mean loss, accuracy in percent, and {dataset index: predicted label} for every readable photo."""
    model.eval()
    total_loss, correct, predictions = 0.0, 0, {}
    for images, labels, indices, problems in tqdm(loader, desc="val", unit="batch", leave=False, dynamic_ncols=True):
        report_unreadable(problems, unreadable)
        if len(labels) == 0:
            continue
        images, labels = to_device(images, device, channels_last), labels.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(images).float()
        total_loss += criterion(logits, labels).item() * labels.size(0)
        batch_predictions = logits.argmax(dim=1)
        correct += (batch_predictions == labels).sum().item()
        predictions.update(zip(indices.tolist(), batch_predictions.tolist(), strict=True))
    count = max(len(predictions), 1)
    return total_loss / count, 100.0 * correct / count, predictions


def load_gallery(dataset: DatasetLoader, size: int = GALLERY_SIZE) -> list[tuple[int, Image.Image]]:
    """Small real-color copies of val photos spread over the CSV (it is often sorted by class)."""
    count = min(size, len(dataset))
    indices = sorted({round(i * (len(dataset) - 1) / max(count - 1, 1)) for i in range(count)})
    gallery = []
    for index in indices:
        try:
            image = dataset.load_image(index)
        except UNREADABLE_IMAGE_ERRORS:
            continue  # reported when the evaluation meets it
        image.thumbnail((160, 160))
        gallery.append((index, image))
    return gallery


def make_optimizer(args: argparse.Namespace, parameters, device: torch.device) -> torch.optim.Optimizer:
    defaults = {"adam": 0.0, "adamw": 0.05, "sgd": 1e-4}
    weight_decay = defaults[args.optimizer] if args.weight_decay is None else args.weight_decay
    if args.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=args.lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    # The fused kernels update all weights at once: the same algorithm, a few % faster per step.
    optimizer_class = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(parameters, lr=args.lr, weight_decay=weight_decay, fused=device.type in ("cpu", "cuda"))


def make_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR | None:
    """Linear warm-up, then cosine decay to zero or a ×0.1 step at 1/2 and 3/4 of the run; stepped every batch."""
    if args.scheduler == "none":
        return None
    total, warmup = args.epochs * steps_per_epoch, round(args.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if args.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
        return 0.1 ** sum(step >= total * milestone for milestone in (0.5, 0.75))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def resolve_speed_settings(args: argparse.Namespace, device: torch.device, train_set: DatasetLoader,
                           val_set: DatasetLoader) -> torch.dtype | None:
    """Turn the `auto` speed flags into choices for this device (written back into args, so SwanLab logs them)."""
    if args.amp is None:
        args.amp = autocast_dtype(device) is not None
    if args.channels_last is None:
        args.channels_last = device.type in ("cpu", "cuda")
    if args.cache is None:
        args.cache = not args.freeze_backbone and train_set.cache_bytes() + val_set.cache_bytes() <= CACHE_BUDGET_BYTES
    if args.num_workers is None:  # cached photos only need augmenting: worker processes would cost more than they save
        args.num_workers = 0 if args.cache else min(4, max(1, (os.cpu_count() or 2) - 1))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image size: let cuDNN pick the fastest kernels once
    if not args.amp:
        return None
    return autocast_dtype(device) or (torch.float16 if device.type == "mps" else torch.bfloat16)


def load_data(args: argparse.Namespace) -> tuple[list[str], DatasetLoader, DatasetLoader]:
    """Check both CSVs up front so that a data mistake stops the run before anything is written."""
    data_dir = Path(args.data_dir)
    train_csv, val_csv = data_dir / "train.csv", data_dir / "val.csv"
    for csv_path in (train_csv, val_csv):
        if not csv_path.is_file():
            raise SystemExit(
                f"No {csv_path.name} in {data_dir.resolve()}. To make one:\n"
                "  python prepare_data.py --download              (a sample of Kaggle's cats vs dogs photos)\n"
                "  python prepare_data.py --from your_folder      (your photos: a folder per class, or cat.1.jpg names)\n"
                "or write train.csv and val.csv yourself as described in datasets/README.md, "
                "or point --data-dir at a folder that has them."
            )
    try:
        class_file = data_dir / "classes.txt"
        num_classes = None if class_file.is_file() else infer_num_classes(train_csv)
        class_names = read_class_names(data_dir, num_classes or 0)
        num_classes = len(class_names)
        train_set = DatasetLoader(train_csv, args.image_size, train=True, augment=not args.no_augment, num_classes=num_classes)
        val_set = DatasetLoader(val_csv, args.image_size, train=False, num_classes=num_classes)
        if (data_dir / "test.csv").is_file():  # reported at the end: its mistakes should stop the run now
            read_csv_rows(data_dir / "test.csv", num_classes)
    except CsvError as error:
        raise SystemExit(f"Cannot train on this data: {error}") from None
    return class_names, train_set, val_set


def main(args: argparse.Namespace) -> None:
    class_names, train_set, val_set = load_data(args)
    output_dir = Path(args.output_dir)
    latest_path, best_path = output_dir / "latest_checkpoint.pth", output_dir / "best_checkpoint.pth"

    resume_from = None
    if args.resume:
        if not latest_path.is_file():
            raise SystemExit(f"--resume: no checkpoint at {latest_path}; run without --resume to start training.")
        resume_from = torch.load(latest_path, map_location="cpu", weights_only=True)
        if resume_from["epoch"] >= args.epochs:
            print(f"{latest_path} has already been trained for {resume_from['epoch']} epochs; "
                  f"pass a larger --epochs to train further.")
            return
        args.model, args.image_size = resume_from["arch"], resume_from["image_size"]
        was_frozen = resume_from["config"].get("freeze_backbone", False)
        if was_frozen != args.freeze_backbone:
            raise SystemExit(f"--resume: {latest_path} was trained {'with' if was_frozen else 'without'} "
                             "--freeze-backbone; resume it the same way.")

    device = pick_device(args.device)
    generator = seed_everything(args.seed)
    amp_dtype = resolve_speed_settings(args, device, train_set, val_set)
    print(f"device: {device}  |  {len(train_set)} train / {len(val_set)} val photos  |  classes: {', '.join(class_names)}")
    print(f"speed: {'mixed precision ' + str(amp_dtype).replace('torch.', '') if amp_dtype else 'fp32'}"
          f"{', channels_last' if args.channels_last else ''}{', photos cached in memory' if args.cache else ''}"
          f"{', backbone frozen (head only)' if args.freeze_backbone else ''}, {args.num_workers} data workers")

    model = build_model(args.model, len(class_names), weights="none" if resume_from else args.weights)
    if resume_from:
        model.load_state_dict(resume_from["model_state"])
    model.to(device, memory_format=torch.channels_last if args.channels_last else torch.preserve_format)
    # The model moves before the optimizer is made, so that restored optimizer state lands on the same device.
    trained = model.fc if args.freeze_backbone else model
    optimizer = make_optimizer(args, trained.parameters(), device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    start_epoch, best_val_acc, history = 1, -1.0, []
    if resume_from:
        optimizer.load_state_dict(resume_from["optimizer_state"])
        start_epoch, best_val_acc = resume_from["epoch"] + 1, resume_from.get("best_val_acc", -1.0)
        history = resume_from.get("history", [])
        print(f"resuming from {latest_path} at epoch {start_epoch}")
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    use_workers = args.num_workers > 0
    loader_options = dict(batch_size=args.batch_size, num_workers=args.num_workers, pin_memory=device.type == "cuda",
                          persistent_workers=use_workers, collate_fn=collate_readable)
    train_loader = DataLoader(train_set, shuffle=True, drop_last=len(train_set) > args.batch_size, generator=generator,
                              **loader_options)
    val_loader = DataLoader(val_set, shuffle=False, **loader_options)
    gallery = load_gallery(val_set)
    unreadable: set[str] = set()
    report_unreadable([f"{path}: empty file" for path in train_set.empty_files + val_set.empty_files], unreadable)
    if args.cache:
        train_set.cache_images()
        val_set.cache_images()
    if args.freeze_backbone:  # the backbone never changes: compute its features once, then train the head on them
        train_set.transform = val_set.transform  # features of the un-augmented photos
        features = []
        for loader in (DataLoader(train_set, **{**loader_options, "shuffle": False}), val_loader):
            dataset, problems = extract_features(model, loader, device, amp_dtype, args.channels_last)
            report_unreadable(problems, unreadable)
            features.append(dataset)
        train_loader = DataLoader(features[0], batch_size=args.batch_size, shuffle=True, generator=generator,
                                  drop_last=len(features[0]) > args.batch_size, collate_fn=collate_features)
        val_loader = DataLoader(features[1], batch_size=args.batch_size, collate_fn=collate_features)
    elif args.compile:
        trained = torch.compile(model)
    scheduler = make_scheduler(args, optimizer, len(train_loader))
    if resume_from and scheduler and resume_from.get("scheduler_state"):
        scheduler.load_state_dict(resume_from["scheduler_state"])

    swanlab_mode = "online" if args.swanlab_mode == "cloud" else args.swanlab_mode
    args.experiment_name = args.experiment_name or args.model
    config = {**vars(args), "num_classes": len(class_names), "class_names": class_names, "device": str(device),
              "train_size": len(train_set), "val_size": len(val_set)}
    swanlab.init(project=args.project, name=args.experiment_name, mode=swanlab_mode,
                 log_dir=SWANLAB_LOG_DIR, config=config,
                 description=f"Fine-tune {args.model} on {args.data_dir} ({', '.join(class_names)}).")
    if swanlab_mode == "local":
        print(f"SwanLab dashboard: run `swanlab watch {SWANLAB_LOG_DIR}` in another terminal")

    global_step = (start_epoch - 1) * len(train_loader)
    # The head alone trains on fp32 features in milliseconds: no mixed precision or layout needed there.
    speed = {"amp_dtype": None, "channels_last": False} if args.freeze_backbone else \
        {"amp_dtype": amp_dtype, "channels_last": args.channels_last}
    best_epoch = resume_from.get("best_epoch", 0) if resume_from else 0
    evaluations_without_improvement = 0
    for epoch in range(start_epoch, args.epochs + 1):
        started = time.perf_counter()
        train_loss, global_step, seen = train_one_epoch(trained, train_loader, optimizer, criterion, device, epoch,
                                                        args.epochs, global_step, unreadable, scaler=scaler,
                                                        scheduler=scheduler, **speed)
        metrics = {"train_loss": train_loss, "train_images_per_s": seen / (time.perf_counter() - started)}
        summary = f"epoch {epoch}/{args.epochs}  train_loss {train_loss:.4f}"
        if epoch % args.eval_interval == 0 or epoch == args.epochs:
            val_loss, val_acc, predictions = evaluate(trained, val_loader, criterion, device, unreadable, **speed)
            metrics.update(val_loss=val_loss, val_acc=val_acc)
            summary += f"  val_loss {val_loss:.4f}  val_acc {val_acc:.2f}%"
            captioned = [swanlab.Image(image, caption=f"{class_names[predictions[i]]} / {class_names[val_set.samples[i][1]]}")
                         for i, image in gallery if i in predictions]
            swanlab.log({"val_loss": val_loss, "val_acc": val_acc, "epoch": epoch, "val_examples": captioned},
                        step=global_step)
        metrics["epoch_time_s"] = time.perf_counter() - started
        print(f"{summary}  time {metrics['epoch_time_s']:.1f}s", flush=True)
        history.append({"epoch": epoch, **metrics})

        is_best = "val_acc" in metrics and metrics["val_acc"] > best_val_acc
        if is_best:
            best_val_acc, best_epoch, evaluations_without_improvement = metrics["val_acc"], epoch, 0
        elif "val_acc" in metrics:
            evaluations_without_improvement += 1
        checkpoint = make_checkpoint(model, arch=args.model, class_names=class_names, image_size=args.image_size,
                                     epoch=epoch, metrics=metrics, best_val_acc=best_val_acc, best_epoch=best_epoch,
                                     history=history, optimizer_state=optimizer.state_dict(), config=config,
                                     scheduler_state=scheduler.state_dict() if scheduler else None, weights=args.weights)
        save_checkpoint(checkpoint, latest_path)
        if is_best:  # the best one is for using, not resuming: no optimizer state (2/3 of the bytes)
            save_checkpoint({k: v for k, v in checkpoint.items() if k != "optimizer_state"}, best_path)
        save_training_curves(history, output_dir / "training_curves.png")
        if args.early_stopping and evaluations_without_improvement >= args.early_stopping:
            print(f"early stopping: val accuracy has not improved for {args.early_stopping} evaluations; "
                  f"the best was epoch {best_epoch} ({best_val_acc:.2f}%)")
            break

    test_csv = Path(args.data_dir) / "test.csv"
    if test_csv.is_file() and best_path.is_file():  # val chose the epoch; test, never seen, reports it
        model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True)["model_state"])
        test_set = DatasetLoader(test_csv, args.image_size, num_classes=len(class_names))
        test_loader = DataLoader(test_set, **{**loader_options, "persistent_workers": False})
        # In fp32, so that the number is exactly what evaluate.py reports for the same checkpoint.
        _, test_acc, _ = evaluate(model.float(), test_loader, criterion, device, unreadable)
        swanlab.log({"test_acc": test_acc})
        print(f"test_acc {test_acc:.2f}% on {len(test_set)} test photos (best checkpoint, epoch {best_epoch})")
    swanlab.finish()
    if unreadable:
        print(f"skipped {len(unreadable)} unreadable photo(s); fix or remove them from the CSVs:")
        for problem in sorted(unreadable):
            print(f"  {problem}")
    print(f"done. best val_acc {best_val_acc:.2f}%  |  checkpoints and training_curves.png in {output_dir}/  |  "
          f"dashboard: swanlab watch {SWANLAB_LOG_DIR}  |  web page: python app.py")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
