"""Files and zips of photos, each opened or given a reason: what the web page was sent (uploads.py), what the
desktop app was given. Every reason is worded in the caller's language (translations.py), never a traceback."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from cats_dogs.images import UNREADABLE_IMAGE_ERRORS, open_image, zip_member_name
from cats_dogs.translations import in_language, reason_in, text
from cats_dogs.zips import MEMBER_READ_ERRORS, member_problem, read_problem

MAX_ZIP_MEMBER_BYTES = 50 * 1024 * 1024  # a photo inside a zip larger than this is skipped unread
MAX_ZIP_TOTAL_BYTES = 500 * 1024 * 1024  # one request's zips unpack to at most this much; the rest is skipped unread


def uploaded_photos(paths: list[str], language: str = "en") -> Iterator[tuple[str, Image.Image | str]]:
    """(name, photo) for every uploaded file and every file inside uploaded zips; a reason instead of a photo when unreadable.

    A zip member that cannot be read (encrypted, deflate64, a path outside the zip) gets its own reason; members
    past MAX_ZIP_TOTAL_BYTES, all zips together, are skipped unread.
    """
    unpacked = 0
    for path in paths:
        if path.lower().endswith(".zip") and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    name = zip_member_name(info)
                    if info.is_dir() or "__MACOSX" in name or Path(name).name.startswith("."):
                        continue
                    if problem := member_problem(info):
                        yield name, text("row_unusable", language, reason=in_language(language, problem))
                    elif info.file_size > MAX_ZIP_MEMBER_BYTES:
                        yield name, text("skipped", language, mb=MAX_ZIP_MEMBER_BYTES // 2**20)
                    elif unpacked + info.file_size > MAX_ZIP_TOTAL_BYTES:
                        yield name, text("skipped_total", language, mb=MAX_ZIP_TOTAL_BYTES // 2**20)
                    else:
                        unpacked += info.file_size
                        yield name, read_photo(archive, info, language)
        else:
            yield Path(path).name, read_photo(path, language=language)


def read_photo(source: str | zipfile.ZipFile, member: zipfile.ZipInfo | None = None,
               language: str = "en") -> Image.Image | str:
    """The photo at a path or in a zip, or the reason it cannot be used."""
    if member:
        try:
            source = io.BytesIO(source.read(member))
        except MEMBER_READ_ERRORS as error:  # a bad CRC, a damaged stream: this member only
            return text("row_unusable", language, reason=in_language(language, read_problem(error)))
    try:
        return open_image(source)
    except UNREADABLE_IMAGE_ERRORS as error:
        return text("row_unusable", language, reason=reason_in(language, error))
