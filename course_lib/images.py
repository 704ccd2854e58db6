"""One photo file as the 8-bit RGB pixels a model sees, whatever its format, bit depth or size.

open_photo and fit_photo use Pillow alone: export.STANDALONE_PREDICT carries their source, so that an
exported model prepares a photo exactly as the training images were prepared.
"""
from __future__ import annotations

import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # PNG and TIFF 16-bit grayscale; "I" as Pillow reads them
TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def open_photo(file, size: int):
    """A photo (a path or a binary file) opened, not yet decoded, set to decode at no more than it needs for
    `size` px; ValueError (saying why) for a file that is not an image or too large to decode safely."""
    try:
        with warnings.catch_warnings():  # Pillow warns above its limit; draft() below may bring a JPEG under it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(file)
    except Image.DecompressionBombError as e:
        raise ValueError(f"{str(e).split(',')[0]}, a guard against decompression bombs: shrink the photo (e.g. to "
                         "4000 pixels on its longer side) or remove it") from e
    except UnidentifiedImageError as e:  # its message names the file object (<_io.BytesIO ...>), not the file
        raise ValueError("cannot identify image file: not an image, or damaged") from e
    img.draft(None, (size, size))  # JPEG: decoded at 1/2, 1/4 or 1/8 scale while still >= size, so memory is bounded
    pixels = img.width * img.height
    if pixels > Image.MAX_IMAGE_PIXELS:
        img.close()
        raise ValueError(f"{img.width}x{img.height} pixels ({pixels / 1e6:.0f} megapixels) is more than the "
                         f"{Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels decoded here (a guard against decompression "
                         "bombs): shrink the photo (e.g. to 4000 pixels on its longer side) or remove it")
    return img


def fit_photo(img, size: int):
    """An opened photo as 8-bit RGB, size x size: upright (EXIF); 16-bit and float pixels scaled into 0..255,
    not clipped; transparency placed on white; shorter side fitted to `size` (bicubic), then centre-cropped."""
    img = ImageOps.exif_transpose(img)
    if img.mode in SIXTEEN_BIT_MODES:  # 0..65535
        img = img.convert("I").point(lambda v: v / 257 + 0.5).convert("L")
    elif img.mode == "F":  # 0..1
        img = img.point(lambda v: v * 255 + 0.5).convert("L")
    if img.mode in TRANSPARENT_MODES or "transparency" in img.info:
        img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA"))
    return ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BICUBIC)


def conversion(img) -> str:
    """What fit_photo converts in an opened photo, said to the learner ('' for 8-bit RGB)."""
    if img.mode in TRANSPARENT_MODES or "transparency" in img.info:
        return "with transparency (placed on white)"
    if img.mode in SIXTEEN_BIT_MODES:
        return "16-bit grayscale (0..65535 scaled to 0..255, copied into all three channels)"
    if img.mode == "F":
        return "32-bit float grayscale (0..1 scaled to 0..255, copied into all three channels)"
    if img.mode in ("1", "L"):
        return "grayscale (copied into all three channels)"
    if img.mode == "CMYK":
        return "CMYK (converted to RGB colours)"
    return "" if img.mode in ("RGB", "YCbCr", "P") else f"in mode {img.mode} (converted)"
