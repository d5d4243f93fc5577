"""The serving engine built where its cost does not hold anyone up (docs/speed.md, "First runs").

Building OpenVINO INT8 for a ResNet50 takes about a minute on 2 cores (engines.BUILD_SECONDS), more than
it saves on a few hundred photos. So:
- train.py builds it once after its last epoch, for best_checkpoint.pth (build_after_training), and the
  first predict.py and app.py find it cached;
- app.py, for a checkpoint without it, builds it in a child process at the lowest priority
  (start_build_process), suspended while the page answers and until it has been idle IDLE_S
  (PausedWhileAnswering), so that the photos a user sends meanwhile are answered at full speed;
- predict.py and evaluate.py build it only for a job big enough to repay it (engines.load_engine's photos).

    python -m cats_dogs.engine_build checkpoint/best_checkpoint.pth --data-dir datasets   # what the child runs
    (through cats_dogs.tied_child, which ties it to the page's life first)
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch

from cats_dogs.checkpoint import load_checkpoint
from cats_dogs.device import autocast_dtype, pick_device
from cats_dogs.engines import engine_cached, load_engine
from cats_dogs.tied_child import tied_command, wait_until_armed

REPO = Path(__file__).resolve().parents[1]
# The build goes on once the page has answered nothing for this long: a user looks at an answer for longer, and
# the next photo of a burst (a few photos sent one after another) comes sooner.
IDLE_S = 3.0


def build_after_training(checkpoint_path: Path, data_dir: str, amp: bool) -> None:
    """train.py's last step: the engine that --engine auto would use here, built and checked, with a progress
    line and its result. Nothing is built where auto uses PyTorch (a GPU, a Mac). A failure is one line: the
    training's result is already saved."""
    if not checkpoint_path.is_file() or pick_device("auto").type != "cpu":
        return
    print(f"preparing the serving engine for {checkpoint_path} (OpenVINO INT8, about a minute for a ResNet50 on "
          "2 cores; --no-engine skips it) ...", flush=True)
    started = time.perf_counter()
    try:
        cpu = torch.device("cpu")
        model, meta = load_checkpoint(checkpoint_path, cpu)
        line = load_engine("auto", model, meta, checkpoint_path, cpu, autocast_dtype(cpu) if amp else None, data_dir)[1]
    except Exception as error:  # noqa: BLE001 -- the checkpoints are saved; predict.py and app.py work without it
        reason = (str(error).strip().splitlines() or [""])[0][:160]
        line = f"engine: not prepared ({type(error).__name__}: {reason}); predict.py and app.py answer with torch"
    print(f"{line}  ({time.perf_counter() - started:.0f} s)", flush=True)


def start_build_process(checkpoint_path: Path, engine: str, amp: bool, data_dir: str | None) -> subprocess.Popen:
    """The engine built in a child process at the lowest priority; it prints its engine line on stdout.

    The child is tied to this process (tied_child): returned once it is sure to end with it, so that it may then be
    suspended. Call this from a thread that lives as long as the child (one that waits for it): on Linux the child
    is killed when the thread that started it ends."""
    arguments = [str(Path(checkpoint_path).resolve()), "--engine", engine, *(["--no-amp"] if not amp else [])]
    if data_dir:
        arguments += ["--data-dir", str(Path(data_dir).resolve())]
    # Windows has no nice(): the child is started at its lowest priority class instead.
    flags = subprocess.BELOW_NORMAL_PRIORITY_CLASS if sys.platform == "win32" else 0
    process = subprocess.Popen(tied_command("cats_dogs.engine_build", *arguments), cwd=REPO, stdout=subprocess.PIPE,
                               text=True, creationflags=flags)
    wait_until_armed(process)
    return process


class PausedWhileAnswering:
    """The page and its engine's build on a 2-core laptop: at the lowest priority, the build still has both cores
    whenever the page is idle between photos, and the next answer begins on cores and caches in use. So the build
    process is suspended from the moment an answer starts until the page has answered nothing for IDLE_S, then
    resumed (docs/speed.md, "First runs"). `pausing(function)` wraps a page function."""

    def __init__(self, idle_s: float = IDLE_S) -> None:
        self.idle_s, self.answering, self.lock = idle_s, 0, threading.Lock()
        self.process: psutil.Process | None = None
        self.resume_timer: threading.Timer | None = None

    def watch(self, pid: int) -> None:
        """The build process to pause; released (and resumed) when the page exits, so none is left suspended."""
        with self.lock:
            self.process = psutil.Process(pid)
            self._set_suspended(self.answering > 0 or self.resume_timer is not None)
        atexit.register(self.release)

    def release(self) -> None:
        with self.lock:
            self._set_suspended(False)
            self.process = None

    def pausing(self, function: Callable) -> Callable:
        @functools.wraps(function)  # Gradio reads the parameters (gr.Request, gr.Progress) through it
        def answer(*args, **kwargs):
            with self._answering():
                return function(*args, **kwargs)
        return answer

    @contextlib.contextmanager
    def _answering(self):
        with self.lock:
            self.answering += 1
            if self.resume_timer is not None:
                self.resume_timer.cancel()
            self._set_suspended(True)
        try:
            yield
        finally:
            with self.lock:
                self.answering -= 1
                if self.answering == 0:
                    self.resume_timer = threading.Timer(self.idle_s, self._resume_when_idle)
                    self.resume_timer.daemon = True
                    self.resume_timer.start()

    def _resume_when_idle(self) -> None:
        with self.lock:
            if self.answering == 0:
                self.resume_timer = None
                self._set_suspended(False)

    def _set_suspended(self, suspended: bool) -> None:
        if self.process is not None:
            with contextlib.suppress(psutil.Error):  # the build has ended meanwhile
                self.process.suspend() if suspended else self.process.resume()


def build_at_low_priority(engine: str, meta: dict, checkpoint_path: Path, amp: bool, data_dir: str | None,
                          pauses: PausedWhileAnswering | None = None) -> str | None:
    """app.py's build: nothing when the engine is cached already, else a child process at the lowest priority,
    suspended while the page answers (pauses), waited for. The line saying why it failed, or None."""
    if engine_cached(engine, meta, checkpoint_path, data_dir):
        return None
    process = start_build_process(checkpoint_path, engine, amp, data_dir)
    if pauses is not None:
        pauses.watch(process.pid)
    try:
        built_line = (process.communicate()[0].strip().splitlines() or [""])[-1]
    finally:
        if pauses is not None:
            pauses.release()
    if engine_cached(engine, meta, checkpoint_path, data_dir):
        return None
    return f"engine: torch (the {engine} engine could not be built: {built_line or 'see above'})"


def main() -> None:
    parser = argparse.ArgumentParser(description="Build and cache a checkpoint's serving engine (app.py runs this).")
    parser.add_argument("checkpoint")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--no-amp", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "nice"):
        os.nice(19)  # the page's answers first: this runs only when the cores are otherwise idle
    cpu = torch.device("cpu")
    model, meta = load_checkpoint(args.checkpoint, cpu)
    amp_dtype = None if args.no_amp else autocast_dtype(cpu)
    print(load_engine(args.engine, model, meta, args.checkpoint, cpu, amp_dtype, args.data_dir)[1], flush=True)


if __name__ == "__main__":
    main()
