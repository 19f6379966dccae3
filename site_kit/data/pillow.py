"""Decoding an image file with Pillow into a ``RawImage``, shared by the image formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from site_kit.data import BadRecord
from site_kit.data.records import RawImage

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

_AS_8BIT = {"1": "L", "P": "RGBA", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB"}
"""Pillow modes that are not pixels as such, and the mode that holds the same image."""


def decode_file(file: Path, where: str) -> RawImage:
    """The pixels of ``file``: grey, grey+alpha, RGB or RGBA uint8, or 16-bit grey as uint16."""
    try:
        with Image.open(file) as opened:
            opened.load()
            img: Image.Image = opened
            if img.mode in _AS_8BIT:
                img = img.convert(_AS_8BIT[img.mode])
            if img.mode.startswith("I;16"):
                pixels = np.asarray(img, dtype=np.uint16)
            elif img.mode in ("I", "F"):
                pixels = np.asarray(img, dtype=np.float32)
                if img.mode == "I" and 0 <= pixels.min() and pixels.max() <= 65535:
                    pixels = pixels.astype(np.uint16)
            else:
                pixels = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadRecord(where, f"cannot decode image ({exc.__class__.__name__})") from exc
    except Image.DecompressionBombError as exc:
        raise BadRecord(where, "image is too large to decode safely") from exc
    return RawImage(np.ascontiguousarray(pixels))
