"""The manifest's ``preprocess`` steps, applied to an image file with Pillow and NumPy (no torch).

The one implementation of the recipe outside training: ``slimda predict`` feeds models through it, and the
tests hold it to slimda's own torchvision pipeline (``Preprocessing.transform``) image for image. Steps, as
``Preprocessing.recipe`` writes them: ``decode`` (to ``L`` or ``RGB``: a grey image for a colour model and
the reverse are converted), ``resize`` (to ``size_hw``, or the shorter side to ``shorter_side``; Pillow's
bilinear filter, antialiased when shrinking), ``center_crop`` (offset ``round((resized - crop) / 2)``),
``scale``, ``normalize`` and ``layout`` (NCHW float32).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimda.data.decode import load_rgb_or_grey
from slimda.data.preprocessing import shorter_side_size
from slimda.errors import DataError

KNOWN_OPS = ("decode", "resize", "center_crop", "scale", "normalize", "layout")


class Recipe:
    """``steps`` (the manifest's ``preprocess`` list) as a function from an image to a ``[C, H, W]`` array."""

    def __init__(self, steps: Sequence[Mapping[str, Any]]) -> None:
        unknown = [s.get("op") for s in steps if s.get("op") not in KNOWN_OPS]
        if unknown or not steps or steps[0].get("op") != "decode":
            raise DataError(f"cannot follow the preprocessing recipe {list(steps)}: it must start with decode and use "
                            f"only {', '.join(KNOWN_OPS)} (unknown: {unknown}); was it written by a newer slimda?")
        self.steps = [dict(s) for s in steps]
        self.color = str(self.steps[0].get("color", "RGB"))

    @property
    def channels(self) -> int:
        return 1 if self.color == "L" else 3

    def load(self, path: str | Path) -> Any:
        """The decoded image, as training decodes it (``slimda.data.decode``; a ``DataError`` names the file)."""
        return load_rgb_or_grey(Path(path), self.channels)

    def __call__(self, image: Any) -> np.ndarray:
        """A path or a decoded PIL image → the model's input for it, ``[C, H, W]`` float32."""
        from PIL import Image

        if not isinstance(image, Image.Image):
            image = self.load(image)
        elif image.mode != self.color:
            image = image.convert(self.color)
        array: np.ndarray | None = None
        for step in self.steps[1:]:
            op = step["op"]
            if op == "resize":
                if "size_hw" in step:
                    h, w = (int(v) for v in step["size_hw"])
                else:
                    h, w = shorter_side_size(image.height, image.width, int(step["shorter_side"]))
                if (h, w) != (image.height, image.width):
                    image = image.resize((w, h), Image.BILINEAR)
            elif op == "center_crop":
                h, w = (int(v) for v in step["size_hw"])
                top, left = int(round((image.height - h) / 2.0)), int(round((image.width - w) / 2.0))
                image = image.crop((left, top, left + w, top + h))
            elif op == "scale":
                # times 1/255 in float32, as torchvision scales: x / 255 differs in the last bit, which an int8
                # model's input quantization can turn into another class
                array = np.asarray(image, dtype=np.float32) * np.float32(1.0 / float(step["divide_by"]))
            elif op == "normalize":
                array = _pixels(image, array)
                mean = np.asarray(step["mean"], np.float32)
                std = np.asarray(step["std"], np.float32)
                array = (array - mean) / std
            elif op == "layout":
                array = _pixels(image, array)
        array = _pixels(image, array)
        return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)


def _pixels(image: Any, array: np.ndarray | None) -> np.ndarray:
    """The image as ``[H, W, C]`` float32 (scaled already if ``array`` holds it)."""
    if array is None:
        array = np.asarray(image, dtype=np.float32)
    return array[:, :, None] if array.ndim == 2 else array

