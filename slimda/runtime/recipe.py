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
from PIL import Image

from slimda.data.decode import load_rgb_or_grey
from slimda.data.preprocessing import shorter_side_size
from slimda.errors import DataError

KNOWN_OPS = ("decode", "resize", "center_crop", "scale", "normalize", "layout")


class Recipe:
    """``steps`` (the manifest's ``preprocess`` list) as a function from an image to a ``[C, H, W]`` array.

    The steps are read once here, not per image: on 28x28 digits the per-image Python work is a visible
    share of the whole (benchmarks/runtime_overhead.py)."""

    def __init__(self, steps: Sequence[Mapping[str, Any]]) -> None:
        unknown = [s.get("op") for s in steps if s.get("op") not in KNOWN_OPS]
        if unknown or not steps or steps[0].get("op") != "decode":
            raise DataError(f"cannot follow the preprocessing recipe {list(steps)}: it must start with decode and use "
                            f"only {', '.join(KNOWN_OPS)} (unknown: {unknown}); was it written by a newer slimda?")
        self.steps = [dict(s) for s in steps]
        self.color = str(self.steps[0].get("color", "RGB"))
        self._size: tuple[int, int] | None = None  # resize to (H, W)
        self._shorter: int | None = None  # or the shorter side to this
        self._crop: tuple[int, int] | None = None
        self._scale: np.float32 | None = None  # times 1/divide_by
        self._norm: tuple[np.ndarray, np.ndarray] | None = None
        self._scale_first = True  # scale before normalize (the order Preprocessing.recipe writes)
        for step in self.steps[1:]:
            op = step["op"]
            if op == "resize" and "size_hw" in step:
                self._size = (int(step["size_hw"][0]), int(step["size_hw"][1]))
            elif op == "resize":
                self._shorter = int(step["shorter_side"])
            elif op == "center_crop":
                self._crop = (int(step["size_hw"][0]), int(step["size_hw"][1]))
            elif op == "scale":
                # times 1/255 in float32, as torchvision scales: x / 255 differs in the last bit, which an int8
                # model's input quantization can turn into another class
                self._scale = np.float32(1.0 / float(step["divide_by"]))
            elif op == "normalize":
                self._norm = (np.asarray(step["mean"], np.float32), np.asarray(step["std"], np.float32))
                self._scale_first = self._scale is not None

    @property
    def channels(self) -> int:
        return 1 if self.color == "L" else 3

    def load(self, path: str | Path) -> Any:
        """The decoded image, as training decodes it (``slimda.data.decode``; a ``DataError`` names the file)."""
        return load_rgb_or_grey(path if isinstance(path, Path) else Path(path), self.channels)

    def __call__(self, image: Any) -> np.ndarray:
        """A path or a decoded PIL image → the model's input for it, ``[C, H, W]`` float32 (a transposed view:
        stacking a batch makes it contiguous)."""
        if not isinstance(image, Image.Image):
            image = self.load(image)
        elif image.mode != self.color:
            image = image.convert(self.color)
        if self._size or self._shorter:
            h, w = self._size or shorter_side_size(image.height, image.width, self._shorter)
            if (h, w) != (image.height, image.width):
                image = image.resize((w, h), Image.BILINEAR)
        if self._crop:
            h, w = self._crop
            top, left = int(round((image.height - h) / 2.0)), int(round((image.width - w) / 2.0))
            image = image.crop((left, top, left + w, top + h))
        array = np.asarray(image, dtype=np.float32)
        if self._scale is not None and self._scale_first:
            array = array * self._scale
        if self._norm is not None:
            array = (array - self._norm[0]) / self._norm[1] if array.ndim == 3 else \
                (array - self._norm[0][0]) / self._norm[1][0]
        if self._scale is not None and not self._scale_first:
            array = array * self._scale
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
