"""Make docs/images/review.png: review.py's page in headless Chromium, on a copy of the photos with two labels flipped.

    python scripts/screenshot_review.py                                   # generated photos
    CATS_DOGS_TUTORIAL_DIR=path/to/cats_dogs_tutorial python scripts/screenshot_review.py
    python scripts/screenshot_review.py --data-dir my_datasets --checkpoint checkpoint/best_checkpoint.pth

The photos are copied to a temporary folder first: the source is only read. Without --checkpoint, a
model is trained there in a minute or two (--weights none, frozen backbone: no download, and a weak
model). The worst photo is decided before the screenshot, so that it shows a decision.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import find_chromium, free_port, make_dataset  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Screenshot review.py's page.")
    parser.add_argument("--data-dir", default=os.environ.get("CATS_DOGS_TUTORIAL_DIR"),
                        help="photos in the tutorial's layout (default: $CATS_DOGS_TUTORIAL_DIR, else generated ones)")
    parser.add_argument("--checkpoint", default=None, help="default: train a small one on the copy")
    parser.add_argument("--out", default=str(REPO / "docs/images/review.png"))
    return parser


def break_label(csv_path: Path) -> tuple[str, int]:
    """Flip the label of the row halfway down a cat/dog CSV: the learner's mistake the page should surface.
    Returns the photo and its right label."""
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    middle = len(lines) // 2
    photo, label = lines[middle].rsplit(",", 1)
    lines[middle] = f"{photo},{1 - int(label)}"
    print(f"broke {csv_path.name} line {middle + 1}: {lines[middle]}")
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return photo, int(label)


def run(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, *args], cwd=cwd, check=True, stdin=subprocess.DEVNULL)


def screenshot(url: str, out: Path, broken: dict[str, int]) -> None:
    """The page after deciding the worst photo as a careful learner would: its right label where this script
    broke it, else "Keep" (a weak model's disagreement is no reason to change a label)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1200, "height": 980}, locale="en-US")
        page.goto(url)
        page.locator("#details h3").wait_for(timeout=60_000)
        shown = page.locator("#details h3").inner_text()
        right = next((label for photo, label in broken.items() if shown.endswith(f": {photo}")), None)
        page.locator("#keep" if right is None else f"#relabel-{right}").click()  # decide the worst photo…
        page.locator("#details").get_by_text("2 of").wait_for(timeout=60_000)
        page.get_by_role("button", name="Previous").click()  # …and go back to show the decision
        page.locator("#details").get_by_text("1 of").wait_for(timeout=60_000)
        page.wait_for_timeout(1000)  # the photo fades in
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=out)
        browser.close()


def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="screenshot-review-"))
    data = work / "datasets"
    if args.data_dir:
        shutil.copytree(args.data_dir, data, ignore=shutil.ignore_patterns(".cache", "*.bak-*", "review_decisions.json"))
    else:
        make_dataset(data, per_class_train=20, per_class_val=10)
    broken = dict(break_label(data / f"{split}.csv") for split in ("train", "val"))
    checkpoint = Path(args.checkpoint).resolve() if args.checkpoint else Path("checkpoint/best_checkpoint.pth")
    if not args.checkpoint:
        run(str(REPO / "train.py"), "--model", "resnet18", "--weights", "none", "--freeze-backbone", "--lr", "0.01",
            "--image-size", "64", "--epochs", "10", "--swanlab-mode", "disabled", cwd=work)
    port = free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "review.py"), "--checkpoint", str(checkpoint),
                               "--port", str(port), "--language", "en"], cwd=work, stdin=subprocess.DEVNULL)
    try:
        from gradio_client import Client

        for _ in range(240):  # until the ranking is done and the page answers
            try:
                Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                if server.poll() is not None:
                    raise SystemExit("review.py stopped before serving its page") from None
                time.sleep(0.5)
        screenshot(f"http://127.0.0.1:{port}/", Path(args.out), broken)
    finally:
        server.terminate()
        server.wait(timeout=30)
    shutil.rmtree(work)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
