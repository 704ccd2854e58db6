"""load_image_folder on a learner's own photos: every common layout, and each bad folder named with its fix
before any image is decoded."""
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from course_lib import data
from course_lib.data import DataError

SUFFIXES = ".bmp .gif .jpeg .jpg .png .tif .tiff .webp"


def photo(path: Path, size=(30, 20), mode="RGB", color=(200, 30, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, fmt)
    return path


def tree(root: Path, counts: dict[str, dict[str, int]]) -> Path:
    """counts: folder ('' for none) -> class -> number of photos, each of another size and colour."""
    for split, per_class in counts.items():
        for cls, n in per_class.items():
            for i in range(n):
                photo(root / split / cls / f"{i:03d}.jpg", size=(20 + 3 * i, 16 + i),
                      color=(12 * i, sum(map(ord, cls)) % 256, 90))
    return root


def no_decoding(monkeypatch):
    def fail(*args):
        raise AssertionError("an image was decoded before the layout was checked")
    monkeypatch.setattr(data, "_decode_bytes", fail)


# ------------------------------------------------------------------------------------------ layouts
def test_tutorial_layout_train_val_without_test(tmp_path):
    root = tree(tmp_path / "hymenoptera_data", {"train": {"ants": 6, "bees": 5}, "val": {"ants": 2, "bees": 3}})
    s = data.load_image_folder(root, size=16, progress=False)
    assert s.train.classes == ["ants", "bees"] and s.val.images.shape == (5, 3, 16, 16)
    assert s.val.class_counts().tolist() == [2, 3]
    # no test/: 20% of each class (at least one) carved from train
    assert s.test.class_counts().tolist() == [1, 1] and s.train.class_counts().tolist() == [5, 4]
    assert s.origin == ("hymenoptera_data: train/ and val/ folders as given; no test/ folder, so a test part was "
                        "carved from train/: 20% of each class (seed 0).")


def test_train_val_test_used_as_given(tmp_path):
    root = tree(tmp_path / "p", {s: {"a": 2, "b": 2} for s in ("train", "val", "test")})
    s = data.load_image_folder(root, size=8, progress=False)
    assert [len(s.train), len(s.val), len(s.test)] == [4, 4, 4]
    assert s.origin == "p: train/ and val/ folders as given, and test/."


def test_class_folders_alone_get_a_stratified_seeded_split(tmp_path):
    root = tree(tmp_path / "mine", {"": {"cat": 10, "dog": 5, "owl": 3}})
    s = data.load_image_folder(root, size=8, progress=False)
    assert s.train.class_counts().tolist() == [6, 3, 1]
    assert s.val.class_counts().tolist() == [2, 1, 1] and s.test.class_counts().tolist() == [2, 1, 1]
    everything = torch.cat([s.train.images, s.val.images, s.test.images]).flatten(1)
    assert len(torch.unique(everything, dim=0)) == 18  # every photo (each its own size) in exactly one part
    again = data.load_image_folder(root, size=8, progress=False)
    assert torch.equal(again.val.images, s.val.images)
    other = data.load_image_folder(root, size=8, seed=1, progress=False)
    assert not torch.equal(other.val.images, s.val.images)
    assert s.origin.startswith("mine: class folders without train/val/test folders, so a stratified split was made: "
                               "20% of each class to validation, 20% to test (at least one image each)")


def test_archives_zip_and_targz_with_a_top_folder(tmp_path):
    root = tree(tmp_path / "photos", {"": {"cat": 4, "dog": 4}})
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as z:
        for p in sorted(root.rglob("*.jpg")):
            z.write(p, "photos/" + p.relative_to(root).as_posix())
        z.writestr("__MACOSX/photos/._cat", b"resource fork")
    with tarfile.open(tmp_path / "photos.tar.gz", "w:gz") as t:
        t.add(root, arcname="photos")
    direct = data.load_image_folder(root, size=8, progress=False)
    for archive in ("photos.zip", "photos.tar.gz"):
        s = data.load_image_folder(tmp_path / archive, size=8, progress=False)
        assert torch.equal(s.train.images, direct.train.images) and torch.equal(s.test.labels, direct.test.labels)


def test_grayscale_cmyk_and_transparent_become_rgb_and_are_named(tmp_path):
    root = tree(tmp_path / "p", {"": {"a": 3, "b": 3}})
    photo(root / "a" / "gray.png", mode="L", color=90)
    photo(root / "b" / "clear.png", mode="RGBA", color=(0, 0, 0, 0))
    photo(root / "b" / "print.jpg", mode="CMYK", color=(0, 0, 0, 0))
    s = data.load_image_folder(root, size=4, test_fraction=0.1, val_fraction=0.1, progress=False)
    everything = torch.cat([s.train.images, s.val.images, s.test.images])
    assert any(bool((img == 90).all()) for img in everything)  # gray copied into all three channels
    assert any(bool((img == 255).all()) for img in everything)  # transparent and CMYK white: placed on white
    assert s.origin.endswith("Converted to RGB: 1 grayscale (copied into all three channels), e.g. a/gray.png; "
                             "1 with transparency (placed on white), e.g. b/clear.png; "
                             "1 CMYK (converted to RGB colours), e.g. b/print.jpg.")


# ------------------------------------------------------------------------------------ bad folders
def test_non_image_files_are_named_before_decoding(tmp_path, monkeypatch):
    root = tree(tmp_path / "p", {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    (root / "train" / "a" / "notes.txt").write_text("x")
    (root / ".DS_Store").write_text("ignored")
    no_decoding(monkeypatch)
    with pytest.raises(DataError) as e:
        data.load_image_folder(root, progress=False)
    assert str(e.value) == (f"{root}: 1 file(s) are not images: train/a/notes.txt. Only {SUFFIXES} files are read: "
                            "move the others out of the folder.")


def test_unreadable_image_is_named_before_any_decoding(tmp_path, monkeypatch):
    root = tree(tmp_path / "p", {"": {"a": 3, "b": 3}})
    (root / "b" / "001.jpg").write_bytes(b"not a jpeg")
    no_decoding(monkeypatch)
    with pytest.raises(DataError) as e:
        data.load_image_folder(root, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{root}: 1 file(s) are not readable images: b/001.jpg (cannot identify image file")
    assert msg.endswith("Remove or replace them (a file that no image viewer opens is damaged, or not an image).")


def test_class_missing_from_one_split(tmp_path, monkeypatch):
    root = tree(tmp_path / "p", {"train": {"ants": 2, "bees": 2}, "val": {"ants": 1}})
    no_decoding(monkeypatch)
    with pytest.raises(DataError) as e:
        data.load_image_folder(root, progress=False)
    assert str(e.value) == (f"{root}: class 'bees' is in train/ but has no folder in val/. Every split needs the same "
                            "class folders: add val/bees/ with some of its images, or remove bees/ from train/.")


def test_empty_class_folder(tmp_path):
    root = tree(tmp_path / "p", {"train": {"ants": 2, "bees": 2}, "val": {"ants": 1, "bees": 1}})
    (root / "val" / "wasps").mkdir()
    (root / "train" / "wasps").mkdir()
    with pytest.raises(DataError) as e:
        data.load_image_folder(root, progress=False)
    assert str(e.value) == f"{root}: train/wasps/ holds no images. Add at least one image of wasps, or remove the folder."


def test_a_single_class(tmp_path):
    root = tree(tmp_path / "p", {"": {"cat": 5}})
    with pytest.raises(DataError) as e:
        data.load_image_folder(root, progress=False)
    assert str(e.value) == (f"{root} has only one class ('cat'): a classifier needs at least two. "
                            "Add a folder of images for each other class beside it.")


def test_train_alone_and_images_outside_class_folders(tmp_path):
    only_train = tree(tmp_path / "t", {"train": {"a": 2, "b": 2}})
    with pytest.raises(DataError) as e:
        data.load_image_folder(only_train, progress=False)
    assert str(e.value) == (f"{only_train} has train/ but neither val/ nor test/. Add val/<class>/ with held-out "
                            "images, or move the class folders out of train/ to have a stratified train/val/test "
                            "split made.")
    loose = tree(tmp_path / "l", {"": {"a": 3, "b": 3}})
    photo(loose / "stray.jpg")
    with pytest.raises(DataError) as e:
        data.load_image_folder(loose, progress=False)
    assert str(e.value) == (f"{loose}: 1 image(s) are not directly in a class folder (<class>/<image>): stray.jpg. "
                            "Move each into the folder named after its class.")


def test_split_folders_mixed_with_class_folders(tmp_path):
    root = tree(tmp_path / "p", {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}, "": {"c": 2}})
    with pytest.raises(DataError) as e:
        data.load_image_folder(root, progress=False)
    assert str(e.value) == (f"{root} mixes split folders (train/, val/) with other folders (c/). Put every class "
                            "folder inside train/ (and val/ or test/), or use class folders alone and let a split "
                            "be made.")


def test_too_few_images_of_a_class_to_split(tmp_path):
    root = tree(tmp_path / "p", {"": {"a": 5, "b": 2}})
    with pytest.raises(DataError) as e:
        data.load_image_folder(root, progress=False)
    assert str(e.value) == ("class 'b' has 2 image(s): a split into train and 2 held-out part(s) needs at least 3. "
                            "Add images of b, or give train/ and val/ folders yourself.")


# -------------------------------------------------------------------------------------- the report
def test_describe_splits_counts_balance_and_noise(tmp_path):
    root = tree(tmp_path / "p", {"train": {"ants": 8, "bees": 4}, "val": {"ants": 5, "bees": 5},
                                 "test": {"ants": 2, "bees": 2}})
    text = data.describe_splits(data.load_image_folder(root, size=8, progress=False))
    lines = text.splitlines()
    assert lines[0] == "p: train/ and val/ folders as given, and test/."
    assert lines[2:6] == ["        train     val    test", "ants        8       5       2",
                          "bees        4       5       2", "total      12      10       4"]
    assert ("balance: the largest class has 2.0x the training images of the smallest (ants 8, bees 4); "
            "always guessing the largest class scores 67%.") in lines
    # 10 validation images: one is 10 points; 1.96 * sqrt(0.25 / 10) = 0.31; a difference: 2 * sqrt(0.25 * 2 / 10) = 0.45
    assert ("val: one image is 10.0 accuracy points; an accuracy measured on 10 images is uncertain by up to ±31 "
            "points (95%), and two models scored on them differ beyond noise only by more than ±45 points (the noise "
            "of a difference).") in lines
    assert lines[-1].startswith("test: one image is 25.0 accuracy points;") and "±49 points" in lines[-1]


def test_stratified_split_keeps_every_class_in_every_part():
    d = data.synthetic_images(n_per_class=7, num_classes=3)
    train, val, test = data.stratified_split(d, (0.2, 0.1), seed=3)
    assert val.class_counts().tolist() == [1, 1, 1] and test.class_counts().tolist() == [1, 1, 1]
    assert train.class_counts().tolist() == [5, 5, 5]
    assert set(train.index.tolist()).isdisjoint(val.index.tolist() + test.index.tolist())
    with pytest.raises(ValueError, match="sum to less than 1"):
        data.stratified_split(d, (0.5, 0.5))


def test_describe_splits_says_when_classes_are_balanced(tmp_path):
    root = tree(tmp_path / "p", {"": {"a": 5, "b": 5}})
    text = data.describe_splits(data.load_image_folder(root, size=8, progress=False))
    assert "balance: every class has the same number of training images; always guessing the largest class " \
           "scores 50%." in text.splitlines()
