"""A web page that classifies uploaded photos with a trained checkpoint (the tutorial's Gradio demo, grown up).

    python app.py                                  # checkpoint/best_checkpoint.pth, http://127.0.0.1:7860
    python app.py --checkpoint path/to/model.pth --port 8000 --share

One photo: the label with every class's probability, "not sure" below a threshold, a
Grad-CAM heat map of where the model looked, and (for cat/dog models fine-tuned from
ImageNet weights) a warning when the photo shows neither. Many photos: a table and a CSV.
Live camera: the webcam's picture classified a few times a second (browsers allow it on localhost or https).
In Chinese for a browser whose language is Chinese, else in English; --language zh|en for everyone.

The API endpoint /predict takes one image and answers the label with every class's probability:
    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860/").predict(handle_file("cat.jpg"), api_name="/predict")
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home: many users are offline

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from cats_dogs.answers import BATCH_SIZE, answer_batch, prepared_engine, table_row, verdict, write_results_csv
from cats_dogs.checkpoint import Checkpoint, find_checkpoint, load_checkpoint_or_exit  # noqa: E402
from cats_dogs.device import autocast_dtype, pick_device
from cats_dogs.engine_build import PausedWhileAnswering
from cats_dogs.engines import ENGINE_CHOICES, ENGINE_HELP  # noqa: E402
from cats_dogs.explain import load_pet_check, make_heatmap
from cats_dogs.hosting import KEEP_FILES_S, PAGE_SESSIONS, QUEUE_MAX, busy_script, open_page_warnings
from cats_dogs.images import IMAGE_EXTENSIONS
from cats_dogs.inference import compile_by_default, make_batch_predict  # noqa: E402
from cats_dogs.photo_files import uploaded_photos
from cats_dogs.process import end_after_page_closed, make_console_safe
from cats_dogs.translations import DOUBT_THRESHOLD, LANGUAGES, TEXTS, columns, language_of, page_translations, text
from cats_dogs.uploads import MAX_UPLOAD_BYTES, open_upload, readable_upload_errors

EXAMPLES_PER_CLASS = 2
MAX_BATCH_PHOTOS = 1000
LIVE_EVERY = 0.3  # seconds between two frames of the live camera sent to be classified
LIVE_SECONDS = 300  # a live camera's stream stops after this; its button starts it again
LIVE_CAMERAS = 2  # live cameras classified at once (a stream holds its worker for its whole time)
NOT_A_PET = TEXTS["not_a_pet"][0]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Serve a trained checkpoint as a Gradio web page.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default=None,
                        help="default: checkpoint/best_checkpoint.pth, else checkpoint/latest_checkpoint.pth")
    parser.add_argument("--data-dir", default="datasets", help="example photos are taken from DATA_DIR/val/ when present")
    # Hugging Face Spaces start `python app.py` with these variables set (0.0.0.0, 7860): a flag still wins.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
                        help="0.0.0.0 makes the page reachable from other machines; default: $GRADIO_SERVER_NAME when "
                             "set, else 127.0.0.1 (here: %(default)s)")
    parser.add_argument("--port", type=int, default=os.environ.get("GRADIO_SERVER_PORT") or "7860",
                        help="default: $GRADIO_SERVER_PORT when set, else 7860 (here: %(default)s)")
    parser.add_argument("--share", action="store_true", help="also publish a temporary public link through Gradio")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="mixed precision (default: where the device computes it faster than fp32)")
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
                        help=f"{ENGINE_HELP}. train.py builds it after training; else it is built at the first start by a "
                             "process at the lowest priority (PyTorch answers meanwhile), then cached beside the checkpoint")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="requests computed at once (default: 1 on CPU, whose cores one request already uses; 2 on GPU)")
    parser.add_argument("--max-queue", type=int, default=QUEUE_MAX,
                        help="requests waiting their turn; more are refused at once with 'busy, try again'")
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


def make_classify_many(batch_predict: Callable, class_names: list[str], pet_check: Callable | None,
                       forced_language: str = "auto") -> Callable:
    """The "Many photos" tab: files or zips in, a table (file, class, probability, note) and its CSV out."""

    # Gradio passes a gr.Request to a parameter annotated so, and a progress tracker to a gr.Progress default.
    def classify_many(files: list[str] | None, threshold: float, request: gr.Request,
                      progress: gr.Progress = gr.Progress()) -> tuple[dict, str]:  # noqa: B008
        language = language_of(request, forced_language)
        if not files:
            raise gr.Error(text("choose_first", language))
        rows, pending = [], []  # pending: (row, photo) waiting for a full batch

        def flush() -> None:
            answers = answer_batch(batch_predict, pet_check, [photo for _, photo in pending])
            for (row, _), (p, pet_share) in zip(pending, answers, strict=True):
                row[1:] = table_row(p, class_names, threshold, pet_share, language)
            pending.clear()

        for count, (name, photo) in enumerate(uploaded_photos(files, language), start=1):
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
        headers = columns("results", language)
        # Inside Gradio's own cache, which hands it out as is and deletes it with the uploads (KEEP_FILES_S):
        # a folder in the system's temp folder would be left behind by every request.
        cache = Path(gr.utils.get_upload_folder())
        cache.mkdir(parents=True, exist_ok=True)
        csv_path = Path(tempfile.mkdtemp(prefix="predictions-", dir=cache)) / "predictions.csv"
        write_results_csv(csv_path, rows, language)
        return {"headers": headers, "data": rows}, str(csv_path)

    return classify_many


def make_classify(model: torch.nn.Module, meta: Checkpoint, device: torch.device, batch_predict: Callable,
                  pet_share_of: Callable | None, forced_language: str = "auto") -> tuple[Callable, Callable, Callable]:
    """The functions behind one photo: /classify (probabilities, verdict, heat map), /predict (probabilities),
    and the live camera's (probabilities, verdict). Each takes the page's controls by their keys (CONTROLS)."""
    class_names = meta["class_names"]
    heatmap = make_heatmap(model, meta, device)

    def probabilities_of(image: Image.Image, tta: bool = False) -> dict[str, float]:
        return dict(zip(class_names, batch_predict([image], tta)[0].tolist(), strict=True))

    def answer(image: Image.Image, threshold: float, tta: bool, language: str) -> tuple[dict[str, float], str]:
        probabilities = probabilities_of(image, tta)  # tta: the mean with the mirrored photo (inference.py)
        pet_share = pet_share_of([image]).item() if pet_share_of else None
        return probabilities, verdict(probabilities, threshold, pet_share, language)

    def predict(photo: str | Exception | None, request: gr.Request) -> dict[str, float]:
        return probabilities_of(open_upload(photo, language_of(request, forced_language)))

    def classify(photo: str | Exception | None, threshold: float, show_heatmap: bool, tta: bool,
                 request: gr.Request) -> tuple[dict, str, Image.Image | None]:
        if not photo:  # the photo was cleared
            return {}, "", None
        language = language_of(request, forced_language)
        image = open_upload(photo, language)
        probabilities, said = answer(image, threshold, tta, language)
        best = max(range(len(class_names)), key=lambda i: probabilities[class_names[i]])
        return probabilities, said, heatmap(image, best) if show_heatmap else None

    def classify_live(camera: Image.Image | None, threshold: float, request: gr.Request) -> tuple[dict, str]:
        # One frame of the camera, a few times a second: no heat map (it would take longer than the next frame).
        if camera is None:  # the camera is not on yet
            return {}, ""
        return answer(camera, threshold, False, language_of(request, forced_language))

    return classify, predict, classify_live


class Control(NamedTuple):
    """One input of the page, declared once: the page draws it from here, the page's functions take it by its key
    (a parameter of that name), the API takes it in CONTROLS' order, and the browser gets its words from here."""
    key: str
    english: str
    chinese: str
    default: Any  # its value when the page opens, unless main() sets it from the command line
    make: Callable[[Any, Any], gr.Component]  # the Gradio component, given its label and its value


# In the order the API takes them: what is classified first, then the settings. So /classify takes
# (photo, threshold, show_heatmap, tta), /classify_many (files, threshold) and /predict (photo).
CONTROLS = (
    Control("photo", "Photo", "照片", None, lambda label, value: readable_upload_errors(
        gr.Image(value, type="filepath", image_mode=None, label=label, height=320, elem_id="photo"))),
    Control("files", "Photos, or a .zip of photos", "照片，或装有照片的 .zip 压缩包", None,
            lambda label, value: gr.File(value, file_count="multiple", label=label, elem_id="many-photos")),
    # Gradio sends the webcam's frames to the page's function while its Record button is on: nothing to upload.
    Control("camera", "Camera", "摄像头", None, lambda label, value: gr.Image(
        value, sources=["webcam"], streaming=True, type="pil", label=label, height=320, elem_id="camera")),
    Control("threshold", "Say 'not sure' below this probability", "最高概率低于这个值时，回答“不确定”", DOUBT_THRESHOLD,
            lambda label, value: gr.Slider(0.0, 1.0, value=value, step=0.01, label=label, elem_id="threshold")),
    Control("show_heatmap", "Show where the model looked (Grad-CAM heat map)", "显示模型在看哪里（Grad-CAM 热力图）",
            True, lambda label, value: gr.Checkbox(value, label=label, elem_id="show-heatmap")),
    Control("tta", "Also look at the mirrored photo (flip TTA: a little more accurate, twice the time)",
            "同时看镜像照片（翻转 TTA：略更准确，耗时加倍）", False,
            lambda label, value: gr.Checkbox(value, label=label, elem_id="tta")),
)
CONTROL_WORDS = {control.key: (control.english, control.chinese) for control in CONTROLS}  # for page_translations


def inputs_of(function: Callable, controls: dict[str, gr.Component]) -> dict[str, gr.Component]:
    """The controls a page function takes, found by its parameters' names, in CONTROLS' order (the API's)."""
    parameters = inspect.signature(function).parameters
    return {control.key: controls[control.key] for control in CONTROLS if control.key in parameters}


def build_demo(model: torch.nn.Module, meta: Checkpoint, device: torch.device, examples: list[str],
               amp_dtype: torch.dtype | None = None, checkpoint_path: Path = Path("checkpoint"),
               values: dict[str, Any] | None = None, pet_check: bool = True, compile_model: bool = False,
               language: str = "auto", i18n: gr.I18n | None = None, engine: str = "torch",
               data_dir: str | None = None) -> gr.Blocks:
    """The page. Its fixed words are keys into i18n (page_translations), which launch() must be given too;
    its answers are worded per request, in language_of(request, language). values: controls' starting
    values by key (main() gives --threshold and --heatmap), over each control's default."""
    class_names = meta["class_names"]
    # The engine (engines.py) is built in the background; its line, with why INT8 was not used, is shown on the page.
    engine_line = {"now": "engine: torch" if engine == "torch" else f"engine: torch until {engine} is ready"}

    build_pauses = PausedWhileAnswering()  # the page's functions below suspend the engine's build while they answer

    def prepare_engine() -> Callable | None:
        run, engine_line["now"] = prepared_engine(engine, model, meta, checkpoint_path, device, amp_dtype, data_dir,
                                                  build_pauses)
        return run

    batch_predict = make_batch_predict(model, meta, device, amp_dtype, compile_model,
                                       engine=None if engine == "torch" else prepare_engine)
    pet_share_of = load_pet_check(meta, device, amp_dtype) if pet_check else None
    classify, predict, classify_live = (build_pauses.pausing(function) for function in
                                        make_classify(model, meta, device, batch_predict, pet_share_of, language))
    classify_many = build_pauses.pausing(make_classify_many(batch_predict, class_names, pet_share_of, language))
    words = i18n or page_translations(meta, checkpoint_path, language, CONTROL_WORDS)
    values = {control.key: control.default for control in CONTROLS} | (values or {})
    # Every control made here and placed below with .render(), where the page shows it.
    controls = {control.key: control.make(words(control.key), values[control.key]) for control in CONTROLS}

    def empty_table(request: gr.Request) -> dict:  # column names in the browser's language before the first run
        return {"headers": columns("results", language_of(request, language)), "data": []}

    # The browser tab's title is not translated by Gradio's frontend: the class names alone suit both languages.
    with gr.Blocks(title=" vs ".join(name.capitalize() for name in class_names),
                   delete_cache=(KEEP_FILES_S, KEEP_FILES_S)) as demo:
        gr.Markdown(words("header"))
        controls["threshold"].render()
        with gr.Tab(words("one_photo")):
            one_photo_tab(controls, words, classify, predict, examples, len(class_names))
        with gr.Tab(words("many_photos")):
            controls["files"].render()
            run_many = gr.Button(words("classify_all"), variant="primary")
            table = gr.Dataframe(headers=columns("results"), label=words("results"), interactive=False,
                                 elem_id="results")
            csv_file = gr.File(label=words("download_csv"), elem_id="results-csv")
            run_many.click(classify_many, inputs_kwargs=inputs_of(classify_many, controls), outputs=[table, csv_file],
                           api_name="classify_many")
        with gr.Tab(words("live")):
            live_tab(controls, words, classify_live, len(class_names))
        demo.load(empty_table, outputs=table, queue=False, api_visibility="private")
        demo.load(lambda: f"<small>{engine_line['now']}</small>", outputs=gr.Markdown(elem_id="engine"), queue=False,
                  api_visibility="private")
    return demo


def one_photo_tab(controls: dict[str, gr.Component], words: gr.I18n, classify: Callable, predict: Callable,
                  examples: list[str], class_count: int) -> None:
    """The "One photo" tab: the photo and its check boxes; the verdict, probabilities and heat map beside them."""
    with gr.Row():
        with gr.Column():
            for key in ("photo", "show_heatmap", "tta"):
                controls[key].render()
        with gr.Column():
            answer = gr.Markdown(elem_id="verdict")
            label = gr.Label(num_top_classes=class_count, label=words("probabilities"), show_heading=False,
                             elem_id="probabilities")
            heatmap_image = gr.Image(label=words("heatmap"), interactive=False, height=320, elem_id="heatmap")
    if examples:
        gr.Examples(examples, inputs=controls["photo"], label=words("examples"))
    inputs = inputs_of(classify, controls)  # any of them changed (the threshold too): the photo is answered again
    gr.on([control.change for control in inputs.values()], classify, trigger_mode="always_last", inputs_kwargs=inputs,
          outputs=[label, answer, heatmap_image], api_name="classify")
    # The tutorial's API, one photo in and the probabilities out, kept for scripts (see the docstring).
    gr.Button(visible=False).click(predict, inputs_kwargs=inputs_of(predict, controls), outputs=label, api_name="predict")


def live_tab(controls: dict[str, gr.Component], words: gr.I18n, classify_live: Callable, class_count: int) -> None:
    """The "Live camera" tab: the camera's frames classified a few times a second, the answer updated in place.

    A stream holds its worker for its whole time (each of the page's functions has its own), so LIVE_CAMERAS
    visitors can watch at once while others wait; after LIVE_SECONDS a stream stops until Record is pressed again.
    """
    gr.Markdown(words("live_how"))
    with gr.Row():
        controls["camera"].render()
        with gr.Column():
            answer = gr.Markdown(elem_id="live-verdict")
            label = gr.Label(num_top_classes=class_count, label=words("probabilities"), show_heading=False,
                             elem_id="live-probabilities")
    controls["camera"].stream(classify_live, inputs_kwargs=inputs_of(classify_live, controls), outputs=[label, answer],
                              stream_every=LIVE_EVERY, time_limit=LIVE_SECONDS, concurrency_limit=LIVE_CAMERAS,
                              show_progress="hidden", api_visibility="private")


def main(args: argparse.Namespace) -> None:
    checkpoint_path = find_checkpoint(args.checkpoint)
    device = pick_device(args.device)
    model, meta = load_checkpoint_or_exit(checkpoint_path, device)
    print(f"loaded {checkpoint_path} ({meta['arch']}, classes {meta['class_names']}) on {device}", flush=True)
    amp_dtype = autocast_dtype(device) if args.amp is not False else None
    if args.amp and amp_dtype is None:
        amp_dtype = torch.bfloat16
    i18n = page_translations(meta, checkpoint_path, args.language, CONTROL_WORDS)
    for warning in open_page_warnings(args.host, args.port, args.share):
        print(warning, flush=True)
    demo = build_demo(model, meta, device, find_examples(args.data_dir), amp_dtype, checkpoint_path,
                      {"threshold": args.threshold, "show_heatmap": args.heatmap}, args.pet_check,
                      compile_model=compile_by_default(device, args.compile), language=args.language, i18n=i18n,
                      engine=args.engine, data_dir=args.data_dir)
    # One request already uses every CPU core, so more at once would only make each slower; the queue
    # holds the rest (up to --max-queue, then "busy, try again") and answers them in turn while the page stays served.
    concurrency = args.concurrency or (2 if device.type == "cuda" else 1)
    demo.queue(default_concurrency_limit=concurrency, max_size=args.max_queue)
    # No allowed_paths: the example photos are served as Gradio's own copies, and nothing else of DATA_DIR
    # (CSVs, every photo, the photo cache, review decisions) may be fetched through the page.
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD_BYTES,
                    show_error=True, i18n=i18n, state_session_capacity=PAGE_SESSIONS,
                    head=busy_script(args.language, *TEXTS["busy"]))
    except KeyboardInterrupt:  # Ctrl-C while launch() was still checking the page it had started
        pass
    end_after_page_closed()  # after Ctrl-C: a photo being answered must not keep the page alive


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    sys.exit(main(get_args_parser().parse_args()))
