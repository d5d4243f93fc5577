"""Inference engines: a trained model answered by PyTorch, onnxruntime or OpenVINO (fp32, or INT8: int8.py).

    run, line = load_engine("auto", model, meta, checkpoint_path, device)
    print(line)                       # engine: openvino int8 (agreement 100% on 70 val photos)
    logits = run(batch) if run else fast_torch_model(batch)

Every engine takes the batch that the project's one preprocessing made (N×3×S×S floats, normalized as in
training: checkpoint_transform, preprocessing.normalize) and returns N×classes logits. None stands for PyTorch:
the caller keeps its own fast copy (inference.prepare_for_inference), and Grad-CAM always uses PyTorch.

Exports are cached beside the checkpoint, keyed by its contents (train.py builds them after training, here or in a
low-priority background process, app.py in a low-priority process, predict.py only for a job that repays the build:
engine_build.py), so that starts are fast:
    <checkpoint dir>/engines/<stem>-<sha256, 12 hex>-model.onnx          (onnxruntime)
    <checkpoint dir>/engines/<stem>-<sha256, 12 hex>-openvino.xml/.bin   (converted from PyTorch in memory)
    <checkpoint dir>/engines/<stem>-<sha256, 12 hex>-openvino-int8.xml/.bin/.json  (.json: the INT8 check)
INT8 that passed its check answers without the others (export.py --space ships it alone, space.ship_engine).

INT8 is calibrated on CALIBRATION_PHOTOS train photos, then checked on the val photos, which it was not tuned on,
against fp32 PyTorch's answers there (train.py's last evaluation of them when it has one): refused only when fp32
is better beyond the val set's uncertainty, or the two split on more than 5% of the photos (judge_int8). auto:
PyTorch on a GPU; on a CPU OpenVINO INT8 when it passed that check, else OpenVINO fp32, else onnxruntime, else
PyTorch (the measurements behind this order are in docs/speed.md). An engine that cannot load falls back to
PyTorch with one printed line.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from cats_dogs.atomic import atomic_path, atomic_write_text
from cats_dogs.checkpoint import (
    Checkpoint,
    checkpoint_meta,
    checkpoint_transform,
    load_checkpoint_or_exit,
    read_checkpoint_or_exit,
)
from cats_dogs.images import UNREADABLE_IMAGE_ERRORS, open_image
from cats_dogs.inference import default_batch_size, prepare_for_inference
from cats_dogs.int8 import minmax_int8
from cats_dogs.onnx_export import export_onnx

ENGINE_CHOICES = ("auto", "torch", "onnxruntime", "openvino", "openvino-fp32")
ENGINE_HELP = ("auto: PyTorch on a GPU; on a CPU OpenVINO INT8 when it passes its accuracy check, else OpenVINO fp32. "
               "openvino tries INT8 too, openvino-fp32 does not. An engine that cannot load falls back to torch")
# Calibration photos: 64 gave the verdicts of NNCF's default 300, and 32 those of 64, on the 9 models of
# studies/study_int8_check.py (docs/speed.md, "First runs"); 32 take half the calibration's fp32 pass.
CALIBRATION_PHOTOS = 32
MAX_DISAGREEMENT = 0.05  # share of val photos where INT8's top class may differ from fp32's (right or wrong)
# What building OpenVINO INT8 costs and what it saves, for --engine auto on a job with no engine cached yet
# (predict.py, evaluate.py), for ResNet50 at 256² on 2 cores (docs/speed.md, "First runs"): the build (conversion,
# calibration on 32 photos, the check on 70) takes 8–11 s in one process (18–23 s with NNCF, 60 s before issue 35);
# INT8 saves about 25 ms a photo against PyTorch with native bf16, 50 ms with AVX2 only.
BUILD_SECONDS = 12
SAVED_SECONDS_PER_PHOTO = 0.025
Engine = Callable[[torch.Tensor], torch.Tensor]


def engine_path(checkpoint_path: Path, name: str) -> Path:
    """The cache file `name` for this checkpoint's exact contents: a retrained checkpoint gets new files."""
    stat = checkpoint_path.stat()
    key = file_digest(str(checkpoint_path.resolve()), stat.st_mtime_ns, stat.st_size)[:12]
    return checkpoint_path.parent / "engines" / f"{checkpoint_path.stem}-{key}-{name}"


@functools.lru_cache(maxsize=8)
def file_digest(path: str, mtime_ns: int, size: int) -> str:
    """SHA-256 of a file, read once per version of it (~0.3 s for a ResNet50 checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fp32_logits(model: torch.nn.Module, photos: torch.Tensor) -> torch.Tensor:
    """PyTorch's fp32 answers as checks compare against, on the CPU: BatchNorm folded, channels-last, 4 photos a
    pass (prepare_for_inference): 12.9 s against 24.9 s for the plain model in batches of 16 (160 photos,
    ResNet50 at 256², 2 cores of an AVX-512 Xeon, fp32), the same top class on every photo, within 2e-5."""
    fast = prepare_for_inference(model, torch.device("cpu"))
    channels_last = photos.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return logits_of(fast, channels_last, default_batch_size(torch.device("cpu")))


def cached_onnx(model: torch.nn.Module, meta: Checkpoint, checkpoint_path: Path) -> Path:
    path = engine_path(checkpoint_path, "model.onnx")
    if not path.is_file():
        print(f"exporting the model to ONNX once for this checkpoint: {path}", file=sys.stderr, flush=True)
        export_onnx(model, meta["image_size"], path)
    return path


def onnxruntime_engine(onnx_path: Path) -> Engine:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # Its threads would otherwise spin between calls, taking the CPU from the decoding and from other engines.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def run(batch: torch.Tensor) -> torch.Tensor:  # session.run may be called from several threads at once
        return torch.from_numpy(session.run(None, {"images": batch.float().contiguous().numpy()})[0])

    return run


def to_openvino(model: torch.nn.Module, image_size: int):
    """The PyTorch model as an OpenVINO model, input N×3×S×S (any N), converted in memory: no ONNX file between
    (about 2 s for a ResNet50 on 2 cores, against 7 s through torch.onnx.export and its conversion)."""
    import openvino

    example = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # OpenVINO traces with torch.jit, which warns it is deprecated
        # Traced here without the trace's check (a second and third run of the model, 0.6 s of 2.5 for a ResNet50):
        # the same graph, the same answers to the bit.
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
        return openvino.convert_model(traced, example_input=example, input=[(-1, 3, image_size, image_size)])


def save_openvino(model, xml_path: Path) -> None:
    """model.xml and model.bin written under temporary names, then renamed (the .xml last: it marks a whole pair)."""
    import openvino

    with atomic_path(xml_path, keep_suffix=True) as partial:
        try:
            openvino.save_model(model, str(partial), compress_to_fp16=False)  # fp16 would change the fp32 answers
            with atomic_path(xml_path.with_suffix(".bin")) as partial_bin:
                os.replace(partial.with_suffix(".bin"), partial_bin)
        finally:
            partial.with_suffix(".bin").unlink(missing_ok=True)  # left only when saving failed


def openvino_engine(xml_path, amp_dtype: torch.dtype | None) -> Engine:
    """The OpenVINO model (its .xml, or converted in memory: to_openvino) compiled for this CPU; bf16 inside only
    where PyTorch would use it too (amp_dtype)."""
    import openvino

    precision = "bf16" if amp_dtype == torch.bfloat16 else "f32"
    compiled = openvino.Core().compile_model(str(xml_path) if isinstance(xml_path, Path) else xml_path, "CPU",
                                             {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"})
    request, lock = compiled.create_infer_request(), threading.Lock()  # one request: calls take turns

    def run(batch: torch.Tensor) -> torch.Tensor:
        with lock:
            request.infer({0: batch.float().contiguous().numpy()})
            return torch.from_numpy(request.get_output_tensor(0).data.copy())

    return run


def read_photos(csv_path: Path, meta: Checkpoint, limit: int) -> tuple[torch.Tensor, list[int]]:
    """Up to `limit` readable photos of a `path,label` CSV (spread over the whole file), preprocessed as ever."""
    from cats_dogs.csv_rows import read_csv_rows

    rows = read_csv_rows(csv_path, len(meta["class_names"]))
    rows = rows[:: max(1, len(rows) // limit)][:limit]  # CSVs are often sorted by class: take every k-th row
    transform, images, labels = checkpoint_transform(meta), [], []
    for path, label in rows:
        try:
            images.append(transform(open_image(path)))
            labels.append(label)
        except UNREADABLE_IMAGE_ERRORS:
            continue
    if not images:
        raise ValueError(f"no readable photo in {csv_path}")
    return torch.stack(images).contiguous(), labels


def logits_of(run: Engine, photos: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    return torch.cat([run(photos[i:i + batch_size]) for i in range(0, len(photos), batch_size)]).float()


def judge_int8(fp32_right: str, int8_right: str) -> dict:
    """INT8 against fp32 on the same val photos, from each one's right and wrong per photo ("1"/"0" in val order),
    judged as --best-rule paired judges two epochs: refused when fp32 is better beyond the val set's uncertainty
    (McNemar p < 0.05 on the photos only one of them gets right), or when they split on more than MAX_DISAGREEMENT
    of the photos (another model, then, whatever its accuracy). On 70 photos one photo is 1.4 points: the fixed
    rule before (99% agreement, 0.5 points) refused INT8 for a single photo."""
    from cats_dogs.served_epoch import PAIRED_ALPHA, compare

    only_fp32, only_int8, photos, p, fp32_leads = compare(fp32_right, int8_right)
    agreement = 1 - (only_fp32 + only_int8) / photos
    fp32_accuracy, int8_accuracy = (100 * right.count("1") / photos for right in (fp32_right, int8_right))
    problems = []
    if 1 - agreement > MAX_DISAGREEMENT:
        problems.append(f"agreement {agreement:.1%} < {1 - MAX_DISAGREEMENT:.0%}")
    if fp32_leads and p < PAIRED_ALPHA:
        problems.append(f"val accuracy {int8_accuracy:.1f}% vs fp32 {fp32_accuracy:.1f}%, lower beyond the "
                        f"uncertainty (McNemar p = {p:.3f})")
    found = f"on {photos} val photos"
    reason = (f"agreement {agreement:.0%} {found}, accuracy {int8_accuracy:.1f}% vs fp32 {fp32_accuracy:.1f}%"
              if not problems else f"{' and '.join(problems)} {found}")
    return {"agreement": agreement, "val_photos": photos, "fp32_accuracy": fp32_accuracy,
            "int8_accuracy": int8_accuracy, "only_fp32_right": only_fp32, "only_int8_right": only_int8, "p": p,
            "decision": "fp32" if problems else "int8", "reason": reason}


def right_string(classes: torch.Tensor, labels: list[int]) -> str:
    return "".join("1" if right else "0" for right in (classes == torch.tensor(labels)).tolist())


def check_int8(model: torch.nn.Module, int8: Engine, photos: torch.Tensor, labels: list[int],
               fp32_right: str | None = None) -> dict:
    """judge_int8 of an INT8 engine on the val photos, against the fp32 PyTorch model's answers: `fp32_right` when
    train.py measured them on these photos already (served_val_right), else computed here."""
    if fp32_right is None or len(fp32_right) != len(labels):
        with torch.inference_mode():
            fp32_right = right_string(fp32_logits(model, photos).argmax(1), labels)
    return judge_int8(fp32_right, right_string(logits_of(int8, photos).argmax(1), labels))


def served_val_right(meta: Checkpoint, data_dir: Path) -> str | None:
    """The served weights' right and wrong on each val photo of `data_dir`, as train.py's last evaluation of them
    measured it (the checkpoint's history), or None: another folder, an unreadable photo, or an older checkpoint.
    It saves the check a pass of the fp32 model over the val photos (9 s of a ResNet50 on 70 photos, AVX2)."""
    trained_on = meta.get("config", {}).get("data_dir")
    if not trained_on or Path(trained_on).resolve() != data_dir.resolve():
        return None
    key = "ema_val_right" if meta.get("ema_weights") else "val_right"
    right = next((entry.get(key) for entry in meta.get("history") or [] if entry.get("epoch") == meta.get("epoch")), None)
    return right if right and "-" not in right else None


def quantize_int8(model: torch.nn.Module, meta: Checkpoint, fp32_model, data_dir: Path, xml_path: Path,
                  amp_dtype: torch.dtype | None) -> dict:
    """Post-training INT8 of an OpenVINO model (int8.minmax_int8: NNCF's MinMax layout in a third of NNCF's time),
    calibrated on CALIBRATION_PHOTOS train photos, then checked on the val photos, which it was not tuned on. The
    INT8 model and the check's results (a .json beside it, with the seconds each part took) are kept even when INT8
    is refused, so that the check is not redone at every start."""
    seconds, started = {}, time.perf_counter()
    calibration, _ = read_photos(data_dir / "train.csv", meta, CALIBRATION_PHOTOS)
    print(f"quantizing to INT8: calibrating on {len(calibration)} photos of "
          f"{data_dir / 'train.csv'}, checking on {data_dir / 'val.csv'}", file=sys.stderr, flush=True)
    save_openvino(minmax_int8(fp32_model, calibration), xml_path)
    seconds["calibration"], started = time.perf_counter() - started, time.perf_counter()
    photos, labels = read_photos(data_dir / "val.csv", meta, 10**9)
    result = check_int8(model, openvino_engine(xml_path, amp_dtype), photos, labels, served_val_right(meta, data_dir))
    seconds["check"] = time.perf_counter() - started
    result.update(calibration_photos=len(calibration), data_dir=str(data_dir),
                  seconds={part: round(value, 1) for part, value in seconds.items()})
    atomic_write_text(xml_path.with_suffix(".json"), json.dumps(result, indent=2))
    return result


def find_data_dir(meta: Checkpoint, data_dir: str | os.PathLike | None) -> Path | None:
    """The folder with train.csv and val.csv for INT8: the one given, else the one the checkpoint was trained on."""
    for candidate in (data_dir, meta.get("config", {}).get("data_dir"), "datasets"):
        if candidate and (Path(candidate) / "train.csv").is_file() and (Path(candidate) / "val.csv").is_file():
            return Path(candidate)
    return None


def openvino_choice(model: torch.nn.Module, meta: Checkpoint, checkpoint_path: Path, amp_dtype: torch.dtype | None,
                    int8: bool, data_dir: str | os.PathLike | None) -> tuple[Engine, str]:
    """OpenVINO INT8 when asked for and its check passes (or passed before), else OpenVINO fp32; and the line saying which."""
    int8_xml = engine_path(checkpoint_path, "openvino-int8.xml")
    result = int8_report(int8_xml) if int8 else None
    if result is not None and result["decision"] == "int8":  # no fp32 needed: export.py --space ships INT8 alone
        return openvino_engine(int8_xml, amp_dtype), f"engine: openvino int8 ({result['reason']})"
    fp32_xml, fp32_model = engine_path(checkpoint_path, "openvino.xml"), None
    if not fp32_xml.is_file():
        fp32_model = to_openvino(model, meta["image_size"])
        save_openvino(fp32_model, fp32_xml)
    precision = "bf16" if amp_dtype == torch.bfloat16 else "fp32"
    if not int8:
        return openvino_engine(fp32_xml, amp_dtype), f"engine: openvino {precision}"
    if result is None and (found := find_data_dir(meta, data_dir)) is not None:
        try:
            import openvino

            fp32_model = fp32_model or openvino.Core().read_model(str(fp32_xml))
            result = quantize_int8(model, meta, fp32_model, found, int8_xml, amp_dtype)
        except Exception as error:  # noqa: BLE001 -- a model it cannot quantize, a broken CSV, …: fp32 OpenVINO still works
            reason = (str(error).strip().splitlines() or [""])[0][:160]
            result = {"decision": "fp32", "reason": f"it could not be built: {type(error).__name__}: {reason}"}
    elif result is None:
        result = {"decision": "fp32", "reason": "no train.csv and val.csv to calibrate and check it on "
                                                "(in the checkpoint's data folder or ./datasets)"}
    if result["decision"] == "int8":
        return openvino_engine(int8_xml, amp_dtype), f"engine: openvino int8 ({result['reason']})"
    return openvino_engine(fp32_xml, amp_dtype), f"engine: openvino {precision} (INT8 not used: {result['reason']})"


def engine_cached(name: str, meta: Checkpoint, checkpoint_path: str | os.PathLike,
                  data_dir: str | os.PathLike | None = None) -> bool:
    """Whether load_engine(name) on a CPU would only load files, building nothing."""
    checkpoint_path = Path(checkpoint_path)
    if name == "onnxruntime":
        return engine_path(checkpoint_path, "model.onnx").is_file()
    report = None if name == "openvino-fp32" else int8_report(engine_path(checkpoint_path, "openvino-int8.xml"))
    if report is not None and report["decision"] == "int8":
        return True
    fp32_ready = engine_path(checkpoint_path, "openvino.xml").is_file()
    if name == "openvino-fp32" or (fp32_ready and find_data_dir(meta, data_dir) is None):  # INT8 not tried then
        return fp32_ready
    return fp32_ready and report is not None


def int8_report(int8_xml: Path) -> dict | None:
    """The INT8 check's results saved beside the INT8 model (quantize_int8), None when not there. A refused model's
    report alone still says why (export.py --space ships no refused model); a passed one needs its model."""
    try:
        result = json.loads(int8_xml.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if int8_xml.is_file() or result.get("decision") != "int8" else None


def too_small_to_build(photos: int | None) -> str | None:
    """Why --engine auto answers `photos` photos with PyTorch instead of building INT8 first; None when it pays."""
    if photos is None or photos * SAVED_SECONDS_PER_PHOTO >= BUILD_SECONDS:
        return None
    return (f"engine: torch ({photos} photos: building OpenVINO INT8 takes ~{BUILD_SECONDS} s, more than it saves; "
            f"train.py builds it after training, or run once with --engine openvino to build it now)")


def engine_ready(name: str, meta: Checkpoint, checkpoint_path: str | os.PathLike, photos: int | None,
                 data_dir: str | os.PathLike | None = None) -> str:
    """The engine `name` resolved for a job of `photos` on a CPU: auto is OpenVINO fp32 when INT8 is not cached, the
    job too small to repay building it (too_small_to_build), and fp32 converted already: train.py converts it where
    that is cheap, before INT8 is built in the background (engine_build.build_after_training)."""
    if (name == "auto" and too_small_to_build(photos) and not engine_cached(name, meta, checkpoint_path, data_dir)
            and engine_cached("openvino-fp32", meta, checkpoint_path)):
        return "openvino-fp32"
    return name


def load_engine(name: str, model: torch.nn.Module | None, meta: Checkpoint, checkpoint_path: str | os.PathLike,
                device: torch.device, amp_dtype: torch.dtype | None = None,
                data_dir: str | os.PathLike | None = None, photos: int | None = None) -> tuple[Engine | None, str]:
    """The engine `name` (one of ENGINE_CHOICES) for this checkpoint, built and cached on first use, and the
    one line that says what answers. None for PyTorch, also when the engine cannot load here. `photos`: the
    job's size; for fewer than BUILD_SECONDS / SAVED_SECONDS_PER_PHOTO, auto builds nothing (a cached engine
    is used whatever the size)."""
    if name == "torch" or (name == "auto" and device.type != "cpu"):
        return None, "engine: torch"
    if device.type != "cpu":
        return None, f"engine: torch ({name} runs on the CPU here, and the device is {device})"
    if (ready := engine_ready(name, meta, checkpoint_path, photos, data_dir)) != name:
        name, note = ready, f" (INT8 is not built yet, and {photos} photos do not repay building it here)"
    elif name == "auto" and (line := too_small_to_build(photos)) and not engine_cached(name, meta, checkpoint_path,
                                                                                        data_dir):
        return None, line
    else:
        note = ""
    checkpoint_path, failures = Path(checkpoint_path), []
    # A copy to export and check with: the page may run Grad-CAM's hooks on the original meanwhile. Loading a cached
    # engine needs no model (load_model_or_engine gives none).
    model = None if model is None or engine_cached(name, meta, checkpoint_path, data_dir) else copy.deepcopy(model).eval()
    for candidate in ("openvino", "onnxruntime") if name == "auto" else (name,):
        try:
            if candidate == "onnxruntime":
                run, line = onnxruntime_engine(cached_onnx(model, meta, checkpoint_path)), "engine: onnxruntime fp32"
            else:
                run, line = openvino_choice(model, meta, checkpoint_path, amp_dtype, candidate == "openvino", data_dir)
            return run, line + note + (f" ({'; '.join(failures)})" if failures else "")
        except Exception as error:  # noqa: BLE001 -- package missing, unsupported CPU, read-only folder: PyTorch works
            reason = (str(error).strip().splitlines() or [""])[0][:160]
            failures.append(f"{candidate} is not usable here: {type(error).__name__}: {reason}")
    return None, f"engine: torch ({'; '.join(failures)})"


def cached_engine_answers(name: str, checkpoint: Checkpoint, checkpoint_path: str | os.PathLike,
                          device: torch.device, photos: int | None = None) -> bool:
    """Whether load_model_or_engine will find engine `name` (for a job of `photos`) cached, and answer with it alone."""
    return device.type == "cpu" and name != "torch" and engine_cached(
        engine_ready(name, checkpoint, checkpoint_path, photos), checkpoint, checkpoint_path)


def batch_size_for(name: str, checkpoint: Checkpoint, checkpoint_path: str | os.PathLike, device: torch.device,
                   photos: int | None = None) -> int:
    """--batch-size's default in predict.py and evaluate.py: inference.default_batch_size, an engine's when engine
    `name` is cached and will answer a job of `photos`."""
    return default_batch_size(device, cached_engine_answers(name, checkpoint, checkpoint_path, device, photos))


def load_model_or_engine(name: str, checkpoint_path: str | os.PathLike, device: torch.device,
                         amp_dtype: torch.dtype | None = None, photos: int | None = None,
                         checkpoint: Checkpoint | None = None) -> tuple[torch.nn.Module | None, Checkpoint, Engine | None, str]:
    """predict.py's and evaluate.py's start: (model, meta, engine, its line). A cached engine answers alone, the
    PyTorch model never built (nor torchvision imported: about 1.5 s of a 2-core laptop's start); else the model,
    and load_engine's choice for a job of `photos`. `checkpoint`: the file's contents when the caller has read
    them already. A checkpoint that cannot be read ends the script with one line."""
    checkpoint = read_checkpoint_or_exit(checkpoint_path) if checkpoint is None else checkpoint
    if cached_engine_answers(name, checkpoint, checkpoint_path, device, photos):
        meta = checkpoint_meta(checkpoint)
        run, line = load_engine(name, None, meta, checkpoint_path, device, amp_dtype, photos=photos)
        if run is not None:  # else it cannot load here (a package missing): PyTorch answers, as load_engine says
            return None, meta, run, line
    model, meta = load_checkpoint_or_exit(checkpoint_path, device, checkpoint)
    run, line = load_engine(name, model, meta, checkpoint_path, device, amp_dtype, photos=photos)
    return model, meta, run, line
