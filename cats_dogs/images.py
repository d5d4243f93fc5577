"""Opening a user's photos: any format, rotation, mode or broken file, as upright RGB or a clear reason."""

from __future__ import annotations

import os
import warnings
import zipfile
from typing import IO

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# What Pillow raises for a file that is not a usable image: truncated, empty, not an image, too large.
UNREADABLE_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning)


def open_image(path: str | os.PathLike | IO[bytes]) -> Image.Image:
    """Open any photo a user may have as an upright RGB image.

    Phones store rotation in EXIF instead of rotating pixels, and user folders hold
    grayscale, palette, CMYK and transparent files: all become plain RGB here.
    Transparent areas are put on white, since black would look like a dark photo.
    Images over Pillow's pixel limit (~89 megapixels) are refused as possible
    decompression bombs: one such file could take gigabytes of memory.
    Raises one of UNREADABLE_IMAGE_ERRORS for anything that is not a usable image.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(path)
    with image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        return image.convert("RGB")


def zip_member_name(info: zipfile.ZipInfo) -> str:
    """A zip member's real name: Windows' built-in zip writes Chinese names in the local code page (GBK),
    without the UTF-8 flag, and zipfile then reads them as cp437 mojibake."""
    if info.flag_bits & 0x800:  # the UTF-8 flag: zipfile decoded it right
        return info.filename
    raw = info.filename.encode("cp437")
    for encoding in ("utf-8", "gbk"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return info.filename


def explain_unreadable(error: Exception) -> str:
    """Plain words for why a file could not be used as a photo."""
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (f"too many pixels (over {Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels), "
                "refused as a possible decompression bomb")
    if "truncated" in str(error) or "broken data stream" in str(error):
        return "the file is cut short (truncated, e.g. by an interrupted download)"
    if isinstance(error, UnidentifiedImageError):
        return "not an image file, or a format Pillow cannot read"
    return f"cannot be decoded ({error})"


