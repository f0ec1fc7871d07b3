"""Decoding image files to grey or RGB with Pillow, every failure a ``DataError`` naming the file. No torch:
training (``slimda.data.images``) and the device runtime (``slimda.runtime``) decode through the same code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from slimda.errors import DataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def probe(path: Path) -> tuple[int, tuple[int, int]]:
    """Channels (1 grey, 3 colour) and (H, W) of one image from its header; DataError if unreadable."""
    try:
        with Image.open(path) as img:
            return (1 if is_grey(img) else 3), (img.height, img.width)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise unreadable(path, e) from e


def load_rgb_or_grey(path: Path, channels: int) -> Image.Image:
    """Fully decode ``path`` as an 'L' or 'RGB' image; any decoding failure is a DataError naming it."""
    try:
        with Image.open(path) as img:
            if img.mode in ("P", "PA") and "transparency" in img.info:
                img = img.convert("RGBA")  # PIL's recommended path for palette transparency
            return img.convert("L" if channels == 1 else "RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise unreadable(path, e) from e


def unreadable(path: Path, err: Exception) -> DataError:
    return DataError(
        f"cannot read image {path}: {err}. Replace or delete the file "
        f"(Domain.verify() checks every image of a folder in one pass)."
    )


def is_grey(img: Image.Image) -> bool:
    """Grey modes, and palette images whose palette has only grey entries."""
    if img.mode in _GREY_MODES:
        return True
    if img.mode in ("P", "PA"):
        pal = np.asarray(img.getpalette() or [], dtype=np.int64).reshape(-1, 3)
        return bool((pal == pal[:, :1]).all())
    return False
