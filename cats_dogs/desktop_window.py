"""desktop.py's window (PySide6): photos opened or dropped, a table of their answers, the selected photo's verdict,
probabilities and Grad-CAM heat map, the table saved as a CSV. The model's work runs on desktop_worker.Worker's
thread; this thread only draws, so the window answers the mouse while 1000 photos are classified.

The answers are worded as the web page words them (answers.py, translations.py), in the window's one language.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cats_dogs.answers import table_row, verdict, write_results_csv
from cats_dogs.desktop_classifier import PhotoClassifier, photos_in
from cats_dogs.desktop_worker import Worker
from cats_dogs.images import IMAGE_EXTENSIONS
from cats_dogs.translations import columns, describe, desktop_text, text

PICTURE_SIZE = 400  # pixels of the square the selected photo is drawn in


class Window(QMainWindow):
    """The window. open_paths() and save_csv() are what its buttons, its drop target and desktop.py call."""

    ask_load = Signal(str)
    ask_classify = Signal(int, object)
    ask_draw = Signal(int, int, str, int, bool)
    load_failed = Signal(str)  # the one line saying why the checkpoint could not be loaded
    settled = Signal()  # every photo of the current job answered, and the selected one drawn (--screenshot waits)

    def __init__(self, worker: Worker, language: str, threshold: float, show_heatmap: bool) -> None:
        super().__init__()
        self.worker, self.language = worker, language
        self.classifier: PhotoClassifier | None = None
        self.photos: list[tuple[str, Path]] = []  # (name in the table, path)
        self.answers: list = []  # per row: None while waiting, (probabilities, pet share), or why it cannot be used
        self.pictures: dict[tuple[int, bool], QImage] = {}  # (row, heat map) -> as drawn by the worker
        self.job, self.job_done, self.settled_job = 0, True, -1
        self.ask_load.connect(worker.load)
        self.ask_classify.connect(worker.classify)
        self.ask_draw.connect(worker.draw)
        worker.loaded.connect(self.on_loaded)
        worker.answered.connect(self.on_answered)
        worker.job_done.connect(self.on_job_done)
        worker.picture_ready.connect(self.on_picture)
        self.build(threshold, show_heatmap)
        self.setAcceptDrops(True)
        self.engine_timer = QTimer(self, interval=500)  # the engine is built in the background: its line changes
        self.engine_timer.timeout.connect(lambda: self.engine.setText(self.classifier.engine_line if self.classifier else ""))
        self.engine_timer.start()

    def words(self, key: str, **values) -> str:
        return desktop_text(key, self.language, **values)

    def build(self, threshold: float, show_heatmap: bool) -> None:
        self.setWindowTitle("desktop.py")
        self.header = QLabel(textFormat=Qt.TextFormat.MarkdownText, wordWrap=True, objectName="header")
        buttons = QHBoxLayout()
        for key, action in (("open_photos", self.choose_photos), ("open_folder", self.choose_folder),
                            ("open_checkpoint", self.choose_checkpoint), ("save_csv", self.choose_csv)):
            button = QPushButton(self.words(key), objectName=key)
            button.clicked.connect(action)
            buttons.addWidget(button)
        buttons.addStretch()
        self.threshold = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, decimals=2, value=threshold)
        self.threshold.valueChanged.connect(self.refresh)
        self.show_heatmap = QCheckBox(self.words("show_heatmap"), checked=show_heatmap)
        self.show_heatmap.toggled.connect(self.show_selected)
        for widget in (QLabel(self.words("threshold")), self.threshold, self.show_heatmap):
            buttons.addWidget(widget)
        self.table = QTableWidget(0, 4, objectName="results")
        self.table.setHorizontalHeaderLabels(columns("results", self.language))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self.show_selected)
        self.verdict = QLabel(self.words("drop_here"), textFormat=Qt.TextFormat.MarkdownText, wordWrap=True,
                              objectName="verdict")
        self.bars = QVBoxLayout()
        self.picture = QLabel(alignment=Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, objectName="picture")
        self.picture.setFixedSize(PICTURE_SIZE, PICTURE_SIZE)
        self.caption = QLabel(wordWrap=True)
        answer = QWidget()
        column = QVBoxLayout(answer)
        column.addWidget(self.verdict)
        column.addLayout(self.bars)
        column.addWidget(self.caption)
        column.addWidget(self.picture)
        column.addStretch()
        splitter = QSplitter()
        splitter.addWidget(self.table)
        splitter.addWidget(answer)
        splitter.setSizes([520, PICTURE_SIZE + 40])
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addWidget(self.header)
        layout.addLayout(buttons)
        layout.addWidget(splitter, stretch=1)
        self.setCentralWidget(central)
        self.engine = QLabel(objectName="engine")
        self.statusBar().addPermanentWidget(self.engine)

    # The checkpoint.
    def load_checkpoint(self, path: str | os.PathLike) -> None:
        self.classifier = None  # photos opened meanwhile wait for it (on_loaded)
        self.worker.current_job = -1  # the old model's job under way stops: the new one answers them all again
        self.header.setText(self.words("loading", path=path))
        self.ask_load.emit(str(path))

    def on_loaded(self, classifier: PhotoClassifier | None, problem: str) -> None:
        if classifier is None:
            self.header.setText(problem)
            print(problem, flush=True)
            self.load_failed.emit(problem)
            return
        self.classifier, meta = classifier, classifier.meta
        title = text("title", self.language, names=" vs ".join(name.capitalize() for name in classifier.class_names))
        self.setWindowTitle(title)
        self.header.setText(f"### {title}\n{describe(meta, classifier.checkpoint_path, self.language)}")
        print(f"loaded {classifier.checkpoint_path} ({meta['arch']}, classes {classifier.class_names})", flush=True)
        while self.bars.count():
            self.bars.takeAt(0).widget().deleteLater()
        for name in classifier.class_names:
            self.bars.addWidget(QProgressBar(objectName=f"probability-{name}", maximum=1000, textVisible=True))
        if self.photos:
            self.start_job()

    def no_checkpoint(self) -> None:
        self.header.setText(self.words("no_checkpoint"))

    # The photos.
    def open_paths(self, paths: list[str | os.PathLike]) -> None:
        """Photos and folders, as opened with the buttons, dropped on the window or given to desktop.py."""
        photos = photos_in(paths)
        if not photos:
            self.statusBar().showMessage(self.words("no_photos", path=", ".join(map(str, paths))))
            return
        self.photos = photos
        self.table.setRowCount(len(photos))
        for row, (name, _) in enumerate(photos):
            self.table.setItem(row, 0, QTableWidgetItem(name))
        self.answers = [None] * len(photos)
        if self.classifier is not None:
            self.start_job()
        self.table.selectRow(0)

    def start_job(self) -> None:
        self.job += 1
        self.worker.current_job = self.job  # the worker drops what is left of the job before
        self.answers, self.pictures, self.job_done = [None] * len(self.photos), {}, False
        self.refresh()
        self.ask_classify.emit(self.job, [path for _, path in self.photos])

    def on_answered(self, job: int, row: int, answer) -> None:
        if job != self.job:
            return
        self.answers[row] = answer
        self.show_row(row)
        done = sum(answer is not None for answer in self.answers)
        self.statusBar().showMessage(self.words("progress", done=done, count=len(self.answers)))
        if row == self.selected_row():
            self.show_selected()

    def on_job_done(self, job: int) -> None:
        if job == self.job:
            self.job_done = True
            self.check_settled()

    def on_picture(self, job: int, row: int, heatmap: bool, picture: QImage) -> None:
        if job != self.job:
            return
        self.pictures[(row, heatmap)] = picture
        if row == self.selected_row():
            self.show_selected()

    def check_settled(self) -> None:
        row = self.selected_row()
        drawn = (row is None or isinstance(self.answers[row], str)
                 or self.pictures.get((row, self.show_heatmap.isChecked())) is not None)
        if self.job_done and drawn and self.settled_job != self.job:
            self.settled_job = self.job
            self.settled.emit()

    # What is shown.
    def selected_row(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if rows and rows[0].row() < len(self.answers) else None

    def row_words(self, row: int) -> list:
        """The row's class, probability and note (answers.table_row), or its reason in the note column."""
        answer = self.answers[row]
        if answer is None or isinstance(answer, str):
            return ["", None, answer or ""]
        probabilities, pet_share = answer
        return table_row(probabilities, self.classifier.class_names, self.threshold.value(), pet_share, self.language)

    def show_row(self, row: int) -> None:
        name, probability, note = self.row_words(row)
        for column, value in enumerate((name, "" if probability is None else f"{probability:.1%}", note), start=1):
            self.table.setItem(row, column, QTableWidgetItem(value))

    def refresh(self) -> None:
        """Every row and the selected photo again: the threshold changed, or a new job began."""
        for row in range(len(self.answers)):
            self.show_row(row)
        self.show_selected()

    def show_selected(self) -> None:
        row = self.selected_row()
        answer = None if row is None else self.answers[row]
        probabilities = answer if isinstance(answer, tuple) else None
        for index in range(self.bars.count()):
            bar, name = self.bars.itemAt(index).widget(), self.classifier.class_names[index] if self.classifier else ""
            p = probabilities[0][index] if probabilities else 0.0
            bar.setValue(round(1000 * p))
            bar.setFormat(f"{name}  {p:.1%}" if probabilities else name)
        if row is None:
            self.verdict.setText(self.words("drop_here"))
        elif isinstance(answer, str):
            self.verdict.setText(f"**{self.photos[row][0]}**: {answer}")
        elif probabilities:
            names = self.classifier.class_names
            said = verdict(dict(zip(names, probabilities[0], strict=True)), self.threshold.value(), probabilities[1],
                           self.language)
            self.verdict.setText(said)
        else:
            self.verdict.setText(f"**{self.photos[row][0]}** …")
        self.show_picture(row, probabilities)
        self.check_settled()

    def show_picture(self, row: int | None, probabilities: tuple | None) -> None:
        heatmap = self.show_heatmap.isChecked()
        self.caption.setText(self.words("heatmap") if heatmap and probabilities else "")
        picture = self.pictures.get((row, heatmap))
        if picture is None:
            self.picture.clear()
            if probabilities and (row, heatmap) not in self.pictures:
                self.pictures[(row, heatmap)] = None  # asked once; on_picture fills it in
                best = max(range(len(probabilities[0])), key=probabilities[0].__getitem__)
                self.ask_draw.emit(self.job, row, str(self.photos[row][1]), best, heatmap)
            return
        self.picture.setPixmap(QPixmap.fromImage(picture).scaled(
            PICTURE_SIZE, PICTURE_SIZE, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))

    def answer_lines(self) -> list[str]:
        """One line per photo, as desktop.py --screenshot prints them: its name, class and probability, or its reason."""
        lines = []
        for row, (name, _) in enumerate(self.photos):
            best, probability, note = self.row_words(row)
            said = f"{best} {probability:.1%}" + (f" ({note})" if note else "") if probability is not None else note
            lines.append(f"{name}: {said}")
        return lines

    # The buttons, and files dropped on the window.
    def choose_photos(self) -> None:
        patterns = " ".join(f"*{extension}" for extension in IMAGE_EXTENSIONS)
        paths, _ = QFileDialog.getOpenFileNames(self, self.words("open_photos"), "",
                                                f"{self.words('photos_filter')} ({patterns});;{self.words('all_files')} (*)")
        if paths:
            self.open_paths(paths)

    def choose_folder(self) -> None:
        if folder := QFileDialog.getExistingDirectory(self, self.words("open_folder")):
            self.open_paths([folder])

    def choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, self.words("open_checkpoint"), "",
                                              f"{self.words('checkpoints_filter')} (*.pth *.pt);;{self.words('all_files')} (*)")
        if path:
            self.load_checkpoint(path)

    def choose_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, self.words("save_csv"), "predictions.csv", "CSV (*.csv)")
        if path:
            self.save_csv(path)

    def save_csv(self, path: str | os.PathLike) -> bool:
        """The table as a CSV (answers.write_results_csv, as the page's); False with a message when it cannot be."""
        if not any(answer is not None for answer in self.answers):
            self.statusBar().showMessage(self.words("nothing_to_save"))
            return False
        rows = [[name, *self.row_words(row)] for row, (name, _) in enumerate(self.photos)]
        try:
            write_results_csv(path, rows, self.language)
        except OSError as error:  # a full disk, a folder without write permission, the file open in Excel on Windows
            self.statusBar().showMessage(self.words("cannot_save", path=path, reason=error.strerror or error))
            return False
        self.statusBar().showMessage(self.words("saved_csv", path=path))
        return True

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 -- Qt's name
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 -- Qt's name
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_paths(paths)
