"""The page in a real browser: headless Chromium driven by Playwright, as a user would click it.

Screenshots of each step land in the test's tmp dir (pytest prints it on failure).
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from conftest import find_chromium, make_broken_files, make_dataset, make_imagenet_checkpoint, run_app

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory):
    """app.py serving a cat/dog checkpoint whose ImageNet head sees sports cars: every photo gets the warning."""
    workdir = tmp_path_factory.mktemp("browser")
    make_dataset(workdir / "datasets", per_class_train=1, per_class_val=2)
    checkpoint = make_imagenet_checkpoint(workdir, imagenet_class=817)
    with run_app("--checkpoint", str(checkpoint), cwd=workdir) as (client, _):
        yield client.src, workdir


@pytest.fixture
def page(browser, page_url) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(page_url[0])
    yield page
    page.close()


def test_a_photo_gets_its_class_probabilities_heat_map_and_warning(page: Page, page_url, tmp_path: Path) -> None:
    workdir = page_url[1]
    info = page.locator("h1 + p, .prose").first
    expect(page.get_by_text("Val accuracy:")).to_be_visible()
    for detail in ("resnet18", "Classes:", "cat, dog", "87.5%", "Saved:", "fine-tuned from"):
        expect(info).to_contain_text(detail)

    page.locator("#photo input[type=file]").set_input_files(str(workdir / "datasets/val/dog/dog.0.jpg"))
    verdict = page.locator("#verdict h2")
    expect(verdict).to_be_visible(timeout=TIMEOUT_MS)
    probabilities = page.locator("#probabilities")
    expect(probabilities).to_contain_text("cat")
    expect(probabilities).to_contain_text("dog")
    percents = [int(p) for p in re.findall(r"(\d+)%", probabilities.inner_text())]
    assert len(percents) == 2 and abs(sum(percents) - 100) <= 1, percents
    expect(page.locator("#verdict")).to_contain_text("does not look like a cat or a dog")
    heatmap = page.locator("#heatmap img")
    expect(heatmap).to_be_visible(timeout=TIMEOUT_MS)
    assert heatmap.evaluate("img => img.complete && img.naturalWidth") > 0
    page.screenshot(path=tmp_path / "one-photo.png", full_page=True)

    threshold = page.locator("#threshold input[type=number]")
    threshold.fill("1")
    threshold.press("Enter")
    expect(verdict).to_have_text("Not sure", timeout=TIMEOUT_MS)
    threshold.fill("0")
    threshold.press("Enter")
    expect(verdict).to_have_text(re.compile("^(cat|dog)$"), timeout=TIMEOUT_MS)
    expect(verdict).to_have_text(re.findall("cat|dog", probabilities.inner_text())[0])  # the label lists the top first
    page.screenshot(path=tmp_path / "threshold.png", full_page=True)


def test_a_non_image_gets_plain_words(page: Page, tmp_path: Path) -> None:
    broken = make_broken_files(tmp_path / "broken")
    page.locator("#photo input[type=file]").set_input_files(str(broken["text"]))
    expect(page.get_by_text("This file could not be used: not an image file")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("The upstream Gradio app has raised an exception")).to_have_count(0)
    page.screenshot(path=tmp_path / "not-an-image.png", full_page=True)


def test_the_many_photos_tab_returns_a_table_and_a_csv(page: Page, page_url, tmp_path: Path) -> None:
    val = page_url[1] / "datasets/val"
    broken = make_broken_files(tmp_path / "broken")
    page.get_by_role("tab", name="Many photos").click()
    page.locator("#many-photos input[type=file]").set_input_files(
        [str(val / "cat/cat.0.jpg"), str(val / "dog/dog.1.jpg"), str(broken["truncated"])])
    page.get_by_role("button", name="Classify all").click()
    table = page.locator("#results")
    expect(table).to_contain_text("dog.1.jpg", timeout=TIMEOUT_MS)
    expect(table).to_contain_text("cat.0.jpg")
    expect(table).to_contain_text("the file is cut short")
    link = page.locator("#results-csv a[href$='predictions.csv']")
    expect(link).to_be_visible(timeout=TIMEOUT_MS)
    downloaded = page.request.get(link.get_attribute("href")).body().decode("utf-8-sig").splitlines()
    assert downloaded[0] == "file,class,probability,note" and len(downloaded) == 4
    assert {line.split(",")[0] for line in downloaded[1:]} == {"cat.0.jpg", "dog.1.jpg", "truncated.jpg"}
    page.screenshot(path=tmp_path / "many-photos.png", full_page=True)


def tutorial_or_generated_photo(workdir: Path) -> Path:
    """A real dog photo from $CATS_DOGS_TUTORIAL_DIR when set, else a generated one."""
    real = os.environ.get("CATS_DOGS_TUTORIAL_DIR")
    return sorted((Path(real) / "val/dog").glob("*.jpg"))[0] if real else workdir / "datasets/val/dog/dog.0.jpg"


def page_in(browser, url: str, locale: str) -> Page:
    """The page in a browser whose language is `locale` (navigator.language and the Accept-Language header)."""
    page = browser.new_context(locale=locale, viewport={"width": 1280, "height": 1000}).new_page()
    page.goto(url)
    return page


# What each language shows, and a word of the other that must not appear.
WORDS = {
    "zh-CN": {"tabs": ("单张照片", "多张照片"), "photo": "照片", "heatmap_box": "显示模型在看哪里（Grad-CAM 热力图）",
              "heatmap": "热力图：越红的地方，对结果的影响越大", "info": "验证集准确率", "sure": r"^有 \d+% 的把握。$",
              "hint": "提示：这看起来既不像猫，也不像狗", "absent": "One photo"},
    "en-US": {"tabs": ("One photo", "Many photos"), "photo": "Photo",
              "heatmap_box": "Show where the model looked (Grad-CAM heat map)",
              "heatmap": "Heat map: red areas drove the answer most", "info": "Val accuracy:", "sure": r"^\d+% sure\.$",
              "hint": "Hint: this does not look like a cat or a dog", "absent": "单张照片"},
}


@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
def test_the_page_speaks_the_browsers_language(browser, page_url, locale: str, tmp_path: Path) -> None:
    words = WORDS[locale]
    page = page_in(browser, page_url[0], locale)
    for tab in words["tabs"]:
        expect(page.get_by_role("tab", name=tab)).to_be_visible()
    expect(page.get_by_text(words["absent"])).to_have_count(0)
    expect(page.locator("#photo")).to_contain_text(words["photo"])
    expect(page.locator("#show-heatmap")).to_contain_text(words["heatmap_box"])
    expect(page.locator("h1 + p, .prose").first).to_contain_text(words["info"])

    threshold = page.locator("#threshold input[type=number]")
    threshold.fill("0")  # always a verdict, never "not sure"
    threshold.press("Enter")
    page.locator("#photo input[type=file]").set_input_files(str(tutorial_or_generated_photo(page_url[1])))
    expect(page.locator("#verdict h2")).to_have_text(re.compile("^(cat|dog)$"), timeout=TIMEOUT_MS)  # names stay
    expect(page.locator("#verdict p").first).to_have_text(re.compile(words["sure"]))
    expect(page.locator("#verdict")).to_contain_text(words["hint"])  # the sports-car checkpoint warns about every photo
    expect(page.locator("#heatmap")).to_contain_text(words["heatmap"])
    expect(page.locator("#heatmap img")).to_be_visible(timeout=TIMEOUT_MS)
    page.screenshot(path=tmp_path / f"one-photo-{locale}.png", full_page=True)
    page.context.close()


@pytest.mark.parametrize(("locale", "shown"), [("zh-CN", "网页正忙，请稍后再试。"),
                                               ("en-US", "This application is currently busy. Please try again.")])
def test_the_busy_refusal_reads_in_the_browsers_language(browser, page_url, locale: str, shown: str) -> None:
    """A full queue (--max-queue) is refused at once; Gradio's frontend shows its English sentence as a toast, which
    the page's script (hosting.busy_script) puts into Chinese for a Chinese browser. The toast is made here as
    Gradio makes it, text arriving in a new element: filling a real queue from a browser would take minutes."""
    page = page_in(browser, page_url[0], locale)
    expect(page.get_by_role("tab").first).to_be_visible()  # the page has loaded, its script running
    page.evaluate("""() => {
        const toast = document.createElement("div");
        toast.id = "busy-toast";
        document.body.appendChild(toast);
        toast.appendChild(document.createTextNode("Error: This application is currently busy. Please try again."));
    }""")
    expect(page.locator("#busy-toast")).to_have_text(f"Error: {shown}")
    page.context.close()


def test_errors_and_the_table_arrive_in_chinese_for_a_chinese_browser(browser, page_url, tmp_path: Path) -> None:
    broken = make_broken_files(tmp_path / "broken")
    page = page_in(browser, page_url[0], "zh-CN")
    page.locator("#photo input[type=file]").set_input_files(str(broken["text"]))
    expect(page.get_by_text("这个文件无法使用：不是图片文件").first).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("This file could not be used")).to_have_count(0)
    page.screenshot(path=tmp_path / "not-an-image-zh-CN.png", full_page=True)

    page.get_by_role("tab", name="多张照片").click()
    table = page.locator("#results")
    expect(table).to_contain_text("备注", timeout=TIMEOUT_MS)  # the column names, before the first run too
    page.locator("#many-photos input[type=file]").set_input_files(
        [str(page_url[1] / "datasets/val/cat/cat.0.jpg"), str(broken["truncated"])])
    threshold = page.locator("#threshold input[type=number]")
    threshold.fill("1")  # every photo "not sure"
    threshold.press("Enter")
    page.get_by_role("button", name="全部分类").click()
    expect(table).to_contain_text("无法使用：文件不完整", timeout=TIMEOUT_MS)
    expect(table).to_contain_text("不确定；这看起来既不像猫，也不像狗")
    expect(table).to_contain_text("cat.0.jpg")
    page.screenshot(path=tmp_path / "many-photos-zh-CN.png", full_page=True)
    page.context.close()


def test_the_pages_config_has_a_streaming_camera(page_url) -> None:
    with urllib.request.urlopen(page_url[0].rstrip("/") + "/config", timeout=30) as response:
        config = json.load(response)
    [camera] = [c for c in config["components"] if c["type"] == "image" and c["props"].get("streaming")]
    assert camera["props"]["sources"] == ["webcam"] and camera["props"]["elem_id"] == "camera"
    [stream] = [event for event in config["dependencies"] if [camera["id"], "stream"] in event["targets"]]
    assert stream["connection"] == "stream" and stream["stream_every"] <= 0.5  # a few frames a second
    threshold = next(c["id"] for c in config["components"] if c["props"].get("elem_id") == "threshold")
    assert stream["inputs"] == [camera["id"], threshold]


@pytest.fixture(scope="module")
def camera_browser(browser):
    """Another headless Chromium, whose camera is Chromium's fake one (a moving pattern), allowed without asking."""
    fake = browser.browser_type.launch(
        executable_path=find_chromium(),
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
    yield fake
    fake.close()


# The live tab's name and the verdicts (threshold 1: never sure; 0: always sure).
LIVE_WORDS = {"en-US": ("Live camera", "Not sure", r"^\d+% sure\.$"),
              "zh-CN": ("实时摄像头", "不确定", r"^有 \d+% 的把握。$")}


def start_live_camera(browser, url: str, locale: str) -> Page:
    """The page in `locale`, its threshold at 1, its live tab open and its camera streaming; no upload anywhere."""
    page = page_in(browser, url, locale)
    threshold = page.locator("#threshold input[type=number]")
    threshold.fill("1")
    threshold.press("Enter")
    page.get_by_role("tab", name=LIVE_WORDS[locale][0]).click()
    page.locator("#camera").get_by_text("Click to Access Webcam").click()  # Gradio's words, in every language
    page.locator("#camera button[aria-label='capture photo']").click()  # its Record button: the stream starts
    return page


def test_two_live_cameras_are_classified_at_once_in_their_languages(camera_browser, page_url, tmp_path: Path) -> None:
    pages = {locale: start_live_camera(camera_browser, page_url[0], locale) for locale in LIVE_WORDS}
    for locale, page in pages.items():  # both streams at once: one does not wait for the other to end
        expect(page.locator("#live-verdict h2")).to_have_text(LIVE_WORDS[locale][1], timeout=TIMEOUT_MS)
        percents = [int(p) for p in re.findall(r"(\d+)%", page.locator("#live-probabilities").inner_text())]
        assert len(percents) == 2 and abs(sum(percents) - 100) <= 1, percents
        page.screenshot(path=tmp_path / f"live-{locale}.png", full_page=True)
    for locale, page in pages.items():  # the next frames are answered with the new threshold: updated in place
        threshold = page.locator("#threshold input[type=number]")
        threshold.fill("0")
        threshold.press("Enter")
        expect(page.locator("#live-verdict h2")).to_have_text(re.compile("^(cat|dog)$"), timeout=TIMEOUT_MS)
        expect(page.locator("#live-verdict p").first).to_have_text(re.compile(LIVE_WORDS[locale][2]))
        page.screenshot(path=tmp_path / f"live-{locale}-threshold-0.png", full_page=True)
        page.context.close()
