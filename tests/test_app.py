"""app.py started for real on a free port and asked through gradio_client, as a user's script would."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pytest
import torch
from gradio_client import handle_file

from cats_dogs.checkpoint import load_checkpoint
from cats_dogs.engine_build import PausedWhileAnswering
from cats_dogs.hosting import open_page_warnings
from cats_dogs.images import open_image
from cats_dogs.model import build_model
from conftest import (
    WindowsZipInfo,
    add_hostile_members,
    labeled_photos,
    make_dataset,
    make_imagenet_checkpoint,
    read_swanlab_runs,
    run_app,
    run_script,
)


def confidences(answer: dict) -> dict[str, float]:
    return {item["label"]: item["confidence"] for item in answer["confidences"]}


def test_page_answers_probabilities_that_sum_to_one(separating_run: Path) -> None:
    with run_app(cwd=separating_run) as (client, _):
        assert "/predict" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        for photo, truth in labeled_photos(separating_run / "datasets"):
            answer = client.predict(handle_file(str(photo)), api_name="/predict")
            probabilities = confidences(answer)
            assert set(probabilities) == {"cat", "dog"}
            assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
            assert answer["label"] == max(probabilities, key=probabilities.get) == truth, photo.name
            assert probabilities[truth] > 0.9, photo.name  # the model's clear answer, not a coin toss


def test_unreadable_upload_gets_a_readable_error_and_the_server_keeps_serving(trained_run: Path, tmp_path: Path) -> None:
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("this is a text file", encoding="utf-8")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with run_app(cwd=trained_run) as (client, _):
        for bad in (not_a_photo, empty):
            with pytest.raises(Exception, match="This file could not be used: not an image file"):
                client.predict(handle_file(str(bad)), api_name="/predict")
        answer = client.predict(handle_file(str(trained_run / "datasets/val/cat/cat.0.jpg")), api_name="/predict")
        assert sum(confidences(answer).values()) == pytest.approx(1.0, abs=1e-5)


def test_gray_palette_and_transparent_uploads_are_answered(trained_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    photo = Image.open(trained_run / "datasets/val/cat/cat.0.jpg")
    uploads = {"gray.jpg": photo.convert("L"), "palette.gif": photo.convert("P"), "alpha.png": photo.convert("RGBA")}
    with run_app(cwd=trained_run) as (client, _):
        for name, image in uploads.items():
            image.save(tmp_path / name)
            answer = client.predict(handle_file(str(tmp_path / name)), api_name="/predict")
            assert sum(confidences(answer).values()) == pytest.approx(1.0, abs=1e-5), name


def test_no_checkpoint_refuses_to_start(tmp_path: Path) -> None:
    result = run_script("app.py", "--port", "0", cwd=tmp_path, check=False, timeout=120)
    assert result.returncode != 0
    assert "no checkpoint at checkpoint/best_checkpoint.pth or checkpoint/latest_checkpoint.pth" in result.stderr
    assert "python train.py" in result.stderr and "Traceback" not in result.stderr


def test_the_tutorials_own_checkpoint_is_served(tmp_path: Path) -> None:
    make_dataset(tmp_path / "datasets", per_class_train=1, per_class_val=1)
    torch.save(build_model("resnet50", 2).state_dict(), tmp_path / "tutorial.pth")  # a bare state dict
    with run_app("--checkpoint", "tutorial.pth", cwd=tmp_path) as (client, _):
        answer = client.predict(handle_file(str(tmp_path / "datasets/val/cat/cat.0.jpg")), api_name="/predict")
        assert set(confidences(answer)) == {"cat", "dog"}


def test_end_to_end_on_the_tutorials_photos(tmp_path: Path) -> None:
    """The README's path: train on the tutorial's layout, then ask the page about a val photo.

    Real photos from $CATS_DOGS_TUTORIAL_DIR (set by .ci/run); generated ones otherwise.
    """
    real = os.environ.get("CATS_DOGS_TUTORIAL_DIR")
    data = Path(real).resolve() if real else make_dataset(tmp_path / "generated", per_class_train=20, per_class_val=20)
    train_rows = len((data / "train.csv").read_text(encoding="utf-8").split())
    val_rows = len((data / "val.csv").read_text(encoding="utf-8").split())
    result = run_script("train.py", "--data-dir", str(data), "--weights", "none", "--image-size", "64", "--epochs", "1",
                        "--num-workers", "1", "--no-engine", cwd=tmp_path, timeout=900)
    assert f"{train_rows} train / {val_rows} val photos" in result.stdout
    assert (tmp_path / "checkpoint/best_checkpoint.pth").is_file()
    [run] = read_swanlab_runs(tmp_path / "swanlog")
    assert len(run["captions"]["val_examples"]) == min(30, val_rows)
    assert {"train_loss", "val_acc"} <= set(run["metrics"])

    val_photo = sorted((data / "val").rglob("*.jpg"))[0]
    with run_app("--data-dir", str(data), cwd=tmp_path) as (client, _):
        probabilities = confidences(client.predict(handle_file(str(val_photo)), api_name="/predict"))
        assert set(probabilities) == {"cat", "dog"} and sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    shutil.rmtree(tmp_path / "checkpoint")  # ~560 MB; don't let runs pile up in the temp dir


def test_broken_huge_and_oversized_uploads_get_plain_words(trained_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    from conftest import make_broken_files

    broken = make_broken_files(tmp_path / "broken")
    big_photo = tmp_path / "50mp.jpg"
    Image.new("RGB", (8_660, 5_780), (200, 60, 50)).save(big_photo, quality=50)  # a 50-megapixel photo
    too_large = tmp_path / "too_large.jpg"
    too_large.write_bytes(os.urandom(21 * 1024 * 1024))
    with run_app(cwd=trained_run) as (client, _):
        for kind, message in (("truncated", "the file is cut short"), ("bomb", "too many pixels"),
                              ("text", "not an image file")):
            with pytest.raises(Exception, match=f"This file could not be used: {message}"):
                client.predict(handle_file(str(broken[kind])), api_name="/predict")
        with pytest.raises(Exception, match="(?i)too large|exceeds|413"):
            client.predict(handle_file(str(too_large)), api_name="/predict")
        answer = client.predict(handle_file(str(big_photo)), api_name="/predict")
        assert sum(confidences(answer).values()) == pytest.approx(1.0, abs=1e-5)


def test_the_page_says_not_sure_below_the_threshold_and_draws_a_heat_map(separating_run: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image, ImageChops, ImageOps, ImageStat

    from conftest import make_photo

    photo = separating_run / "datasets/val/dog/dog.1.jpg"
    # Half a dog (blue), half a flat grey: the heat map must be hot on the dog's half, and follow it when mirrored.
    halves = {}
    for side, box in (("left", (48, 0, 96, 96)), ("right", (0, 0, 48, 96))):
        with Image.open(make_photo(tmp_path / f"dog-{side}.png", 1, seed=5, size=(96, 96))) as half:
            half.paste((124, 116, 104), box)
            halves[side] = tmp_path / f"half-dog-{side}.png"
            half.save(halves[side])
    with run_app(cwd=separating_run) as (client, _):
        expected = confidences(client.predict(handle_file(str(photo)), api_name="/predict"))
        best = max(expected, key=expected.get)
        assert best == "dog" and expected["dog"] > 0.9
        half_maps = {side: client.predict(handle_file(str(path)), 0.0, True, api_name="/classify")
                     for side, path in halves.items()}
        label, sure, heatmap = client.predict(handle_file(str(photo)), 0.0, True, api_name="/classify")
        assert confidences(label) == pytest.approx(expected, abs=1e-6)
        assert sure.startswith(f"## {best}\n") and "Not sure" not in sure
        assert "does not look like" not in sure  # trained from scratch: no ImageNet head to ask
        _, doubtful, no_heatmap = client.predict(handle_file(str(photo)), 1.0, False, api_name="/classify")
        # The TTA checkbox: the mean of the photo's answer and its mirror image's.
        mirrored = tmp_path / "mirrored.png"
        with Image.open(photo) as original:
            ImageOps.mirror(original.convert("RGB")).save(mirrored)
        mirror = confidences(client.predict(handle_file(str(mirrored)), api_name="/predict"))
        with_tta, _, _ = client.predict(handle_file(str(photo)), 0.0, False, True, api_name="/classify")
        assert confidences(with_tta) == pytest.approx({k: (expected[k] + mirror[k]) / 2 for k in expected}, abs=1e-4)
        assert mirror != pytest.approx(expected, abs=1e-4)  # the mirror answers differently: the mean is not a no-op
    assert doubtful.startswith("## Not sure") and f"best guess is **{best}**" in doubtful
    assert no_heatmap is None
    with Image.open(heatmap) as drawn, Image.open(photo) as original:
        shown = ImageOps.contain(original.convert("RGB"), (512, 512))
        assert drawn.size == shown.size
        # A colored overlay, not the photo itself: the blue dog photo gets red/yellow where the model looked.
        assert ImageStat.Stat(ImageChops.difference(drawn.convert("RGB"), shown)).mean[0] > 5
    for side, (label, _, drawn_path) in half_maps.items():
        assert label["label"] == "dog", side
        # The colors the page blended over the photo (alpha 0.45); the jet colormap: red hot, blue cold.
        with Image.open(drawn_path) as drawn, Image.open(halves[side]) as original:
            shown = np.asarray(ImageOps.contain(original.convert("RGB"), (512, 512)), dtype=float)
            colors = (np.asarray(drawn.convert("RGB"), dtype=float) - 0.55 * shown) / 0.45
        heat = colors[..., 0] - colors[..., 2]
        width = heat.shape[1]
        dog_half, grey_half = (heat[:, : width // 2], heat[:, width // 2:])[:: 1 if side == "left" else -1]
        assert dog_half.mean() > grey_half.mean() + 50, (side, dog_half.mean(), grey_half.mean())  # not blank, not uniform


def test_photos_that_imagenet_sees_as_neither_cat_nor_dog_get_a_warning(tmp_path: Path) -> None:
    from app import NOT_A_PET
    from cats_dogs.checkpoint import load_checkpoint
    from cats_dogs.explain import load_pet_check
    from cats_dogs.images import open_image

    photo = open_image(make_dataset(tmp_path / "data", 1, 1) / "val/cat/cat.0.jpg")
    for imagenet_class, warned in ((817, True), (281, False)):  # a sports car; a tabby cat
        _, meta = load_checkpoint(make_imagenet_checkpoint(tmp_path, imagenet_class))
        pet_share = load_pet_check(meta, torch.device("cpu"), None)([photo]).item()
        assert (pet_share < 0.3) is warned, (imagenet_class, pet_share)
    _, meta = load_checkpoint(make_imagenet_checkpoint(tmp_path, 817))
    assert load_pet_check({**meta, "class_names": ["apple", "pear"]}, torch.device("cpu"), None) is None
    assert load_pet_check({**meta, "weights": "none"}, torch.device("cpu"), None) is None

    checkpoint = make_imagenet_checkpoint(tmp_path, 817)
    with run_app("--checkpoint", str(checkpoint), cwd=tmp_path) as (client, _):
        label, answer, _ = client.predict(handle_file(str(tmp_path / "data/val/cat/cat.0.jpg")), 0.5, False,
                                          api_name="/classify")
        rows, _ = client.predict([handle_file(str(tmp_path / "data/val/dog/dog.0.jpg"))], 0.5, api_name="/classify_many")
    assert NOT_A_PET in answer and set(confidences(label)) == {"cat", "dog"}  # the model's own answer stays
    assert NOT_A_PET in rows["data"][0][3]


def test_many_photos_and_zips_give_a_table_and_a_csv(separating_run: Path, tmp_path: Path) -> None:
    import csv
    import zipfile

    val = separating_run / "datasets/val"
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(WindowsZipInfo("照片/猫.jpg"), (val / "cat/cat.1.jpg").read_bytes())
        zipped.writestr("小狗.jpg", (val / "dog/dog.2.jpg").read_bytes())  # a UTF-8 name
        zipped.writestr("__MACOSX/._小狗.jpg", b"mac metadata")
        zipped.writestr("broken.jpg", b"not a photo")
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("hello", encoding="utf-8")
    uploads = [val / "cat/cat.0.jpg", val / "dog/dog.0.jpg", not_a_photo, archive]
    with run_app(cwd=separating_run) as (client, _):
        table, csv_path = client.predict([handle_file(str(p)) for p in uploads], 0.0, api_name="/classify_many")
        singles = {name: client.predict(handle_file(str(path)), api_name="/predict")
                   for name, path in (("cat.0.jpg", val / "cat/cat.0.jpg"), ("dog.0.jpg", val / "dog/dog.0.jpg"),
                                      ("照片/猫.jpg", val / "cat/cat.1.jpg"), ("小狗.jpg", val / "dog/dog.2.jpg"))}
    rows = {row[0]: row for row in table["data"]}
    assert list(rows) == ["cat.0.jpg", "dog.0.jpg", "notes.jpg", "照片/猫.jpg", "小狗.jpg", "broken.jpg"]
    for name, single in singles.items():
        assert rows[name][1] == single["label"] == ("cat" if "cat" in name or "猫" in name else "dog"), name
        assert rows[name][2] == pytest.approx(max(confidences(single).values()), abs=1e-4)
    for name in ("notes.jpg", "broken.jpg"):
        assert rows[name][1] == "" and "not an image file" in rows[name][3]
    with open(csv_path, encoding="utf-8-sig", newline="") as file:  # utf-8-sig: Excel shows Chinese names right
        written = list(csv.reader(file))
    assert written[0] == ["file", "class", "probability", "note"]
    assert [row[:2] for row in written[1:]] == [[str(row[0]), str(row[1])] for row in table["data"]]


def test_twenty_simultaneous_requests_are_all_answered(separating_run: Path) -> None:
    import urllib.request

    photos = sorted((separating_run / "datasets/val").rglob("*.jpg"))
    with run_app(cwd=separating_run) as (client, _):
        expected = {p.name: confidences(client.predict(handle_file(str(p)), api_name="/predict")) for p in photos}
        jobs = [(photos[i % len(photos)], client.submit(handle_file(str(photos[i % len(photos)])), api_name="/predict"))
                for i in range(20)]
        with urllib.request.urlopen(client.src, timeout=30) as page:  # the page is served while the queue works
            assert page.status == 200 and "gradio" in page.read().decode("utf-8").lower()
        answers = [(photo, job.result(timeout=120)) for photo, job in jobs]
    assert len(answers) == 20
    for photo, answer in answers:
        # Cats and dogs get far-apart answers, so an answer handed to the wrong request would show.
        assert answer["label"] == photo.parent.name and confidences(answer)[photo.parent.name] > 0.9, photo.name
        assert confidences(answer) == pytest.approx(expected[photo.name], abs=1e-6)


def wait_for_app_log(cwd: Path, client, text: str, timeout: float = 300) -> str:
    """The app's output (run_app writes it to CWD/app-PORT.log) once `text` appears in it."""
    log_path = cwd / f"app-{urlparse(client.src).port}.log"
    deadline = time.monotonic() + timeout
    while text not in (log := log_path.read_text(encoding="utf-8")):
        assert time.monotonic() < deadline, f"no {text!r} in the app's output after {timeout} s:\n{log}"
        time.sleep(1)
    return log


def test_the_compiled_model_answers_like_the_uncompiled_one(separating_run: Path) -> None:
    from app import make_batch_predict

    cpu = torch.device("cpu")
    model, meta = load_checkpoint(separating_run / "checkpoint/best_checkpoint.pth")
    plain = make_batch_predict(model, meta, cpu)  # fp32, uncompiled
    with run_app(cwd=separating_run, compile_model=True) as (client, _):
        wait_for_app_log(separating_run, client, "compiled the model")
        for photo, truth in labeled_photos(separating_run / "datasets"):
            answer = confidences(client.predict(handle_file(str(photo)), api_name="/predict"))
            expected = dict(zip(meta["class_names"], plain([open_image(photo)])[0].tolist(), strict=True))
            assert expected[truth] > 0.9, photo.name  # about 3% or 98%: a copy answering 50/50 is 0.45 away
            assert answer == pytest.approx(expected, abs=0.02), photo.name  # bf16 where native: ~3 digits


def test_without_a_cxx_compiler_the_page_answers_uncompiled(trained_run: Path, tmp_path: Path) -> None:
    # As on a Windows laptop without Visual C++: Inductor finds no compiler (and no cached build to reuse).
    no_compiler = {"CXX": str(tmp_path / "no-such-g++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    with run_app(cwd=trained_run, compile_model=True, env=no_compiler) as (client, _):
        log = wait_for_app_log(trained_run, client, "torch.compile is not usable here")
        assert "C++ compiler" in log and "Traceback" not in log
        answer = client.predict(handle_file(str(trained_run / "datasets/val/cat/cat.0.jpg")), api_name="/predict")
        assert sum(confidences(answer).values()) == pytest.approx(1.0, abs=1e-5)


def test_the_language_flag_overrides_the_browsers_language(trained_run: Path, tmp_path: Path) -> None:
    from gradio_client import Client

    photo = trained_run / "datasets/val/dog/dog.1.jpg"
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("this is a text file", encoding="utf-8")
    # (--language, the client's language, its verdict, its error, a label on the page)
    for flag, accept_language, not_sure, unusable, photo_label in (
            ("zh", "en-US,en;q=0.9", "## 不确定\n最可能是", "这个文件无法使用：不是图片文件", "照片"),
            ("en", "zh-CN,zh;q=0.9", "## Not sure\nThe best guess is", "This file could not be used: not an image", "Photo")):
        with run_app("--language", flag, cwd=trained_run) as (app, _):
            client = Client(app.src, headers={"Accept-Language": accept_language}, verbose=False)
            _, answer, _ = client.predict(handle_file(str(photo)), 1.0, False, api_name="/classify")
            assert answer.startswith(not_sure), (flag, answer)
            with pytest.raises(Exception, match=unusable):
                client.predict(handle_file(str(not_a_photo)), api_name="/predict")
            table, _ = client.predict([handle_file(str(photo))], 1.0, api_name="/classify_many")
            translations = client.config["i18n_translations"]  # what the page shows, whatever the browser's language
        assert table["data"][0][3] == ("不确定" if flag == "zh" else "not sure")
        assert translations["en"]["photo"] == translations["zh"]["photo"] == photo_label


def test_the_page_serves_its_example_photos_and_nothing_else_of_the_data_folder(trained_run: Path) -> None:
    import urllib.error
    import urllib.request

    data = (trained_run / "datasets").resolve()
    with run_app("--host", "0.0.0.0", cwd=trained_run) as (client, _):
        log = wait_for_app_log(trained_run, client, "warning: --host 0.0.0.0", timeout=30)
        [examples] = [c["props"]["samples"] for c in client.config["components"] if c.get("type") == "dataset"]
        example_photos = {(data / "val" / name / f"{name}.{i}.jpg").read_bytes() for name in ("cat", "dog") for i in (0, 1)}
        for [example] in examples:  # Gradio's own copies, served
            with urllib.request.urlopen(example["url"], timeout=30) as served:
                assert served.status == 200 and served.read() in example_photos
        for private in (data / "train.csv", data / "val.csv", data / "train/cat/cat.0.jpg", data / "val/cat/cat.0.jpg"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{client.src}gradio_api/file={private}", timeout=30)
            assert refused.value.code in (403, 404), private
    assert len(examples) == 4
    assert "anyone who can reach this machine" in log and "no login" in log


def test_inline_photos_over_the_limit_hostile_zips_and_no_temp_folders_left(trained_run: Path, tmp_path: Path) -> None:
    """A data: URL skips the upload route's 20 MB limit; zip members that cannot be read; the CSV of each request."""
    import base64
    import io
    import json
    import urllib.request
    import zipfile

    from PIL import Image

    def predict_inline(client, image: bytes, mime: str) -> str:  # a raw POST, as a script could send it
        url = f"data:{mime};base64," + base64.b64encode(image).decode()
        request = urllib.request.Request(f"{client.src}gradio_api/call/predict", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"data": [{"url": url, "meta": {"_type": "gradio.FileData"}}]}).encode())
        with urllib.request.urlopen(request, timeout=60) as answer:
            event = json.load(answer)["event_id"]
        with urllib.request.urlopen(f"{client.src}gradio_api/call/predict/{event}", timeout=120) as answer:
            return answer.read().decode("utf-8")

    photo = (trained_run / "datasets/val/cat/cat.0.jpg").read_bytes()
    huge = io.BytesIO()
    Image.new("RGB", (3_000, 2_400), (200, 60, 50)).save(huge, "BMP")  # 21.6 MB, a photo Gradio would decode
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("good.jpg", photo)
    refused = add_hostile_members(archive, photo)
    temp = tmp_path / "temp"
    temp.mkdir()
    with run_app(cwd=trained_run, env={"TMPDIR": str(temp)}) as (client, _):
        answered = predict_inline(client, photo, "image/jpeg")  # a small one is answered as before
        too_large = predict_inline(client, huge.getvalue(), "image/bmp")
        before = {p.name for p in temp.iterdir()}
        table, csv_path = client.predict([handle_file(str(archive))], 0.0, api_name="/classify_many")
        client.predict([handle_file(str(archive))], 0.0, api_name="/classify_many")
        after = {p.name for p in temp.iterdir()}
    assert "event: complete" in answered and '"confidences"' in answered
    assert "event: error" in too_large and "This file could not be used: larger than 20 MB" in too_large
    rows = {row[0]: row for row in table["data"]}
    assert rows["good.jpg"][1] in ("cat", "dog")
    for name, reason in refused.items():
        assert rows[name][1] == "" and reason in rows[name][3], rows[name]
    assert Path(csv_path).read_text(encoding="utf-8-sig").count("\n") == 1 + len(rows)
    assert after == before  # each request's CSV went into Gradio's cache, which deletes it: no folder left behind


def test_the_page_as_users_get_it_answers_with_its_default_engine(separating_run: Path, tmp_path: Path) -> None:
    """`python app.py` and nothing else: the default engine (OpenVINO INT8 on a CPU, built and checked at the
    first start on ./datasets) and torch.compile where it is the default. Its own copy of the checkpoint, so the
    engine is built here, as at a user's first start, not found in another test's cache."""
    from conftest import run_gradio_script

    shutil.copytree(separating_run / "datasets", tmp_path / "datasets")
    (tmp_path / "checkpoint").mkdir()
    shutil.copy(separating_run / "checkpoint/best_checkpoint.pth", tmp_path / "checkpoint")
    photos = labeled_photos(tmp_path / "datasets")
    with run_gradio_script("app.py", cwd=tmp_path) as (client, _):
        first = client.predict(handle_file(str(photos[0][0])), api_name="/predict")  # PyTorch, until the engine is ready
        # Answered while a child process (lowest priority) still builds the engine: the page did not wait for it.
        assert "engine: openvino" not in wait_for_app_log(tmp_path, client, "Running on")
        log = wait_for_app_log(tmp_path, client, "engine: openvino")
        answers = [client.predict(handle_file(str(photo)), api_name="/predict") for photo, _ in photos]
    assert "engine: openvino int8 (agreement 100% on 8 val photos, accuracy 100.0% vs fp32 100.0%)" in log
    assert "Traceback" not in log
    assert first["label"] == photos[0][1]
    for (photo, truth), answer in zip(photos, answers, strict=True):
        assert answer["label"] == truth and confidences(answer)[truth] > 0.9, photo.name


def test_the_engine_build_is_suspended_while_the_page_answers_and_resumed_once_it_is_idle() -> None:
    """On 2 cores the build, even at the lowest priority, has both cores whenever the page is idle: the page's
    functions suspend it from the start of an answer until the page has been idle IDLE_S."""
    build = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # a build that computes
    status = psutil.Process(build.pid).status
    pauses = PausedWhileAnswering(idle_s=1.0)
    try:
        pauses.watch(build.pid)
        assert status() != psutil.STATUS_STOPPED

        def predict(photo: str, request: object = None) -> str:
            """The page's function."""
            deadline = time.monotonic() + 2  # a signal is delivered in a moment, not at once
            while status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
                time.sleep(0.01)
            return f"{photo}: {status()}"

        answer = pauses.pausing(predict)
        assert inspect.signature(answer) == inspect.signature(predict) and answer.__doc__ == "The page's function."
        assert answer("cat.jpg") == f"cat.jpg: {psutil.STATUS_STOPPED}"
        time.sleep(0.3)
        assert status() == psutil.STATUS_STOPPED  # a burst's next photo comes sooner than IDLE_S
        assert answer("dog.jpg") == f"dog.jpg: {psutil.STATUS_STOPPED}"
        deadline = time.monotonic() + 10
        while status() == psutil.STATUS_STOPPED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status() != psutil.STATUS_STOPPED  # idle: the build goes on
        answer("cat.jpg")
        pauses.release()  # as when the build ends, or the page exits: never left suspended
        assert status() != psutil.STATUS_STOPPED
        assert answer("dog.jpg") != f"dog.jpg: {psutil.STATUS_STOPPED}"  # the build has ended: nothing to suspend
    finally:
        build.kill()
        build.wait()


def test_a_page_others_can_reach_is_said_to_have_no_login() -> None:
    assert open_page_warnings("127.0.0.1", 7860, False) == [] and open_page_warnings("localhost", 7860, False) == []
    [lan] = open_page_warnings("0.0.0.0", 8000, False)
    assert lan.startswith("warning: --host 0.0.0.0: anyone who can reach this machine on port 8000") and "no login" in lan
    [public] = open_page_warnings("127.0.0.1", 7860, True)  # --share: a public link, from the whole internet
    assert public.startswith("warning: --share: anyone with the public link can use the page") and "Ctrl+C" in public
    assert len(open_page_warnings("192.168.1.5", 7860, True)) == 2


def test_a_zips_refused_members_are_worded_in_chinese_on_a_chinese_page() -> None:
    import zipfile

    from cats_dogs.translations import in_language
    from cats_dogs.zips import member_problem, read_problem

    outside, encrypted, deflate64 = zipfile.ZipInfo("../evil.jpg"), zipfile.ZipInfo("locked.jpg"), zipfile.ZipInfo("big.jpg")
    encrypted.flag_bits |= 0x1
    deflate64.compress_type = 9
    reasons = [member_problem(info) for info in (outside, encrypted, deflate64)]
    reasons.append(read_problem(zipfile.BadZipFile("Bad CRC-32")))
    chinese = [in_language("zh", reason) for reason in reasons]
    assert chinese == ["路径在压缩包的文件夹之外（绝对路径或含 ..），未解压", "已加密（有密码），未解压",
                       "用 deflate64 压缩，Python 无法解压：请用 7-Zip 重新压缩，或压缩成普通 zip",
                       "压缩包里的这个文件已损坏（Bad CRC-32）"]
    assert [in_language("en", reason) for reason in reasons] == reasons
