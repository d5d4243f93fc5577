"""Find and fix bad labels: the photos the trained model disagrees with most, worst first, on a web page.

    python review.py                          # ranks datasets/train.csv and val.csv, opens http://127.0.0.1:7861
    python review.py --csv-out ranking.csv    # the same ranking as a CSV, no page

Each photo is ranked by its loss under the checkpoint: how surprised the model is by the label it was
given. Wrong labels and photos of neither class collect at the top. On the page, keep each photo,
change its label or exclude it; every click is saved at once to DATA_DIR/review_decisions.json, so a
closed tab loses nothing. "Apply" then writes new train.csv and val.csv, after copying the old ones to
train.csv.bak-<time>. Photos are never moved or deleted.

The API has the page's three steps, for scripts:
    from gradio_client import Client
    client = Client("http://127.0.0.1:7861/")
    client.predict(api_name="/ranking")                                   # every photo, worst first
    client.predict("val", "val/cat/cat.3.jpg", "dog", api_name="/decide")  # keep, exclude, or a class name
    client.predict(api_name="/apply")

Beyond this machine (--host 0.0.0.0) the page asks for a login: --auth user:password, which a script passes as
Client(url, auth=("user", "password")). Apply only ever writes the CSVs named by --splits.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import sys
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home: many users are offline

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from tqdm import tqdm  # noqa: E402

from cats_dogs.checkpoint import find_checkpoint, load_checkpoint_or_exit, preprocessing  # noqa: E402
from cats_dogs.csv_rows import CsvError, parse_csv  # noqa: E402
from cats_dogs.device import autocast_dtype, pick_device  # noqa: E402
from cats_dogs.hosting import KEEP_FILES_S, is_loopback, parse_auth  # noqa: E402
from cats_dogs.images import UNREADABLE_IMAGE_ERRORS, open_image  # noqa: E402
from cats_dogs.inference import BATCH_SIZE_HELP, default_batch_size, prepare_for_inference  # noqa: E402
from cats_dogs.photo_batches import collate_readable  # noqa: E402
from cats_dogs.preprocessing import to_device  # noqa: E402
from cats_dogs.process import make_console_safe  # noqa: E402
from cats_dogs.review_decisions import apply_to_csv, csv_key, load_decisions, save_decisions  # noqa: E402
from cats_dogs.translations import LANGUAGES, REVIEW_TEXTS, columns, language_of  # noqa: E402
from load_datasets import DatasetLoader  # noqa: E402

DECISIONS = ("keep", "relabel", "exclude")
TABLE_ROWS = 50  # the ranking table shows the page of this many rows around the current photo

def word(key: str, language: str = "en", **values: Any) -> str:
    """One of translations.REVIEW_TEXTS in the given language, its {placeholders} filled in."""
    return REVIEW_TEXTS[key][LANGUAGES.index(language)].format(**values)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Rank the photos by loss under a checkpoint, then keep, relabel or "
                                     "exclude each on a web page.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="default: checkpoint/best_checkpoint.pth, else latest")
    parser.add_argument("--data-dir", default="datasets", help="the folder of train.csv and val.csv")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="which CSVs of DATA_DIR to review")
    parser.add_argument("--decisions", default=None, help="default: DATA_DIR/review_decisions.json")
    parser.add_argument("--csv-out", default=None, help="write the ranking to this CSV and exit, without a page")
    parser.add_argument("--batch-size", type=int, default=None, help=BATCH_SIZE_HELP)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--host", default="127.0.0.1",
                        help="0.0.0.0 makes the page reachable from other machines (then --auth is required)")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                        help="the login the page asks for; required with a --host other machines can reach")
    parser.add_argument("--port", type=int, default=7861, help="app.py's page can keep 7860")
    parser.add_argument("--language", choices=["auto", *LANGUAGES], default="auto",
                        help="the page's language: auto follows each browser (Chinese for Chinese browsers, else English)")
    return parser


# --------------------------------------------------------------------------- ranking
def load_split(data_dir: Path, split: str, meta: dict) -> tuple[DatasetLoader, dict[Path, tuple[str, int]]]:
    """A CSV's photos as the checkpoint was trained to see them, and each photo's (CSV path, given label)."""
    csv_path = data_dir / f"{split}.csv"
    try:
        dataset = DatasetLoader(csv_path, num_classes=len(meta["class_names"]), **preprocessing(meta))
        rows = parse_csv(csv_path)[0]
    except (CsvError, UnicodeDecodeError) as error:
        raise SystemExit(f"Cannot review {csv_path}: {error}") from None
    return dataset, {csv_path.parent / csv_key(path): (csv_key(path), label) for _, path, label in rows}


@torch.inference_mode()
def rank_photos(model: torch.nn.Module, meta: dict, data_dir: Path, splits: list[str], device: torch.device,
                batch_size: int = 32) -> list[dict[str, Any]]:
    """Every photo of the splits, worst first: the loss of its given label, the predicted class and its probability.
    Each row names its photo as the CSV does ("photo") and as a file ("full_path").

    Unreadable and empty photos come first (loss infinite): training skips them, so they are bad rows too.
    """
    amp_dtype = autocast_dtype(device)
    fast_model = prepare_for_inference(model, device, amp_dtype)  # BatchNorm folded, channels-last, bf16 where native
    channels_last = device.type in ("cpu", "cuda")
    ranked = []
    for split in splits:
        dataset, rows = load_split(data_dir, split, meta)
        dataset.cache_images("disk", build=False)  # pixels train.py already decoded, when it used this image size
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_readable)
        problems = {Path(path): "empty file" for path in dataset.empty_files}
        for batch, (images, labels, indices, unreadable) in enumerate(tqdm(loader, desc=f"ranking {split}.csv",
                                                                           unit="batch")):
            first = batch * batch_size  # no shuffling: each batch is the next slice of the dataset
            left_out = sorted(set(range(first, first + len(indices) + len(unreadable))) - set(indices.tolist()))
            for i, problem in zip(left_out, unreadable, strict=True):  # "path: reason", in dataset order
                path = dataset.samples[i][0]
                problems[path] = problem.removeprefix(f"{path}: ")
            if len(indices) == 0:
                continue
            images = to_device(images, device, channels_last, dataset.mean, dataset.std).to(amp_dtype or torch.float32)
            logits = fast_model(images).float()
            losses = torch.nn.functional.cross_entropy(logits, labels.to(device), reduction="none").tolist()
            confidences, predictions = torch.softmax(logits, dim=1).max(dim=1)
            for i, loss, p, predicted in zip(indices.tolist(), losses, confidences.tolist(), predictions.tolist(), strict=True):
                photo, label = rows[dataset.samples[i][0]]
                ranked.append({"split": split, "photo": photo, "given": label, "predicted": predicted, "confidence": p,
                               "loss": loss, "problem": None, "full_path": dataset.samples[i][0]})
        for full_path, problem in problems.items():
            photo, label = rows[full_path]
            ranked.append({"split": split, "photo": photo, "given": label, "predicted": None, "confidence": None,
                           "loss": math.inf, "problem": problem, "full_path": full_path})
    ranked.sort(key=lambda row: -row["loss"])
    return ranked


# --------------------------------------------------------------------------- decisions
def decision_of(decision: str, class_names: list[str], given: int) -> dict[str, Any]:
    """The entry saved for "keep", "exclude" or a class name (which relabels, or keeps when it is the given one)."""
    if decision in ("keep", "exclude"):
        return {"decision": decision}
    if decision not in class_names:
        raise gr.Error(f"decision {decision!r}: expected keep, exclude or one of the classes {', '.join(class_names)}")
    label = class_names.index(decision)
    return {"decision": "keep"} if label == given else {"decision": "relabel", "label": label, "class": decision}


def apply_decisions(data_dir: Path, decisions: dict, splits: list[str], language: str = "en") -> str:
    """Apply the decisions of each reviewed split (--splits) to its CSV; what was written, in Markdown.

    Only those CSVs: a decisions file naming any other split ("../outside", say) never chooses what is written.
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    lines = []
    for split in splits:
        chosen, csv_path = decisions.get(split), data_dir / f"{split}.csv"
        if chosen and csv_path.is_file() and (result := apply_to_csv(csv_path, chosen, stamp)):
            relabelled, excluded, backup = result
            lines.append(word("applied", language, csv=csv_path, relabelled=relabelled, excluded=excluded, backup=backup))
    return "\n\n".join([*lines, word("retrain", language)]) if lines else word("nothing", language)


def public_rows(ranked: list[dict], class_names: list[str], decisions: dict) -> list[dict[str, Any]]:
    """The ranking as --csv-out and the /ranking API give it: class names, and the decision saved so far."""
    return [{"rank": rank, "split": row["split"], "photo": row["photo"], "given": class_names[row["given"]],
             "predicted": None if row["predicted"] is None else class_names[row["predicted"]],
             "confidence": row["confidence"], "loss": None if math.isinf(row["loss"]) else row["loss"],
             "decision": decisions.get(row["split"], {}).get(row["photo"]), "problem": row["problem"]}
            for rank, row in enumerate(ranked, start=1)]


def write_ranking(ranked: list[dict], class_names: list[str], decisions: dict, path: str) -> None:
    """--csv-out: the ranking as a CSV, worst first, with the decisions saved so far. UTF-8 with a BOM, for Excel."""
    rows = public_rows(ranked, class_names, decisions)
    with open(path, "w", newline="", encoding="utf-8-sig") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:  # "keep", "exclude", or the new class; an unreadable photo's loss is left empty
            writer.writerow(row | {"decision": (row["decision"] or {}).get("class") or (row["decision"] or {}).get("decision")})


# --------------------------------------------------------------------------- the page
def shown_photo(row: dict) -> Image.Image | None:
    """The photo upright, at most 512 px (small ones enlarged, so a 32 px photo can be judged), or None if unreadable."""
    try:
        return ImageOps.contain(open_image(row["full_path"]), (512, 512))
    except UNREADABLE_IMAGE_ERRORS:
        return None


def describe_decision(entry: dict | None, language: str) -> str:
    if not entry:
        return word("undecided", language)
    if entry["decision"] == "relabel":
        return word("relabelled", language, name=entry["class"])
    return word("kept" if entry["decision"] == "keep" else "excluded", language)


def view(ranked: list[dict], index: int, class_names: list[str], decisions: dict, language: str) -> list:
    """What the page shows for the photo at `index`: [index, photo, details, ranking table, relabel buttons]."""
    index = max(0, min(index, len(ranked) - 1))
    row, start = ranked[index], index - index % TABLE_ROWS

    def entry_of(r: dict) -> dict | None:
        return decisions.get(r["split"], {}).get(r["photo"])

    values = dict(rank=index + 1, count=len(ranked), file=f"{row['split']}.csv: {row['photo']}",
                  given=class_names[row["given"]], decision=describe_decision(entry_of(row), language))
    details = (word("unreadable", language, problem=row["problem"], **values) if row["problem"] else
               word("details", language, predicted=class_names[row["predicted"]], p=row["confidence"], loss=row["loss"],
                    **values))
    table = [[rank, r["split"], r["photo"], class_names[r["given"]],
              "" if r["predicted"] is None else class_names[r["predicted"]],
              "" if r["confidence"] is None else round(r["confidence"], 3), round(r["loss"], 3),
              describe_decision(entry_of(r), language) if entry_of(r) else ""]
             for rank, r in enumerate(ranked[start:start + TABLE_ROWS], start=start + 1)]
    return [index, shown_photo(row), details, {"headers": columns("ranking", language), "data": table},
            *[gr.update(visible=i != row["given"]) for i in range(len(class_names))]]  # no "change to" the given class


def page_words(class_names: list[str], intro: dict[str, Any], language: str) -> gr.I18n:
    """The page's fixed words in both languages, for Gradio's frontend to show the browser's own (as app.py does)."""
    def fixed(lang: str) -> dict[str, str]:
        words = {key: word(key, lang) for key in ("photo", "keep", "exclude", "previous", "next", "ranking", "apply")}
        return words | {"intro": word("intro", lang, **intro)} | {
            f"relabel_{i}": word("relabel", lang, name=name) for i, name in enumerate(class_names)}

    return gr.I18n(**{lang: fixed(lang if language == "auto" else language) for lang in LANGUAGES})


def make_handlers(ranked: list[dict], class_names: list[str], decisions: dict, decisions_path: Path, data_dir: Path,
                  splits: list[str], language: str = "auto") -> dict[str, Any]:
    """The page's functions. Decisions are shared by every tab (one file, one writer at a time); which photo
    is shown is each tab's own (a gr.State holding its index)."""
    lock = threading.Lock()

    def decide(split: str, photo: str, decision: str) -> dict:  # /decide: keep, exclude, or a class name
        row = next((r for r in ranked if r["split"] == split and r["photo"] == csv_key(photo)), None)
        if row is None:
            raise gr.Error(f"{split}.csv has no photo {photo!r} in the ranking")
        entry = decision_of(decision, class_names, row["given"])
        with lock:
            decisions.setdefault(split, {})[row["photo"]] = entry
            save_decisions(decisions_path, decisions)
        return entry

    def show(index: int, request: gr.Request) -> list:
        return view(ranked, index, class_names, decisions, language_of(request, language))

    def click(decision: str | int) -> Any:  # a button: decide for the shown photo, then show the next one
        def handler(index: int, request: gr.Request) -> list:
            decide(ranked[index]["split"], ranked[index]["photo"], class_names[decision] if isinstance(decision, int)
                   else decision)
            return show(index + 1, request)
        return handler

    def move(step: int) -> Any:
        def handler(index: int, request: gr.Request) -> list:
            return show(index + step, request)
        return handler

    def first_undecided(request: gr.Request) -> list:  # where a reopened page goes on
        undecided = (i for i, row in enumerate(ranked) if row["photo"] not in decisions.get(row["split"], {}))
        return show(next(undecided, 0), request)

    def open_row(event: gr.SelectData, request: gr.Request) -> list:
        return show(int(event.row_value[0]) - 1, request)

    def apply(request: gr.Request) -> str:
        with lock:
            return apply_decisions(data_dir, decisions, splits, language_of(request, language))

    def ranking() -> list[dict]:
        return public_rows(ranked, class_names, decisions)

    return dict(decide=decide, click=click, move=move, first_undecided=first_undecided, open_row=open_row, apply=apply,
                ranking=ranking)


def build_page(handlers: dict[str, Any], class_names: list[str], words: gr.I18n, language: str = "auto") -> gr.Blocks:
    """The page: the current photo, its labels and the decision buttons; the ranking table; Apply."""
    title = f"{word('title')} / {word('title', 'zh')}" if language == "auto" else word("title", language)
    with gr.Blocks(title=title, delete_cache=(KEEP_FILES_S, KEEP_FILES_S)) as demo:
        gr.Markdown(f"# {title}")
        gr.Markdown(words("intro"))
        index = gr.State(0)
        with gr.Row():
            photo = gr.Image(label=words("photo"), interactive=False, height=400, elem_id="photo", format="jpeg")
            with gr.Column():
                details = gr.Markdown(elem_id="details")
                with gr.Row():
                    keep = gr.Button(words("keep"), variant="primary", elem_id="keep")
                    relabels = [gr.Button(words(f"relabel_{i}"), elem_id=f"relabel-{i}") for i in range(len(class_names))]
                    exclude = gr.Button(words("exclude"), variant="stop", elem_id="exclude")
                with gr.Row():
                    previous, following = gr.Button(words("previous"), size="sm"), gr.Button(words("next"), size="sm")
        table = gr.Dataframe(label=words("ranking"), interactive=False, elem_id="ranking")
        apply = gr.Button(words("apply"), elem_id="apply")
        applied = gr.Markdown(elem_id="applied")

        shown, private = [index, photo, details, table, *relabels], {"api_visibility": "private"}
        for button, decision in ((keep, "keep"), (exclude, "exclude"), *((b, i) for i, b in enumerate(relabels))):
            button.click(handlers["click"](decision), inputs=index, outputs=shown, **private)
        previous.click(handlers["move"](-1), inputs=index, outputs=shown, **private)
        following.click(handlers["move"](1), inputs=index, outputs=shown, **private)
        table.select(handlers["open_row"], outputs=shown, **private)
        demo.load(handlers["first_undecided"], outputs=shown, **private)
        apply.click(handlers["apply"], outputs=applied, api_name="apply")
        # For scripts and tests: the whole ranking, and one decision by split and CSV path.
        gr.Button(visible=False).click(handlers["ranking"], outputs=gr.JSON(visible=False), api_name="ranking")
        gr.Button(visible=False).click(handlers["decide"], inputs=[gr.Textbox(visible=False) for _ in range(3)],
                                       outputs=gr.JSON(visible=False), api_name="decide")
    return demo


def check_access(args: argparse.Namespace) -> tuple[str, str] | None:
    """The page's login, if any. The page rewrites CSVs: other machines reach it only with --auth. A split names a
    CSV of DATA_DIR, never a path."""
    for split in args.splits:
        if not split or split in (".", "..") or any(c in split for c in "/\\:"):
            raise SystemExit(f"--splits {split!r}: expected the name of a CSV in --data-dir, such as train or val")
    try:
        auth = parse_auth(args.auth) if args.auth else None
    except ValueError as error:
        raise SystemExit(str(error)) from None
    if auth is None and not args.csv_out and not is_loopback(args.host):
        raise SystemExit(f"--host {args.host} lets other machines change your CSVs: add --auth user:password "
                         "(or keep the default --host 127.0.0.1)")
    return auth


def main(args: argparse.Namespace) -> None:
    auth = check_access(args)  # first: a refusal comes before minutes of ranking
    data_dir = Path(args.data_dir)
    decisions_path = Path(args.decisions) if args.decisions else data_dir / "review_decisions.json"
    decisions = load_decisions(decisions_path)  # first: a broken file stops the run before minutes of ranking
    checkpoint_path = find_checkpoint(args.checkpoint)
    device = pick_device(args.device)
    model, meta = load_checkpoint_or_exit(checkpoint_path, device)
    class_names = meta["class_names"]
    print(f"ranking the photos of {', '.join(args.splits)} with {checkpoint_path} on {device}", flush=True)
    ranked = rank_photos(model, meta, data_dir, args.splits, device, args.batch_size or default_batch_size(device))
    if not ranked:
        raise SystemExit(f"no photos to review in {', '.join(f'{data_dir / s}.csv' for s in args.splits)}")
    if args.csv_out:
        write_ranking(ranked, class_names, decisions, args.csv_out)
        print(f"wrote {len(ranked)} photos, worst first, to {args.csv_out}")
        return
    counts = ", ".join(f"{split} {sum(row['split'] == split for row in ranked)}" for split in args.splits)
    intro = dict(count=len(ranked), splits=counts, checkpoint=checkpoint_path, decisions=decisions_path)
    handlers = make_handlers(ranked, class_names, decisions, decisions_path, data_dir, args.splits, args.language)
    i18n = page_words(class_names, intro, args.language)
    demo = build_page(handlers, class_names, i18n, args.language)
    demo.queue(default_concurrency_limit=1, max_size=100)  # decisions and Apply one at a time, in order
    demo.launch(server_name=args.host, server_port=args.port, show_error=True, i18n=i18n, auth=auth)


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    sys.exit(main(get_args_parser().parse_args()))
