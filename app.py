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
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home: many users are offline

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from cats_dogs.checkpoint import Checkpoint, checkpoint_transform, find_checkpoint, load_checkpoint_or_exit  # noqa: E402
from cats_dogs.device import autocast_dtype, pick_device
from cats_dogs.engines import ENGINE_CHOICES, ENGINE_HELP, load_engine  # noqa: E402
from cats_dogs.hosting import is_loopback
from cats_dogs.images import IMAGE_EXTENSIONS, UNREADABLE_IMAGE_ERRORS, open_image, zip_member_name
from cats_dogs.inference import compile_by_default, make_batch_predict  # noqa: E402
from cats_dogs.model import build_model
from cats_dogs.process import make_console_safe
from cats_dogs.translations import LANGUAGES, TEXTS, language_of, page_translations, reason_in, text  # noqa: E402
from cats_dogs.weights import pretrained_state_dict
from cats_dogs.zips import MEMBER_READ_ERRORS, member_problem, read_problem

MAX_UPLOAD = "20mb"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
EXAMPLES_PER_CLASS = 2
DOUBT_THRESHOLD = 0.7  # below this top probability the page says "not sure"
IMAGENET_CATS, IMAGENET_DOGS = range(281, 286), range(151, 269)  # tabby … Egyptian cat; the 118 dog breeds
PET_HINT_BELOW = 0.3  # ImageNet's summed cat+dog probability under which a photo "does not look like" either
MAX_BATCH_PHOTOS = 1000
MAX_ZIP_MEMBER_BYTES = 50 * 1024 * 1024  # a photo inside a zip larger than this is skipped unread
MAX_ZIP_TOTAL_BYTES = 500 * 1024 * 1024  # one request's zips unpack to at most this much; the rest is skipped unread
KEEP_FILES_S = 3600  # uploads, heat maps and CSVs are deleted from Gradio's cache after an hour
BATCH_SIZE = 8
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
    parser.add_argument("--engine", choices=ENGINE_CHOICES, default="auto",
                        help=f"{ENGINE_HELP}. Built in the background at the first start (PyTorch answers meanwhile), "
                             "then cached beside the checkpoint")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="requests computed at once (default: 1 on CPU, whose cores one request already uses; 2 on GPU)")
    parser.add_argument("--language", choices=["auto", *LANGUAGES], default="auto",
                        help="the page's language: auto follows each browser (Chinese for Chinese browsers, else English)")
    return parser


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


def open_upload(image_path: str | Exception | None, language: str = "en") -> Image.Image:
    """The uploaded photo, or the page's one message for an upload that is not a usable photo, whichever step found out.

    An exception in place of the path is Gradio's own failure to open it (see readable_upload_errors).
    """
    if not image_path:
        raise gr.Error(text("upload_first", language))
    if isinstance(image_path, UploadTooLarge):
        raise gr.Error(text("unusable", language, reason=text("too_large", language, mb=MAX_UPLOAD_BYTES // 2**20)))
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


def verdict(probabilities: dict[str, float], threshold: float, pet_share: float | None, language: str = "en") -> str:
    """The sentence beside the probabilities: a verdict only when the model is sure enough."""
    best = max(probabilities, key=probabilities.get)
    key = "sure" if probabilities[best] >= threshold else "not_sure"
    answer = text(key, language, best=best, p=probabilities[best], threshold=threshold)
    if pet_share is not None and pet_share < PET_HINT_BELOW:
        answer += "\n\n" + text("pet_hint", language, not_a_pet=text("not_a_pet", language), share=pet_share,
                                names=text("and", language).join(probabilities))
    return answer


class UploadTooLarge(ValueError):
    """A photo sent inline (a data: URL) larger than the upload limit: refused before anything decodes it."""


def readable_upload_errors(component: gr.Image) -> gr.Image:
    """Gradio opens uploads itself before the page's function runs; hand its failures to the function.

    Without this a text file named .jpg gives the page only "Error" and the log a traceback. The function,
    not this step, words the message: only it is told the browser's language (by gr.Request).
    A photo may also come inline as a data: URL, which skips the upload route and its size limit: the same
    limit is applied here, before Gradio decodes it.
    """
    original = component.preprocess

    def preprocess(payload: Any) -> Any:
        url = getattr(payload, "url", None) or ""
        if url.startswith("data:") and len(url) * 3 // 4 > MAX_UPLOAD_BYTES:  # base64: 4 characters per 3 bytes
            return UploadTooLarge(f"over {MAX_UPLOAD}")
        try:
            return original(payload)
        except UNREADABLE_IMAGE_ERRORS as error:
            return error

    component.preprocess = preprocess
    return component


def uploaded_photos(paths: list[str], language: str = "en") -> Iterator[tuple[str, Image.Image | str]]:
    """(name, photo) for every uploaded file and every file inside uploaded zips; a reason instead of a photo when unreadable.

    A zip member that cannot be read (encrypted, deflate64, a path outside the zip) gets its own reason; members
    past MAX_ZIP_TOTAL_BYTES, all zips together, are skipped unread.
    """
    unpacked = 0
    for path in paths:
        if path.lower().endswith(".zip") and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    name = zip_member_name(info)
                    if info.is_dir() or "__MACOSX" in name or Path(name).name.startswith("."):
                        continue
                    if problem := member_problem(info):
                        yield name, text("row_unusable", language, reason=problem)
                    elif info.file_size > MAX_ZIP_MEMBER_BYTES:
                        yield name, text("skipped", language, mb=MAX_ZIP_MEMBER_BYTES // 2**20)
                    elif unpacked + info.file_size > MAX_ZIP_TOTAL_BYTES:
                        yield name, text("skipped_total", language, mb=MAX_ZIP_TOTAL_BYTES // 2**20)
                    else:
                        unpacked += info.file_size
                        yield name, read_photo(archive, info, language)
        else:
            yield Path(path).name, read_photo(path, language=language)


def read_photo(source: str | zipfile.ZipFile, member: zipfile.ZipInfo | None = None,
               language: str = "en") -> Image.Image | str:
    """The photo at a path or in a zip, or the reason it cannot be used."""
    if member:
        try:
            source = io.BytesIO(source.read(member))
        except MEMBER_READ_ERRORS as error:  # a bad CRC, a damaged stream: this member only
            return text("row_unusable", language, reason=read_problem(error))
    try:
        return open_image(source)
    except UNREADABLE_IMAGE_ERRORS as error:
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
        # Inside Gradio's own cache, which hands it out as is and deletes it with the uploads (KEEP_FILES_S):
        # a folder in the system's temp folder would be left behind by every request.
        cache = Path(gr.utils.get_upload_folder())
        cache.mkdir(parents=True, exist_ok=True)
        csv_path = Path(tempfile.mkdtemp(prefix="predictions-", dir=cache)) / "predictions.csv"
        with open(csv_path, "w", newline="", encoding="utf-8-sig") as file:  # the BOM lets Excel read Chinese names
            csv.writer(file).writerows([columns, *rows])
        return {"headers": columns, "data": rows}, str(csv_path)

    return classify_many


def make_classify(model: torch.nn.Module, meta: Checkpoint, device: torch.device, batch_predict: Callable,
                  pet_share_of: Callable | None, forced_language: str = "auto") -> tuple[Callable, Callable]:
    """The "One photo" tab's functions: /classify (probabilities, verdict, heat map) and /predict (probabilities)."""
    class_names = meta["class_names"]
    heatmap = make_heatmap(model, meta, device)

    def probabilities_of(image: Image.Image, tta: bool = False) -> dict[str, float]:
        return dict(zip(class_names, batch_predict([image], tta)[0].tolist(), strict=True))

    def predict(image_path: str | Exception | None, request: gr.Request) -> dict[str, float]:
        return probabilities_of(open_upload(image_path, language_of(request, forced_language)))

    def classify(image_path: str | Exception | None, threshold: float, show_heatmap: bool, tta: bool,
                 request: gr.Request) -> tuple[dict, str, Image.Image | None]:
        if not image_path:  # the photo was cleared
            return {}, "", None
        language = language_of(request, forced_language)
        image = open_upload(image_path, language)
        probabilities = probabilities_of(image, tta)  # tta: the mean with the mirrored photo (inference.py)
        pet_share = pet_share_of([image]).item() if pet_share_of else None
        best = max(range(len(class_names)), key=lambda i: probabilities[class_names[i]])
        return (probabilities, verdict(probabilities, threshold, pet_share, language),
                heatmap(image, best) if show_heatmap else None)

    return classify, predict


def build_demo(model: torch.nn.Module, meta: Checkpoint, device: torch.device, examples: list[str],
               amp_dtype: torch.dtype | None = None, checkpoint_path: Path = Path("checkpoint"),
               threshold: float = DOUBT_THRESHOLD, show_heatmap: bool = True, pet_check: bool = True,
               compile_model: bool = False, language: str = "auto", i18n: gr.I18n | None = None,
               engine: str = "torch", data_dir: str | None = None) -> gr.Blocks:
    """The page. Its fixed words are keys into i18n (page_translations), which launch() must be given too;
    its answers are worded per request, in language_of(request, language)."""
    class_names = meta["class_names"]
    # The engine (engines.py) is built in the background; its line, with why INT8 was not used, is shown on the page.
    engine_line = {"now": "engine: torch" if engine == "torch" else f"engine: torch until {engine} is ready"}

    def prepare_engine() -> Callable | None:
        run, engine_line["now"] = load_engine(engine, model, meta, checkpoint_path, device, amp_dtype, data_dir)
        print(engine_line["now"], flush=True)
        return run

    batch_predict = make_batch_predict(model, meta, device, amp_dtype, compile_model,
                                       engine=None if engine == "torch" else prepare_engine)
    pet_share_of = load_pet_check(meta, device, amp_dtype) if pet_check else None
    classify, predict = make_classify(model, meta, device, batch_predict, pet_share_of, language)
    words = i18n or page_translations(meta, checkpoint_path, language)

    def empty_table(request: gr.Request) -> dict:  # column names in the browser's language before the first run
        return {"headers": text("columns", language_of(request, language)).split(","), "data": []}

    # The browser tab's title is not translated by Gradio's frontend: the class names alone suit both languages.
    with gr.Blocks(title=" vs ".join(name.capitalize() for name in class_names),
                   delete_cache=(KEEP_FILES_S, KEEP_FILES_S)) as demo:
        gr.Markdown(words("header"))
        threshold_slider = gr.Slider(0.0, 1.0, value=threshold, step=0.01, label=words("threshold"), elem_id="threshold")
        with gr.Tab(words("one_photo")):
            with gr.Row():
                with gr.Column():
                    image = readable_upload_errors(gr.Image(type="filepath", image_mode=None, label=words("photo"),
                                                            height=320, elem_id="photo"))
                    heatmap_box = gr.Checkbox(value=show_heatmap, label=words("show_heatmap"), elem_id="show-heatmap")
                    tta_box = gr.Checkbox(value=False, label=words("tta"), elem_id="tta")
                with gr.Column():
                    answer = gr.Markdown(elem_id="verdict")
                    label = gr.Label(num_top_classes=len(class_names), label=words("probabilities"), show_heading=False,
                                     elem_id="probabilities")
                    heatmap_image = gr.Image(label=words("heatmap"), interactive=False, height=320, elem_id="heatmap")
            if examples:
                gr.Examples(examples, inputs=image, label=words("examples"))
            gr.on([image.change, threshold_slider.change, heatmap_box.change, tta_box.change], classify,
                  trigger_mode="always_last", inputs=[image, threshold_slider, heatmap_box, tta_box],
                  outputs=[label, answer, heatmap_image], api_name="classify")
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
        demo.load(lambda: f"<small>{engine_line['now']}</small>", outputs=gr.Markdown(elem_id="engine"), queue=False,
                  api_visibility="private")
    return demo


def main(args: argparse.Namespace) -> None:
    checkpoint_path = find_checkpoint(args.checkpoint)
    device = pick_device(args.device)
    model, meta = load_checkpoint_or_exit(checkpoint_path, device)
    print(f"loaded {checkpoint_path} ({meta['arch']}, classes {meta['class_names']}) on {device}", flush=True)
    amp_dtype = autocast_dtype(device) if args.amp is not False else None
    if args.amp and amp_dtype is None:
        amp_dtype = torch.bfloat16
    i18n = page_translations(meta, checkpoint_path, args.language)
    if not is_loopback(args.host):  # the page writes nothing, so a warning, not a refusal (review.py asks for --auth)
        print(f"warning: --host {args.host}: anyone who can reach this machine on port {args.port} can use the page "
              "(it has no login)", flush=True)
    demo = build_demo(model, meta, device, find_examples(args.data_dir), amp_dtype, checkpoint_path,
                      args.threshold, args.heatmap, args.pet_check,
                      compile_model=compile_by_default(device, args.compile), language=args.language, i18n=i18n,
                      engine=args.engine, data_dir=args.data_dir)
    # One request already uses every CPU core, so more at once would only make each slower; the queue
    # holds the rest (up to 100) and answers them in turn while the page itself stays served.
    concurrency = args.concurrency or (2 if device.type == "cuda" else 1)
    demo.queue(default_concurrency_limit=concurrency, max_size=100)
    # No allowed_paths: the example photos are served as Gradio's own copies, and nothing else of DATA_DIR
    # (CSVs, every photo, the photo cache, review decisions) may be fetched through the page.
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD,
                show_error=True, i18n=i18n)


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    sys.exit(main(get_args_parser().parse_args()))
