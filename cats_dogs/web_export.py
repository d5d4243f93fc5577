"""export.py --web DIR: a page that classifies photos in the browser, with no server of ours behind it.

    DIR/index.html, app.js    the page (cats_dogs/web/, plain JavaScript, no build step)
    DIR/model.onnx            the model, the same ONNX export as --onnx (fp32; or --web-quantize int8|fp16)
    DIR/config.json           what the page must agree on with training and app.py: class names, image size,
                              mean and std (the checkpoint's), the "not sure" threshold, the words in both languages
    DIR/ort/                  ONNX Runtime Web's WASM build, pinned (cats_dogs/web_runtime.py), with its licence

Any static host serves it (GitHub Pages, a static Hugging Face Space: docs/share.md); opened as a file it cannot
load its model, so it is served even on one's own machine: python -m http.server -d DIR.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import tempfile
from pathlib import Path

import torch

from cats_dogs.checkpoint import Checkpoint
from cats_dogs.engines import fp32_logits, judge_int8, logits_of, onnxruntime_engine, read_photos, right_string
from cats_dogs.onnx_export import export_onnx
from cats_dogs.web_runtime import ORT_WEB_VERSION, runtime_files

PAGE_DIR = Path(__file__).with_name("web")
QUANTIZE_CHOICES = ("int8", "fp16")
WEB_CHECK_PHOTOS = 200  # val photos the exported model is checked on against PyTorch


def page_words() -> dict[str, dict[str, str]]:
    """The page's words by language, as templates with plain {names}: the Python format specs (:.0%) are dropped,
    the page formats its numbers itself."""
    from cats_dogs.translations import LANGUAGES, PAGE_WORDS, TEXTS, WEB_WORDS  # it imports Gradio: only --web pays

    chosen = {**{key: PAGE_WORDS[key] for key in ("probabilities", "one_photo", "live")},
              **{key: TEXTS[key] for key in ("title", "sure", "not_sure")}, **WEB_WORDS}
    return {language: {key: re.sub(r"\{(\w+):[^}]*\}", r"{\1}", both[index]) for key, both in chosen.items()}
            for index, language in enumerate(LANGUAGES)}


def web_config(meta: Checkpoint, quantize: str | None) -> dict:
    """config.json: everything the page's script knows about the model; nothing of it is written in the script."""
    from cats_dogs.translations import DOUBT_THRESHOLD  # app.py's, shared

    return {"model": "model.onnx", "input": "images", "output": "logits", "precision": quantize or "fp32",
            "arch": meta["arch"], "class_names": list(meta["class_names"]), "image_size": meta["image_size"],
            "mean": list(meta["mean"]), "std": list(meta["std"]), "threshold": DOUBT_THRESHOLD,
            "runtime": f"onnxruntime-web {ORT_WEB_VERSION}", "words": page_words()}


def fp16_weights(source: Path, target: Path) -> None:
    """Weights stored as fp16, computed in fp32: each large float initializer becomes fp16 followed by a Cast.

    Half the download; ONNX Runtime Web's WASM backend has no fp16 convolutions, so the arithmetic stays fp32
    (the Casts are folded once, when the page loads the model)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    kept, casts = [], []
    for initializer in graph.initializer:
        if initializer.data_type != onnx.TensorProto.FLOAT or np.prod(initializer.dims) < 16:
            kept.append(initializer)  # scalars and shapes stay as they are
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(initializer).astype(np.float16), initializer.name + "_fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [initializer.name], to=onnx.TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def int8_weights(source: Path, target: Path) -> None:
    """Dynamic INT8 quantization (ONNX Runtime's): weights stored as uint8, activations quantized per photo, so no
    calibration photos are needed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QUInt8)


def write_model(model: torch.nn.Module, meta: Checkpoint, path: Path, quantize: str | None) -> None:
    if quantize is None:
        export_onnx(model, meta["image_size"], path)
        return
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "model.onnx"
        export_onnx(model, meta["image_size"], fp32)
        (int8_weights if quantize == "int8" else fp16_weights)(fp32, path)


def write_runtime(folder: Path, files: dict[str, bytes]) -> None:
    """ort/: the pinned runtime's files and its licence (ONNX Runtime's, the same project as the Python package's)."""
    import onnxruntime

    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    package = Path(onnxruntime.__file__).parent
    for name in ("LICENSE", "ThirdPartyNotices.txt"):
        if (package / name).is_file():
            shutil.copyfile(package / name, folder / name)


def write_web(model: torch.nn.Module, meta: Checkpoint, out_dir: Path, quantize: str | None,
              runtime: str | None) -> Path:
    """The page's folder; returns the model's path. The runtime comes first: without it, no folder is made."""
    files = runtime_files(runtime)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_runtime(out_dir / "ort", files)
    config = web_config(meta, quantize)
    shutil.copyfile(PAGE_DIR / "app.js", out_dir / "app.js")
    page = (PAGE_DIR / "index.html").read_text(encoding="utf-8")
    for language, words in config["words"].items():  # in the page itself: opened as a file, it cannot read the config
        page = page.replace(f"__NOT_SERVED_{language.upper()}__", html.escape(words["not_served"]))
    (out_dir / "index.html").write_text(page, encoding="utf-8")
    (out_dir / "config.json").write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    model_path = out_dir / config["model"]
    write_model(model, meta, model_path, quantize)
    return model_path


def check_web_model(model: torch.nn.Module, meta: Checkpoint, model_path: Path, data_dir: Path) -> dict:
    """The exported model (run by ONNX Runtime in Python, the same kernels as the page's) against PyTorch on
    the val photos: top-class agreement, both accuracies and the largest probability difference."""
    photos, labels = read_photos(data_dir / "val.csv", meta, WEB_CHECK_PHOTOS)
    expected = torch.softmax(fp32_logits(model, photos), dim=1)  # each model over the photos once: both figures
    got = torch.softmax(logits_of(onnxruntime_engine(model_path), photos), dim=1)
    result = judge_int8(right_string(expected.argmax(1), labels), right_string(got.argmax(1), labels))
    result["max_difference"] = (got - expected).abs().max().item()
    return result


def folder_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


def export_web(model: torch.nn.Module, meta: Checkpoint, out_dir: Path, quantize: str | None, runtime: str | None,
               data_dir: Path | None) -> None:
    """export.py --web: write the folder, say its size, check the model on the val photos when there are some."""
    model_path = write_web(model, meta, out_dir, quantize, runtime)
    print(f"wrote the page {out_dir} ({folder_mb(out_dir):.1f} MB: model {model_path.stat().st_size / 1e6:.1f} MB "
          f"{quantize or 'fp32'}, runtime onnxruntime-web {ORT_WEB_VERSION} {folder_mb(out_dir / 'ort'):.1f} MB)")
    if data_dir is not None and (data_dir / "val.csv").is_file():
        result = check_web_model(model, meta, model_path, data_dir)
        print(f"check on {result['val_photos']} val photos: top class as PyTorch on {result['agreement']:.1%}, "
              f"max |Δ probability| {result['max_difference']:.1e}, val accuracy {result['int8_accuracy']:.1f}% "
              f"(PyTorch fp32 {result['fp32_accuracy']:.1f}%)")
    print(f"try it: python -m http.server -d {out_dir} 8000, then open http://localhost:8000 (opened as a file, "
          f"the page cannot load its model); publish it: see docs/share.md")
