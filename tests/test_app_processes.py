"""app.py's engine build, a child process suspended while the page answers, never outlives the page: however the page
ends (SIGKILL, SIGTERM, Ctrl-C), no `cats_dogs.engine_build` process is left, stopped or running."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from gradio_client import handle_file

from cats_dogs.tied_child import ARMED, tied_command
from conftest import free_port, labeled_photos, make_dataset, run_app


def engine_builds(page: int) -> list[psutil.Process]:
    return [child for child in psutil.Process(page).children(recursive=True)
            if "cats_dogs.engine_build" in " ".join(child.cmdline())]


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # dead; only its exit status is left to its new parent
    except psutil.NoSuchProcess:
        return True


def page_folder_with_an_untrained_checkpoint(folder: Path) -> None:
    """datasets/ and checkpoint/best_checkpoint.pth (a resnet18 at 32 px, untrained: its engine build costs the same)."""
    from cats_dogs.checkpoint import make_checkpoint, save_checkpoint
    from cats_dogs.model import build_model

    make_dataset(folder / "datasets", per_class_train=4, per_class_val=2)
    save_checkpoint(make_checkpoint(build_model("resnet18", 2), arch="resnet18", class_names=["cat", "dog"],
                                    image_size=32, epoch=1, metrics={"val_acc": 50.0}, weights="none"),
                    folder / "checkpoint/best_checkpoint.pth")


@pytest.fixture
def ctrl_c_reaches_the_page() -> Iterator[None]:
    """A shell starts a background job (`command &`) with SIGINT ignored, and every child inherits that: a page
    started from such a test run would never see the SIGINT these tests send, as one started from a terminal does.
    So the page is started with SIGINT at its default, as a terminal leaves it."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a Python handler: the child starts with the default
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.skipif(sys.platform != "linux", reason="signals and the death signal: Linux (tied_child says what others do)")
@pytest.mark.parametrize("ending", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["SIGKILL", "SIGTERM", "SIGINT"])
def test_no_engine_build_outlives_a_page_that_ends_while_the_build_is_paused(tmp_path: Path, ending: signal.Signals,
                                                                           ctrl_c_reaches_the_page: None) -> None:
    """The page is asked at once, so that its build is suspended as early as it can be (before the fix: while the
    child was still importing torch, before it had asked for its death signal), then the page is ended."""
    page_folder_with_an_untrained_checkpoint(tmp_path)
    photo = labeled_photos(tmp_path / "datasets")[0][0]
    with run_app("--engine", "auto", cwd=tmp_path, timeout=300) as (client, page):
        deadline = time.monotonic() + 60
        while not (builds := engine_builds(page.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert builds, "the page started no engine build"
        client.submit(handle_file(str(photo)), api_name="/predict")  # suspends the build while it is answered
        deadline = time.monotonic() + 30
        while any(build.status() != psutil.STATUS_STOPPED for build in builds) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [build.status() for build in builds] == [psutil.STATUS_STOPPED] * len(builds)
        page.send_signal(ending)
        page.wait(timeout=60)
        deadline = time.monotonic() + 20
        while not all(gone(build) for build in builds) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [(build.pid, build.status()) for build in builds if not gone(build)]
    assert left == [], f"engine builds left behind after {ending.name}: {left}"


@pytest.mark.skipif(sys.platform != "linux", reason="the death signal is Linux's")
def test_a_tied_child_whose_parent_is_already_gone_does_not_run() -> None:
    """The child asks for its death signal first; a parent that died before that would never send it, so the child
    checks that its parent is still the one that started it, and else ends before running anything."""
    command = tied_command("http.server")  # would serve forever if it ran
    command[3] = "1"  # "started by" a process that is not its parent
    repo = Path(__file__).resolve().parents[1]
    finished = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 3 and ARMED not in finished.stdout
    armed = subprocess.run(tied_command("platform"), cwd=repo, capture_output=True, text=True, timeout=60)
    assert armed.returncode == 0 and armed.stdout.splitlines()[0] == ARMED  # then the module's own output
    assert len(armed.stdout.splitlines()) == 2


@pytest.mark.skipif(sys.platform != "linux", reason="SIGINT as a terminal's Ctrl-C sends it")
def test_ctrl_c_while_the_page_is_still_starting_ends_it_at_once_without_a_traceback(tmp_path: Path,
                                                                                   ctrl_c_reaches_the_page: None) -> None:
    """Its server already answers while Gradio's launch() still checks it: a Ctrl-C then escaped launch() and ended
    the page with a traceback and exit status 1."""
    page_folder_with_an_untrained_checkpoint(tmp_path)
    port = free_port()
    repo = Path(__file__).resolve().parents[1]
    page = subprocess.Popen([sys.executable, str(repo / "app.py"), "--port", str(port), "--no-compile", "--engine", "auto"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and page.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.01)
        page.send_signal(signal.SIGINT)  # the moment the port first accepts a connection
        _, errors = page.communicate(timeout=30)
    finally:  # a page that did not end is not left behind
        if page.poll() is None:
            page.kill()
            page.communicate()
    assert page.returncode == 0 and "Traceback" not in errors, errors[-2000:]
