"""Opening a user's photos: any format, rotation, mode or broken file, as upright RGB or a clear reason."""

from __future__ import annotations

import os
import warnings
import zipfile
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_PHOTO_BYTES = 20 * 1024 * 1024  # one photo from outside (an upload, a crawled download): larger ones are refused


class UnreadableImage(ValueError):
    """A file that cannot be used as a photo. str() is the reason in plain words (explain_unreadable's)."""


# What to catch around open_image and the reading of a photo's bytes: open_image raises UnreadableImage (a
# ValueError) for every decoding failure; reading a file or a zip member adds OSError and friends.
UNREADABLE_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning)

# Set once for the whole process: warnings.catch_warnings around each open is not thread-safe (the page decodes in
# parallel threads), so some opens would slip past it. open_image also checks the size itself, below.
warnings.simplefilter("error", Image.DecompressionBombWarning)


def open_image(path: str | os.PathLike | IO[bytes]) -> Image.Image:
    """Open any photo a user may have as an upright RGB image.

    Phones store rotation in EXIF instead of rotating pixels, and user folders hold
    grayscale, palette, CMYK, 16-bit and transparent files: all become plain 8-bit RGB here.
    Transparent areas are put on white, since black would look like a dark photo.
    Images over Pillow's pixel limit (~89 megapixels) are refused as possible
    decompression bombs: one such file could take gigabytes of memory.
    Raises UnreadableImage, with the reason, for anything that is not a usable image: a fuzzed file makes
    Pillow's decoders raise almost any error type. Only MemoryError and interrupts pass through.
    """
    try:
        image = Image.open(path)  # reads the header only: the size is known before any pixel is decoded
        with image:
            if image.width * image.height > Image.MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(f"{image.width}×{image.height} pixels")
            return to_rgb(ImageOps.exif_transpose(image))
    except MemoryError:
        raise
    except Exception as error:
        raise UnreadableImage(explain_unreadable(error)) from error


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, transparency on white."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        image = to_8_bits(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def to_8_bits(image: Image.Image) -> Image.Image:
    """A 16-bit or float gray image as 8-bit gray (Pillow's convert would clip it: 32768 of 65535 becomes white).

    16-bit images (and 32-bit integer ones holding 0..65535, as 16-bit files open in some Pillow versions) are
    divided by 257, so 65535 becomes 255. Floats in 0..1 are multiplied by 255. Anything else is stretched from its
    lowest to its highest value.
    """
    pixels = np.asarray(image, dtype=np.float64)
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and high <= 65535):
        scaled = pixels / 257
    elif image.mode == "F" and low >= 0 and high <= 1:
        scaled = pixels * 255
    else:
        scaled = (pixels - low) * (255 / (high - low)) if high > low else np.zeros_like(pixels)
    return Image.fromarray(np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8), mode="L")


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
    if isinstance(error, UnreadableImage):  # already explained by open_image
        return str(error)
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (f"too many pixels (over {Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels), "
                "refused as a possible decompression bomb")
    if "truncated" in str(error) or "broken data stream" in str(error):
        return "the file is cut short (truncated, e.g. by an interrupted download)"
    if isinstance(error, UnidentifiedImageError):
        return "not an image file, or a format Pillow cannot read"
    return f"cannot be decoded ({error})"


