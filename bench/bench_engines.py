"""bench.py --engines: the page's single-photo latency per inference engine, and predict.py's photos/s on a
folder, each against the tutorial's app function called once per photo, on the same photos.

The model is an untrained ResNet50 at --image-size (256²) unless --checkpoint names a trained one: speed does not depend
on the weights, but the INT8 accuracy check does, so for untrained weights it is measured anyway and its
decision is only reported. predict.py runs for real (start-up and decoding included), after its engine is
built and cached beside the checkpoint, so the rate is what a user sees from the second run on.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from cats_dogs.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from cats_dogs.device import autocast_dtype
from cats_dogs.engines import engine_path, load_engine, openvino_engine, quantize_int8
from cats_dogs.images import open_image
from cats_dogs.inference import make_batch_predict
from cats_dogs.model import build_model

REPO = Path(__file__).resolve().parents[1]


def make_tutorial_predict(model: torch.nn.Module, device: torch.device, class_names: list[str],
                          image_size: int = 256) -> Callable[[Image.Image], dict[str, float]]:
    def tutorial_predict(image: Image.Image) -> dict[str, float]:  # the tutorial's app.py, as written
        transform = transforms.Compose([
            transforms.Resize((image_size, image_size)),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ])
        image = transform(image).unsqueeze(0).to(device)
        with torch.no_grad():
            output = model(image)
            probabilities = F.softmax(output, dim=1)
        return {class_names[i]: float(p) for i, p in enumerate(probabilities[0])}

    return tutorial_predict


def timed_ms(function: Callable, argument: object) -> float:
    started = time.perf_counter()
    function(argument)
    return (time.perf_counter() - started) * 1000


def page_engines(model: torch.nn.Module, meta: dict, checkpoint: Path, amp_dtype: torch.dtype | None,
                 data_dir: Path) -> tuple[dict[str, Callable | None], str]:
    """Each engine as the page would build it (INT8 built whatever its check says), and the INT8 check's verdict."""
    cpu = torch.device("cpu")
    engines = {"torch": None}
    for name in ("onnxruntime", "openvino-fp32"):
        run, line = load_engine(name, model, meta, checkpoint, cpu, amp_dtype)
        if run is None:
            print(line)
        else:
            engines[line.removeprefix("engine: ")] = run  # "openvino bf16" where the CPU has it natively
    int8_xml = engine_path(checkpoint, "openvino-int8.xml")
    try:
        import openvino

        fp32_model = openvino.Core().read_model(str(engine_path(checkpoint, "openvino.xml")))
        result = quantize_int8(model, meta, fp32_model, data_dir, int8_xml, amp_dtype)
        engines["openvino int8"] = openvino_engine(int8_xml, amp_dtype)
        verdict = f"INT8 check: {result['decision']} ({result['reason']})"
    except Exception as error:  # noqa: BLE001 -- OpenVINO or NNCF missing: the others are still measured
        verdict = f"INT8 not measured: {type(error).__name__}: {error}"
    return engines, verdict


def page_latencies(model: torch.nn.Module, meta: dict, engines: dict[str, Callable | None], photos: list[Path],
                   device: torch.device, amp_dtype: torch.dtype | None,
                   compile_model: bool) -> dict[str, list[float]]:
    """Milliseconds per photo, path in, probabilities out: the tutorial's function and the page with each engine,
    alternating photo by photo so that a busy moment of a shared machine hits all alike."""
    tutorial = make_tutorial_predict(model, device, meta["class_names"], meta["image_size"])
    answer = {"tutorial app function": lambda path: tutorial(Image.open(path).convert("RGB"))}
    for name, run in engines.items():
        batch_predict = make_batch_predict(model, meta, device, amp_dtype, compile_model and run is None,
                                           wait_for_compile=True, engine=None if run is None else (lambda run=run: run))
        answer[f"page, {name}"] = lambda path, predict=batch_predict: predict([open_image(path)])
    timings: dict[str, list[float]] = {name: [] for name in answer}
    for photo in photos[:3] + photos:
        for name, function in answer.items():
            # A pause, as between a user's photos: the threads of the path timed just before (torch's OpenMP,
            # OpenVINO's TBB) spin a while after their work and, without it, take the cores from the next path.
            time.sleep(0.05)
            timings[name].append(timed_ms(function, photo))
    return {name: values[3:] for name, values in timings.items()}  # the first three warm caches and kernels up


def predict_rates(checkpoint: Path, photos: list[Path], count: int, amp: bool, engines: list[str],
                  tutorial: Callable) -> list[tuple[str, float, str]]:
    """(engine, photos/s, the engine line predict.py printed) for `count` photos, and the tutorial's function
    called per photo on the same photos (timed on the first 100 of them: it does not speed up).
    The engines are already in the checkpoint's cache (page_engines built them), as from a user's second run on.
    Each rate is the best of two runs."""
    with tempfile.TemporaryDirectory() as folder:
        for i in range(count):  # the photos repeated under new names: predict.py reads every file anew
            shutil.copy(photos[i % len(photos)], Path(folder) / f"{i:05d}{photos[i % len(photos)].suffix}")
        files = sorted(Path(folder).iterdir())

        def tutorial_seconds() -> float:
            started = time.perf_counter()
            for path in files[:100]:
                tutorial(Image.open(path).convert("RGB"))
            return time.perf_counter() - started

        # Each the best of two runs: a shared machine's busy moments only ever slow a run down.
        rates = [("tutorial app function, per photo", min(100, count) / min(tutorial_seconds() for _ in range(2)), "")]
        for engine in engines:
            command = [sys.executable, str(REPO / "predict.py"), folder, "--checkpoint",
                       str(checkpoint), "--engine", engine, *([] if amp else ["--no-amp"])]
            seconds = []
            for _ in range(2):
                started = time.perf_counter()
                run = subprocess.run(command, capture_output=True, text=True, check=True)
                seconds.append(time.perf_counter() - started)
            line = next((x for x in run.stderr.splitlines() if x.startswith("engine:")), "")
            rates.append((f"predict.py --engine {engine}", count / min(seconds), line))
    return rates


def report(data_dir: Path, photos: list[Path], device: torch.device, no_bf16: bool, compile_model: bool,
           predict_photos: int, checkpoint: str | None = None, image_size: int = 256) -> None:
    """Print the Markdown tables of bench.py --engines."""
    amp_dtype = None if no_bf16 else autocast_dtype(device)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.pth"
        if checkpoint:
            shutil.copy(checkpoint, path)
        else:
            torch.manual_seed(0)
            untrained = build_model("resnet50", 2, "none")
            save_checkpoint(make_checkpoint(untrained, arch="resnet50", class_names=["cat", "dog"], image_size=image_size,
                                            epoch=0, metrics={}), path)
        model, meta = load_checkpoint(path, device)
        engines, verdict = (page_engines(model, meta, path, amp_dtype, data_dir) if device.type == "cpu"
                            else ({"torch": None}, "the other engines run on a CPU only"))
        timings = page_latencies(model, meta, engines, photos, device, amp_dtype, compile_model)
        tutorial_p50 = statistics.median(timings["tutorial app function"])
        print(f"Page, one photo at a time over {len(photos)} val photos (path in, probabilities out), "
              f"{'bf16 off' if amp_dtype is None else 'bf16 where native'}; {verdict}:\n")
        print("| path | p50 | p90 | p50 vs the tutorial |\n|---|---|---|---|")
        for name, values in timings.items():
            p50, p90 = statistics.median(values), statistics.quantiles(values, n=10)[-1]
            print(f"| {name} | {p50:.1f} ms | {p90:.1f} ms | {p50 / tutorial_p50:.2f}× |")
        rates = predict_rates(path, photos, predict_photos, amp_dtype is not None, ["torch", "auto"],
                              make_tutorial_predict(model, device, meta["class_names"], meta["image_size"]))
        print(f"\npredict.py on a folder of {predict_photos} photos (start-up and decoding included, the engine "
              "already cached):\n")
        print("| path | photos/s | vs the tutorial | engine |\n|---|---|---|---|")
        for name, rate, line in rates:
            print(f"| {name} | {rate:.1f} | {rate / rates[0][1]:.2f}× | {line.removeprefix('engine: ')} |")
        print()
