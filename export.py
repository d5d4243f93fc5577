"""Export a checkpoint to ONNX for deployment, and check the export on a real photo.

    python export.py --onnx model.onnx                      # checkpoint/best_checkpoint.pth
    python export.py --checkpoint my.pth --onnx my.onnx --image datasets/val/cat/cat.1.jpg
    python export.py --info                                 # parameters and FLOPs only

The ONNX model takes `images` (N×3×S×S, normalized as in training, any N) and returns
`logits` (N×classes). The check runs onnxruntime and PyTorch on the same photo and
fails when their class probabilities differ by more than 1e-4.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from checkpoint import checkpoint_transform, find_checkpoint, load_checkpoint
from common import IMAGE_EXTENSIONS, count_parameters_and_flops, make_console_safe, open_image

TOLERANCE = 1e-4


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export a checkpoint to ONNX and check it against PyTorch.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="default: checkpoint/best_checkpoint.pth, else latest")
    parser.add_argument("--onnx", default=None, help="where to write the .onnx file")
    parser.add_argument("--image", default=None, help="photo for the parity check (default: the first under datasets/val)")
    parser.add_argument("--info", action="store_true", help="print parameters and FLOPs at the checkpoint's image size")
    parser.add_argument("--repeats", type=int, default=20, help="runs per latency measurement")
    return parser


def median_latency_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: first calls allocate and pick kernels
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def find_photo(image: str | None) -> Path:
    if image:
        return Path(image)
    for candidate in sorted(Path("datasets/val").rglob("*")):
        if candidate.suffix.lower() in IMAGE_EXTENSIONS:
            return candidate
    raise SystemExit("the parity check needs a real photo: pass --image path/to/photo.jpg")


def export_onnx(model: torch.nn.Module, image_size: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 3, image_size, image_size)
    torch.onnx.export(model, (example,), str(path), input_names=["images"], output_names=["logits"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, external_data=False, verbose=False)


def check_parity(model: torch.nn.Module, onnx_path: Path, batch: torch.Tensor, repeats: int) -> tuple[float, float, float]:
    """Largest probability difference between onnxruntime and PyTorch, and both median latencies (ms)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = {"images": batch.numpy()}
    onnx_probabilities = torch.softmax(torch.from_numpy(session.run(None, feed)[0]), dim=1)
    with torch.inference_mode():
        torch_probabilities = torch.softmax(model(batch), dim=1)
        torch_ms = median_latency_ms(lambda: model(batch), repeats)
    onnx_ms = median_latency_ms(lambda: session.run(None, feed), repeats)
    return (onnx_probabilities - torch_probabilities).abs().max().item(), torch_ms, onnx_ms


def main(args: argparse.Namespace) -> None:
    if not args.onnx and not args.info:
        raise SystemExit("nothing to do: pass --onnx model.onnx and/or --info")
    checkpoint_path = find_checkpoint(args.checkpoint)
    model, meta = load_checkpoint(checkpoint_path, "cpu")  # ONNX export traces on the CPU
    image_size = meta["image_size"]
    if args.info:
        parameters, flops = count_parameters_and_flops(model, image_size)
        print(f"{meta['arch']} ({len(meta['class_names'])} classes) at {image_size}×{image_size}: "
              f"{parameters / 1e6:.2f} M parameters, {flops / 1e9:.2f} GFLOPs per image")
    if not args.onnx:
        return

    onnx_path = Path(args.onnx)
    photo = find_photo(args.image)
    export_onnx(model, image_size, onnx_path)
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB): input `images` N×3×{image_size}×{image_size}, "
          f"output `logits` N×{len(meta['class_names'])}, classes {meta['class_names']}")
    batch = checkpoint_transform(meta)(open_image(photo)).unsqueeze(0)
    difference, torch_ms, onnx_ms = check_parity(model, onnx_path, batch, args.repeats)
    print(f"parity on {photo}: max |Δ probability| = {difference:.2e} (tolerance {TOLERANCE:.0e})")
    print(f"latency per photo (median of {args.repeats}): PyTorch {torch_ms:.1f} ms, onnxruntime {onnx_ms:.1f} ms")
    if difference > TOLERANCE:
        onnx_path.unlink()
        raise SystemExit(f"the ONNX model disagrees with PyTorch by {difference:.2e} > {TOLERANCE:.0e}; removed {onnx_path}")


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    main(get_args_parser().parse_args())
