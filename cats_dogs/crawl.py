"""prepare_data.py --crawl: photos for each keyword from an image search engine, kept in their own folder.

The downloads stay beside the dataset (<dataset>_crawl/<class>/ and sources.csv), so that a later run tops each class up
instead of starting over. A class counts the photos the import that follows will keep: its checks (cleaning.py) leave
out broken photos, copies and resized copies, so the crawl goes on until per_class photos pass them. How the engines
are asked, politely and with every download taken as untrusted, is image_search.py's job.
"""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import urlsplit

from cats_dogs.classes import class_name_problem
from cats_dogs.cleaning import Inspected, SeenPhotos, check_file, inspect_file
from cats_dogs.image_search import (
    MAX_RESULTS,
    SEARCH_URLS,
    KeywordCrawl,
    Pacer,
    SourcesFile,
    download_round,
    quiet_icrawler,
)
from cats_dogs.images import IMAGE_EXTENSIONS

OTHER_ENGINE = {"baidu": "bing", "bing": "baidu"}
SOURCES_FILE = "sources.csv"


def crawl_folder(out: Path) -> Path:
    """Where the downloads of a crawl for the dataset `out` live: beside it, never inside it."""
    out = out if out.name else out.resolve()
    return out.parent / f"{out.name}_crawl"


def choose(folder: Path, names: list[str], per_class: int,
           inspected: dict[Path, Inspected]) -> tuple[dict[str, list[Path]], dict[str, int]]:
    """For each class, its photos in file order up to the per_class-th one kept, and how many are kept.

    The same checks, in the same order, as the import's clean(near_duplicates=True) over these lists: it keeps
    exactly these counts. A photo is decoded once per run (inspected).
    """
    seen, chosen, kept = SeenPhotos(near_duplicates=True), {}, {}
    for name in names:
        chosen[name], kept[name] = [], 0
        class_folder = folder / name
        photos = sorted(p for p in class_folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                        and not p.name.startswith(".")) if class_folder.is_dir() else []
        for path in photos:
            if kept[name] == per_class:
                break
            if path not in inspected:
                inspected[path] = inspect_file(path, looks=True)
            chosen[name].append(path)
            kept[name] += check_file(path, seen, inspected[path]) is None
    return chosen, kept


def crawl_photos(keywords: list[str], names: list[str] | None, per_class: int, engine: str, delay: float,
                 out: Path) -> tuple[Path, dict[None, dict[str, list[Path]]]]:
    """The crawl's folder and the photos to import from it, {None: {class: photos}}: each keyword's class folder
    topped up until per_class of its photos pass the import's checks. SystemExit, one line, for a keyword with none."""
    folder, names = crawl_folder(out), names or keywords
    for name in names:
        if problem := class_name_problem(name):
            raise SystemExit(f"--crawl/--names: {problem}. Give plain folder names with --names.")
    quiet_icrawler()
    sources, pacer, inspected = SourcesFile(folder / SOURCES_FILE), Pacer(delay), {}
    previous_hook = threading.excepthook
    try:
        for keyword, name in zip(keywords, names, strict=True):
            crawl = KeywordCrawl(keyword, name, engine, folder / name, sources, pacer, seen_urls=sources.urls(name))
            threading.excepthook = lambda hook, tally=crawl.tally: tally.page_errors.append(
                f"{hook.exc_type.__name__} in {getattr(hook.thread, 'name', 'a thread')}: {hook.exc_value}")
            fill_class(crawl, folder, names, per_class, inspected, delay)
    finally:
        threading.excepthook = previous_hook
    chosen, _ = choose(folder, names, per_class, inspected)
    print("Photos from the web belong to their owners: sources.csv lists where each came from. Crawls hold off-topic "
          "photos: after training, review.py shows those the model doubts most.")
    return folder, {None: chosen}


def fill_class(crawl: KeywordCrawl, folder: Path, names: list[str], per_class: int, inspected: dict, delay: float) -> None:
    """Download rounds until the class has per_class photos kept, or the engine gives no new one."""
    links_before, skip_to = None, 0
    while (kept := choose(folder, names, per_class, inspected)[1][crawl.name]) < per_class \
            and crawl.tally.links != links_before:  # the last round read links: the engine may have more
        offset = max(crawl.sources.next_result(crawl.name, crawl.engine, crawl.keyword), skip_to)
        if offset >= MAX_RESULTS:
            break
        links_before, tried_before = crawl.tally.links, crawl.tally.tried
        download_round(crawl, offset, per_class - kept, delay)
        if crawl.write_error:
            break
        if crawl.tally.tried == tried_before:  # all of them tried before (by the other engine, say): read on past them
            skip_to = crawl.last_place + 1
    if crawl.progress is not None:
        crawl.progress.close()
    if crawl.write_error:
        raise SystemExit(f"Could not save a download: {crawl.write_error}. Nothing was written to the dataset.")
    if not crawl.tally.pages and crawl.tally.page_errors:
        raise SystemExit(unreachable_message(crawl, folder))
    if kept == 0:
        raise SystemExit(no_photos_message(crawl))
    shortfall = f" (only {kept} of {per_class}: {crawl.engine} gave no more)" if kept < per_class else ""
    print(f"{crawl.keyword}: {kept} photos in {crawl.folder}, {crawl.tally.saved} downloaded now{shortfall}")


def unreachable_message(crawl: KeywordCrawl, folder: Path) -> str:
    host = urlsplit(SEARCH_URLS[crawl.engine]).netloc
    so_far = f" (the photos downloaded so far are in {folder})" if folder.is_dir() else ""
    return (f"{crawl.engine}'s image search gave no answer ({host}: {crawl.tally.page_errors[0]}). Nothing was written "
            f"to the dataset. Check the connection, try the other engine (--crawl-engine {OTHER_ENGINE[crawl.engine]}), "
            f"or import photos you have with --from{so_far}.")


def no_photos_message(crawl: KeywordCrawl) -> str:
    tally = crawl.tally
    if not tally.links:
        detail = f"its answers listed none{'; ' + tally.page_errors[0] if tally.page_errors else ''}"
    elif not tally.saved:
        reason, count = tally.problems.most_common(1)[0] if tally.problems else ("links tried before", tally.links)
        detail = f"none of its photo links could be downloaded ({count}× {reason})"
    else:
        detail = f"none of the {tally.saved} files downloaded is a usable photo that is not a copy"
    return (f'No photos for "{crawl.keyword}" from {crawl.engine} ({detail}). Nothing was written to the dataset. '
            f"Try another keyword, the other engine (--crawl-engine {OTHER_ENGINE[crawl.engine]}), "
            "or import photos you have with --from.")
