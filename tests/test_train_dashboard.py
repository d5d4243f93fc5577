"""The SwanLab dashboard of a real (tiny) training run, opened in headless Chromium as `swanlab watch` serves it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect

from conftest import free_port

TIMEOUT_MS = 60_000


def test_the_dashboard_lists_the_run_and_draws_its_charts(trained_run: Path, browser, tmp_path: Path) -> None:
    port = free_port()
    swanlab = shutil.which("swanlab", path=str(Path(sys.executable).parent)) or "swanlab"
    server = subprocess.Popen([swanlab, "watch", "--port", str(port), "swanlog"], cwd=trained_run,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
                assert time.monotonic() < deadline, "swanlab watch did not serve its page within 60 s"
                time.sleep(0.5)

        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        expect(page.get_by_text("cats-vs-dogs").first).to_be_visible(timeout=TIMEOUT_MS)  # the project
        experiment = page.get_by_text("resnet50", exact=True).first  # train.py names the run after the model
        expect(experiment).to_be_visible(timeout=TIMEOUT_MS)
        page.screenshot(path=tmp_path / "dashboard-project.png", full_page=True)

        experiment.click()
        for chart in ("train_loss", "val_acc", "val_examples"):
            expect(page.get_by_text(chart, exact=True).first).to_be_visible(timeout=TIMEOUT_MS)
        expect(page.get_by_text("Fine-tune resnet50 on datasets (cat, dog).")).to_be_visible()
        # The line charts are drawn, not just titled.
        page.wait_for_function("document.querySelectorAll('canvas').length >= 2", timeout=TIMEOUT_MS)
        expect(page.get_by_text("cat / cat").or_(page.get_by_text("dog / dog")).first).to_be_visible()
        page.screenshot(path=tmp_path / "dashboard-charts.png", full_page=True)
        page.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
