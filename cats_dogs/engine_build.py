"""The serving engine built where its cost does not hold anyone up (docs/speed.md, "First runs").

Building OpenVINO INT8 for a ResNet50 at 256² takes BUILD_FIXED_S plus about BUILD_PHOTO_PASSES forward passes of a
photo on this machine: seconds, but more than the engine saves on a few hundred photos. So:
- train.py builds it once after its last epoch, for best_checkpoint.pth (build_after_training), where that costs at
  most ENGINE_SHARE of its run; else it hands it to a background process at the lowest priority
  (start_background_build), which outlives train.py; predict.py and evaluate.py wait for that process when it is
  nearly done (wait_for_background_build), app.py waits for it, and the next train.py in the folder stops it;
- app.py, for a checkpoint without it, builds it in a child process at the lowest priority
  (start_build_process), suspended while the page answers and until it has been idle IDLE_S
  (PausedWhileAnswering), so that the photos a user sends meanwhile are answered at full speed;
- predict.py and evaluate.py build it only for a job big enough to repay it (engines.load_engine's photos).

    python -m cats_dogs.engine_build checkpoint/best_checkpoint.pth --data-dir datasets   # what the child runs
    (the page's through cats_dogs.tied_child, which ties it to the page's life first)
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch

from cats_dogs.atomic import atomic_write_text
from cats_dogs.checkpoint import load_checkpoint
from cats_dogs.device import autocast_dtype, pick_device
from cats_dogs.engines import (
    SAVED_SECONDS_PER_PHOTO,
    engine_cached,
    engine_path,
    load_engine,
    save_openvino,
    to_openvino,
)
from cats_dogs.tied_child import tied_command, wait_until_armed

REPO = Path(__file__).resolve().parents[1]
ENGINE_SHARE = 0.05  # train.py builds the engine itself only where that costs at most this share of its run
# The build in train.py, on 2 cores (docs/speed.md, "A quantizer of its own"): about 10.5 s for a ResNet50 at 256²
# with AVX2 only and 7.5 s with AVX-512, where a forward pass of PyTorch's fp32 model takes 112 and 80 ms a photo:
# BUILD_FIXED_S plus BUILD_PHOTO_PASSES such passes (the conversion, the calibration's fp32 pass over 32 photos and
# the check's INT8 pass over the val photos all grow with the model). While NNCF calibrated: 8 s and 150 passes.
BUILD_FIXED_S = 1.0
BUILD_PHOTO_PASSES = 85
# A background build first starts Python and imports PyTorch and OpenVINO again, which train.py had done.
BACKGROUND_START_S = 4.0
# OpenVINO fp32 alone (converted from PyTorch in memory, then saved): about 3 s for a ResNet50 at 256² with AVX2.
CONVERT_FIXED_S = 1.0
CONVERT_PHOTO_PASSES = 30
# In <checkpoint dir>/engines/ while a background build runs: its pid, its output, and who suspended it.
BUILD_PID, BUILD_LOG, BUILD_PAUSED_BY = "build.pid", "build.log", "build.paused-by"
# The build goes on once the page has answered nothing for this long: a user looks at an answer for longer, and
# the next photo of a burst (a few photos sent one after another) comes sooner.
IDLE_S = 3.0


def build_after_training(checkpoint_path: Path, data_dir: str, amp: bool, when: str = "auto") -> None:
    """train.py's last step: the engine that --engine auto would use here, for best_checkpoint.pth. Built here when
    that costs at most ENGINE_SHARE of the run so far (when="auto"; "now": always), else handed to a background
    process at the lowest priority (start_background_build), which predict.py and app.py wait for when it is nearly
    done. Nothing is built where auto uses PyTorch (a GPU, a Mac). A failure is one line: the checkpoints are saved."""
    if not checkpoint_path.is_file() or pick_device("auto").type != "cpu":
        return
    cpu = torch.device("cpu")
    model, meta = load_checkpoint(checkpoint_path, cpu)
    run_s = time.time() - psutil.Process().create_time()  # the whole command so far, start-up included
    photo_s = forward_seconds(model, meta["image_size"])
    estimate = BUILD_FIXED_S + BUILD_PHOTO_PASSES * photo_s
    if when == "background" or (when == "auto" and estimate > ENGINE_SHARE * run_s):
        fp32 = convert_fp32_here(model, meta, checkpoint_path, when == "auto" and CONVERT_FIXED_S
                                 + CONVERT_PHOTO_PASSES * photo_s <= ENGINE_SHARE * run_s)
        pid = start_background_build(checkpoint_path, data_dir, amp, estimate)
        print(f"engine: {fp32}building OpenVINO INT8 in the background at the lowest priority (pid {pid}): about "
              f"{estimate:.0f} s, more than {ENGINE_SHARE:.0%} of this {run_s:.0f} s run; predict.py and app.py use "
              f"it once it is ready, and wait for it when it is nearly done (--build-engine now builds it here, "
              f"--no-engine skips it; log: {checkpoint_path.parent / 'engines' / BUILD_LOG})", flush=True)
        return
    print(f"preparing the serving engine for {checkpoint_path} (OpenVINO INT8, about {estimate:.0f} s, "
          f"{estimate / run_s:.0%} of this run; --no-engine skips it) ...", flush=True)
    started = time.perf_counter()
    try:
        line = load_engine("auto", model, meta, checkpoint_path, cpu, autocast_dtype(cpu) if amp else None, data_dir)[1]
    except Exception as error:  # noqa: BLE001 -- the checkpoints are saved; predict.py and app.py work without it
        reason = (str(error).strip().splitlines() or [""])[0][:160]
        line = f"engine: not prepared ({type(error).__name__}: {reason}); predict.py and app.py answer with torch"
    print(f"{line}  ({time.perf_counter() - started:.0f} s)", flush=True)


def forward_seconds(model: torch.nn.Module, size: int) -> float:
    """One photo's forward pass on this machine, timed on a batch of 4 (under 0.5 s for a ResNet50 at 256² on 2 cores):
    what the build's estimates (BUILD_PHOTO_PASSES, CONVERT_PHOTO_PASSES) scale with."""
    with torch.inference_mode():
        model.eval()(torch.zeros(1, 3, size, size))  # a first pass allocates: not timed
        started = time.perf_counter()
        model(torch.zeros(4, 3, size, size))
    return (time.perf_counter() - started) / 4


def convert_fp32_here(model: torch.nn.Module, meta: dict, checkpoint_path: Path, cheap: bool) -> str:
    """OpenVINO fp32 converted and saved here, when `cheap`, for predict.py to answer with until INT8 is built
    (engines.engine_ready); the background build then starts from it. Returns the words for train.py's line."""
    if not cheap:
        return ""
    started = time.perf_counter()
    try:
        save_openvino(to_openvino(model, meta["image_size"]), engine_path(checkpoint_path, "openvino.xml"))
    except Exception as error:  # noqa: BLE001 -- the background build converts it then
        return f"OpenVINO fp32 not converted here ({type(error).__name__}); "
    return f"OpenVINO fp32 converted here for predict.py meanwhile ({time.perf_counter() - started:.0f} s); "


def start_background_build(checkpoint_path: Path, data_dir: str | None, amp: bool, estimate: float) -> int:
    """The engine built by a process of its own at the lowest priority, which outlives train.py, writes its output to
    engines/build.log and, while it runs, its pid to engines/build.pid (background_build finds it there)."""
    folder = checkpoint_path.parent / "engines"
    folder.mkdir(parents=True, exist_ok=True)
    arguments = [sys.executable, "-m", "cats_dogs.engine_build", str(checkpoint_path.resolve()), "--pid-file",
                 str((folder / BUILD_PID).resolve()), *(["--no-amp"] if not amp else [])]
    if data_dir:
        arguments += ["--data-dir", str(Path(data_dir).resolve())]
    # Its own session (its own process group on Windows): a Ctrl-C in train.py's terminal after it ends is not for it.
    detached = ({"creationflags": subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
                 | subprocess.BELOW_NORMAL_PRIORITY_CLASS} if sys.platform == "win32" else {"start_new_session": True})
    with open(folder / BUILD_LOG, "w", encoding="utf-8") as log:
        process = subprocess.Popen(arguments, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   **detached)
    if sys.platform != "win32":  # at once: the child's own os.nice(19) comes only after its imports (seconds)
        with contextlib.suppress(psutil.Error):
            psutil.Process(process.pid).nice(19)
    atomic_write_text(folder / BUILD_PID, json.dumps({"pid": process.pid, "checkpoint": str(checkpoint_path.resolve()),
                                                      "started": time.time(),
                                                      "estimate_s": round(BACKGROUND_START_S + estimate, 1)}))
    return process.pid


def background_build(checkpoint_path: str | os.PathLike) -> tuple[psutil.Process, float] | None:
    """The background build running for this checkpoint (start_background_build), and about how many seconds it has
    left; None when there is none (finished, killed, or for another checkpoint). One left suspended by a command
    that was killed outright (pause_until_exit) is resumed here. Its progress is its seconds since it started, or its
    CPU seconds where fewer: a build that was suspended, or starved by other work, has not done what its age says."""
    engines = Path(checkpoint_path).parent / "engines"
    try:
        found = json.loads((engines / BUILD_PID).read_text(encoding="utf-8"))
        process = psutil.Process(found["pid"])
        if "cats_dogs.engine_build" not in process.cmdline() or found["checkpoint"] != str(Path(checkpoint_path).resolve()):
            return None
        if process.status() == psutil.STATUS_STOPPED and not pauser_alive(engines / BUILD_PAUSED_BY):
            process.resume()
        cpu = process.cpu_times()
    except (OSError, ValueError, KeyError, psutil.Error):
        return None
    progress = min(time.time() - found["started"], cpu.user + cpu.system)
    return process, max(0.0, found["estimate_s"] - progress)


def pauser_alive(marker: Path) -> bool:
    try:
        pid = int(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return pid != os.getpid() and psutil.pid_exists(pid)


def wait_for_background_build(engine: str, checkpoint_path: str | os.PathLike, device: torch.device,
                              photos: int | None) -> None:
    """predict.py's and evaluate.py's start with --engine auto on a CPU: a background build of this checkpoint's
    engine waited for when it has less left than the engine would save on `photos` photos (all of it for an
    unknown count), else suspended until this command ends (pause_until_exit)."""
    running = background_build(checkpoint_path) if engine == "auto" and device.type == "cpu" else None
    if running is None:
        return
    process, left_s = running
    if photos is not None and left_s > photos * SAVED_SECONDS_PER_PHOTO:
        print(f"note: the serving engine is still being built in the background (pid {process.pid}, about "
              f"{left_s:.0f} s left): this job answers without it, the build paused meanwhile", file=sys.stderr)
        pause_until_exit(process, Path(checkpoint_path).parent / "engines" / BUILD_PAUSED_BY)
        return
    print(f"waiting for the serving engine being built in the background (pid {process.pid}, about {left_s:.0f} s "
          "left) ...", file=sys.stderr, flush=True)
    with contextlib.suppress(psutil.Error):
        process.wait(timeout=max(60.0, 4 * left_s))  # a stuck build is not waited for forever


PAUSED: list[tuple[psutil.Process, Path]] = []  # background builds this command suspended, to resume at its end


def pause_until_exit(process: psutil.Process, marker: Path) -> None:
    """Suspend a background build until this command ends (resume_background_builds, also run at exit). Beside it,
    even at the lowest priority, its threads and the command's slow each other down on 2 cores: predict.py on 300
    photos took 69 s next to a ResNet50's build, 20 s alone. The marker names this process: a later command resumes
    a build whose pauser is gone (killed outright)."""
    with contextlib.suppress(OSError):
        atomic_write_text(marker, str(os.getpid()))
    with contextlib.suppress(psutil.Error):
        process.suspend()
        PAUSED.append((process, marker))
        atexit.register(resume_background_builds)


def resume_background_builds() -> None:
    while PAUSED:
        process, marker = PAUSED.pop()
        with contextlib.suppress(psutil.Error):
            process.resume()
        marker.unlink(missing_ok=True)


def stop_background_build(output_dir: Path) -> None:
    """train.py's start: a background build of the folder's previous checkpoint is stopped before the checkpoints
    change (its files are named after the checkpoint it read, so nothing it wrote is mistaken for the new one's)."""
    running = background_build(output_dir / "best_checkpoint.pth")
    if running is not None:
        running[0].terminate()
        with contextlib.suppress(psutil.Error):
            running[0].resume()  # a suspended process acts on SIGTERM only once continued
        with contextlib.suppress(psutil.Error):
            running[0].wait(timeout=10)
        print(f"stopped the serving engine's background build of the previous run (pid {running[0].pid})")


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
    running = background_build(checkpoint_path)  # train.py's: waited for, never paused (not this page's child)
    if running is not None:
        with contextlib.suppress(psutil.Error):
            running[0].wait()
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
    parser.add_argument("--pid-file", default=None, help="removed when the build ends (train.py's background build)")
    args = parser.parse_args()
    if hasattr(os, "nice"):
        os.nice(19)  # the page's answers first: this runs only when the cores are otherwise idle
    cpu = torch.device("cpu")
    model, meta = load_checkpoint(args.checkpoint, cpu)
    amp_dtype = None if args.no_amp else autocast_dtype(cpu)
    try:
        print(load_engine(args.engine, model, meta, args.checkpoint, cpu, amp_dtype, args.data_dir)[1], flush=True)
    finally:
        if args.pid_file:
            Path(args.pid_file).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
