"""A web page that classifies uploaded photos with a trained checkpoint (the tutorial's Gradio demo, grown up).

    python app.py                                  # checkpoint/best_checkpoint.pth, http://127.0.0.1:7860
    python app.py --checkpoint path/to/model.pth --port 8000 --share

One photo: the label with every class's probability, "not sure" below a threshold, a
Grad-CAM heat map of where the model looked, and (for cat/dog models fine-tuned from
ImageNet weights) a warning when the photo shows neither. Many photos: a table and a CSV.

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
UPLOAD_HINT = "Upload a photo: JPEG, PNG, BMP, GIF or WebP, at most 20 MB."
EXAMPLES_PER_CLASS = 2
DOUBT_THRESHOLD = 0.7  # below this top probability the page says "not sure"
IMAGENET_CATS, IMAGENET_DOGS = range(281, 286), range(151, 269)  # tabby … Egyptian cat; the 118 dog breeds
PET_HINT_BELOW = 0.3  # ImageNet's summed cat+dog probability under which a photo "does not look like" either
MAX_BATCH_PHOTOS = 1000
MAX_ZIP_MEMBER_BYTES = 50 * 1024 * 1024  # a photo inside a zip larger than this is skipped unread
BATCH_SIZE = 8
NOT_A_PET = "this does not look like a cat or a dog"


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


def unusable_upload(error: Exception) -> gr.Error:
    """The page's one message for an upload that is not a usable photo, whichever step found out."""
    return gr.Error(f"This file could not be used: {explain_unreadable(error)}. {UPLOAD_HINT}")


def open_upload(image_path: str | None) -> Image.Image:
    if not image_path:
        raise gr.Error("Please upload a photo first.")
    try:
        return open_image(image_path)
    except UNREADABLE_IMAGE_ERRORS as error:
        raise unusable_upload(error) from None


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


def describe(meta: Checkpoint, checkpoint_path: Path) -> str:
    """What is loaded, in one line of Markdown for the top of the page."""
    weights = str(meta["weights"] or "unknown")
    start = "trained from scratch" if weights.lower() == "none" else f"fine-tuned from {weights}"
    parts = [f"**Model:** {meta['arch']} ({start})", f"**Classes:** {', '.join(meta['class_names'])}"]
    accuracy = meta["metrics"].get("val_acc")
    if accuracy is not None:
        parts.append(f"**Val accuracy:** {accuracy:.1f}% (epoch {meta['epoch']})")
    if meta["saved_at"]:
        parts.append(f"**Saved:** {meta['saved_at'].replace('T', ' ')}")
    return " · ".join(parts + [f"`{checkpoint_path}`"])


def verdict(probabilities: dict[str, float], threshold: float, pet_share: float | None) -> str:
    """The sentence beside the probabilities: a verdict only when the model is sure enough."""
    best = max(probabilities, key=probabilities.get)
    if probabilities[best] >= threshold:
        text = f"## {best}\n{probabilities[best]:.0%} sure."
    else:
        text = (f"## Not sure\nThe best guess is **{best}** at {probabilities[best]:.0%}, "
                f"below the {threshold:.0%} threshold.")
    if pet_share is not None and pet_share < PET_HINT_BELOW:
        text += (f"\n\n⚠️ **Hint: {NOT_A_PET}.** The original ImageNet classifier gives cats and dogs "
                 f"only {pet_share:.0%}; this model only knows {' and '.join(probabilities)}, so its answer may mean nothing.")
    return text


def readable_upload_errors(component: gr.Image) -> gr.Image:
    """Gradio opens uploads itself before the page's function runs; turn its failures into plain words.

    Without this a text file named .jpg gives the page only "Error" and the log a traceback.
    """
    original = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return original(payload)
        except UNREADABLE_IMAGE_ERRORS as error:
            raise unusable_upload(error) from None

    component.preprocess = preprocess
    return component


def uploaded_photos(paths: list[str]) -> Iterator[tuple[str, Image.Image | str]]:
    """(name, photo) for every uploaded file and every file inside uploaded zips; a reason instead of a photo when unreadable."""
    for path in paths:
        if path.lower().endswith(".zip") and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    name = zip_member_name(info)
                    if info.is_dir() or "__MACOSX" in name or Path(name).name.startswith("."):
                        continue
                    if info.file_size > MAX_ZIP_MEMBER_BYTES:
                        yield name, f"skipped: over {MAX_ZIP_MEMBER_BYTES // 2**20} MB"
                        continue
                    yield name, read_photo(archive, info)
        else:
            yield Path(path).name, read_photo(path)


def read_photo(source: str | zipfile.ZipFile, member: zipfile.ZipInfo | None = None) -> Image.Image | str:
    """The photo at a path or in a zip, or the reason it cannot be used."""
    try:
        return open_image(io.BytesIO(source.read(member)) if member else source)
    except (*UNREADABLE_IMAGE_ERRORS, zipfile.BadZipFile) as error:
        return f"could not be used: {explain_unreadable(error)}"


def make_classify_many(batch_predict: Callable, class_names: list[str], pet_check: Callable | None) -> Callable:
    """The "Many photos" tab: files or zips in, a table (file, class, probability, note) and its CSV out."""

    # Gradio recognizes a gr.Progress default and passes a tracker that draws a progress bar on the page.
    def classify_many(paths: list[str] | None, threshold: float,
                      progress: gr.Progress = gr.Progress()) -> tuple[list, str]:  # noqa: B008
        if not paths:
            raise gr.Error("Please choose some photos, or a .zip of photos, first.")
        rows, pending = [], []  # pending: (row, photo) waiting for a full batch

        def flush() -> None:
            probabilities = batch_predict([photo for _, photo in pending])
            pet_shares = pet_check([photo for _, photo in pending]).tolist() if pet_check else [None] * len(pending)
            for (row, _), p, pet_share in zip(pending, probabilities.tolist(), pet_shares, strict=True):
                best = max(range(len(p)), key=p.__getitem__)
                notes = [] if p[best] >= threshold else ["not sure"]
                notes += [NOT_A_PET] if pet_share is not None and pet_share < PET_HINT_BELOW else []
                row[1:] = [class_names[best], round(p[best], 4), "; ".join(notes)]
            pending.clear()

        for count, (name, photo) in enumerate(uploaded_photos(paths), start=1):
            if count > MAX_BATCH_PHOTOS:
                gr.Warning(f"Only the first {MAX_BATCH_PHOTOS} photos were classified.")
                break
            rows.append([name, "", None, photo if isinstance(photo, str) else ""])
            if not isinstance(photo, str):
                pending.append((rows[-1], photo))
            if len(pending) == BATCH_SIZE:
                flush()
                progress((count, None), desc="classifying", unit="photos")
        if pending:
            flush()
        csv_path = Path(tempfile.mkdtemp(prefix="predictions-")) / "predictions.csv"
        with open(csv_path, "w", newline="", encoding="utf-8-sig") as file:  # the BOM lets Excel read Chinese names
            csv.writer(file).writerows([["file", "class", "probability", "note"], *rows])
        return rows, str(csv_path)

    return classify_many


def build_demo(model: torch.nn.Module, meta: Checkpoint, device: torch.device, examples: list[str],
               amp_dtype: torch.dtype | None = None, checkpoint_path: Path = Path("checkpoint"),
               threshold: float = DOUBT_THRESHOLD, show_heatmap: bool = True, pet_check: bool = True,
               compile_model: bool = False) -> gr.Blocks:
    class_names = meta["class_names"]
    batch_predict = make_batch_predict(model, meta, device, amp_dtype, compile_model)
    heatmap = make_heatmap(model, meta, device)
    pet_share_of = load_pet_check(meta, device, amp_dtype) if pet_check else None

    def probabilities_of(image: Image.Image) -> dict[str, float]:
        return dict(zip(class_names, batch_predict([image])[0].tolist(), strict=True))

    def predict(image_path: str | None) -> dict[str, float]:
        return probabilities_of(open_upload(image_path))

    def classify(image_path: str | None, threshold: float, show_heatmap: bool) -> tuple[dict, str, Image.Image | None]:
        if not image_path:  # the photo was cleared
            return {}, "", None
        image = open_upload(image_path)
        probabilities = probabilities_of(image)
        pet_share = pet_share_of([image]).item() if pet_share_of else None
        best = max(range(len(class_names)), key=lambda i: probabilities[class_names[i]])
        return probabilities, verdict(probabilities, threshold, pet_share), heatmap(image, best) if show_heatmap else None

    title = " vs ".join(name.capitalize() for name in class_names) + " classifier"
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\n{describe(meta, checkpoint_path)}")
        threshold_slider = gr.Slider(0.0, 1.0, value=threshold, step=0.01, label="Say 'not sure' below this probability",
                                     elem_id="threshold")
        with gr.Tab("One photo"):
            with gr.Row():
                with gr.Column():
                    image = readable_upload_errors(gr.Image(type="filepath", image_mode=None, label="Photo", height=320,
                                                                elem_id="photo"))
                    heatmap_box = gr.Checkbox(value=show_heatmap, label="Show where the model looked (Grad-CAM heat map)")
                with gr.Column():
                    answer = gr.Markdown(elem_id="verdict")
                    label = gr.Label(num_top_classes=len(class_names), label="Probabilities", show_heading=False,
                                     elem_id="probabilities")
                    heatmap_image = gr.Image(label="Heat map: red areas drove the answer most", interactive=False,
                                             height=320, elem_id="heatmap")
            if examples:
                gr.Examples(examples, inputs=image)
            gr.on([image.change, threshold_slider.change, heatmap_box.change], classify, trigger_mode="always_last",
                  inputs=[image, threshold_slider, heatmap_box], outputs=[label, answer, heatmap_image], api_name="classify")
            # The tutorial's API, one photo in and the probabilities out, kept for scripts (see the docstring).
            gr.Button(visible=False).click(predict, inputs=image, outputs=label, api_name="predict")
        with gr.Tab("Many photos"):
            files = gr.File(file_count="multiple", label="Photos, or a .zip of photos", elem_id="many-photos")
            run_many = gr.Button("Classify all", variant="primary")
            table = gr.Dataframe(headers=["file", "class", "probability", "note"], label="Results", interactive=False,
                                 elem_id="results")
            csv_file = gr.File(label="Download the table as CSV", elem_id="results-csv")
            run_many.click(make_classify_many(batch_predict, class_names, pet_share_of), inputs=[files, threshold_slider],
                           outputs=[table, csv_file], api_name="classify_many")
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
    demo = build_demo(model, meta, device, find_examples(args.data_dir), amp_dtype, checkpoint_path,
                      args.threshold, args.heatmap, args.pet_check,
                      compile_model=compile_by_default(device, args.compile))
    # One request already uses every CPU core, so more at once would only make each slower; the queue
    # holds the rest (up to 100) and answers them in turn while the page itself stays served.
    concurrency = args.concurrency or (2 if device.type == "cuda" else 1)
    demo.queue(default_concurrency_limit=concurrency, max_size=100)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD,
                allowed_paths=[str(Path(args.data_dir).resolve())], show_error=True)


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    sys.exit(main(get_args_parser().parse_args()))
