"""review.py run for real: the ranking as a CSV, the page through gradio_client (decisions survive a restart,
Apply writes the CSVs and a backup) and the page clicked in headless Chromium."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from gradio_client import Client
from playwright.sync_api import expect

from conftest import FAST_TRAIN_FLAGS, make_broken_files, make_dataset, run_gradio_script, run_script

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def review_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint that tells the generated cats from dogs, so that a wrong label stands out: the head of a frozen
    from-scratch ResNet18, trained on the backbone's features in seconds. (The shared two-epoch run's checkpoint
    answers about 55% dog for every photo, cats included: nothing to rank by.)"""
    workdir = tmp_path_factory.mktemp("review")
    make_dataset(workdir / "datasets")
    run_script("train.py", *FAST_TRAIN_FLAGS, "--model", "resnet18", "--freeze-backbone", "--lr", "0.01", "--epochs", "10",
               "--swanlab-mode", "disabled", cwd=workdir)
    return workdir


def copy_data(review_run: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of the photos and CSVs to change, and the flags that review them with the trained checkpoint."""
    shutil.copytree(review_run / "datasets", tmp_path / "datasets")
    return tmp_path / "datasets", ["--checkpoint", str(review_run / "checkpoint/best_checkpoint.pth")]


def mislabel(csv_path: Path, photo: str, label: int) -> None:
    text = csv_path.read_text(encoding="utf-8")
    assert f"{photo}," in text
    csv_path.write_text("".join(f"{photo},{label}\n" if line.startswith(f"{photo},") else line
                                for line in text.splitlines(keepends=True)), encoding="utf-8")


@contextmanager
def run_review(*args: str, cwd: Path, timeout: float = 120) -> Iterator[Client]:
    """review.py serving its page on a free port; yields a gradio_client Client (the URL is client.src)."""
    with run_gradio_script("review.py", *args, cwd=cwd, timeout=timeout) as (client, _):
        yield client


def test_csv_out_ranks_a_mislabeled_photo_first_after_the_unreadable_one(review_run: Path, tmp_path: Path) -> None:
    data, flags = copy_data(review_run, tmp_path)
    mislabel(data / "val.csv", "val/dog/dog.1.jpg", 0)  # a dog labelled cat
    shutil.copy(make_broken_files(tmp_path / "broken")["truncated"], data / "val/cat/broken.jpg")
    with open(data / "val.csv", "a", encoding="utf-8") as file:
        file.write("val/cat/broken.jpg,0\n")

    result = run_script("review.py", *flags, "--csv-out", "ranking.csv", cwd=tmp_path)
    assert "wrote 25 photos, worst first, to ranking.csv" in result.stdout
    rows = list(csv.DictReader(open(tmp_path / "ranking.csv", encoding="utf-8-sig")))
    assert [row["rank"] for row in rows] == [str(rank) for rank in range(1, 26)]
    assert rows[0]["photo"] == "val/cat/broken.jpg" and "cut short" in rows[0]["problem"] and rows[0]["loss"] == ""
    assert (rows[1]["split"], rows[1]["photo"], rows[1]["given"], rows[1]["predicted"]) == ("val", "val/dog/dog.1.jpg",
                                                                                             "cat", "dog")
    losses = [float(row["loss"]) for row in rows[1:]]
    assert losses == sorted(losses, reverse=True) and losses[0] > 1.0 > losses[1]
    assert {row["split"] for row in rows} == {"train", "val"} and not any(row["decision"] for row in rows)


def test_a_broken_decisions_file_stops_the_review_and_is_never_overwritten(tmp_path: Path) -> None:
    from review import load_decisions

    broken = tmp_path / "review_decisions.json"
    broken.write_text('{"train": {"train/cat/cat.0.jpg": ', encoding="utf-8")  # cut short by a crash elsewhere
    with pytest.raises(SystemExit, match="review_decisions.json is not a review decisions file .* move it away"):
        load_decisions(broken)
    assert broken.read_text(encoding="utf-8") == '{"train": {"train/cat/cat.0.jpg": '


def test_decisions_survive_a_restart_and_apply_writes_the_csvs_and_a_backup(review_run: Path, tmp_path: Path) -> None:
    data, flags = copy_data(review_run, tmp_path)
    # As Excel on Windows saves it: a BOM, CRLF, a header; one path with backslashes.
    rows = (data / "train.csv").read_text(encoding="utf-8").splitlines()
    rows[0] = rows[0].replace("/", "\\")
    old_train = ("\ufeffpath,label\r\n" + "\r\n".join(rows) + "\r\n").encode("utf-8")
    (data / "train.csv").write_bytes(old_train)
    old_val = (data / "val.csv").read_bytes()
    relabelled, excluded = rows[0].split(",")[0], "val/dog/dog.2.jpg"
    assert relabelled == "train\\cat\\cat.0.jpg"

    with run_review(*flags, cwd=tmp_path) as client:
        assert len(client.predict(api_name="/ranking")) == 24
        assert client.predict("train", relabelled, "dog", api_name="/decide") == {"decision": "relabel", "label": 1,
                                                                                  "class": "dog"}
        assert client.predict("val", excluded, "exclude", api_name="/decide") == {"decision": "exclude"}
        with pytest.raises(Exception, match="expected keep, exclude or one of the classes cat, dog"):
            client.predict("val", excluded, "horse", api_name="/decide")
    saved = json.loads((data / "review_decisions.json").read_text(encoding="utf-8"))
    assert saved == {"train": {"train/cat/cat.0.jpg": {"decision": "relabel", "label": 1, "class": "dog"}},
                     "val": {excluded: {"decision": "exclude"}}}

    with run_review(*flags, cwd=tmp_path) as client:  # a new server: the decisions are read back
        decided = {row["photo"]: row["decision"] for row in client.predict(api_name="/ranking") if row["decision"]}
        assert decided == {"train/cat/cat.0.jpg": {"decision": "relabel", "label": 1, "class": "dog"},
                           excluded: {"decision": "exclude"}}
        message = client.predict(api_name="/apply")
        assert "1 relabelled, 0 excluded" in message and "0 relabelled, 1 excluded" in message
        assert "Nothing to apply" in client.predict(api_name="/apply")  # applied already: no second backup

    # Only the decided rows change; the BOM, CRLF, header and backslashes stay.
    assert (data / "train.csv").read_bytes() == old_train.replace(b"train\\cat\\cat.0.jpg,0", b"train\\cat\\cat.0.jpg,1")
    assert (data / "val.csv").read_bytes() == old_val.replace(f"{excluded},1\n".encode(), b"")
    [train_backup] = data.glob("train.csv.bak-*")
    [val_backup] = data.glob("val.csv.bak-*")
    assert train_backup.read_bytes() == old_train and val_backup.read_bytes() == old_val
    assert (data / excluded).is_file() and len(list(data.rglob("*.jpg"))) == 24  # no photo deleted


def test_the_page_relabels_and_excludes_with_its_buttons(browser, review_run: Path, tmp_path: Path) -> None:
    data, flags = copy_data(review_run, tmp_path)
    mislabel(data / "val.csv", "val/dog/dog.1.jpg", 0)  # ranked first: the page opens on it
    with run_review(*flags, cwd=tmp_path) as client:
        second = client.predict(api_name="/ranking")[1]
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(client.src)
        details = page.locator("#details")
        expect(details).to_contain_text("1 of 24", timeout=TIMEOUT_MS)
        expect(details).to_contain_text("val.csv: val/dog/dog.1.jpg")
        expect(details).to_contain_text("Given label: cat · Predicted: dog")
        expect(page.locator("#relabel-0")).to_be_hidden()  # no "Change to cat" for a photo labelled cat
        assert page.locator("#photo img").evaluate("img => img.complete && img.naturalWidth") > 0

        page.get_by_role("button", name="Change to dog").click()
        expect(details).to_contain_text("2 of 24", timeout=TIMEOUT_MS)
        expect(details).to_contain_text(f"{second['split']}.csv: {second['photo']}")
        page.get_by_role("button", name="Exclude").click()
        expect(details).to_contain_text("3 of 24", timeout=TIMEOUT_MS)
        expect(page.locator("#ranking")).to_contain_text("change to dog")
        expected = {"val": {"val/dog/dog.1.jpg": {"decision": "relabel", "label": 1, "class": "dog"}}}
        expected.setdefault(second["split"], {})[second["photo"]] = {"decision": "exclude"}
        assert json.loads((data / "review_decisions.json").read_text(encoding="utf-8")) == expected

        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#applied")).to_contain_text("val.csv.bak-", timeout=TIMEOUT_MS)
        assert "val/dog/dog.1.jpg,1\n" in (data / "val.csv").read_text(encoding="utf-8")
        page.screenshot(path=tmp_path / "review.png", full_page=True)
        page.close()

        chinese = browser.new_context(locale="zh-CN").new_page()  # a reopened page goes on at the first undecided
        chinese.goto(client.src)
        expect(chinese.locator("#details")).to_contain_text("第 3 / 24 张", timeout=TIMEOUT_MS)
        expect(chinese.get_by_role("button", name="保留")).to_be_visible()
        chinese.context.close()


def test_other_machines_get_the_page_only_with_a_login_and_splits_are_plain_names(tmp_path: Path) -> None:
    from review import check_access, get_args_parser

    result = run_script("review.py", "--host", "0.0.0.0", cwd=tmp_path, check=False)  # before a checkpoint is looked for
    assert result.returncode != 0 and "Traceback" not in result.stderr and "no checkpoint" not in result.stderr
    assert "--host 0.0.0.0 lets other machines change your CSVs: add --auth user:password" in result.stderr
    for flags, message in ((["--host", "0.0.0.0", "--auth", "nopassword"], "expected user:password"),
                           (["--splits", "train", "../outside"], "--splits '../outside': expected the name of a CSV"),
                           (["--splits", "val", "C:test"], "--splits 'C:test': expected the name of a CSV")):
        with pytest.raises(SystemExit, match=message):
            check_access(get_args_parser().parse_args(flags))
    assert check_access(get_args_parser().parse_args(["--host", "0.0.0.0", "--auth", "me:se:cret"])) == ("me", "se:cret")
    assert check_access(get_args_parser().parse_args(["--host", "localhost"])) is None


def test_apply_writes_only_the_reviewed_csvs_and_the_login_is_asked_for(review_run: Path, tmp_path: Path) -> None:
    data, flags = copy_data(review_run, tmp_path)
    outside = tmp_path / "outside.csv"  # a decisions file naming "../outside" once made Apply rewrite this
    outside.write_text("datasets/val/dog/dog.2.jpg,1\n", encoding="utf-8")
    (data / "review_decisions.json").write_text(json.dumps({
        "../outside": {"datasets/val/dog/dog.2.jpg": {"decision": "exclude"}},
        "val": {"val/dog/dog.2.jpg": {"decision": "exclude"}}}), encoding="utf-8")
    with run_gradio_script("review.py", *flags, "--auth", "me:secret", cwd=tmp_path, auth=("me", "secret")) as (client, _):
        with pytest.raises(Exception):  # noqa: B017 -- whatever gradio_client raises, it must not get in
            Client(client.src, verbose=False)
        with pytest.raises(Exception):  # noqa: B017
            Client(client.src, verbose=False, auth=("me", "wrong"))
        with pytest.raises(Exception, match="has no photo"):
            client.predict("../outside", "datasets/val/dog/dog.2.jpg", "exclude", api_name="/decide")
        message = client.predict(api_name="/apply")
    assert "0 relabelled, 1 excluded" in message and "outside" not in message
    assert outside.read_text(encoding="utf-8") == "datasets/val/dog/dog.2.jpg,1\n"
    assert "val/dog/dog.2.jpg," not in (data / "val.csv").read_text(encoding="utf-8")
