"""prepare_data.py --download: two copies of Kaggle's cats vs dogs photos, tried in turn, and a download that
is never taken as complete when it is not.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

FROM_HINT = ("If you already have the photos (for example a .zip that you downloaded in a browser), import them:\n"
             "  python prepare_data.py --from path/to/photos      (class folders, Kaggle names, or a .zip)")


class Source(NamedTuple):
    url: str
    class_names: dict[str, str]  # the archive's folder name -> the tutorial's class name (label 0 = cat, 1 = dog)
    about: str


# Two copies of Kaggle's cats vs dogs photos, tried in this order. Google Storage is often blocked in
# mainland China; Microsoft's Download Center hosts the full set. The variables point them to a mirror or a test server.
SOURCES = {
    "google": Source(os.environ.get("PREPARE_DATA_GOOGLE_URL")
                     or "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip",
                     {"cats": "cat", "dogs": "dog"}, "Google Storage: 2,000 train + 1,000 val photos, about 68 MB"),
    "microsoft": Source(os.environ.get("PREPARE_DATA_MICROSOFT_URL")
                        or "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
                           "kagglecatsanddogs_5340.zip",
                        {"Cat": "cat", "Dog": "dog"}, "Microsoft Download Center: all 25,000 photos, about 790 MB"),
}


class DownloadError(Exception):
    """A download that gave no complete .zip archive. The message says why, in plain words."""


def cache_path(url: str, cache_dir: Path) -> Path:
    return cache_dir / (Path(urllib.request.url2pathname(url.split("?")[0])).name or "download.zip")


def download(url: str, cache_dir: Path) -> Path:
    """Download once into cache_dir. The file takes its final name only when it is complete."""
    target = cache_path(url, cache_dir)
    if target.is_file() and zipfile.is_zipfile(target):
        print(f"using {target}, downloaded before")
        return target
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            cache_dir.mkdir(parents=True, exist_ok=True)  # only now: an unreachable server leaves no folder behind
            total, received = int(response.headers.get("Content-Length") or 0), 0
            with open(partial, "wb") as file, tqdm(total=total or None, unit="B", unit_scale=True,
                                                   desc=f"downloading {target.name}") as progress:
                while chunk := response.read(1 << 20):
                    file.write(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
        if received < total:  # urllib returns a cut connection as a normal end of the file
            raise DownloadError(f"the connection closed after {received:,} of {total:,} bytes")
        if not zipfile.is_zipfile(partial):
            raise DownloadError("the server did not send a .zip archive")
        os.replace(partial, target)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = error if isinstance(error, urllib.error.HTTPError) else getattr(error, "reason", error)
        raise DownloadError(str(reason) or type(error).__name__) from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def download_photos(url: str, source_name: str | None, cache_dir: Path) -> tuple[Path, Source | None]:
    """The downloaded archive, and the built-in source it came from (None for the user's own URL)."""
    if url:
        try:
            return download(url, cache_dir), None
        except DownloadError as error:
            raise SystemExit(f"Could not download {url} ({error}).\nNothing was written to the dataset.\n{FROM_HINT}") from None
    names = [source_name] if source_name else list(SOURCES)
    for name in names:  # a complete earlier download saves a slow failing try of the other source
        if zipfile.is_zipfile(cache_path(SOURCES[name].url, cache_dir)):
            return download(SOURCES[name].url, cache_dir), SOURCES[name]
    failures = []
    for name, next_name in zip(names, [*names[1:], None], strict=True):
        try:
            return download(SOURCES[name].url, cache_dir), SOURCES[name]
        except DownloadError as error:
            failures.append(f"  {name}: {SOURCES[name].url}\n    Reason: {error}.")
            if next_name:
                print(f"The download from {name} failed ({error}). Now trying {next_name}.", flush=True)
    others = [name for name in SOURCES if name not in names]
    advice = "".join(f"You can try another source:\n  python prepare_data.py --download --source {name}\n" for name in others)
    raise SystemExit("Could not download the photos.\n" + "\n".join(failures)
                     + f"\nNothing was written to the dataset.\n{advice}{FROM_HINT}")
