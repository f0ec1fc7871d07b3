"""Tests for slimda.data.domains: built-in digit domains, ImageFolder trees, preprocessing and every data error."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slimda.data.domains import (
    BUILTIN_DOMAINS,
    Domain,
    check_class_sets,
    harmonise,
    labeled_subset,
    load_domain,
)
from slimda.data.preprocessing import Preprocessing
from slimda.errors import ConfigError, DataError

PLAIN_GREY = Preprocessing(size=(8, 8), channels=1, mean=(0.0,), std=(1.0,))
PLAIN_RGB = Preprocessing(size=(8, 8), channels=3, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _save(path: Path, mode: str = "L", size: tuple[int, int] = (12, 10), value: int = 128) -> Path:
    """Write a small image (PIL size is (W, H)) with a gradient so resizing has something to do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    grad = (np.arange(w * h).reshape(h, w) * 7 + value) % 256
    arr = grad.astype(np.uint8)
    if mode == "RGB":
        arr = np.stack([arr, 255 - arr, np.full_like(arr, value)], axis=-1)
    Image.fromarray(arr, mode=mode if mode == "RGB" else "L").save(path)
    return path


def _labelled_tree(root: Path, classes: dict[str, int], mode: str = "L", ext: str = ".png") -> Path:
    for name, n in classes.items():
        for i in range(n):
            _save(root / name / f"img{i}{ext}", mode=mode, value=20 * i)
    return root


@pytest.fixture(scope="module")
def mnist() -> Domain:
    return load_domain("mnist")


@pytest.fixture(scope="module")
def digits() -> Domain:
    return load_domain("digits")


# ---------------------------------------------------------------- built-in domains


def test_mnist_is_5000_balanced_28x28_grey_digits(mnist: Domain) -> None:
    assert mnist.name == "mnist" and len(mnist) == 5000
    assert mnist.native_size == (28, 28) and mnist.channels == 1
    assert mnist.has_labels and mnist.class_names == [str(d) for d in range(10)]
    assert Counter(mnist.labels()) == {k: 500 for k in range(10)}


def test_digits_is_1797_grey_digits_framed_like_mnist(digits: Domain) -> None:
    assert digits.name == "digits" and len(digits) == 1797
    assert digits.native_size == (28, 28) and digits.channels == 1
    plain = Preprocessing(size=(28, 28), channels=1, mean=(0.0,), std=(1.0,))
    images = torch.stack([digits.dataset(plain)[i][0] for i in range(100)])
    assert images[..., :4, :].max() == 0 and images[..., 24:, :].max() == 0  # a 4-pixel border, as MNIST
    assert images[..., 4:24, 4:24].amax(dim=(1, 2, 3)).min() > 0.5  # ink inside the 20x20 box
    counts = Counter(digits.labels())
    assert sorted(counts) == list(range(10)) and all(170 <= c <= 185 for c in counts.values())


def test_digits_grey_levels_scaled_to_full_range(digits: Domain) -> None:
    plain = Preprocessing(size=(28, 28), channels=1, mean=(0.0,), std=(1.0,))
    images = torch.stack([digits.dataset(plain)[i][0] for i in range(50)])
    assert images.min() == 0.0 and images.max() == 1.0  # 0..16 -> 0..255 -> 0..1


def test_harmonise_mnist_digits_grey_at_larger_native_size(mnist: Domain, digits: Domain) -> None:
    prep = harmonise(mnist, digits)
    assert prep.channels == 1 and prep.size == (28, 28) and prep.mean == (0.5,) and prep.std == (0.5,)
    for domain in (mnist, digits):
        ds = domain.dataset(prep)
        assert len(ds) == len(domain)
        x, y = ds[len(ds) // 2]
        assert type(x) is torch.Tensor and x.dtype == torch.float32 and x.shape == (1, 28, 28)
        assert isinstance(y, int) and 0 <= y <= 9
        assert -1.0 <= x.min() < -0.9 and 0.5 < x.max() <= 1.0  # black background, white ink


def test_builtin_dataset_indices_select_the_same_items(digits: Domain) -> None:
    prep = harmonise(digits, digits)
    whole, part = digits.dataset(prep), digits.dataset(prep, indices=[7, 3])
    assert len(part) == 2
    assert torch.equal(part[0][0], whole[7][0]) and part[1][1] == whole[3][1]
    with pytest.raises(IndexError):
        digits.dataset(prep, indices=[len(digits)])


def test_train_augmentation_keeps_shape_and_label(digits: Domain) -> None:
    prep = harmonise(digits, digits, size=16)
    x, y = digits.dataset(prep, indices=[0], augment="crop-flip")[0]
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32 and y == digits.labels()[0]


def test_unknown_builtin_name_lists_builtins() -> None:
    assert BUILTIN_DOMAINS == ("mnist", "digits")
    with pytest.raises(ConfigError, match=r"unknown domain 'svhn'.*mnist, digits.*path"):
        load_domain("svhn")


# ---------------------------------------------------------------- folders


def test_labelled_folder(tmp_path: Path) -> None:
    root = _labelled_tree(tmp_path / "src", {"dog": 2, "cat": 3})
    (root / "cat" / ".DS_Store").write_bytes(b"junk")
    (root / "cat" / ".hidden.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("ignored")
    _save(root / "dog" / "sub" / "deep.JPG")  # nested, upper-case extension
    d = load_domain(str(root))
    assert d.name == str(root.resolve()) and len(d) == 6
    assert d.has_labels and d.class_names == ["cat", "dog"]
    assert d.labels() == [0, 0, 0, 1, 1, 1]
    assert d.channels == 1 and d.native_size == (10, 12)  # (H, W) of the first image
    d.verify()
    x, y = d.dataset(harmonise(d, d))[4]
    assert x.shape == (1, 10, 12) and x.dtype == torch.float32 and y == 1


def test_unlabelled_flat_folder(tmp_path: Path) -> None:
    for i in range(3):
        _save(tmp_path / "tgt" / f"frame{i}.jpg", mode="RGB", size=(16, 16))
    d = load_domain(str(tmp_path / "tgt"))
    assert not d.has_labels and d.class_names is None and d.labels() is None
    assert d.channels == 3 and len(d) == 3
    ds = d.dataset(PLAIN_RGB, indices=[2, 0])
    assert [ds[i][1] for i in range(len(ds))] == [-1, -1]
    assert ds[0][0].shape == (3, 8, 8)


def test_grey_and_rgb_harmonise_to_rgb(tmp_path: Path, mnist: Domain) -> None:
    rgb = _labelled_tree(tmp_path / "rgb", {str(k): 1 for k in range(10)}, mode="RGB", ext=".jpg")
    target = load_domain(str(rgb))
    prep = harmonise(mnist, target, size=(20, 24))
    assert prep.channels == 3 and prep.size == (20, 24)
    assert prep.mean == (0.485, 0.456, 0.406) and prep.std == (0.229, 0.224, 0.225)
    assert mnist.dataset(prep)[0][0].shape == (3, 20, 24)
    assert target.dataset(prep)[0][0].shape == (3, 20, 24)
    grey_as_rgb = mnist.dataset(PLAIN_RGB, indices=[0])[0][0]
    assert torch.equal(grey_as_rgb[0], grey_as_rgb[1]) and torch.equal(grey_as_rgb[1], grey_as_rgb[2])
    assert target.dataset(PLAIN_GREY)[0][0].shape == (1, 8, 8)  # RGB -> grey
    check_class_sets(mnist, target)


def test_palette_images_grey_or_colour_by_palette(tmp_path: Path) -> None:
    grey = Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").convert("P")
    grey.putpalette([v for i in range(256) for v in (i, i, i)])
    (tmp_path / "grey").mkdir()
    grey.save(tmp_path / "grey" / "a.png")
    colour = Image.fromarray(np.zeros((4, 4, 3), np.uint8), mode="RGB").convert("P")
    colour.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    (tmp_path / "colour").mkdir()
    colour.save(tmp_path / "colour" / "a.gif")
    assert load_domain(str(tmp_path / "grey")).channels == 1
    assert load_domain(str(tmp_path / "colour")).channels == 3


def test_folder_dataset_batches_through_a_dataloader(tmp_path: Path) -> None:
    d = load_domain(str(_labelled_tree(tmp_path / "src", {"a": 3, "b": 2}, mode="RGB")))
    x, y = next(iter(torch.utils.data.DataLoader(d.dataset(PLAIN_RGB), batch_size=5)))
    assert x.shape == (5, 3, 8, 8) and y.tolist() == [0, 0, 0, 1, 1]


# ---------------------------------------------------------------- folder errors


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"folder .*nope does not exist.*<class>/<image>"):
        load_domain(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="does not exist"):
        load_domain("./surely-not-here")


def test_path_is_a_file(tmp_path: Path) -> None:
    f = _save(tmp_path / "one.png")
    with pytest.raises(DataError, match=r"one\.png is a file, not a folder"):
        load_domain(str(f))


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"folder .*empty contains no images \(looked for .*\.png"):
        load_domain(str(tmp_path / "empty"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("x")
    (tmp_path / "junk" / ".secret.png").write_bytes(b"x")
    (tmp_path / "junk" / "cls").mkdir()
    with pytest.raises(DataError, match="contains no images"):
        load_domain(str(tmp_path / "junk"))


def test_class_folder_without_images(tmp_path: Path) -> None:
    root = _labelled_tree(tmp_path / "src", {"cat": 2})
    (root / "dog").mkdir()
    (root / "dog" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"class folder .*src/dog has no images.*Add images"):
        load_domain(str(root))


def test_mixed_layout(tmp_path: Path) -> None:
    root = _labelled_tree(tmp_path / "src", {"cat": 2})
    _save(root / "stray.png")
    with pytest.raises(DataError, match=r"mixes layouts: 1 images .*stray\.png.*\(cat\)"):
        load_domain(str(root))


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    root = _labelled_tree(tmp_path / "src", {"cat": 2})
    bad = root / "cat" / "img9.png"
    bad.write_bytes(b"this is not a png at all")
    d = load_domain(str(root))  # the first image is fine, so loading the tree succeeds
    with pytest.raises(DataError, match=r"cannot read image .*img9\.png.*Replace or delete"):
        d.verify()
    with pytest.raises(DataError, match=r"img9\.png"):
        d.dataset(PLAIN_GREY)[2]
    bad.rename(root / "cat" / "a_first.png")  # now the first image: probing its header fails
    with pytest.raises(DataError, match=r"cannot read image .*a_first\.png"):
        load_domain(str(root))


def test_truncated_image_fails_on_decode(tmp_path: Path) -> None:
    good = _save(tmp_path / "tgt" / "a.png", size=(64, 64))
    data = good.read_bytes()
    (tmp_path / "tgt" / "b.png").write_bytes(data[: len(data) // 2])
    d = load_domain(str(tmp_path / "tgt"))
    with pytest.raises(DataError, match=r"cannot read image .*b\.png"):
        d.verify()


# ---------------------------------------------------------------- class sets


def test_source_without_class_folders(tmp_path: Path, digits: Domain) -> None:
    _save(tmp_path / "flat" / "a.png")
    flat = load_domain(str(tmp_path / "flat"))
    with pytest.raises(DataError, match=r"source domain .*flat has no class folders.*<class>/<image>"):
        check_class_sets(flat, digits)
    check_class_sets(digits, flat)  # an unlabelled target is the normal case


def test_class_sets_differ(tmp_path: Path) -> None:
    src = load_domain(str(_labelled_tree(tmp_path / "src", {"cat": 1, "dog": 1, "owl": 1})))
    tgt = load_domain(str(_labelled_tree(tmp_path / "tgt", {"cat": 1, "owl": 1, "yak": 1})))
    with pytest.raises(DataError, match=r"only in source: \['dog'\]; only in target: \['yak'\]"):
        check_class_sets(src, tgt)
    check_class_sets(src, src)


# ---------------------------------------------------------------- labelled target subset


def test_labeled_subset_is_seeded_sorted_and_balanced(digits: Domain) -> None:
    a = labeled_subset(digits, per_class=3, seed=0)
    assert a == labeled_subset(digits, per_class=3, seed=0) and a == sorted(a)
    assert len(set(a)) == 30
    labels = digits.labels()
    assert Counter(labels[i] for i in a) == {k: 3 for k in range(10)}
    assert labeled_subset(digits, per_class=3, seed=1) != a


def test_labeled_subset_errors(tmp_path: Path) -> None:
    src = load_domain(str(_labelled_tree(tmp_path / "src", {"cat": 3, "dog": 2})))
    assert len(labeled_subset(src, per_class=2, seed=0)) == 4
    with pytest.raises(DataError, match=r"class 'dog' of domain .*src has 2 images, fewer than the 3"):
        labeled_subset(src, per_class=3, seed=0)
    with pytest.raises(ConfigError, match="at least 1"):
        labeled_subset(src, per_class=0, seed=0)
    _save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match=r"domain .*flat has no labels"):
        labeled_subset(load_domain(str(tmp_path / "flat")), per_class=1, seed=0)


# ---------------------------------------------------------------- Preprocessing


def test_preprocessing_json_round_trip() -> None:
    for prep in (PLAIN_GREY, Preprocessing((224, 160), 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        d = json.loads(json.dumps(prep.to_dict()))
        assert Preprocessing.from_dict(d) == prep
    with pytest.raises(ConfigError, match=r"lacks \['std'\]"):
        Preprocessing.from_dict({"size": [8, 8], "channels": 1, "mean": [0.5]})


def test_preprocessing_rejects_inconsistent_fields() -> None:
    with pytest.raises(ConfigError, match="use 1 .* or 3"):
        Preprocessing((8, 8), 2, (0.5, 0.5), (0.5, 0.5))
    with pytest.raises(ConfigError, match="one value per channel"):
        Preprocessing((8, 8), 3, (0.5,), (0.5,))
    with pytest.raises(ConfigError, match="positive"):
        Preprocessing((0, 8), 1, (0.5,), (0.5,))


def test_transform_accepts_pil_images() -> None:
    img = Image.fromarray(np.full((5, 7, 3), 255, np.uint8), mode="RGB")
    x = PLAIN_GREY.transform()(img)
    assert type(x) is torch.Tensor and x.shape == (1, 8, 8)
    assert torch.allclose(x, torch.ones_like(x), atol=1 / 255)  # torchvision's RGB->grey may give 254
