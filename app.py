"""A web page that classifies uploaded photos with a trained checkpoint (the tutorial's Gradio demo).

    python app.py                                  # checkpoint/best_checkpoint.pth, http://127.0.0.1:7860
    python app.py --checkpoint path/to/model.pth --port 8000 --share

The API endpoint is /predict (one image in, the label with every class's probability out):
    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860/").predict(handle_file("cat.jpg"), api_name="/predict")
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home: many users are offline

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from common import (  # noqa: E402
    IMAGE_EXTENSIONS,
    UNREADABLE_IMAGE_ERRORS,
    autocast_dtype,
    checkpoint_transform,
    explain_unreadable,
    find_checkpoint,
    load_checkpoint,
    open_image,
    pick_device,
    prepare_for_inference,
)

MAX_UPLOAD = "20mb"
UPLOAD_HINT = "Upload a photo: JPEG, PNG, BMP, GIF or WebP, at most 20 MB."
EXAMPLES_PER_CLASS = 2


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


def make_predict(model: torch.nn.Module, meta: dict[str, Any], device: torch.device,
                 amp_dtype: torch.dtype | None = None) -> Callable[[str | None], dict[str, float]]:
    """The page's function: a photo's path in, {class name: probability} out.

    The transform is built once here, not per call; the model is a folded, NHWC copy in
    bf16/fp16 where the device computes it natively (see common.prepare_for_inference).
    """
    transform = checkpoint_transform(meta)
    class_names = meta["class_names"]
    fast_model = prepare_for_inference(model, device, amp_dtype)
    channels_last = device.type in ("cpu", "cuda")

    @torch.inference_mode()
    def predict(image_path: str | None) -> dict[str, float]:
        if not image_path:
            raise gr.Error("Please upload a photo first.")
        try:
            image = open_image(image_path)
        except UNREADABLE_IMAGE_ERRORS as error:
            raise gr.Error(f"This file could not be used: {explain_unreadable(error)}. {UPLOAD_HINT}") from None
        batch = transform(image).unsqueeze(0).to(device, dtype=amp_dtype or torch.float32)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        probabilities = torch.softmax(fast_model(batch).float(), dim=1)[0].tolist()
        return {name: probability for name, probability in zip(class_names, probabilities, strict=True)}

    return predict


def readable_upload_errors(component: gr.Image) -> gr.Image:
    """Gradio opens uploads itself before `predict` runs; turn its failures into plain words.

    Without this a text file named .jpg gives the page only "Error" and the log a traceback.
    """
    original = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return original(payload)
        except UNREADABLE_IMAGE_ERRORS as error:
            raise gr.Error(f"This file could not be used: {explain_unreadable(error)}. {UPLOAD_HINT}") from None

    component.preprocess = preprocess
    return component


def build_demo(model: torch.nn.Module, meta: dict[str, Any], device: torch.device, examples: list[str],
               amp_dtype: torch.dtype | None = None) -> gr.Interface:
    class_names = meta["class_names"]
    accuracy = meta.get("metrics", {}).get("val_acc")
    details = f"{meta['arch']}, classes: {', '.join(class_names)}"
    if meta.get("epoch") is not None:
        details += f", epoch {meta['epoch']}"
    if accuracy is not None:
        details += f", val accuracy {accuracy:.1f}%"
    image_input = readable_upload_errors(gr.Image(type="filepath", image_mode=None, label="Photo"))
    return gr.Interface(
        fn=make_predict(model, meta, device, amp_dtype),
        inputs=image_input,
        outputs=gr.Label(num_top_classes=len(class_names), label="Prediction"),
        title=" vs ".join(name.capitalize() for name in class_names) + " classifier",
        description=f"Upload a photo and the model says which class it is. Model: {details}.",
        examples=examples or None,
        cache_examples=False,
        flagging_mode="never",
        api_name="predict",
    )


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
    demo = build_demo(model, meta, device, find_examples(args.data_dir), amp_dtype)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD,
                allowed_paths=[str(Path(args.data_dir).resolve())], show_error=True)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
