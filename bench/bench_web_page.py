"""The page of export.py --web in headless Chromium: milliseconds per photo (preprocessing and model, one thread).

    python bench/bench_web_page.py my-page/ photo.jpg [--repeats 10] [--locale en-US]

Serves the folder with a plain static server on localhost, as `python -m http.server` would (no cross-origin
isolation: ONNX Runtime Web runs on one thread, as on GitHub Pages), opens it with the system's Chromium, uploads
the photo --repeats times after one warm-up, and prints the median and the range of the page's own timing
(from decoding to probabilities, #answer's data-ms). Needs Chromium (apt-get install chromium) and Playwright.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import statistics
import tempfile
import threading
from pathlib import Path


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("page", help="a folder written by export.py --web")
    parser.add_argument("photo", help="the photo to classify")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM") or shutil.which("chromium") or "chromium")
    return parser


def page_ms(page_dir: Path, photo: Path, repeats: int, chromium: str) -> list[float]:
    from playwright.sync_api import sync_playwright

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(page_dir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    timings = []
    try:
        with sync_playwright() as playwright, tempfile.TemporaryDirectory() as scratch:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_port}/")
            page.wait_for_selector("body[data-ready=true]", state="attached", timeout=120_000)
            for index in range(repeats + 1):  # the first one warms up
                copy = Path(scratch) / f"{index}{photo.suffix}"
                copy.write_bytes(photo.read_bytes())
                page.locator("#photo").set_input_files(str(copy))
                answer = page.locator(f'#answer[data-photo="{copy.name}"]')
                answer.wait_for(timeout=120_000)
                if index:
                    timings.append(float(answer.get_attribute("data-ms")))
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return timings


def main(args: argparse.Namespace) -> None:
    timings = page_ms(Path(args.page), Path(args.photo), args.repeats, args.chromium)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.page}: {statistics.median(timings):.0f} ms per photo (median of {len(timings)}, "
          f"{min(timings):.0f}–{max(timings):.0f}), one thread, {os.cpu_count()} cores, load {load:.1f}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
