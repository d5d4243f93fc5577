"""images.py: any photo a user has opens as upright 8-bit RGB, and anything else is refused with its reason,
never with another error type, from any number of threads at once."""

from __future__ import annotations

import io
import random
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cats_dogs.images import UnreadableImage, open_image
from cats_dogs.photo_batches import ImageList
from conftest import make_photo, run_script


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1", "I;16"])
def test_open_image_gives_rgb_for_every_mode(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"photo_{mode.replace(';', '')}.{'jpg' if mode in ('L', 'CMYK') else 'png'}"
    Image.new("RGB", (20, 10), (10, 200, 30)).convert(mode).save(path)
    image = open_image(path)
    assert image.mode == "RGB"
    assert image.size == (20, 10)


def test_open_image_puts_transparency_on_white(tmp_path: Path) -> None:
    path = tmp_path / "transparent.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert open_image(path).getpixel((3, 3)) == (255, 255, 255)


def test_open_image_applies_exif_rotation(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    image = Image.new("RGB", (40, 20), "red")
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(path, exif=exif)
    assert Image.open(path).size == (40, 20)
    assert open_image(path).size == (20, 40)


@pytest.mark.parametrize(("mode", "value", "suffix"), [("I;16", 32768, "png"), ("I;16B", 32768, "tif"),
                                                       ("I", 32768, "tif"), ("F", 0.5, "tif")])
def test_16_bit_and_float_images_are_scaled_to_8_bits_not_clipped(tmp_path: Path, mode: str, value: float,
                                                                  suffix: str) -> None:
    """Half of the full range is mid-gray, not white (Pillow's convert clips 32768 to 255)."""
    image = Image.new(mode, (6, 4), value)
    image.putpixel((0, 0), 0)  # a darker corner: a stretch from min to max would make the rest white
    image.save(tmp_path / f"half.{suffix}")
    opened = open_image(tmp_path / f"half.{suffix}")
    assert opened.mode == "RGB"
    assert abs(opened.getpixel((3, 2))[0] - 128) <= 1 and opened.getpixel((0, 0)) == (0, 0, 0)


def fuzz_samples() -> dict[str, bytes]:
    """Tiny valid files: most mutated bytes then land in headers and tables, where decoders go wrong."""
    base = Image.new("RGB", (3, 2))
    base.putdata([(i * 7 % 256, i * 13 % 256, i * 29 % 256) for i in range(6)])
    samples = {}
    for fmt, mode in (("TIFF", "RGB"), ("PNG", "RGB"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB")):
        data = io.BytesIO()
        base.convert(mode).save(data, fmt)
        samples[fmt] = data.getvalue()
    return samples


def mutations(data: bytes, count: int, seed: int = 0) -> Iterator[bytes]:
    """`data` with 1 to 4 bytes overwritten at random, `count` times."""
    rng = random.Random(seed)
    for _ in range(count):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        yield bytes(mutated)


def test_mutated_files_only_ever_give_unreadable_image() -> None:
    """A fixed-seed fuzz (a few seconds). Seed 0's TIFF mutation 383 made Pillow's loader raise TypeError (an
    offset read as a fraction), which once ended prepare_data.py and evaluate.py in a traceback."""
    others = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pillow warns about each corrupt TIFF tag
        for fmt, data in fuzz_samples().items():
            for attempt, mutated in enumerate(mutations(data, 400)):
                try:
                    open_image(io.BytesIO(mutated))
                except UnreadableImage as error:
                    assert str(error)  # the reason in words
                except Exception as error:  # noqa: BLE001 -- what the test is looking for
                    others.append(f"{fmt} mutation {attempt}: {type(error).__name__}: {error}")
    assert not others, others


def test_a_file_pillow_fails_on_with_a_type_error_is_left_out_with_its_reason(tmp_path: Path) -> None:
    """prepare_data.py's check and training's batches: the TIFF the fuzz found above, among good photos."""
    tiff = tmp_path / "photos/cat/odd.tif"
    for i in range(3):
        make_photo(tmp_path / f"photos/cat/c{i}.jpg", 0, seed=i)
        make_photo(tmp_path / f"photos/dog/d{i}.jpg", 1, seed=10 + i)
    tiff.write_bytes(list(mutations(fuzz_samples()["TIFF"], 384))[-1])
    result = run_script("prepare_data.py", "--from", str(tmp_path / "photos"), "--out", "ds", cwd=tmp_path)
    assert f"{tiff}: cannot be decoded" in result.stdout and "left out 1 file(s)" in result.stdout
    batches = ImageList([(tiff, 0), (tmp_path / "photos/cat/c0.jpg", 0)], image_size=16)
    assert batches.resized(0).startswith(f"{tiff}: cannot be decoded") and batches.resized(1).shape == (16, 16, 3)


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that claims width × height pixels and holds none: a decompression bomb's header, a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IDAT", b"")


def test_the_pixel_limit_holds_in_every_thread_at_once() -> None:
    """The page opens photos in parallel threads. warnings.catch_warnings is not thread-safe: one thread leaving
    it (here: a library ignoring warnings for a moment) took the guard away from the others mid-open."""
    bomb = header_only_png(10_000, 10_000)  # 100 megapixels: over Pillow's limit, under twice it
    reasons: list[str] = []
    done = threading.Event()

    def open_many() -> None:
        for _ in range(1500):
            try:
                open_image(io.BytesIO(bomb))
                reasons.append("opened")
            except UnreadableImage as error:
                reasons.append(str(error))

    def ignore_warnings_now_and_then() -> None:
        while not done.is_set():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")

    openers = [threading.Thread(target=open_many) for _ in range(3)]
    other = threading.Thread(target=ignore_warnings_now_and_then)
    other.start()
    for thread in openers:
        thread.start()
    for thread in openers:
        thread.join()
    done.set()
    other.join()
    assert len(reasons) == 4500
    assert {reason.split(" (")[0] for reason in reasons} == {"too many pixels"}, set(reasons)


def test_unreadable_image_names_the_reason(tmp_path: Path) -> None:
    (tmp_path / "text.jpg").write_text("not a photo", encoding="utf-8")
    with pytest.raises(UnreadableImage, match="not an image file"):
        open_image(tmp_path / "text.jpg")
    with pytest.raises(UnreadableImage, match="too many pixels"):
        open_image(io.BytesIO(header_only_png(20_000, 20_000)))  # over twice the limit: Pillow's own error
    assert np.asarray(open_image(io.BytesIO(fuzz_samples()["PNG"]))).shape == (2, 3, 3)  # the unmutated file opens
