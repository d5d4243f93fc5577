"""export.py --ncnn DIR: the model for a phone app, in ncnn's format, checked against PyTorch with ncnn's own runtime.

    DIR/model.ncnn.param   the network (input `in0`: 3×S×S floats, normalized; output `out0`: one logit per class)
    DIR/model.ncnn.bin     the weights, stored as fp16 (ncnn's default for phones: half the size)
    DIR/model.json         everything an app needs besides: size, mean, std, class names, input layout, and the
                           mean_vals/norm_vals for ncnn::Mat::substract_mean_normalize on 0..255 pixels

The converter is pnnx (Tencent's, the successor of onnx2ncnn), fed the same ONNX export as --onnx; the check runs
the `ncnn` Python package, the same library an Android app links. Both come from requirements-export.txt.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from cats_dogs.checkpoint import Checkpoint, checkpoint_transform
from cats_dogs.csv_rows import CsvError, read_csv_rows
from cats_dogs.engines import Engine
from cats_dogs.images import UNREADABLE_IMAGE_ERRORS, open_image
from cats_dogs.onnx_export import export_onnx

# fp16 weights move probabilities by ~3e-4 on a ResNet (measured: resnet18, resnet50); 1e-2 leaves room for real photos.
NCNN_TOLERANCE = 1e-2
PARITY_PHOTOS = 16
MISSING = "the ncnn export needs pnnx and ncnn, which the default install leaves out: pip install -r requirements-export.txt"


def import_ncnn_tools() -> tuple[str, object]:
    """pnnx's converter executable and the ncnn module, or the one line that says how to install them."""
    try:
        import ncnn
        import pnnx
    except ImportError as error:
        raise SystemExit(f"{MISSING} ({error})") from None
    return pnnx.EXEC_PATH, ncnn


def phone_preprocessing(meta: Checkpoint) -> dict:
    """model.json: the preprocessing training used, spelled out for an app developer."""
    mean, std = meta["mean"], meta["std"]
    return {
        "format": "ncnn", "param": "model.ncnn.param", "bin": "model.ncnn.bin", "input": "in0", "output": "out0",
        "class_names": meta["class_names"], "arch": meta["arch"],
        "size": meta["image_size"], "resize": "squash the whole photo to size×size, bilinear (no crop, no padding)",
        "input_layout": "CHW, RGB, float32, one photo (batch 1)",
        "mean": mean, "std": std, "normalize": "(pixel / 255 - mean) / std, per channel",
        "ncnn_mean_vals": [round(255 * m, 6) for m in mean], "ncnn_norm_vals": [round(1 / (255 * s), 9) for s in std],
        "output_meaning": "logits: softmax gives each class's probability",
    }


def export_ncnn(model: torch.nn.Module, meta: Checkpoint, out_dir: Path) -> list[Path]:
    """Convert through ONNX with pnnx; returns the three files written into out_dir."""
    pnnx_executable, _ = import_ncnn_tools()
    out_dir = out_dir.resolve()  # pnnx runs in the scratch folder
    out_dir.mkdir(parents=True, exist_ok=True)
    param, weights, info = out_dir / "model.ncnn.param", out_dir / "model.ncnn.bin", out_dir / "model.json"
    size = meta["image_size"]
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / "model.onnx"
        export_onnx(model, size, onnx_path)
        # pnnx writes six files; only ncnn's two leave the scratch folder.
        extra = {name: str(Path(scratch) / f"model.{name}") for name in ("pnnxparam", "pnnxbin", "pnnxpy", "pnnxonnx",
                                                                          "ncnnpy")}
        command = [pnnx_executable, str(onnx_path), f"inputshape=[1,3,{size},{size}]f32", f"ncnnparam={param}",
                   f"ncnnbin={weights}", *(f"{key}={value}" for key, value in extra.items())]
        result = subprocess.run(command, capture_output=True, text=True, errors="replace", cwd=scratch)
    if result.returncode != 0 or not param.is_file() or not weights.is_file():
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"pnnx could not convert the model (exit {result.returncode}): " + " | ".join(tail))
    info.write_text(json.dumps(phone_preprocessing(meta), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return [param, weights, info]


def ncnn_engine(param: Path, weights: Path) -> Engine:
    """The exported files run by ncnn's Python runtime, one photo at a time as on a phone: N×3×S×S in, N×classes out."""
    _, ncnn = import_ncnn_tools()
    net = ncnn.Net()
    net.load_param(str(param))
    net.load_model(str(weights))

    def run(batch: torch.Tensor) -> torch.Tensor:
        logits = []
        for photo in batch.float().numpy():
            with net.create_extractor() as extractor:
                extractor.input("in0", ncnn.Mat(np.ascontiguousarray(photo)))
                _, out = extractor.extract("out0")
                logits.append(np.array(out).copy())  # copied: the Mat's memory goes with the extractor
        return torch.from_numpy(np.stack(logits))

    return run


def parity_photos(image: Path | None, data_dir: Path | None) -> list[Path]:
    """The photos to check on: --image, else up to PARITY_PHOTOS spread over DATA_DIR/val.csv (both classes)."""
    if image is not None:
        return [image]
    if data_dir is None or not (data_dir / "val.csv").is_file():
        return []
    try:
        rows = read_csv_rows(data_dir / "val.csv")
    except CsvError as error:
        raise SystemExit(str(error).splitlines()[0]) from None
    step = max(1, len(rows) // PARITY_PHOTOS)
    return [path for path, _ in rows[::step][:PARITY_PHOTOS]]


def check_ncnn_parity(model: torch.nn.Module, run: Engine, meta: Checkpoint, photos: list[Path]) -> tuple[float, int, int]:
    """Largest probability difference over the photos, photos with PyTorch's top class, photos that were readable."""
    transform = checkpoint_transform(meta)
    batch = []
    for photo in photos:
        try:
            batch.append(transform(open_image(photo)))
        except UNREADABLE_IMAGE_ERRORS as error:
            print(f"parity: skipped {photo}: {error}")
    if not batch:
        raise SystemExit("the ncnn parity check needs a readable photo: pass --image or --data-dir with val.csv")
    batch = torch.stack(batch)
    with torch.inference_mode():
        expected = torch.softmax(model(batch), dim=1)
    got = torch.softmax(run(batch), dim=1)
    difference = (got - expected).abs().max().item()
    # A photo PyTorch calls a tie, within the difference measured, may go either way: only the others must agree.
    top_two = expected.topk(2, dim=1).values
    decided = (top_two[:, 0] - top_two[:, 1]) > 2 * difference
    agreeing = ((got.argmax(1) == expected.argmax(1)) | ~decided).sum().item()
    return difference, agreeing, len(batch)
