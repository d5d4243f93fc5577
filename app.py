"""A web page that classifies uploaded photos with a trained checkpoint (the tutorial's Gradio demo, grown up).

    python app.py                                  # checkpoint/best_checkpoint.pth, http://127.0.0.1:7860
    python app.py --checkpoint path/to/model.pth --port 8000 --share

One photo: the label with every class's probability, "not sure" below a threshold, a
Grad-CAM heat map of where the model looked, and (for cat/dog models fine-tuned from
ImageNet weights) a warning when the photo shows neither. Many photos: a table and a CSV.
In Chinese for a browser whose language is Chinese, else in English; --language zh|en for everyone.

The API endpoint /predict takes one image and answers the label with every class's probability:
    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860/").predict(handle_file("cat.jpg"), api_name="/predict")
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home: many users are offline

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from checkpoint import Checkpoint, checkpoint_transform, find_checkpoint, load_checkpoint  # noqa: E402
from common import (  # noqa: E402
    IMAGE_EXTENSIONS,
    UNREADABLE_IMAGE_ERRORS,
    autocast_dtype,
    build_model,
    explain_unreadable,
    make_console_safe,
    open_image,
    pick_device,
    pretrained_state_dict,
    zip_member_name,
)
from inference import compile_for_inference, prepare_for_inference  # noqa: E402

MAX_UPLOAD = "20mb"
EXAMPLES_PER_CLASS = 2
DOUBT_THRESHOLD = 0.7  # below this top probability the page says "not sure"
IMAGENET_CATS, IMAGENET_DOGS = range(281, 286), range(151, 269)  # tabby … Egyptian cat; the 118 dog breeds
PET_HINT_BELOW = 0.3  # ImageNet's summed cat+dog probability under which a photo "does not look like" either
MAX_BATCH_PHOTOS = 1000
MAX_ZIP_MEMBER_BYTES = 50 * 1024 * 1024  # a photo inside a zip larger than this is skipped unread
BATCH_SIZE = 8
LANGUAGES = ("en", "zh")

# Every word the page says, as (English, simplified Chinese). Class names are never translated.
TEXTS: dict[str, tuple[str, str]] = {
    "title": ("{names} classifier", "{names} 分类器"),
    "model": ("**Model:** {arch} ({start})", "**模型**：{arch}（{start}）"),
    "scratch": ("trained from scratch", "从零训练"),
    "fine_tuned": ("fine-tuned from {weights}", "基于 {weights} 微调"),
    "classes": ("**Classes:** {names}", "**类别**：{names}"),
    "accuracy": ("**Val accuracy:** {accuracy:.1f}% (epoch {epoch})", "**验证集准确率**：{accuracy:.1f}%（第 {epoch} 轮）"),
    "saved": ("**Saved:** {saved}", "**保存时间**：{saved}"),
    "threshold": ("Say 'not sure' below this probability", "最高概率低于这个值时，回答“不确定”"),
    "one_photo": ("One photo", "单张照片"),
    "photo": ("Photo", "照片"),
    "show_heatmap": ("Show where the model looked (Grad-CAM heat map)", "显示模型在看哪里（Grad-CAM 热力图）"),
    "probabilities": ("Probabilities", "概率"),
    "heatmap": ("Heat map: red areas drove the answer most", "热力图：越红的地方，对结果的影响越大"),
    "examples": ("Examples", "示例"),
    "many_photos": ("Many photos", "多张照片"),
    "files": ("Photos, or a .zip of photos", "照片，或装有照片的 .zip 压缩包"),
    "classify_all": ("Classify all", "全部分类"),
    "results": ("Results", "结果"),
    "download_csv": ("Download the table as CSV", "下载表格（CSV）"),
    "columns": ("file,class,probability,note", "文件,类别,概率,备注"),
    "sure": ("## {best}\n{p:.0%} sure.", "## {best}\n有 {p:.0%} 的把握。"),
    "not_sure": ("## Not sure\nThe best guess is **{best}** at {p:.0%}, below the {threshold:.0%} threshold.",
                 "## 不确定\n最可能是 **{best}**，概率 {p:.0%}，低于 {threshold:.0%} 的阈值。"),
    "not_a_pet": ("this does not look like a cat or a dog", "这看起来既不像猫，也不像狗"),
    "pet_hint": ("⚠️ **Hint: {not_a_pet}.** The original ImageNet classifier gives cats and dogs only {share:.0%}; "
                 "this model only knows {names}, so its answer may mean nothing.",
                 "⚠️ **提示：{not_a_pet}**。原始的 ImageNet 分类器认为它是猫或狗的概率只有 {share:.0%}；"
                 "这个模型只认识 {names}，所以它的回答可能没有意义。"),
    "and": (" and ", "、"),
    "not_sure_note": ("not sure", "不确定"),
    "notes_joined_by": ("; ", "；"),
    "row_unusable": ("could not be used: {reason}", "无法使用：{reason}"),
    "skipped": ("skipped: over {mb} MB", "已跳过：超过 {mb} MB"),
    "upload_first": ("Please upload a photo first.", "请先上传一张照片。"),
    "unusable": ("This file could not be used: {reason}. Upload a photo: JPEG, PNG, BMP, GIF or WebP, at most 20 MB.",
                 "这个文件无法使用：{reason}。请上传 JPEG、PNG、BMP、GIF 或 WebP 格式的照片，不超过 20 MB。"),
    "choose_first": ("Please choose some photos, or a .zip of photos, first.", "请先选择照片，或装有照片的 .zip 压缩包。"),
    "only_first": ("Only the first {n} photos were classified.", "只分类了前 {n} 张照片。"),
    "classifying": ("classifying", "正在分类"),
    "photos_unit": ("photos", "张"),
}
# common.explain_unreadable's English reasons in Chinese; a reason not listed here stays in English.
REASONS_ZH = [(r"too many pixels \(over (\d+) megapixels\).*", "像素太多（超过 {0} 百万像素），可能是恶意的“解压炸弹”，已拒绝"),
              (r"the file is cut short.*", "文件不完整（比如下载中断了）"),
              (r"not an image file.*", "不是图片文件，或者是 Pillow 读不了的格式"),
              (r"cannot be decoded \((.*)\)", "无法解码（{0}）")]
# The page's fixed words, handed to Gradio's frontend (gr.I18n) instead of computed per request.
PAGE_KEYS = ["threshold", "one_photo", "photo", "show_heatmap", "probabilities", "heatmap", "examples", "many_photos",
             "files", "classify_all", "results", "download_csv"]
NOT_A_PET = TEXTS["not_a_pet"][0]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Serve a trained checkpoint as a Gradio web page.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default=None,
                        help="default: checkpoint/best_checkpoint.pth, else checkpoint/latest_checkpoint.pth")
    parser.add_argument("--data-dir", default="datasets", help="example photos are taken from DATA_DIR/val/ when present")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 makes the page reachable from other machines")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also publish a temporary public link through Gradio")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="mixed precision (default: where the device computes it natively)")
    parser.add_argument("--threshold", type=float, default=DOUBT_THRESHOLD,
                        help="the page's initial 'not sure' threshold on the top probability (adjustable on the page)")
    parser.add_argument("--heatmap", action=argparse.BooleanOptionalAction, default=True,
                        help="show the Grad-CAM heat map by default (a checkbox on the page switches it)")
    parser.add_argument("--pet-check", action=argparse.BooleanOptionalAction, default=True,
                        help="warn when a photo looks like neither cat nor dog to the original ImageNet classifier")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="answer single photos with a torch.compile'd model, compiled in the background at start "
                             "(default: on CPUs, where it was measured: 31 instead of 41 ms per photo)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="requests computed at once (default: 1 on CPU, whose cores one request already uses; 2 on GPU)")
    parser.add_argument("--language", choices=["auto", *LANGUAGES], default="auto",
                        help="the page's language: auto follows each browser (Chinese for Chinese browsers, else English)")
    return parser


def text(key: str, language: str = "en", **values: Any) -> str:
    """One of TEXTS in the given language, its {placeholders} filled in."""
    return TEXTS[key][LANGUAGES.index(language)].format(**values)


def language_of(request: gr.Request | None, forced: str = "auto") -> str:
    """'zh' or 'en' for whoever sent the request: --language when given, else the browser's first language.

    Gradio's frontend picks the page's fixed words by the browser's language too, so labels and answers agree.
    Scripts send no Accept-Language and get English, as before.
    """
    if forced != "auto":
        return forced
    headers = getattr(request, "headers", None) or {}
    first = (headers.get("accept-language") or "").split(",")[0].strip().lower()
    return "zh" if first.startswith("zh") else "en"


def reason_in(language: str, error: Exception) -> str:
    """common.explain_unreadable's plain words for a failed upload, in the given language."""
    reason = explain_unreadable(error)
    for pattern, chinese in REASONS_ZH if language == "zh" else []:
        if found := re.fullmatch(pattern, reason, flags=re.DOTALL):
            return chinese.format(*found.groups())
    return reason


def page_translations(meta: Checkpoint, checkpoint_path: Path, language: str = "auto") -> gr.I18n:
    """The page's fixed words in both languages, for Gradio's frontend to show the browser's own.

    The frontend looks a zh-CN browser's words up under "zh-CN", then "zh", then "en": so "zh" serves every
    Chinese browser and "en" all others, and a forced --language puts its words under both.
    """
    words = {}
    for lang in LANGUAGES:
        title = text("title", lang, names=" vs ".join(name.capitalize() for name in meta["class_names"]))
        words[lang] = {key: text(key, lang) for key in PAGE_KEYS}
        words[lang]["header"] = f"# {title}\n{describe(meta, checkpoint_path, lang)}"
    return gr.I18n(**{lang: words[lang if language == "auto" else language] for lang in LANGUAGES})


def find_examples(data_dir: str | os.PathLike, per_class: int = EXAMPLES_PER_CLASS) -> list[str]:
    """A few photos from each class folder under DATA_DIR/val/, so the page can be tried in one click."""
    val_dir = Path(data_dir) / "val"
    if not val_dir.is_dir():
        return []
    folders = sorted(p for p in val_dir.iterdir() if p.is_dir()) or [val_dir]
    examples = []
    for folder in folders:
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        examples += [str(p) for p in photos[:per_class]]
    return examples


def compile_by_default(device: torch.device, requested: bool | None) -> bool:
    """--compile / --no-compile as given, else on for CPUs: the only devices it was measured on here."""
    return device.type == "cpu" if requested is None else requested


def make_batch_predict(model: torch.nn.Module, meta: Checkpoint, device: torch.device,
                       amp_dtype: torch.dtype | None = None, compile_model: bool = False,
                       wait_for_compile: bool = False) -> Callable[[list[Image.Image]], torch.Tensor]:
    """Photos in, an (N, classes) tensor of probabilities out.

    The transform is built once here, not per call; the model is a folded, NHWC copy in
    bf16/fp16 where the device computes it natively (see common.prepare_for_inference).
    With compile_model, single photos go to a torch.compile'd copy once it is ready: it is
    compiled in a background thread, so the page answers (uncompiled) from the first second.
    """
    transform = checkpoint_transform(meta)
    fast_model = prepare_for_inference(model, device, amp_dtype)
    memory_format = torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format
    one_photo_model = {"model": fast_model}  # swapped for the compiled model when it is ready

    def to_batch(images: list[Image.Image]) -> torch.Tensor:
        batch = torch.stack([transform(image) for image in images]).to(device, dtype=amp_dtype or torch.float32)
        return batch.contiguous(memory_format=memory_format)

    def compile_one_photo_model() -> None:
        size = meta["image_size"]
        compiled = compile_for_inference(fast_model, to_batch([Image.new("RGB", (size, size))]))
        if compiled is not None:
            one_photo_model["model"] = compiled
            print("compiled the model: single photos are answered by the compiled copy from now on", flush=True)

    if compile_model and wait_for_compile:
        compile_one_photo_model()
    elif compile_model:
        threading.Thread(target=compile_one_photo_model, name="compile", daemon=True).start()

    @torch.inference_mode()
    def batch_predict(images: list[Image.Image]) -> torch.Tensor:
        # Compiled for one photo only: other batch sizes would each trigger a new compile.
        answering = one_photo_model["model"] if len(images) == 1 else fast_model
        return torch.softmax(answering(to_batch(images)).float(), dim=1).cpu()

    return batch_predict


def make_predict(model: torch.nn.Module, meta: Checkpoint, device: torch.device,
                 amp_dtype: torch.dtype | None = None, compile_model: bool = False,
                 wait_for_compile: bool = False) -> Callable[[str | None], dict[str, float]]:
    """The /predict API: a photo's path in, {class name: probability} out."""
    batch_predict = make_batch_predict(model, meta, device, amp_dtype, compile_model, wait_for_compile)

    def predict(image_path: str | None) -> dict[str, float]:
        probabilities = batch_predict([open_upload(image_path)])[0].tolist()
        return dict(zip(meta["class_names"], probabilities, strict=True))

    return predict


def open_upload(image_path: str | Exception | None, language: str = "en") -> Image.Image:
    """The uploaded photo, or the page's one message for an upload that is not a usable photo, whichever step found out.

    An exception in place of the path is Gradio's own failure to open it (see readable_upload_errors).
    """
    if not image_path:
        raise gr.Error(text("upload_first", language))
    try:
        if isinstance(image_path, Exception):
            raise image_path
        return open_image(image_path)
    except UNREADABLE_IMAGE_ERRORS as error:
        raise gr.Error(text("unusable", language, reason=reason_in(language, error))) from None


def load_pet_check(meta: Checkpoint, device: torch.device,
                   amp_dtype: torch.dtype | None) -> Callable[[list[Image.Image]], torch.Tensor] | None:
    """The original ImageNet classifier, answering how much of each photo is 'some cat or dog breed'.

    Only for cat/dog models fine-tuned from ImageNet weights: those weights are then cached on
    this machine (or a local .pth), so nothing is downloaded for a from-scratch model.
    """
    weights = str(meta["weights"] or "none")
    if weights.lower() == "none" or sorted(name.lower() for name in meta["class_names"]) != ["cat", "dog"]:
        return None
    try:
        state = pretrained_state_dict(meta["arch"], weights)
    except SystemExit as error:  # no internet and no cached file: the page works without the hint
        print(f"note: no 'not a cat or dog' warning, the ImageNet weights are not available ({error})".splitlines()[0])
        return None
    if state.get("fc.weight") is None or state["fc.weight"].shape[0] != 1000:
        return None
    imagenet_model = build_model(meta["arch"], 1000)
    imagenet_model.load_state_dict(state)
    batch_predict = make_batch_predict(imagenet_model, meta, device, amp_dtype)
    pet_classes = list(IMAGENET_CATS) + list(IMAGENET_DOGS)
    return lambda images: batch_predict(images)[:, pet_classes].sum(dim=1)


def make_heatmap(model: torch.nn.Module, meta: Checkpoint, device: torch.device) -> Callable[[Image.Image, int], Image.Image]:
    """Grad-CAM (Selvaraju et al.) with Captum: which parts of the photo pushed the model towards a class."""
    import matplotlib
    from captum.attr import LayerGradCam

    transform, grad_cam = checkpoint_transform(meta), LayerGradCam(model, model.layer4)
    colormap = matplotlib.colormaps["jet"]

    def heatmap(image: Image.Image, class_index: int) -> Image.Image:
        with torch.enable_grad():  # in fp32 on the unfolded model: gradients need the real layers
            cam = grad_cam.attribute(transform(image).unsqueeze(0).to(device), target=class_index, relu_attributions=True)
        shown = ImageOps.contain(image, (512, 512))  # small photos are enlarged too, so the map can be seen
        cam = torch.nn.functional.interpolate(cam, size=shown.size[::-1], mode="bilinear")[0, 0]
        cam = (cam / cam.max().clamp(min=1e-8)).detach().cpu().numpy()  # scaled so that the strongest area is red
        colors = Image.fromarray((colormap(cam)[..., :3] * 255).astype("uint8"))
        return Image.blend(shown, colors, alpha=0.45)

    return heatmap


def describe(meta: Checkpoint, checkpoint_path: Path, language: str = "en") -> str:
    """What is loaded, in one line of Markdown for the top of the page."""
    weights = str(meta["weights"] or "unknown")
    start = text("scratch", language) if weights.lower() == "none" else text("fine_tuned", language, weights=weights)
    parts = [text("model", language, arch=meta["arch"], start=start),
             text("classes", language, names=", ".join(meta["class_names"]))]
    accuracy = meta["metrics"].get("val_acc")
    if accuracy is not None:
        parts.append(text("accuracy", language, accuracy=accuracy, epoch=meta["epoch"]))
    if meta["saved_at"]:
        parts.append(text("saved", language, saved=meta["saved_at"].replace("T", " ")))
    return " · ".join(parts + [f"`{checkpoint_path}`"])


def verdict(probabilities: dict[str, float], threshold: float, pet_share: float | None, language: str = "en") -> str:
    """The sentence beside the probabilities: a verdict only when the model is sure enough."""
    best = max(probabilities, key=probabilities.get)
    key = "sure" if probabilities[best] >= threshold else "not_sure"
    answer = text(key, language, best=best, p=probabilities[best], threshold=threshold)
    if pet_share is not None and pet_share < PET_HINT_BELOW:
        answer += "\n\n" + text("pet_hint", language, not_a_pet=text("not_a_pet", language), share=pet_share,
                                names=text("and", language).join(probabilities))
    return answer


def readable_upload_errors(component: gr.Image) -> gr.Image:
    """Gradio opens uploads itself before the page's function runs; hand its failures to the function.

    Without this a text file named .jpg gives the page only "Error" and the log a traceback. The function,
    not this step, words the message: only it is told the browser's language (by gr.Request).
    """
    original = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return original(payload)
        except UNREADABLE_IMAGE_ERRORS as error:
            return error

    component.preprocess = preprocess
    return component


def uploaded_photos(paths: list[str], language: str = "en") -> Iterator[tuple[str, Image.Image | str]]:
    """(name, photo) for every uploaded file and every file inside uploaded zips; a reason instead of a photo when unreadable."""
    for path in paths:
        if path.lower().endswith(".zip") and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    name = zip_member_name(info)
                    if info.is_dir() or "__MACOSX" in name or Path(name).name.startswith("."):
                        continue
                    if info.file_size > MAX_ZIP_MEMBER_BYTES:
                        yield name, text("skipped", language, mb=MAX_ZIP_MEMBER_BYTES // 2**20)
                        continue
                    yield name, read_photo(archive, info, language)
        else:
            yield Path(path).name, read_photo(path, language=language)


def read_photo(source: str | zipfile.ZipFile, member: zipfile.ZipInfo | None = None,
               language: str = "en") -> Image.Image | str:
    """The photo at a path or in a zip, or the reason it cannot be used."""
    try:
        return open_image(io.BytesIO(source.read(member)) if member else source)
    except (*UNREADABLE_IMAGE_ERRORS, zipfile.BadZipFile) as error:
        return text("row_unusable", language, reason=reason_in(language, error))


def make_classify_many(batch_predict: Callable, class_names: list[str], pet_check: Callable | None,
                       forced_language: str = "auto") -> Callable:
    """The "Many photos" tab: files or zips in, a table (file, class, probability, note) and its CSV out."""

    # Gradio passes a gr.Request to a parameter annotated so, and a progress tracker to a gr.Progress default.
    def classify_many(paths: list[str] | None, threshold: float, request: gr.Request,
                      progress: gr.Progress = gr.Progress()) -> tuple[dict, str]:  # noqa: B008
        language = language_of(request, forced_language)
        if not paths:
            raise gr.Error(text("choose_first", language))
        rows, pending = [], []  # pending: (row, photo) waiting for a full batch

        def flush() -> None:
            probabilities = batch_predict([photo for _, photo in pending])
            pet_shares = pet_check([photo for _, photo in pending]).tolist() if pet_check else [None] * len(pending)
            for (row, _), p, pet_share in zip(pending, probabilities.tolist(), pet_shares, strict=True):
                best = max(range(len(p)), key=p.__getitem__)
                notes = [] if p[best] >= threshold else [text("not_sure_note", language)]
                notes += [text("not_a_pet", language)] if pet_share is not None and pet_share < PET_HINT_BELOW else []
                row[1:] = [class_names[best], round(p[best], 4), text("notes_joined_by", language).join(notes)]
            pending.clear()

        for count, (name, photo) in enumerate(uploaded_photos(paths, language), start=1):
            if count > MAX_BATCH_PHOTOS:
                gr.Warning(text("only_first", language, n=MAX_BATCH_PHOTOS))
                break
            rows.append([name, "", None, photo if isinstance(photo, str) else ""])
            if not isinstance(photo, str):
                pending.append((rows[-1], photo))
            if len(pending) == BATCH_SIZE:
                flush()
                progress((count, None), desc=text("classifying", language), unit=text("photos_unit", language))
        if pending:
            flush()
        columns = text("columns", language).split(",")
        csv_path = Path(tempfile.mkdtemp(prefix="predictions-")) / "predictions.csv"
        with open(csv_path, "w", newline="", encoding="utf-8-sig") as file:  # the BOM lets Excel read Chinese names
            csv.writer(file).writerows([columns, *rows])
        return {"headers": columns, "data": rows}, str(csv_path)

    return classify_many


def make_classify(model: torch.nn.Module, meta: Checkpoint, device: torch.device, batch_predict: Callable,
                  pet_share_of: Callable | None, forced_language: str = "auto") -> tuple[Callable, Callable]:
    """The "One photo" tab's functions: /classify (probabilities, verdict, heat map) and /predict (probabilities)."""
    class_names = meta["class_names"]
    heatmap = make_heatmap(model, meta, device)

    def probabilities_of(image: Image.Image) -> dict[str, float]:
        return dict(zip(class_names, batch_predict([image])[0].tolist(), strict=True))

    def predict(image_path: str | Exception | None, request: gr.Request) -> dict[str, float]:
        return probabilities_of(open_upload(image_path, language_of(request, forced_language)))

    def classify(image_path: str | Exception | None, threshold: float, show_heatmap: bool,
                 request: gr.Request) -> tuple[dict, str, Image.Image | None]:
        if not image_path:  # the photo was cleared
            return {}, "", None
        language = language_of(request, forced_language)
        image = open_upload(image_path, language)
        probabilities = probabilities_of(image)
        pet_share = pet_share_of([image]).item() if pet_share_of else None
        best = max(range(len(class_names)), key=lambda i: probabilities[class_names[i]])
        return (probabilities, verdict(probabilities, threshold, pet_share, language),
                heatmap(image, best) if show_heatmap else None)

    return classify, predict


def build_demo(model: torch.nn.Module, meta: Checkpoint, device: torch.device, examples: list[str],
               amp_dtype: torch.dtype | None = None, checkpoint_path: Path = Path("checkpoint"),
               threshold: float = DOUBT_THRESHOLD, show_heatmap: bool = True, pet_check: bool = True,
               compile_model: bool = False, language: str = "auto", i18n: gr.I18n | None = None) -> gr.Blocks:
    """The page. Its fixed words are keys into i18n (page_translations), which launch() must be given too;
    its answers are worded per request, in language_of(request, language)."""
    class_names = meta["class_names"]
    batch_predict = make_batch_predict(model, meta, device, amp_dtype, compile_model)
    pet_share_of = load_pet_check(meta, device, amp_dtype) if pet_check else None
    classify, predict = make_classify(model, meta, device, batch_predict, pet_share_of, language)
    words = i18n or page_translations(meta, checkpoint_path, language)

    def empty_table(request: gr.Request) -> dict:  # column names in the browser's language before the first run
        return {"headers": text("columns", language_of(request, language)).split(","), "data": []}

    # The browser tab's title is not translated by Gradio's frontend: the class names alone suit both languages.
    with gr.Blocks(title=" vs ".join(name.capitalize() for name in class_names)) as demo:
        gr.Markdown(words("header"))
        threshold_slider = gr.Slider(0.0, 1.0, value=threshold, step=0.01, label=words("threshold"), elem_id="threshold")
        with gr.Tab(words("one_photo")):
            with gr.Row():
                with gr.Column():
                    image = readable_upload_errors(gr.Image(type="filepath", image_mode=None, label=words("photo"),
                                                            height=320, elem_id="photo"))
                    heatmap_box = gr.Checkbox(value=show_heatmap, label=words("show_heatmap"), elem_id="show-heatmap")
                with gr.Column():
                    answer = gr.Markdown(elem_id="verdict")
                    label = gr.Label(num_top_classes=len(class_names), label=words("probabilities"), show_heading=False,
                                     elem_id="probabilities")
                    heatmap_image = gr.Image(label=words("heatmap"), interactive=False, height=320, elem_id="heatmap")
            if examples:
                gr.Examples(examples, inputs=image, label=words("examples"))
            gr.on([image.change, threshold_slider.change, heatmap_box.change], classify, trigger_mode="always_last",
                  inputs=[image, threshold_slider, heatmap_box], outputs=[label, answer, heatmap_image], api_name="classify")
            # The tutorial's API, one photo in and the probabilities out, kept for scripts (see the docstring).
            gr.Button(visible=False).click(predict, inputs=image, outputs=label, api_name="predict")
        with gr.Tab(words("many_photos")):
            files = gr.File(file_count="multiple", label=words("files"), elem_id="many-photos")
            run_many = gr.Button(words("classify_all"), variant="primary")
            table = gr.Dataframe(headers=text("columns").split(","), label=words("results"), interactive=False,
                                 elem_id="results")
            csv_file = gr.File(label=words("download_csv"), elem_id="results-csv")
            run_many.click(make_classify_many(batch_predict, class_names, pet_share_of, language),
                           inputs=[files, threshold_slider], outputs=[table, csv_file], api_name="classify_many")
        demo.load(empty_table, outputs=table, queue=False, api_visibility="private")
    return demo


def main(args: argparse.Namespace) -> None:
    checkpoint_path = find_checkpoint(args.checkpoint)
    device = pick_device(args.device)
    try:
        model, meta = load_checkpoint(checkpoint_path, device)
    except (ValueError, KeyError, RuntimeError) as error:
        raise SystemExit(f"cannot load {checkpoint_path}: {error}") from None
    print(f"loaded {checkpoint_path} ({meta['arch']}, classes {meta['class_names']}) on {device}", flush=True)
    amp_dtype = autocast_dtype(device) if args.amp is not False else None
    if args.amp and amp_dtype is None:
        amp_dtype = torch.bfloat16
    i18n = page_translations(meta, checkpoint_path, args.language)
    demo = build_demo(model, meta, device, find_examples(args.data_dir), amp_dtype, checkpoint_path,
                      args.threshold, args.heatmap, args.pet_check,
                      compile_model=compile_by_default(device, args.compile), language=args.language, i18n=i18n)
    # One request already uses every CPU core, so more at once would only make each slower; the queue
    # holds the rest (up to 100) and answers them in turn while the page itself stays served.
    concurrency = args.concurrency or (2 if device.type == "cuda" else 1)
    demo.queue(default_concurrency_limit=concurrency, max_size=100)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD,
                allowed_paths=[str(Path(args.data_dir).resolve())], show_error=True, i18n=i18n)


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    sys.exit(main(get_args_parser().parse_args()))
