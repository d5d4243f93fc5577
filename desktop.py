"""A desktop window that classifies photos with a trained checkpoint: the web page's answers, without a browser.

    python desktop.py                                   # checkpoint/best_checkpoint.pth, or pick one in the window
    python desktop.py --checkpoint path/to/model.pth photos/ cat.jpg
    python desktop.py --checkpoint CK cat.jpg dog.jpg --screenshot window.png   # answer, save the window, exit

Open one photo, many photos or a folder with the buttons, or drag them onto the window. The table lists each photo's
class, probability and note ("not sure" below the threshold); the selected photo shows every class's probability,
the verdict and the Grad-CAM heat map; "Save as CSV…" writes the table. The model runs on a thread of its own,
with the web page's engine (OpenVINO INT8 where it passed its check, built in the background the first time).
In Chinese or English, by the system's language or --language. Needs PySide6: pip install -r requirements-desktop.txt.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

try:
    from PySide6.QtCore import QLocale, QThread, QTimer
    from PySide6.QtWidgets import QApplication
except ImportError as error:  # not installed, or Qt's system libraries missing (docs/desktop.md)
    missing = "PySide6 is not installed" if getattr(error, "name", "") == "PySide6" else f"Qt cannot start here ({error})"
    raise SystemExit(f"desktop.py: {missing}; install it with: pip install -r requirements-desktop.txt "
                     "(Linux also needs Qt's system libraries: see docs/desktop.md)") from None

from cats_dogs.checkpoint import find_checkpoint  # noqa: E402 -- after the check above, which names what to install
from cats_dogs.desktop_classifier import end_engine_builds  # noqa: E402
from cats_dogs.desktop_window import Window  # noqa: E402
from cats_dogs.desktop_worker import Worker  # noqa: E402
from cats_dogs.device import pick_device  # noqa: E402
from cats_dogs.engines import ENGINE_CHOICES, ENGINE_HELP  # noqa: E402
from cats_dogs.process import exit_without_teardown, make_console_safe  # noqa: E402
from cats_dogs.translations import DOUBT_THRESHOLD, LANGUAGES  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Classify photos with a trained checkpoint in a desktop window.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("photos", nargs="*", help="photos or folders to open at the start")
    parser.add_argument("--checkpoint", default=None,
                        help="default: checkpoint/best_checkpoint.pth, else checkpoint/latest_checkpoint.pth; "
                             "another can be picked in the window")
    parser.add_argument("--screenshot", metavar="FILE", default=None,
                        help="answer PHOTOS, save the window to FILE (PNG), print one line per photo, and exit")
    parser.add_argument("--data-dir", default="datasets", help="where train.csv and val.csv are, to build INT8 with")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--engine", choices=ENGINE_CHOICES, default="auto",
                        help=f"{ENGINE_HELP}. Built the first time by a process at the lowest priority, which ends "
                             "with the window (PyTorch answers meanwhile), then cached beside the checkpoint")
    parser.add_argument("--threshold", type=float, default=DOUBT_THRESHOLD,
                        help="the window's initial 'not sure' threshold on the top probability (adjustable in it)")
    parser.add_argument("--heatmap", action=argparse.BooleanOptionalAction, default=True,
                        help="show the Grad-CAM heat map by default (a check box in the window switches it)")
    parser.add_argument("--pet-check", action=argparse.BooleanOptionalAction, default=True,
                        help="warn when a photo looks like neither cat nor dog to the original ImageNet classifier")
    parser.add_argument("--language", choices=["auto", *LANGUAGES], default="auto",
                        help="the window's language: auto follows the system's (Chinese for a Chinese system, else English)")
    return parser


def window_language(forced: str) -> str:
    """--language when given, else the system's: QLocale reads Windows' and macOS' settings, and LANG on Linux."""
    return forced if forced != "auto" else ("zh" if QLocale.system().name().lower().startswith("zh") else "en")


def take_screenshot(window: Window, path: Path, app: QApplication) -> None:
    """--screenshot: the window as it is now, saved; then each photo's answer, one line each; then the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(path)):
        print(f"cannot write the screenshot {path} (a folder without write permission, or not a .png name?)", flush=True)
        app.exit(1)
        return
    for line in window.answer_lines():
        print(line, flush=True)
    print(f"saved the window to {path}", flush=True)
    app.exit(0)


def end_quietly_on_signals(app: QApplication) -> QTimer:
    """Ctrl+C and a terminal's kill (SIGTERM) close the window like its close button, so that the engine's build
    ends with it. Python runs signal handlers only between its own lines: a timer gives it some while Qt waits."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: app.quit())
    timer = QTimer(interval=250)
    timer.timeout.connect(lambda: None)
    timer.start()
    return timer


def main(args: argparse.Namespace) -> None:
    if args.screenshot and not args.photos:
        raise SystemExit("--screenshot needs photos to answer: python desktop.py --screenshot FILE PHOTO...")
    try:
        checkpoint_path, missing = find_checkpoint(args.checkpoint), None
    except SystemExit as error:  # the window opens all the same, and a checkpoint can be picked in it
        if args.screenshot:
            raise
        checkpoint_path, missing = None, str(error)
    app = QApplication(sys.argv[:1])
    app.setStyle("Fusion")  # the same look on Windows, macOS and Linux, and in the screenshots in docs/
    language = window_language(args.language)
    worker = Worker(pick_device(args.device), args.engine, args.data_dir, args.pet_check, language)
    thread = QThread()  # the model's work never runs on the window's thread
    worker.moveToThread(thread)
    thread.start()
    window = Window(worker, language, args.threshold, args.heatmap)
    window.resize(1100, 720)
    if checkpoint_path is None:
        print(missing, flush=True)
        window.no_checkpoint()
    else:
        window.load_checkpoint(checkpoint_path)
    if args.screenshot:
        window.settled.connect(lambda: take_screenshot(window, Path(args.screenshot), app))
        window.load_failed.connect(lambda _: app.exit(1))
    window.show()
    if args.photos:
        window.open_paths(args.photos)
    timer = end_quietly_on_signals(app)
    code = app.exec()
    timer.stop()
    worker.current_job = -1  # the job under way stops after its batch
    for pid in end_engine_builds():  # however the window ended: its close button, Ctrl+C, SIGTERM, --screenshot
        print(f"stopped the engine's build (process {pid}) with the window", flush=True)
    thread.quit()
    thread.wait(5000)  # a photo being answered: torch cannot be interrupted, and the process ends below anyway
    # Ended here, the worker's thread still referenced: Qt aborts when a running QThread is destroyed. torch's,
    # OpenVINO's and Qt's objects are left to the system, not torn down one by one.
    exit_without_teardown(code)


if __name__ == "__main__":
    make_console_safe()  # a Windows console in GBK or cp1252 must not crash on a file name
    main(get_args_parser().parse_args())
