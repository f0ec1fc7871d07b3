"""A labelled photo domain pair made from images that ship in a package, for tests, benchmarks and a first
try of the photo path: no download, real JPEG files in ImageFolder layout."""

from __future__ import annotations

from pathlib import Path

CLASSES = ("china", "flower")  # scikit-learn's two sample photos, 427x640


def make_photo_domains(root: str | Path, per_class: int = 6, seed: int = 0,
                       longer_side: tuple[int, int] = (300, 420)) -> tuple[Path, Path]:
    """Random crops of scikit-learn's two sample photos as ``root/{source,target}/<class>/NNN.jpg``.

    Classes are the two photos; the target's crops come from the other half of each photo and are
    colour-shifted, so the pair differs in content and colour as two camera sites do. Crops are
    ``longer_side`` px wide (Office-31's photos are 300-500 px) and 55-75 % as high. Returns (source, target).
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    root = Path(root)
    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    for domain, half, shift in (("source", 0, (0, 0, 0)), ("target", 1, (30, -10, -25))):
        for name, photo in zip(CLASSES, photos):
            folder = root / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            h, w = photo.shape[:2]
            for i in range(per_class):
                cw = int(rng.integers(longer_side[0], min(longer_side[1], w) + 1))
                ch = min(h, int(cw * rng.uniform(0.55, 0.75)))
                top = int(rng.integers(0, h - ch + 1))
                room = (w - cw) // 2  # the source crops from the left half's range, the target from the right's
                left = int(rng.integers(half * room, room + half * (w - cw - room) + 1))
                crop = photo[top:top + ch, left:left + cw].astype(np.int16) + np.asarray(shift, dtype=np.int16)
                Image.fromarray(crop.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.jpg", quality=90)
    return root / "source", root / "target"
