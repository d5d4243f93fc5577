"""export.py --web: the static page, served by a plain static server, in headless Chromium with the internet blocked.

The page must answer as PyTorch does on the same photos: its preprocessing is JavaScript (app.js), PyTorch's is
cats_dogs/preprocessing.py, and the two are held together here on the model's input and on the answers.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import Page, expect

from cats_dogs.checkpoint import checkpoint_transform, load_checkpoint
from cats_dogs.csv_rows import read_csv_rows
from cats_dogs.images import open_image
from cats_dogs.preprocessing import IMAGENET_STD
from cats_dogs.translations import DOUBT_THRESHOLD
from cats_dogs.web_export import write_web
from conftest import find_chromium, make_photo, run_script

TIMEOUT_MS = 60_000
DECIDED = 0.10  # photos where PyTorch's top class leads by more than this must get the same top class
FP32_TOLERANCE = 1e-2  # largest probability difference, fp32 page against PyTorch
QUANTIZED_TOLERANCE = 0.05  # the same for the INT8 page (measured 8e-3 on the tutorial's 70 val photos)
# The page resizes in floating point, Pillow and torch in fixed point: a value that falls near .5 may round the other
# way. Measured on the tutorial's 70 val photos: at most 1 level, 0.001 on average (0.022 on the worst photo).
PIXEL_LEVELS = 1.001  # largest difference of one input value, in 0..255 grey levels (+ float rounding)
MEAN_PIXEL_LEVELS = 0.05  # mean difference over all input values of one photo


@pytest.fixture(scope="session")
def runtime_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the exports cache onnxruntime-web: downloaded from the npm registry once per test run."""
    return tmp_path_factory.mktemp("web-runtime-cache")


@pytest.fixture(scope="module")
def pages(separating_run: Path, runtime_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The page exported by export.py (fp32), and again with INT8 weights in this process (what --web-quantize int8
    calls), its runtime taken from the first folder as --web-runtime would."""
    out = tmp_path_factory.mktemp("web")
    result = run_script("export.py", "--web", str(out / "fp32"), cwd=separating_run,
                        env={"CATS_DOGS_CACHE": str(runtime_cache)})
    assert re.search(r"check on 8 val photos: top class as PyTorch on 100.0%", result.stdout), result.stdout
    model, meta = load_checkpoint(separating_run / "checkpoint/best_checkpoint.pth")
    write_web(model, meta, out / "int8", "int8", str(out / "fp32/ort"))
    assert (out / "int8/model.onnx").stat().st_size < (out / "fp32/model.onnx").stat().st_size / 3  # 8-bit weights
    return {"fp32": out / "fp32", "int8": out / "int8"}


@pytest.fixture(scope="module")
def photos(separating_run: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real val photos when $CATS_DOGS_TUTORIAL_DIR is set, and generated ones that exercise each step of the
    preprocessing: a large photo (antialiasing), a transparent PNG (white background), an EXIF-rotated JPEG."""
    folder = tmp_path_factory.mktemp("web-photos")
    chosen = sorted((separating_run / "datasets/val").rglob("*.jpg"))[::2]
    if tutorial := os.environ.get("CATS_DOGS_TUTORIAL_DIR"):
        rows = read_csv_rows(Path(tutorial) / "val.csv", 2)
        chosen += [path for path, _ in rows[:: max(1, len(rows) // 8)][:8]]
    large = make_photo(folder / "large.jpg", 1, seed=5, size=(400, 300))
    transparent = Image.open(make_photo(folder / "base.png", 0, seed=6, size=(80, 60))).convert("RGBA")
    transparent.putalpha(Image.linear_gradient("L").resize((80, 60)))
    transparent.save(folder / "transparent.png")
    rotated = make_photo(folder / "plain.jpg", 1, seed=7, size=(90, 50))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view
    Image.open(rotated).save(folder / "rotated.jpg", exif=exif, quality=95)
    return chosen + [large, folder / "transparent.png", folder / "rotated.jpg"]


@pytest.fixture(scope="module")
def served(pages: dict[str, Path]) -> Iterator[str]:
    """Both folders under one plain static server on localhost (what `python -m http.server` does)."""
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(next(iter(pages.values())).parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def open_page(browser, url: str, locale: str = "en-US") -> tuple[Page, list[str]]:
    """The page with every request outside localhost refused; returns it and the refused addresses."""
    context = browser.new_context(locale=locale, viewport={"width": 390, "height": 844})  # a phone's screen
    blocked = []

    def only_localhost(route) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_localhost)
    page = context.new_page()
    page.goto(url)
    expect(page.locator("body[data-ready=true]")).to_be_attached(timeout=TIMEOUT_MS)
    return page, blocked


def page_answers(page: Page, photo: Path, copy_to: Path) -> tuple[dict[str, float], np.ndarray, str]:
    """Upload one photo; the probabilities as the page writes them ("cat 97.1%"), its model input and its verdict."""
    copy_to.write_bytes(photo.read_bytes())  # a new name each time: the answer is found by it
    page.locator("#photo").set_input_files(str(copy_to))
    expect(page.locator(f'#answer[data-photo="{copy_to.name}"]')).to_be_visible(timeout=TIMEOUT_MS)
    lines = page.locator("#probabilities li").all_inner_texts()
    probabilities = {}
    for line in lines:
        name, value = re.fullmatch(r"(.+) (\d+\.\d)%", line.strip()).groups()
        probabilities[name] = float(value) / 100
    model_input = np.array(page.evaluate("Array.from(window.catsDogs.lastInput)"), dtype=np.float32)
    return probabilities, model_input, page.locator("#headline").inner_text()


def pytorch_answers(checkpoint: Path, photos: list[Path]) -> tuple[list[dict[str, float]], torch.Tensor]:
    model, meta = load_checkpoint(checkpoint)
    inputs = torch.stack([checkpoint_transform(meta)(open_image(photo)) for photo in photos])
    with torch.inference_mode():
        probabilities = torch.softmax(model(inputs), dim=1)
    return [dict(zip(meta["class_names"], row.tolist(), strict=True)) for row in probabilities], inputs


def test_the_page_answers_as_pytorch_with_the_internet_blocked(browser, served: str, separating_run: Path,
                                                                photos: list[Path], tmp_path: Path) -> None:
    expected, inputs = pytorch_answers(separating_run / "checkpoint/best_checkpoint.pth", photos)
    std = np.array(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)  # the checkpoint's; back to grey levels
    worst = {"fp32": 0.0, "int8": 0.0}
    for precision, tolerance in (("fp32", FP32_TOLERANCE), ("int8", QUANTIZED_TOLERANCE)):
        page, blocked = open_page(browser, f"{served}/{precision}/")
        expect(page.locator("h1")).to_have_text("Cat vs Dog classifier")  # as app.py titles it
        for index, (photo, wanted, model_input) in enumerate(zip(photos, expected, inputs, strict=True)):
            got, page_input, headline = page_answers(page, photo, tmp_path / f"{precision}-{index}{photo.suffix}")
            levels = np.abs(page_input.reshape(model_input.shape) - model_input.numpy()) * std * 255
            assert levels.max() <= PIXEL_LEVELS and levels.mean() <= MEAN_PIXEL_LEVELS, (photo, levels.max(), levels.mean())
            top, second = sorted(wanted.values(), reverse=True)[:2]
            difference = max(abs(got[name] - p) for name, p in wanted.items())
            worst[precision] = max(worst[precision], difference)
            if top - second > DECIDED:
                assert max(got, key=got.get) == max(wanted, key=wanted.get), (photo, got, wanted)
                assert difference <= tolerance + 0.0005, (photo, got, wanted)  # + the page's rounding to 0.1%
            best = max(got, key=got.get)
            assert headline == (best if got[best] >= DOUBT_THRESHOLD else "Not sure"), (headline, got)
        assert blocked == []  # the page asked for nothing outside its folder
        page.screenshot(path=tmp_path / f"{precision}.png", full_page=True)
        page.context.close()
    print(f"largest probability difference from PyTorch on {len(photos)} photos: {worst}")


def test_the_page_speaks_chinese_takes_a_dropped_photo_and_says_it_must_be_served(
        browser, served: str, pages: dict[str, Path], photos: list[Path], tmp_path: Path) -> None:
    page, _ = open_page(browser, f"{served}/fp32/", locale="zh-CN")
    expect(page.locator("h1")).to_have_text("Cat vs Dog 分类器")
    expect(page.locator("#private")).to_contain_text("照片不会离开这台设备")
    dropped = page.evaluate_handle("""bytes => {  // a photo dragged from the desktop onto the page
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], "dropped.jpg", { type: "image/jpeg" }));
        return transfer;
    }""", list(photos[0].read_bytes()))
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    expect(page.locator('#answer[data-photo="dropped.jpg"]')).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#probabilities li")).to_have_count(2)
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("not a photo", encoding="utf-8")
    page.locator("#photo").set_input_files(str(not_a_photo))
    expect(page.locator("#status")).to_have_text("这个文件无法作为照片使用。", timeout=TIMEOUT_MS)
    page.context.close()

    page = browser.new_page()
    page.goto((pages["fp32"] / "index.html").as_uri())
    expect(page.locator("#not-served")).to_contain_text("python -m http.server")
    page.close()


def test_the_camera_is_classified_live(browser, served: str) -> None:
    """Chromium's fake camera (a moving test pattern) stands in for a webcam: answers follow one another."""
    camera_browser = browser.browser_type.launch(executable_path=find_chromium(), args=[
        "--headless", "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
    try:
        page, blocked = open_page(camera_browser, f"{served}/fp32/")
        page.context.grant_permissions(["camera"])
        page.locator("#camera-start").click()
        answer = page.locator('#answer[data-photo="camera"]')
        expect(answer).to_be_visible(timeout=TIMEOUT_MS)
        first = int(answer.get_attribute("data-answers"))
        page.wait_for_function(f"document.querySelector('#answer').dataset.answers > {first + 1}",
                               timeout=TIMEOUT_MS)  # the next frames were classified, without a click
        expect(page.locator("#probabilities li")).to_have_count(2)
        page.locator("#camera-stop").click()
        expect(page.locator("#camera")).to_be_hidden()
        assert blocked == []
    finally:
        camera_browser.close()


def test_the_runtime_is_checked_and_its_absence_explained(runtime_cache: Path, pages: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from cats_dogs.web_runtime import ORT_WEB_VERSION, RUNTIME_FILES, runtime_files

    tarball = runtime_cache / f"onnxruntime-web-{ORT_WEB_VERSION}.tgz"
    assert set(runtime_files(str(tarball))) == set(RUNTIME_FILES)  # a copy given by --web-runtime (a folder: `pages`)
    tampered = tmp_path / tarball.name
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="sha512 differs from the pinned one"):
        runtime_files(str(tampered))
    # No registry (an address where nothing listens; a proxy variable would not do: urllib reads those once per
    # process, and an earlier test may have opened a URL already) and an empty cache: one line says how to provide them.
    from cats_dogs import web_runtime

    monkeypatch.setenv("CATS_DOGS_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(web_runtime, "ORT_WEB_URL", "https://127.0.0.1:9/onnxruntime-web.tgz")
    with pytest.raises(SystemExit, match=r"could not download the page's runtime .*--web-runtime") as refused:
        runtime_files(None)
    assert "\n" not in str(refused.value)
