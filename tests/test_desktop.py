"""desktop.py: its window driven with pytest-qt (offscreen: CI has no display), and desktop.py --screenshot run for real.

The checkpoint is separating_run's, which tells the generated cats (reddish) from dogs (bluish) on every photo.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before pytest-qt starts the QApplication
if not os.environ.get("CI"):  # PySide6 is optional (requirements-desktop.txt); CI installs it, and fails without it
    for package in ("PySide6", "pytestqt"):
        pytest.importorskip(package, reason="pip install -r requirements-desktop.txt")

import psutil  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageStat  # noqa: E402
from PySide6.QtCore import QMimeData, QPointF, Qt, QThread, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QFileDialog, QPushButton  # noqa: E402

from cats_dogs.desktop_window import Window  # noqa: E402
from cats_dogs.desktop_worker import Worker  # noqa: E402
from conftest import REPO, labeled_photos, make_broken_files, make_photo, run_script  # noqa: E402

WAIT_MS = 120_000  # a loaded 2-core machine


@pytest.fixture
def open_window(qtbot, separating_run: Path) -> Iterator:
    """A function that opens the window in a language, with the worker on its own thread and the checkpoint loaded."""
    threads = []

    def open_window(language: str = "en") -> Window:
        worker = Worker(torch.device("cpu"), "torch", None, True, language)  # the engines: test_engines.py
        thread = QThread()
        worker.moveToThread(thread)
        thread.start()
        threads.append((worker, thread))
        window = Window(worker, language, 0.7, True)
        qtbot.addWidget(window)
        window.show()
        with qtbot.waitSignal(worker.loaded, timeout=WAIT_MS):
            window.load_checkpoint(separating_run / "checkpoint/best_checkpoint.pth")
        return window

    yield open_window
    for worker, thread in threads:
        worker.current_job = -1
        worker.close()
        thread.quit()
        thread.wait(WAIT_MS)


def table(window: Window) -> list[list[str]]:
    return [[window.table.item(row, column).text() for column in range(4)] for row in range(window.table.rowCount())]


def test_the_window_shows_each_photos_class_verdict_probabilities_and_heat_map(open_window, qtbot,
                                                                               separating_run: Path) -> None:
    window = open_window()
    photos = labeled_photos(separating_run / "datasets")
    with qtbot.waitSignal(window.settled, timeout=WAIT_MS):
        window.open_paths([photo for photo, _ in photos])
    rows = table(window)
    assert [row[:2] for row in rows] == [[photo.name, truth] for photo, truth in photos]
    assert all(float(row[2].rstrip("%")) > 70 and row[3] == "" for row in rows)
    # The first photo is selected: its verdict, every class's bar, and its heat map, drawn on the worker's thread.
    assert window.verdict.text().startswith(f"## {photos[0][1]}\n")
    bars = {bar.objectName(): bar.value() for bar in (window.bars.itemAt(i).widget() for i in range(window.bars.count()))}
    assert set(bars) == {"probability-cat", "probability-dog"} and sum(bars.values()) == pytest.approx(1000, abs=2)
    heat_map = window.picture.pixmap().toImage()
    assert not heat_map.isNull() and len({heat_map.pixel(x, 5) for x in range(0, heat_map.width(), 8)}) > 3

    window.threshold.setValue(1.0)  # nothing is that sure: every row says so, and so does the verdict, at once
    assert all(row[3] == "not sure" for row in table(window))
    assert window.verdict.text().startswith("## Not sure")
    window.table.selectRow(len(photos) - 1)  # another photo: its own verdict and heat map
    qtbot.waitUntil(lambda: (len(photos) - 1, True) in window.pictures and window.pictures[(len(photos) - 1, True)],
                    timeout=WAIT_MS)
    assert f"**{photos[-1][1]}**" in window.verdict.text()


def test_photos_and_a_folder_dropped_on_the_window_are_classified(open_window, qtbot, separating_run: Path,
                                                                  tmp_path: Path) -> None:
    window = open_window()
    folder = separating_run / "datasets/val"
    broken = make_broken_files(tmp_path)["text"]
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(folder)), QUrl.fromLocalFile(str(broken))])
    enter = QDragEnterEvent(QPointF(50, 50), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window.table.viewport(), enter)  # dropped on the table: the window takes it
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.settled, timeout=WAIT_MS):
        QApplication.sendEvent(window.table.viewport(), drop)
    rows = table(window)
    expected = sorted(f"{truth}/{photo.name}" for photo, truth in labeled_photos(separating_run / "datasets"))
    assert [row[0] for row in rows] == [*expected, broken.name]  # the folder's photos by their path inside it
    assert [row[1] for row in rows[:-1]] == [name.split("/")[0] for name in expected]
    assert rows[-1][1:3] == ["", ""] and rows[-1][3].startswith("could not be used: not an image file")


def test_save_as_csv_writes_the_table_in_the_windows_language(open_window, qtbot, monkeypatch,
                                                              tmp_path: Path) -> None:
    window = open_window("zh")
    photos = [make_photo(tmp_path / "照片" / "猫 1.jpg", 0, seed=7), make_photo(tmp_path / "照片" / "狗 1.jpg", 1, seed=8)]
    with qtbot.waitSignal(window.settled, timeout=WAIT_MS):
        window.open_paths(photos)
    target = tmp_path / "结果" / "预测.csv"
    target.parent.mkdir()
    # The system's save dialog cannot be clicked offscreen: it answers the path a user would pick.
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *_, **__: (str(target), "CSV (*.csv)"))
    qtbot.mouseClick(window.findChild(QPushButton, "save_csv"), Qt.MouseButton.LeftButton)
    assert window.statusBar().currentMessage() == f"已保存 {target}"
    with open(target, encoding="utf-8-sig", newline="") as file:  # Excel's encoding: a BOM, then UTF-8
        written = list(csv.reader(file))
    assert written[0] == ["文件", "类别", "概率", "备注"]
    assert [row[:2] for row in written[1:]] == [["猫 1.jpg", "cat"], ["狗 1.jpg", "dog"]]
    assert [f"{float(row[2]):.1%}" for row in written[1:]] == [row[2] for row in table(window)]
    target.parent.chmod(0o500)  # a folder it may not write to: one line in the window, the old file untouched
    try:
        if os.access(target.parent, os.W_OK):  # root writes anywhere: make the target a folder instead
            target = tmp_path / "a folder.csv"
            target.mkdir()
        assert not window.save_csv(target)
        assert window.statusBar().currentMessage().startswith(f"无法保存 {target}：")
    finally:
        (tmp_path / "结果").chmod(0o700)
    assert list(csv.reader(open(tmp_path / "结果" / "预测.csv", encoding="utf-8-sig"))) == written


def test_a_file_that_is_no_checkpoint_is_one_line_in_the_window(open_window, qtbot, tmp_path: Path) -> None:
    window = open_window()
    not_a_checkpoint = tmp_path / "notes.pth"
    not_a_checkpoint.write_text("not a checkpoint", encoding="utf-8")
    with qtbot.waitSignal(window.load_failed, timeout=WAIT_MS) as failed:
        window.load_checkpoint(not_a_checkpoint)
    assert failed.args[0].startswith(f"Cannot load {not_a_checkpoint}: ") and "\n" not in failed.args[0]
    assert window.header.text() == failed.args[0]


def test_screenshot_answers_the_photos_saves_the_window_and_ends_the_engine_build(separating_run: Path,
                                                                                  tmp_path: Path) -> None:
    # A copy: the engine's build must start here (an engine cached beside the shared checkpoint would skip it).
    checkpoint = tmp_path / "checkpoint/best_checkpoint.pth"
    checkpoint.parent.mkdir()
    shutil.copy(separating_run / "checkpoint/best_checkpoint.pth", checkpoint)
    photos = labeled_photos(separating_run / "datasets")[::3]
    screenshot = tmp_path / "shots/window.png"
    # -X importtime lists every module the run imported: the desktop app must not load Gradio.
    result = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "desktop.py"), "--checkpoint",
                             str(checkpoint), "--data-dir", str(separating_run / "datasets"), "--language", "en",
                             *[str(photo) for photo, _ in photos], "--screenshot", str(screenshot)],
                            cwd=tmp_path, capture_output=True, text=True, encoding="utf-8", timeout=300,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    for photo, truth in photos:
        assert re.search(rf"^{re.escape(photo.name)}: {truth} (9\d|100)\.\d%$", result.stdout, re.MULTILINE), result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "PySide6.QtWidgets" in imported and not {name for name in imported if name.split(".")[0] == "gradio"}
    image = Image.open(screenshot)
    assert image.width >= 800 and max(high - low for low, high in ImageStat.Stat(image.convert("RGB")).extrema) > 100
    # The engine's build, started for this checkpoint, ended with the window (or had finished before it).
    builds = [p for p in psutil.process_iter(["cmdline"]) if str(checkpoint) in " ".join(p.info["cmdline"] or [])]
    assert builds == []
    assert "stopped the engine's build" in result.stdout or (checkpoint.parent / "engines").is_dir(), result.stdout


def test_without_pyside6_one_line_names_the_requirements_file(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "sitecustomize.py").write_text("import sys\nsys.modules['PySide6'] = None\n", encoding="utf-8")
    result = run_script("desktop.py", "--help", cwd=tmp_path, check=False,
                        env={"PYTHONPATH": os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")])})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "pip install -r requirements-desktop.txt" in result.stderr
