"""Photos side by side with a caption under each, in one picture: train_batch.jpg, and the pictures TensorBoard
shows (it has no captions of its own, so "predicted / true" is drawn under each val photo)."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

LABEL_FONTS = ("msyh.ttc", "simhei.ttf", "PingFang.ttc", "Hiragino Sans GB.ttc", "NotoSansCJK-Regular.ttc",
               "wqy-microhei.ttc", "DejaVuSans.ttf", "Arial.ttf")  # Chinese class names first: Windows, macOS, Linux


def label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A font that can write Chinese class names where the system has one, else Pillow's own."""
    for name in LABEL_FONTS:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def photo_grid(photos: list[Image.Image], captions: list[str], tile: int, columns: int = 8) -> Image.Image:
    """The photos in rows of `columns`, each fitted into a `tile`-pixel square (small ones enlarged pixel for
    pixel, so that 32-pixel test photos stay sharp), its caption under it."""
    columns, caption = min(columns, len(photos)), max(14, tile // 10)
    rows = -(-len(photos) // columns)
    grid = Image.new("RGB", (columns * tile, rows * (tile + caption + 6)), "white")
    draw, font = ImageDraw.Draw(grid), label_font(caption)
    for i, (photo, text) in enumerate(zip(photos, captions, strict=True)):
        x, y = i % columns * tile, i // columns * (tile + caption + 6)
        scale = tile / max(photo.size)
        size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
        resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
        grid.paste(photo.convert("RGB").resize(size, resample), (x + (tile - size[0]) // 2, y + (tile - size[1]) // 2))
        draw.text((x + tile // 2, y + tile + 2), text, fill="black", font=font, anchor="mt")
    return grid
