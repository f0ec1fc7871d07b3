"""What a model is fed: input size, channels, normalisation, and the torchvision pipeline that makes it.

Stored with the bank (``bank.pt``) and in deployment manifests, so a deployed sub-network is fed exactly
what it was trained on. Importing it needs no torch (``slimda.runtime`` reads it on devices).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slimda.errors import ConfigError

GREY_MEAN_STD = ((0.5,), (0.5,))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# Training augmentations (``Preprocessing.transform``); auto: crop-flip for photos, none for plain recipes.
AUGMENTS: tuple[str, ...] = ("auto", "crop-flip", "resized-crop-flip", "none")

# How images become a model's input (``--preprocess``): ``plain`` resizes straight to the input size (digits,
# icons, anything whose object fills the frame to its border); ``photo`` resizes the shorter side and crops.
PREPROCESSES: tuple[str, ...] = ("auto", "plain", "photo")

# ``auto`` treats images as photos from this shorter side up. Below it the field trains with a plain resize
# and no flip (TLlib's digits: MNIST/USPS/SVHN at 28-32 px), because a crop of a small image cuts strokes at
# its border and a flip turns a 2 or a 7 into something else; Office/VisDA photos (300 px and more) get
# resize, crop and flip.
PHOTO_MIN_SIDE = 64

# Photos are resized so that a centre crop keeps 87.5 % of the shorter side (256 -> 224, as torchvision's
# ImageNet evaluation and SymNets' reference code do).
CROP_FRACTION = 0.875


def photo_resize(size: int) -> int:
    """The shorter side a photo is resized to before its centre crop of ``size``."""
    return int(round(size / CROP_FRACTION))


def shorter_side_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(H, W) after resizing the shorter side to ``shorter``, the longer side truncated as torchvision does."""
    if height <= width:
        return shorter, max(1, int(shorter * width / height))
    return max(1, int(shorter * height / width)), shorter


@dataclass(frozen=True)
class Preprocessing:
    """What a model needs to be fed: input size (H, W), channels and normalisation, and under the photo recipe
    the shorter side images are resized to before a centre crop of ``size`` (``resize``; None: the plain
    recipe, resized straight to ``size``). Which recipe a run uses is ``choose_recipe``'s decision.

    Stored in ``bank.pt`` and deployment manifests, so it round-trips through JSON (:meth:`to_dict`).
    """

    size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None

    def __post_init__(self) -> None:
        if len(self.size) != 2 or any(int(s) < 1 for s in self.size):
            raise ConfigError(
                f"input size {self.size} is invalid: give a positive (height, width) or one int."
            )
        if self.channels not in (1, 3):
            raise ConfigError(f"channels={self.channels} is invalid: use 1 (grey) or 3 (RGB).")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ConfigError(
                f"mean {self.mean} and std {self.std} need one value per channel ({self.channels})."
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std {self.std} must be positive.")
        if self.resize is not None and self.resize < max(self.size):
            raise ConfigError(f"resize {self.resize} is smaller than the crop {self.size}: the shorter side must "
                              f"be resized to at least the crop's larger side.")

    @property
    def is_photo(self) -> bool:
        """The photo recipe (shorter side resized, centre crop), rather than the plain one (resized to ``size``)."""
        return self.resize is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists, ints, floats)."""
        return {
            "size": [int(s) for s in self.size],
            "channels": int(self.channels),
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
            "resize": None if self.resize is None else int(self.resize),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; a missing key is a ConfigError naming it."""
        missing = [k for k in ("size", "channels", "mean", "std") if k not in d]
        if missing:
            raise ConfigError(
                f"preprocessing record lacks {missing}: expected keys size, channels, mean, std."
            )
        h, w = d["size"]
        return cls(
            size=(int(h), int(w)),
            channels=int(d["channels"]),
            mean=tuple(float(m) for m in d["mean"]),
            std=tuple(float(s) for s in d["std"]),
            resize=None if d.get("resize") is None else int(d["resize"]),
        )

    def decoded_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of an image of ``height`` × ``width`` after the resize step (before any crop)."""
        return self.size if self.resize is None else shorter_side_size(height, width, self.resize)

    def resize_pil(self, image: Any) -> Any:
        """The resize step on a decoded PIL image, with PIL's antialiased bilinear filter (what a device's
        recipe reproduces with any image library). Cached images are kept after this step."""
        from PIL import Image

        h, w = self.decoded_size(image.height, image.width)
        return image if (h, w) == (image.height, image.width) else image.resize((w, h), Image.BILINEAR)

    def transform(self, train: bool = False, augment: str = "none") -> Any:
        """torchvision v2 pipeline: PIL image or uint8 [..., C, H, W] tensor -> normalised float32 tensor.

        Evaluation (``train=False``) is deterministic: resize, then for photos the centre crop. Training adds
        ``augment``: ``crop-flip`` (a random crop of ``size`` and a horizontal flip, SymNets' reference),
        ``resized-crop-flip`` (torchvision's RandomResizedCrop and a flip) or ``none``.
        """
        import torch  # imported here: the recipe (``slimda.runtime``) reads this module without torch
        from torchvision.transforms import v2  # imported here: torchvision takes seconds to import

        steps: list[Any] = [v2.ToImage(), v2.Grayscale(1) if self.channels == 1 else v2.RGB()]
        steps.append(v2.Resize(self.size if self.resize is None else self.resize, antialias=True))
        if train and augment == "crop-flip":
            steps += [v2.RandomCrop(self.size, pad_if_needed=True), v2.RandomHorizontalFlip()]
        elif train and augment == "resized-crop-flip":
            steps += [v2.RandomResizedCrop(self.size, antialias=True), v2.RandomHorizontalFlip()]
        elif train and augment != "none":
            raise ConfigError(f"unknown augmentation {augment!r}: use crop-flip, resized-crop-flip or none")
        elif self.resize is not None:
            steps.append(v2.CenterCrop(self.size))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std), v2.ToPureTensor()]
        return v2.Compose(steps)

    def recipe(self) -> list[dict[str, Any]]:
        """What a device must do to an image file, step by step (the manifest's ``preprocess``): any image
        library reproduces the model's input from this alone."""
        steps: list[dict[str, Any]] = [{"op": "decode", "color": "L" if self.channels == 1 else "RGB"}]
        if self.resize is None:
            steps.append({"op": "resize", "size_hw": list(self.size), "interpolation": "bilinear", "antialias": True})
        else:
            steps += [{"op": "resize", "shorter_side": self.resize, "longer_side": "floor(shorter_side * long / short)",
                       "interpolation": "bilinear", "antialias": True},
                      {"op": "center_crop", "size_hw": list(self.size), "offset": "round((resized - crop) / 2)"}]
        steps += [{"op": "scale", "divide_by": 255.0},
                  {"op": "normalize", "mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std]},
                  {"op": "layout", "order": "NCHW", "dtype": "float32"}]
        return steps


@dataclass(frozen=True)
class RecipeChoice:
    """``--preprocess`` decided: ``kind`` (plain or photo) and, for ``config.json``, why."""

    kind: str
    reason: str


def choose_recipe(preprocess: str, source_side: int, target_side: int, init: bool = False) -> RecipeChoice:
    """``--preprocess``'s value with ``auto`` decided from the domains' native shorter sides (px).

    ``auto``: photo when both domains' images are at least ``PHOTO_MIN_SIDE`` px on their shorter side, plain
    when both are smaller; when one is and the other is not, photo only with ``--init`` (pretrained weights
    learnt from photos under that recipe). The channel count never decides: colour digits are still digits.
    """
    if preprocess not in PREPROCESSES:
        raise ConfigError(f"unknown preprocess {preprocess!r}; choose one of {', '.join(PREPROCESSES)}")
    sides = f"shorter side: source {source_side} px, target {target_side} px"
    if preprocess != "auto":
        return RecipeChoice(preprocess, f"--preprocess {preprocess} given ({sides})")
    large = [side >= PHOTO_MIN_SIDE for side in (source_side, target_side)]
    if all(large):
        return RecipeChoice("photo", f"both domains' images are photo-sized ({sides}, at least {PHOTO_MIN_SIDE}): "
                                     "resize the shorter side and centre-crop, train with crop and flip")
    if not any(large):
        return RecipeChoice("plain", f"both domains' images are small ({sides}, under {PHOTO_MIN_SIDE}): a crop "
                                     "would cut the object at the border and a flip can change a digit's class, "
                                     "so resize straight to the input size, no crop, no flip")
    if init:
        return RecipeChoice("photo", f"one domain is photo-sized and one small ({sides}) and --init brings "
                                     "weights pretrained on photos: photo recipe")
    return RecipeChoice("plain", f"one domain is photo-sized and one small ({sides}) and there is no --init: "
                                 "plain recipe, which never cuts the small domain's objects")


def resolve_augment(augment: str, prep: Preprocessing) -> str:
    """``--augment``'s value with ``auto`` decided: crop-flip for the photo recipe (SymNets' reference), none
    for the plain one (a flip can change a digit's class; a crop has nothing to take from an image resized
    straight to the input size)."""
    if augment not in AUGMENTS:
        raise ConfigError(f"unknown augment {augment!r}; choose one of {', '.join(AUGMENTS)}")
    if augment == "auto":
        return "crop-flip" if prep.is_photo else "none"
    return augment
