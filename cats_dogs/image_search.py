"""Baidu's and Bing's image search through icrawler, made polite, quiet and safe: one keyword's downloads into its folder.

Polite: one thread reads the result pages, two download, and requests to one server are spaced by a delay. Safe: every
download is untrusted, and one larger than MAX_PHOTO_BYTES is cut off and never saved (the import decodes the rest, with
its pixel limit). Quiet: icrawler's threads log every failure and would print them, so its loggers are silenced
(quiet_icrawler) and what went wrong is counted here instead, in a Tally, for crawl.py to say in one line.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import requests
from icrawler import Crawler, ImageDownloader
from icrawler.builtin.baidu import BaiduParser
from icrawler.builtin.bing import BingParser
from icrawler.feeder import Feeder
from icrawler.utils import Session
from tqdm import tqdm

from cats_dogs.images import IMAGE_EXTENSIONS, MAX_PHOTO_BYTES

# icrawler's own search URLs (BaiduFeeder, BingFeeder): {} {} are the keyword and the number of the first result.
# The variables point them elsewhere: the tests use a local server, as no one developing this could reach the engines.
SEARCH_URLS = {
    "baidu": os.environ.get("PREPARE_DATA_BAIDU_URL")
    or "http://image.baidu.com/search/acjson?tn=resultjson_com&ipn=rj&word={}&pn={}&rn=30",
    "bing": os.environ.get("PREPARE_DATA_BING_URL") or "https://www.bing.com/images/async?q={}&first={}",
}
RESULTS_PER_PAGE = {"baidu": 30, "bing": 20}
MAX_RESULTS = 1000  # both engines give only their first 1,000 results for a keyword
DOWNLOAD_THREADS = 2  # a few at most: polite to the servers, and the engine sees one reader
PAGE_TRIES = 3  # icrawler's tries for one result page: after these fail with none answered, the engine is unreachable
PHOTO_TIMEOUT_S = 60  # a server that trickles a photo byte by byte is given up after this
SOURCE_COLUMNS = ("class", "file", "url", "result", "keyword", "engine", "problem")  # result: its place in the answers
QUIET_LOGGERS = ("icrawler", "feeder", "parser", "downloader", "urllib3")  # icrawler names its thread pools' loggers so


def quiet_icrawler() -> None:
    """icrawler's loggers say nothing: the Tally counts their failures instead, to be said in one line."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).addHandler(logging.NullHandler())
        logging.getLogger(name).propagate = False


@dataclass
class Tally:
    """What a keyword's crawl saw: enough to say why it found no photo."""

    pages: int = 0  # result pages the engine answered
    page_errors: list[str] = field(default_factory=list)  # failed requests and HTTP errors of result pages
    links: int = 0  # photo links in those answers
    tried: int = 0  # links not tried before
    saved: int = 0
    problems: Counter = field(default_factory=Counter)  # links that gave no photo, by reason


class SourcesFile:
    """sources.csv: the link each download came from (web photos carry their owners' rights), and every link tried."""

    def __init__(self, path: Path) -> None:
        self.path, self.lock = path, threading.Lock()
        self.rows = []
        if path.is_file():
            with open(path, encoding="utf-8-sig", newline="") as file:
                self.rows = list(csv.DictReader(file))

    def next_result(self, name: str, engine: str, keyword: str) -> int:
        """Where the engine's results for this class and keyword go on: after the last link tried."""
        places = [int(row["result"]) for row in self.rows if str(row.get("result")).isdigit()
                  and (row.get("class"), row.get("engine"), row.get("keyword")) == (name, engine, keyword)]
        return max(places, default=-1) + 1

    def urls(self, name: str) -> set[str]:
        return {row.get("url") for row in self.rows if row.get("class") == name}

    def last_number(self, name: str) -> int:
        """The highest file number of the class so far (a deleted photo's number is not given again)."""
        names = [row.get("file") or "" for row in self.rows if row.get("class") == name]
        names += [p.name for p in (self.path.parent / name).glob("*")]
        return max((int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit()), default=0)

    def add(self, row: dict[str, str]) -> None:
        with self.lock:
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # A BOM for Excel, written once: utf-8-sig would write another at each append.
            with open(self.path, "a", encoding="utf-8-sig" if new else "utf-8", newline="") as file:
                writer = csv.DictWriter(file, SOURCE_COLUMNS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
            self.rows.append(row)


class Pacer:
    """Spaces the requests to one server (the engine, or a site holding many photos) by `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay, self.lock, self.next_start = delay, threading.Lock(), {}

    def wait(self, url: str) -> None:
        host = urlsplit(url).netloc
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start.get(host, now))
            self.next_start[host] = start + self.delay
        time.sleep(start - now)


@dataclass
class KeywordCrawl:
    """One keyword's downloads into its class folder, shared by icrawler's threads through the session."""

    keyword: str
    name: str
    engine: str
    folder: Path  # the class folder
    sources: SourcesFile
    pacer: Pacer
    tally: Tally = field(default_factory=Tally)
    seen_urls: set[str] = field(default_factory=set)
    page_starts: dict[str, int] = field(default_factory=dict)  # result page URL -> its first result's place
    page_start: int = 0  # that of the page being read (icrawler reads them with one thread, one after the other)
    last_place: int = -1  # that of the last link read
    write_error: str | None = None
    progress: tqdm | None = None

    def first_try(self, url: str) -> bool:
        """False for a link tried before, in this run or an earlier one (sources.csv)."""
        with self.sources.lock:
            if url in self.seen_urls:
                return False
            self.seen_urls.add(url)
            return True

    def record(self, url: str, result: int, file: str = "", problem: str = "") -> None:
        self.sources.add({"class": self.name, "file": file, "url": url, "result": str(result), "keyword": self.keyword,
                          "engine": self.engine, "problem": problem})
        self.tally.tried += 1
        if problem:
            self.tally.problems[problem] += 1

    def save(self, file: str, url: str, result: int, data: bytes) -> None:
        """The photo takes its name only once it is whole, then its link goes into sources.csv."""
        path = self.folder / file
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        partial.write_bytes(data)
        os.replace(partial, path)
        self.record(url, result, file)
        self.tally.saved += 1
        if self.progress is None:  # only now: a crawl that finds nothing shows no empty bar
            self.progress = tqdm(desc=f"downloading {self.keyword}", unit="photo")
        self.progress.update()


class PhotoTooLarge(Exception):
    pass


class PoliteSession(Session):
    """icrawler's session, pacing every request and counting what the engine answers."""

    def __init__(self, proxy_pool, crawl: KeywordCrawl) -> None:
        super().__init__(proxy_pool)
        self.crawl = crawl

    def get(self, url: str, **kwargs) -> requests.Response:  # icrawler's parser reads the result pages with this
        tally = self.crawl.tally
        if len(tally.page_errors) >= PAGE_TRIES and not tally.pages:  # the engine is out of reach: fail at once
            raise requests.ConnectionError(tally.page_errors[0])
        self.crawl.pacer.wait(url)
        self.crawl.page_start = self.crawl.page_starts.get(url, self.crawl.page_start)
        try:
            response = super().get(url, **kwargs)
        except Exception as error:
            tally.page_errors.append(short_reason(error))
            raise
        if response.status_code == 200:
            tally.pages += 1
        else:
            tally.page_errors.append(f"HTTP {response.status_code}")
        return response

    def get_photo(self, url: str, timeout: float) -> bytes:
        """The photo's bytes, read as they come: over MAX_PHOTO_BYTES, the download stops and nothing is kept."""
        self.crawl.pacer.wait(url)
        started, data = time.monotonic(), bytearray()
        with super().get(url, timeout=timeout, stream=True) as response:
            response.raise_for_status()
            if int(response.headers.get("Content-Length") or 0) > MAX_PHOTO_BYTES:
                raise PhotoTooLarge()
            for chunk in response.iter_content(1 << 16):
                data += chunk
                if len(data) > MAX_PHOTO_BYTES:
                    raise PhotoTooLarge()
                if time.monotonic() - started > PHOTO_TIMEOUT_S:
                    raise TimeoutError(f"not complete after {PHOTO_TIMEOUT_S} s")
        return bytes(data)


class PhotoDownloader(ImageDownloader):
    """Saves each photo whole or not at all, never one over MAX_PHOTO_BYTES. Files are numbered in the order of the
    engine's results, whichever thread finishes first, so that the photos kept first are the engine's first."""

    def start(self, file_idx_offset=0, *args, **kwargs) -> None:
        self.numbers = itertools.count(file_idx_offset + 1)
        super().start(file_idx_offset, *args, **kwargs)

    def download(self, task, default_ext, timeout=5, max_retry=3, overwrite=False, **kwargs) -> bool:
        try:
            return self.fetch_and_save(task, timeout)
        except OSError as error:  # writing: a full disk, sources.csv open in Excel on Windows (requests' are caught)
            self.session.crawl.write_error = f"{error.filename or self.session.crawl.folder}: {error.strerror or error}"
            self.signal.set(reach_max_num=True)
            return False

    def fetch_and_save(self, task: dict, timeout: float) -> bool:
        crawl, url = self.session.crawl, task["file_url"]
        task["success"] = False
        if not crawl.first_try(url):
            return False
        with self.lock:
            number = next(self.numbers)
        try:
            data = self.session.get_photo(url, timeout)
        except PhotoTooLarge:
            crawl.record(url, task["result"], problem=f"larger than {MAX_PHOTO_BYTES // 2**20} MB: not downloaded")
            return False
        except Exception as error:  # anything a web server can do to a request
            crawl.record(url, task["result"], problem=short_reason(error))
            return False
        with self.lock:  # a photo the other thread was still fetching is kept too: it will not be fetched again
            self.fetched_num += 1
            if self.fetched_num >= self.max_num:
                self.signal.set(reach_max_num=True)
        suffix = Path(urlsplit(url).path).suffix.lower()
        crawl.save(f"{number:06d}{suffix if suffix in IMAGE_EXTENSIONS else '.jpg'}", url, task["result"], data)
        task["success"] = True
        return True


class ResultPages(Feeder):
    """The engine's result pages, as icrawler's BaiduFeeder and BingFeeder ask for them, from SEARCH_URLS."""

    def feed(self, keyword: str, offset: int, max_num: int) -> None:
        crawl = self.session.crawl
        for start in range(offset, offset + max_num, RESULTS_PER_PAGE[crawl.engine]):
            url = SEARCH_URLS[crawl.engine].format(quote(keyword), start)
            crawl.page_starts[url] = start
            self.out_queue.put(url)


class CountingParser:
    """Counts the photo links of each answer; an answer the engine's parser cannot read counts as none."""

    def parse(self, response, **kwargs):
        tally = self.session.crawl.tally
        if response.status_code != 200:  # counted as a page error by the session
            return
        try:
            for place, task in enumerate(super().parse(response, **kwargs), start=self.session.crawl.page_start):
                tally.links, self.session.crawl.last_place = tally.links + 1, place
                yield task | {"result": place}
        except Exception as error:  # a changed page format: Baidu's parser indexes the JSON blindly
            tally.page_errors.append(f"an answer that could not be read ({short_reason(error)})")


PARSERS = {"baidu": type("BaiduResults", (CountingParser, BaiduParser), {}),
           "bing": type("BingResults", (CountingParser, BingParser), {})}


class QuietCrawler(Crawler):
    """icrawler's crawler with the polite session, and without its logging setup (basicConfig at INFO)."""

    def __init__(self, keyword_crawl: KeywordCrawl, **kwargs) -> None:
        self.keyword_crawl = keyword_crawl  # before icrawler's __init__, which calls set_session
        super().__init__(**kwargs)

    def set_logger(self, log_level=logging.INFO) -> None:
        self.logger = logging.getLogger("icrawler")

    def set_session(self, headers=None) -> None:
        super().set_session(headers)  # icrawler's browser-like headers
        polite = PoliteSession(self.proxy_pool, self.keyword_crawl)
        polite.headers.update(self.session.headers)
        self.session = polite


def download_round(crawl: KeywordCrawl, offset: int, wanted: int, delay: float) -> None:
    """Up to `wanted` new photos, from the engine's results from number `offset` on."""
    page = RESULTS_PER_PAGE[crawl.engine]
    crawler = QuietCrawler(crawl, feeder_cls=ResultPages, parser_cls=PARSERS[crawl.engine],
                           downloader_cls=PhotoDownloader, downloader_threads=DOWNLOAD_THREADS,
                           storage={"backend": "FileSystem", "root_dir": str(crawl.folder)})
    waiting = 1 + 2 * delay  # how long the downloaders wait for a link before they take the results as finished
    # Twice the photos wanted, as some links fail, and a page more: the first page may be read in part already.
    results = min(MAX_RESULTS - offset, max(2 * wanted, page) + page)
    crawler.crawl(feeder_kwargs={"keyword": crawl.keyword, "offset": offset, "max_num": results},
                  parser_kwargs={"queue_timeout": 1, "max_retry": PAGE_TRIES},
                  downloader_kwargs={"max_num": wanted, "file_idx_offset": crawl.sources.last_number(crawl.name),
                                     "queue_timeout": waiting})
    crawler.signal.set(reach_max_num=True)  # icrawler returns when its downloaders do: its page reader stops too


def short_reason(error: BaseException) -> str:
    """A failed request in a few words: requests' own messages run to hundreds of characters."""
    text = str(error)
    if match := re.search(r"\[Errno -?\d+\] [^)'\]\"]+", text):
        return match.group(0).strip()
    if isinstance(error, requests.Timeout):
        return "no answer in time"
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code}"
    return text if 0 < len(text) <= 100 else type(error).__name__
