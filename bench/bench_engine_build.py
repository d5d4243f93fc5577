"""Where the serving engine's build spends its seconds, part by part, before and after issue #35.

    python bench/bench_engine_build.py --checkpoint checkpoint/best_checkpoint.pth --data-dir datasets

Times, on this machine, each part of what engines.load_engine("auto") does for a checkpoint with no engine cached,
the way it does it now and the way it did before (in brackets): reading the checkpoint and importing OpenVINO; the
conversion to OpenVINO (from the PyTorch model in memory [through a torch.onnx.export file]); the INT8 calibration
(CALIBRATION_PHOTOS photos in batches of CALIBRATION_BATCH by int8.minmax_int8 [the same photos by NNCF, without bias
correction, as in the first half of issue 35]); the check on the val photos (INT8 alone, fp32's answers taken from
train.py's last evaluation [fp32 PyTorch run again]); then the whole build as train.py starts it, in a process of
its own. Nothing is written beside the checkpoint: the models go to a temporary folder.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cats_dogs.checkpoint import load_checkpoint  # noqa: E402
from cats_dogs.engines import (  # noqa: E402
    CALIBRATION_PHOTOS,
    check_int8,
    openvino_engine,
    read_photos,
    save_openvino,
    served_val_right,
    to_openvino,
)
from cats_dogs.int8 import CALIBRATION_BATCH, minmax_int8, nncf_int8  # noqa: E402
from cats_dogs.onnx_export import export_onnx  # noqa: E402


def timed(parts: dict, name: str, function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    parts[name] = time.perf_counter() - started
    return result


def through_onnx(model: torch.nn.Module, image_size: int, folder: Path):
    """The conversion before issue 35: torch.onnx.export's file, read by OpenVINO (as bytes: it splits paths at
    commas)."""
    import openvino

    export_onnx(model, image_size, folder / "model.onnx")
    return openvino.convert_model(io.BytesIO((folder / "model.onnx").read_bytes()))


def measure(checkpoint: Path, data_dir: Path, folder: Path) -> dict[str, float]:
    parts: dict[str, float] = {}
    model, meta = timed(parts, "read the checkpoint", load_checkpoint, checkpoint, torch.device("cpu"))
    timed(parts, "import OpenVINO", __import__, "openvino")
    fp32_model = timed(parts, "convert: from PyTorch in memory", to_openvino, model, meta["image_size"])
    timed(parts, "[convert: torch.onnx.export, then its file]", through_onnx, model, meta["image_size"], folder)
    timed(parts, "save the fp32 model", save_openvino, fp32_model, folder / "fp32.xml")
    calibration = timed(parts, "read the calibration photos", read_photos, data_dir / "train.csv", meta, CALIBRATION_PHOTOS)[0]
    int8 = timed(parts, f"calibrate: {len(calibration)} photos, batches of {CALIBRATION_BATCH} (int8.py)", minmax_int8,
                 fp32_model, calibration, CALIBRATION_BATCH)
    timed(parts, "[import NNCF]", __import__, "nncf")
    logging.getLogger("nncf").setLevel(logging.ERROR)
    timed(parts, "[calibrate: the same photos by NNCF, no bias correction]", nncf_int8, fp32_model, calibration,
          CALIBRATION_BATCH, bias_correction=False)
    save_openvino(int8, folder / "int8.xml")
    engine = openvino_engine(folder / "int8.xml", None)
    photos, labels = timed(parts, "read the val photos", read_photos, data_dir / "val.csv", meta, 10**9)
    known = served_val_right(meta, data_dir)
    timed(parts, "check: INT8 on val" + (", fp32's answers from training" if known else " and fp32 PyTorch"),
          check_int8, model, engine, photos, labels, known)
    timed(parts, "[check: INT8 and fp32 PyTorch on val]", check_int8, model, engine, photos, labels)
    return parts


def whole_build(checkpoint: Path, data_dir: Path, folder: Path) -> float:
    """python -m cats_dogs.engine_build on a copy of the checkpoint, as train.py's background build runs it (at the
    lowest priority, which on an idle machine changes nothing)."""
    copy = folder / "whole" / "best_checkpoint.pth"
    copy.parent.mkdir()
    copy.write_bytes(checkpoint.read_bytes())
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cats_dogs.engine_build", str(copy), "--data-dir", str(data_dir.resolve())],
                   cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data-dir", required=True, type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        parts = measure(args.checkpoint, args.data_dir, Path(folder))
        whole = whole_build(args.checkpoint, args.data_dir, Path(folder))
    print(f"*{args.checkpoint}, {args.data_dir}, load average {os.getloadavg()[0]:.1f}*\n")
    print("| part | seconds |\n|---|---|")
    for name, seconds in parts.items():
        print(f"| {name} | {seconds:.1f} |")
    now = sum(seconds for name, seconds in parts.items() if not name.startswith("["))
    print(f"\nparts as built now: {now:.1f} s; the whole build as train.py starts it (one process, start-up "
          f"included): **{whole:.1f} s**")


if __name__ == "__main__":
    main()
