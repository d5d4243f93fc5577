"""Export a checkpoint to ONNX or OpenVINO for deployment, and check the export on a real photo.

    python export.py --onnx model.onnx                      # checkpoint/best_checkpoint.pth
    python export.py --checkpoint my.pth --onnx my.onnx --image datasets/val/cat/cat.1.jpg
    python export.py --openvino model.xml                   # model.xml + model.bin, fp32
    python export.py --openvino model-int8.xml --int8       # INT8 (int8.py), calibrated on datasets/train.csv
    python export.py --info                                 # parameters and FLOPs only
    python export.py --ncnn phone/                          # for a phone app (ncnn); pip install -r requirements-export.txt
    python export.py --space my-space/                      # a Hugging Face Space folder (docs/share.md)
    python export.py --web my-page/ --web-quantize int8     # a static page that classifies in the browser

Both models take `images` (N×3×S×S, normalized as in training, any N) and return
`logits` (N×classes). The check runs the export and PyTorch on the same photo and
fails when their class probabilities differ by more than 1e-4. An INT8 model is checked
as engines.py checks it (top class against fp32 PyTorch on the val photos, see docs/speed.md)
and removed when it fails. The ncnn model stores fp16 weights and is checked with ncnn's own
runtime on up to 16 val photos: the same top class, probabilities within 1e-2 (cats_dogs/phone_export.py).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cats_dogs.checkpoint import checkpoint_transform, find_checkpoint, load_checkpoint_or_exit
from cats_dogs.engines import (
    Engine,
    find_data_dir,
    onnxruntime_engine,
    openvino_engine,
    quantize_int8,
    save_openvino,
    to_openvino,
)
from cats_dogs.images import IMAGE_EXTENSIONS, UNREADABLE_IMAGE_ERRORS, explain_unreadable, open_image
from cats_dogs.model import count_parameters_and_flops
from cats_dogs.onnx_export import export_onnx
from cats_dogs.phone_export import NCNN_TOLERANCE, check_ncnn_parity, export_ncnn, ncnn_engine, parity_photos
from cats_dogs.process import make_console_safe
from cats_dogs.space import folder_size_mb, write_space
from cats_dogs.web_export import QUANTIZE_CHOICES, export_web

TOLERANCE = 1e-4


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export a checkpoint to ONNX and check it against PyTorch.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="default: checkpoint/best_checkpoint.pth, else latest")
    parser.add_argument("--onnx", default=None, help="where to write the .onnx file")
    parser.add_argument("--openvino", default=None, help="where to write the OpenVINO model (.xml, with its .bin beside it)")
    parser.add_argument("--int8", action="store_true",
                        help="with --openvino: INT8 post-training quantization (NNCF's MinMax layout, cats_dogs/int8.py) "
                             "calibrated on DATA_DIR/train.csv and checked on DATA_DIR/val.csv")
    parser.add_argument("--ncnn", default=None,
                        help="folder for the phone model: model.ncnn.param/.bin (ncnn, through pnnx) and model.json "
                             "(preprocessing and class names); needs requirements-export.txt")
    parser.add_argument("--space", default=None,
                        help="new folder for a Hugging Face Space: app.py, the package, the checkpoint, example photos, "
                             "requirements.txt and README.md (see docs/share.md)")
    parser.add_argument("--web", default=None,
                        help="folder for a page that classifies photos in the browser (ONNX Runtime Web), for any "
                             "static host: index.html, the model, its runtime (see docs/share.md)")
    parser.add_argument("--web-quantize", choices=QUANTIZE_CHOICES, default=None,
                        help="with --web: a smaller model, int8 (dynamic quantization) or fp16 weights (default: fp32)")
    parser.add_argument("--web-runtime", default=None,
                        help="with --web: onnxruntime-web's .tgz or unpacked folder, instead of downloading it once "
                             "from the npm registry into $CATS_DOGS_CACHE (default ~/.cache/cats_dogs)")
    parser.add_argument("--space-gpu", action="store_true",
                        help="with --space: for a Space with a GPU (PyTorch's CUDA build, no engine); "
                             "default: a CPU Space (PyTorch's CPU build and the OpenVINO engine, built here)")
    parser.add_argument("--data-dir", default=None,
                        help="for --int8, --ncnn's check and --space's examples: a folder with train.csv and val.csv "
                             "(default: the checkpoint's, else datasets)")
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


def check_parity(model: torch.nn.Module, run: Engine, batch: torch.Tensor, repeats: int) -> tuple[float, float, float]:
    """Largest probability difference between the exported model and PyTorch, and both median latencies (ms)."""
    exported_probabilities = torch.softmax(run(batch), dim=1)
    with torch.inference_mode():
        torch_probabilities = torch.softmax(model(batch), dim=1)
        torch_ms = median_latency_ms(lambda: model(batch), repeats)
    exported_ms = median_latency_ms(lambda: run(batch), repeats)
    return (exported_probabilities - torch_probabilities).abs().max().item(), torch_ms, exported_ms


def verify(model: torch.nn.Module, run: Engine, name: str, files: list[Path], batch: torch.Tensor, photo: Path,
           args: argparse.Namespace, tolerance: float | None = TOLERANCE) -> None:
    """Print the parity and both latencies; remove the files and stop when the difference is over `tolerance`."""
    difference, torch_ms, exported_ms = check_parity(model, run, batch, args.repeats)
    print(f"parity on {photo}: max |Δ probability| = {difference:.2e}"
          + (f" (tolerance {tolerance:.0e})" if tolerance else " (INT8: checked by its top classes instead)"))
    print(f"latency per photo (median of {args.repeats}): PyTorch {torch_ms:.1f} ms, {name} {exported_ms:.1f} ms")
    if tolerance is not None and difference > tolerance:
        for file in files:
            file.unlink()
        raise SystemExit(f"the {name} model disagrees with PyTorch by {difference:.2e} > {tolerance:.0e}; "
                         f"removed {', '.join(map(str, files))}")


def export_openvino(model: torch.nn.Module, meta: dict, xml_path: Path, int8: bool, data_dir: str | None) -> None:
    """fp32 converted from the PyTorch model; INT8 quantized from that, then checked, and removed when the check fails."""

    if xml_path.suffix != ".xml":
        raise SystemExit(f"--openvino {xml_path}: give a file name ending in .xml (the weights go to a .bin beside it)")
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    fp32_model = to_openvino(model, meta["image_size"])
    if not int8:
        save_openvino(fp32_model, xml_path)
        return
    found = find_data_dir(meta, data_dir)
    if found is None:
        raise SystemExit("--int8 needs photos to calibrate and check on: pass --data-dir with train.csv and val.csv")
    result = quantize_int8(model, meta, fp32_model, found, xml_path, None)
    print(f"INT8 check on {result['val_photos']} val photos: right or wrong as fp32 PyTorch on {result['agreement']:.1%}, "
          f"val accuracy {result['int8_accuracy']:.1f}% (fp32 {result['fp32_accuracy']:.1f}%); results in "
          f"{xml_path.with_suffix('.json')}")
    if result["decision"] != "int8":
        for file in (xml_path, xml_path.with_suffix(".bin")):
            file.unlink()
        raise SystemExit(f"the INT8 model is not good enough: {result['reason']}; removed {xml_path} and its .bin")


def export_phone(model: torch.nn.Module, meta: dict, args: argparse.Namespace) -> None:
    """--ncnn: convert, then check on real photos with ncnn's runtime; the files are removed when the check fails."""
    files = export_ncnn(model, meta, Path(args.ncnn))
    size = files[1].stat().st_size / 1e6
    print(f"wrote {files[0]}, {files[1]} ({size:.1f} MB, fp16 weights) and {files[2]} (preprocessing, class names)")
    photos = parity_photos(Path(args.image) if args.image else None, find_data_dir(meta, args.data_dir))
    difference, agreeing, checked = check_ncnn_parity(model, ncnn_engine(files[0], files[1]), meta,
                                                      photos or [find_photo(None)])
    print(f"ncnn parity on {checked} photo(s): max |Δ probability| = {difference:.2e} (tolerance {NCNN_TOLERANCE:.0e}), "
          f"same top class as PyTorch on {agreeing}/{checked}")
    if difference > NCNN_TOLERANCE or agreeing < checked:
        for file in files:
            file.unlink()
        raise SystemExit(f"the ncnn model disagrees with PyTorch; removed {', '.join(map(str, files))}")


def export_space(checkpoint_path: Path, meta: dict, args: argparse.Namespace) -> None:
    space_dir = Path(args.space)
    photos, engine_line = write_space(checkpoint_path, space_dir, find_data_dir(meta, args.data_dir), args.space_gpu)
    print(f"the Space answers with {engine_line.removeprefix('engine: ')}")
    print(f"wrote the Space folder {space_dir} ({folder_size_mb(space_dir):.0f} MB, {len(photos)} example photos); "
          f"try it: cd {space_dir} && python app.py; publish it: see docs/share.md")


def main(args: argparse.Namespace) -> None:
    if not (args.onnx or args.openvino or args.info or args.ncnn or args.space or args.web):
        raise SystemExit("nothing to do: pass --onnx model.onnx, --openvino model.xml, --ncnn DIR, --space DIR, --web DIR "
                         "and/or --info")
    if args.space_gpu and not args.space:
        raise SystemExit("--space-gpu is for a Space: pass --space DIR too")
    if args.int8 and not args.openvino:
        raise SystemExit("--int8 is for OpenVINO: pass --openvino model.xml too")
    if (args.web_quantize or args.web_runtime) and not args.web:
        raise SystemExit("--web-quantize and --web-runtime are for the page: pass --web DIR too")
    checkpoint_path = find_checkpoint(args.checkpoint)
    model, meta = load_checkpoint_or_exit(checkpoint_path, "cpu")  # exports trace on the CPU
    image_size = meta["image_size"]
    if args.info:
        parameters, flops = count_parameters_and_flops(model, image_size)
        print(f"{meta['arch']} ({len(meta['class_names'])} classes) at {image_size}×{image_size}: "
              f"{parameters / 1e6:.2f} M parameters, {flops / 1e9:.2f} GFLOPs per image")
    if args.space:
        export_space(checkpoint_path, meta, args)
    if args.ncnn:
        export_phone(model, meta, args)
    if args.web:
        export_web(model, meta, Path(args.web), args.web_quantize, args.web_runtime, find_data_dir(meta, args.data_dir))
    if not (args.onnx or args.openvino):
        return

    photo = find_photo(args.image)
    try:
        batch = checkpoint_transform(meta)(open_image(photo)).unsqueeze(0)
    except UNREADABLE_IMAGE_ERRORS as error:
        raise SystemExit(f"--image {photo}: {explain_unreadable(error)}") from None
    shapes = (f"input `images` N×3×{image_size}×{image_size}, output `logits` N×{len(meta['class_names'])}, "
              f"classes {meta['class_names']}")
    if args.onnx:
        onnx_path = Path(args.onnx)
        export_onnx(model, image_size, onnx_path)
        print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB): {shapes}")
        verify(model, onnxruntime_engine(onnx_path), "onnxruntime", [onnx_path], batch, photo, args)
    if args.openvino:
        xml_path = Path(args.openvino)
        export_openvino(model, meta, xml_path, args.int8, args.data_dir)
        size = xml_path.with_suffix(".bin").stat().st_size / 1e6
        print(f"wrote {xml_path} and its .bin ({size:.1f} MB, {'INT8' if args.int8 else 'fp32'}): {shapes}")
        verify(model, openvino_engine(xml_path, None), "OpenVINO", [xml_path, xml_path.with_suffix(".bin")], batch,
               photo, args, None if args.int8 else TOLERANCE)


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    main(get_args_parser().parse_args())
