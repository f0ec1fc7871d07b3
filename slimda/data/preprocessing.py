"""What a model is fed: input size, channels, normalisation, and the torchvision pipeline that makes it.

Stored with the bank (``bank.pt``) and in deployment manifests, so a deployed sub-network is fed exactly
what it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from slimda.errors import ConfigError

GREY_MEAN_STD = ((0.5,), (0.5,))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Preprocessing:
    """What a model needs to be fed: input size (H, W), channels and normalisation.

    Stored in ``bank.pt`` and deployment manifests, so it round-trips through JSON (:meth:`to_dict`).
    """

    size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists, ints, floats)."""
        return {
            "size": [int(s) for s in self.size],
            "channels": int(self.channels),
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
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
        )

    def transform(self, train: bool = False) -> Any:
        """torchvision v2 pipeline: PIL image or uint8 [..., C, H, W] tensor -> normalised float32 tensor.

        ``train=True`` adds a small random translation (light augmentation); off by default so that
        evaluation and BN recalibration are deterministic.
        """
        from torchvision.transforms import v2  # imported here: torchvision takes seconds to import

        steps: list[Any] = [v2.ToImage(), v2.Grayscale(1) if self.channels == 1 else v2.RGB()]
        steps.append(v2.Resize(self.size, antialias=True))
        if train:
            steps.append(v2.RandomAffine(degrees=0, translate=(0.1, 0.1)))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std), v2.ToPureTensor()]
        return v2.Compose(steps)
