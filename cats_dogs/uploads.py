"""What a browser uploads to the web page: one photo, or files and zips of photos, each opened or given a reason.

app.py's page words every reason in the language of the request (translations.py), never as a traceback.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from cats_dogs.images import MAX_PHOTO_BYTES, UNREADABLE_IMAGE_ERRORS, open_image, zip_member_name
from cats_dogs.translations import in_language, reason_in, text
from cats_dogs.zips import MEMBER_READ_ERRORS, member_problem, read_problem

MAX_UPLOAD_BYTES = MAX_PHOTO_BYTES  # app.py's launch(max_file_size=...), and a photo sent inline (data: URL) too
MAX_ZIP_MEMBER_BYTES = 50 * 1024 * 1024  # a photo inside a zip larger than this is skipped unread
MAX_ZIP_TOTAL_BYTES = 500 * 1024 * 1024  # one request's zips unpack to at most this much; the rest is skipped unread


class UploadTooLarge(ValueError):
    """A photo sent inline (a data: URL) larger than the upload limit: refused before anything decodes it."""


def open_upload(image_path: str | Exception | None, language: str = "en") -> Image.Image:
    """The uploaded photo, or the page's one message for an upload that is not a usable photo, whichever step found out.

    An exception in place of the path is Gradio's own failure to open it (see readable_upload_errors).
    """
    if not image_path:
        raise gr.Error(text("upload_first", language))
    if isinstance(image_path, UploadTooLarge):
        raise gr.Error(text("unusable", language, reason=text("too_large", language, mb=MAX_UPLOAD_BYTES // 2**20)))
    try:
        if isinstance(image_path, Exception):
            raise image_path
        return open_image(image_path)
    except UNREADABLE_IMAGE_ERRORS as error:
        raise gr.Error(text("unusable", language, reason=reason_in(language, error))) from None


def readable_upload_errors(component: gr.Image) -> gr.Image:
    """Gradio opens uploads itself before the page's function runs; hand its failures to the function.

    Without this a text file named .jpg gives the page only "Error" and the log a traceback. The function,
    not this step, words the message: only it is told the browser's language (by gr.Request).
    A photo may also come inline as a data: URL, which skips the upload route and its size limit: the same
    limit is applied here, before Gradio decodes it.
    """
    original = component.preprocess

    def preprocess(payload: Any) -> Any:
        url = getattr(payload, "url", None) or ""
        if url.startswith("data:") and len(url) * 3 // 4 > MAX_UPLOAD_BYTES:  # base64: 4 characters per 3 bytes
            return UploadTooLarge(f"over {MAX_UPLOAD_BYTES // 2**20} MB")
        try:
            return original(payload)
        except UNREADABLE_IMAGE_ERRORS as error:
            return error

    component.preprocess = preprocess
    return component


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
