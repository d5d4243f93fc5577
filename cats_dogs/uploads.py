"""What a browser uploads to the web page: one photo, opened or refused with the page's message. Many photos and
zips are photo_files.py's, which the desktop app shares.

app.py's page words every reason in the language of the request (translations.py), never as a traceback.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from cats_dogs.images import MAX_PHOTO_BYTES, UNREADABLE_IMAGE_ERRORS, open_image
from cats_dogs.translations import reason_in, text

MAX_UPLOAD_BYTES = MAX_PHOTO_BYTES  # app.py's launch(max_file_size=...), and a photo sent inline (data: URL) too


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
