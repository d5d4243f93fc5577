"""prepare_data.py --crawl against a local server in the place of Bing and Baidu: no test reaches a real engine.

The server answers in the formats icrawler's parsers read (Bing: an HTML page of div.imgpt links whose "m" attribute
holds the photo's "murl"; Baidu: JSON with a "data" list) and serves the photos, the broken and oversized ones included.
"""

from __future__ import annotations

import csv
import hashlib
import html
import http.server
import io
import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image, ImageDraw

from cats_dogs.csv_rows import read_csv_rows
from conftest import free_port, run_script

HUGE_BYTES = 21 * 1024 * 1024  # over the 20 MB limit of one photo


def scene(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A photo-like picture (shapes on a gradient): its resized copies keep their difference hash, as real photos do."""
    rng = random.Random(seed)
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        w, h = rng.randrange(20, 80), rng.randrange(20, 60)
        draw.ellipse((x, y, x + w, y + h), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (12_000, 8_000)).save(buffer, "PNG")  # 96 megapixels in a few kB
    return buffer.getvalue()


def make_photos() -> dict[str, bytes]:
    """The server's photos by name. Every URL ends in .jpg: Bing's parser takes a link up to its first ".jpg"."""
    photos = {f"s{i}": jpeg(scene(i)) for i in range(8)} | {f"r{i}": jpeg(scene(100 + i)) for i in range(8)}
    photos["s0-small"] = jpeg(scene(0).resize((80, 60)))  # a resized copy of s0
    photos["s1-again"] = photos["s1"]  # the same file under a rose's link
    photos["text"] = b"<html>a page, not a photo</html>"
    photos["bomb"] = bomb()
    return photos


# What the engine lists for each keyword, in order: the sunflower's first six links hold one good photo each
# among a resized copy, a page, a decompression bomb and a photo larger than the limit.
RESULTS = {
    "向日葵": ["s0", "s1", "s0-small", "text", "bomb", "huge", "s2", "s3", "s4", "s5", "s6", "s7"],
    "玫瑰": ["r0", "r1", "s1-again", "r2", "r3", "r4", "r5", "r6", "r7"],
}


@contextmanager
def search_engine() -> Iterator[tuple[str, list[str]]]:
    """A local stand-in for both engines, and the list of photos it sent."""
    photos, sent = make_photos(), []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 — http.server's own name
            url = urlsplit(self.path)
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            base = f"http://127.0.0.1:{self.server.server_address[1]}/photos"
            if url.path == "/bing":
                links = [f"{base}/{name}.jpg" for name in RESULTS.get(query["q"], [])[int(query["first"]):][:20]]
                metadata = [html.escape(json.dumps({"murl": link}, separators=(",", ":"))) for link in links]
                divs = "".join(f'<div class="imgpt"><a class="iusc" m="{m}"></a></div>' for m in metadata)
                self.reply(f"<html><body>{divs}</body></html>".encode(), "text/html")
            elif url.path == "/baidu":
                # Five links where 30 were asked for: the next page starts after the last link read, not 30 on.
                links = [f"{base}/{name}.jpg" for name in RESULTS.get(query["word"], [])[int(query["pn"]):][:5]]
                answer = {"data": [{"hoverURL": link} for link in links] + [{}]} if links else {"no": "data"}
                self.reply(json.dumps(answer).encode(), "application/json")
            elif url.path == "/photos/huge.jpg":  # no Content-Length: only counting the bytes can stop it
                sent.append("huge")
                self.send_response(200)
                self.end_headers()
                try:
                    for _ in range(HUGE_BYTES // 2**20):
                        self.wfile.write(bytes(2**20))
                except OSError:  # the client stopped reading, as it should
                    pass
                self.close_connection = True
            else:
                name = Path(url.path).stem
                sent.append(name)
                self.reply(photos[name], "image/jpeg")

        def reply(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", sent
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def engine() -> Iterator[tuple[dict[str, str], list[str]]]:
    """The environment that points both engines at the local server, and the photos the server sent."""
    with search_engine() as (url, sent):
        yield {"PREPARE_DATA_BING_URL": f"{url}/bing?q={{}}&first={{}}",
               "PREPARE_DATA_BAIDU_URL": f"{url}/baidu?word={{}}&pn={{}}"}, sent


def crawl(tmp_path: Path, env: dict[str, str], *args: str, check: bool = True):
    return run_script("prepare_data.py", "--out", "ds", "--crawl-delay", "0", *args, cwd=tmp_path, env=env, check=check)


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def dataset_photos(folder: Path) -> dict[str, set[str]]:
    """{class: digests of its photos} over train.csv and val.csv."""
    names = (folder / "classes.txt").read_text(encoding="utf-8").split()
    found: dict[str, set[str]] = {name: set() for name in names}
    for split in ("train", "val"):
        for path, label in read_csv_rows(folder / f"{split}.csv"):
            found[names[label]].add(digest(path.read_bytes()))
    return found


def test_crawl_fills_class_folders_leaves_copies_out_and_tops_up(tmp_path: Path, engine) -> None:
    env, sent = engine
    photos = make_photos()
    result = crawl(tmp_path, env, "--crawl", "向日葵", "玫瑰", "--names", "sunflower", "rose", "--per-class", "4",
                   "--crawl-engine", "bing")
    assert "Traceback" not in result.stderr
    assert dataset_photos(tmp_path / "ds") == {"sunflower": {digest(photos[f"s{i}"]) for i in range(4)},
                                               "rose": {digest(photos[f"r{i}"]) for i in range(4)}}
    left_out = (tmp_path / "ds/left_out.txt").read_text(encoding="utf-8")
    assert "near-duplicate (a resized or re-saved copy of" in left_out and "too many pixels" in left_out
    assert "not an image file" in left_out and "byte-identical duplicate" in left_out
    assert "1  near-duplicate" in result.stdout  # the summary counts them
    raw = tmp_path / "ds_crawl"
    with open(raw / "sources.csv", encoding="utf-8-sig", newline="") as file:
        sources = list(csv.DictReader(file))
    saved = {f"{row['class']}/{row['file']}": row["url"] for row in sources if row["file"]}
    assert sorted(saved) == sorted(p.relative_to(raw).as_posix() for p in raw.glob("*/*"))
    assert all(digest((raw / file).read_bytes()) == digest(photos[Path(url).stem]) for file, url in saved.items())
    huge = [row for row in sources if row["url"].endswith("/huge.jpg")]
    assert len(huge) == 1 and not huge[0]["file"] and "larger than 20 MB" in huge[0]["problem"]
    assert Counter(sent)["huge"] == 1 and all(count == 1 for count in Counter(sent).values())

    # A second run tops each class up: the photos it has stay, and only new links are downloaded (Baidu lists the same).
    before, sent_before = {p: p.read_bytes() for p in raw.glob("*/*")}, set(sent)
    sent.clear()
    result = crawl(tmp_path, env, "--crawl", "向日葵", "玫瑰", "--names", "sunflower", "rose", "--per-class", "6")
    assert "Traceback" not in result.stderr
    assert sent and not set(sent) & sent_before
    assert all(path.read_bytes() == data for path, data in before.items())
    assert dataset_photos(tmp_path / "ds") == {"sunflower": {digest(photos[f"s{i}"]) for i in range(6)},
                                               "rose": {digest(photos[f"r{i}"]) for i in range(6)}}


def test_an_unreachable_engine_gives_one_line_and_writes_nothing(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = {"PREPARE_DATA_BING_URL": f"{closed}/bing?q={{}}&first={{}}"}
    result = crawl(tmp_path, env, "--crawl", "向日葵", "玫瑰", "--crawl-engine", "bing", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "bing's image search gave no answer" in message and "Connection refused" in message
    assert "--crawl-engine baidu" in message and "--from" in message
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds_crawl").exists()


def test_a_keyword_with_no_photos_stops_the_import_naming_it(tmp_path: Path, engine) -> None:
    env, sent = engine
    (tmp_path / "ds").mkdir()
    result = crawl(tmp_path, env, "--crawl", "没有这种花", "向日葵", "--per-class", "2", check=False)  # Baidu's answer: no "data"
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert 'No photos for "没有这种花" from baidu' in message and "--crawl-engine bing" in message
    assert not sent and not (tmp_path / "ds/train.csv").exists()
