import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib import config, data
from course_lib.data import DataError


# ---------------------------------------------------------------- helpers that build small sources
def write_torchvision_format(root: Path, n_per_batch=20, seed=0) -> Path:
    """A miniature cifar-10-batches-py/ in torchvision's pickle format."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        entry = {"batch_label": name, "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": [int(i % 10) for i in range(n_per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(data.CIFAR10_CLASSES), "num_vis": 3072}, f)
    return folder


def write_image_folder(root: Path, classes=("cat", "dog"), n_train=3, n_test=2, size=(40, 24)) -> Path:
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = torch.randint(0, 256, (*size, 3), dtype=torch.uint8, generator=gen)
                Image.fromarray(img.numpy()).save(root / split / c / f"{i:04d}.png")
    return root


def make_targz(folder: Path, out: Path, arcname: str) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return out


# -------------------------------------------------------------------------------------- sources
def test_torchvision_folder_offline(isolated_data_dir):
    write_torchvision_format(isolated_data_dir)
    s = data.load_cifar10(progress=False)
    assert len(s.train) == 100 and len(s.test) == 20
    assert s.train.images.shape[1:] == (3, 32, 32) and s.train.images.dtype == torch.uint8
    assert s.train.classes == list(data.CIFAR10_CLASSES)


def test_torchvision_archive_offline(isolated_data_dir, tmp_path):
    folder = write_torchvision_format(tmp_path / "src")
    make_targz(folder, isolated_data_dir / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    s = data.load_cifar10(progress=False)
    assert len(s.train) == 100 and len(s.test) == 20
    # pixels round-trip exactly: row-major 3x32x32 from the flattened batch
    with open(folder / "test_batch", "rb") as f:
        first = pickle.load(f)["data"][0].reshape(3, 32, 32)
    assert torch.equal(s.test.images[0], torch.from_numpy(first))


def test_image_folder_tree_and_archive_any_size(tmp_path):
    tree = write_image_folder(tmp_path / "photos", size=(40, 24))
    s = data.load_image_folder(tree, size=16, progress=False)
    assert s.train.classes == ["cat", "dog"]
    # no val/ folder: one of each class's 3 training images (20%, at least one) is carved off for validation
    assert s.train.images.shape == (4, 3, 16, 16) and s.test.images.shape == (4, 3, 16, 16)
    assert s.train.labels.tolist() == [0, 0, 1, 1] and s.val.labels.tolist() == [0, 1]
    archive = make_targz(tree, tmp_path / "photos.tar.gz", "photos")
    a = data.load_image_folder(archive, size=16, progress=False)
    assert torch.equal(a.train.images, s.train.images) and torch.equal(a.test.labels, s.test.labels)


def test_explicit_source_via_environment(isolated_data_dir, tmp_path, monkeypatch):
    tree = write_image_folder(tmp_path / "cifar", classes=data.CIFAR10_CLASSES, n_train=1, n_test=1, size=(32, 32))
    monkeypatch.setenv(data.CIFAR10_ENV, str(tree))
    s = data.load_cifar10(progress=False)
    assert len(s.train) == 10 and s.train.classes == list(data.CIFAR10_CLASSES)


def test_missing_offline_says_where_to_put_what(isolated_data_dir):
    with pytest.raises(DataError) as e:
        data.load_cifar10(progress=False)
    msg = str(e.value)
    assert "cifar-10-python.tar.gz" in msg and str(isolated_data_dir) in msg and data.CIFAR10_ENV in msg


def test_missing_explicit_source_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load_cifar10(tmp_path / "nope.tar.gz")


def test_corrupt_archive_is_a_clear_error(isolated_data_dir, tmp_path):
    folder = write_torchvision_format(tmp_path / "src")
    good = make_targz(folder, tmp_path / "good.tar.gz", "cifar-10-batches-py").read_bytes()
    (isolated_data_dir / "cifar-10-python.tar.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        data.load_cifar10(progress=False)


def test_not_an_archive_is_a_clear_error(tmp_path):
    bad = tmp_path / "cifar10-jpeg.tar.gz"
    bad.write_bytes(b"this is not a tarball at all")
    with pytest.raises(DataError, match="neither a folder nor a readable"):
        data.load_cifar10(bad)


def test_unreadable_image_names_the_file(tmp_path):
    tree = write_image_folder(tmp_path / "photos")
    (tree / "train" / "cat" / "0001.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="train/cat/0001.png"):
        data.load_image_folder(tree, progress=False)


def test_wrong_layout_is_explained(tmp_path):
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="train/<class>"):
        data.load_image_folder(tmp_path / "flat", progress=False)


# ----------------------------------------------------------------------------------------- cache
def test_cache_hit_and_invalidation(isolated_data_dir, tmp_path, monkeypatch):
    tree = write_image_folder(tmp_path / "photos")
    first = data.load_image_folder(tree, size=8, progress=False)
    caches = list((isolated_data_dir / "cache").glob("photos-8px-*.pt"))
    assert len(caches) == 1
    with monkeypatch.context() as m:  # a hit reads the cache and decodes nothing
        m.setattr(data, "_decode_source", lambda *a: pytest.fail("decoded again instead of reading the cache"))
        assert torch.equal(data.load_image_folder(tree, size=8, progress=False).train.images, first.train.images)
    # changing the source invalidates it
    new = tree / "train" / "cat" / "0009.png"
    new.write_bytes((tree / "train" / "cat" / "0000.png").read_bytes())
    again = data.load_image_folder(tree, size=8, progress=False)
    assert len(again.train) == len(first.train) + 1
    assert len(list((isolated_data_dir / "cache").glob("photos-8px-*.pt"))) == 1  # stale one removed


def test_damaged_cache_is_rebuilt_and_says_so(isolated_data_dir, tmp_path, capsys):
    tree = write_image_folder(tmp_path / "photos")
    first = data.load_image_folder(tree, size=8, progress=False)
    cache = next((isolated_data_dir / "cache").glob("*.pt"))
    cache.write_bytes(b"broken")
    capsys.readouterr()
    assert torch.equal(data.load_image_folder(tree, size=8, progress=False).train.images, first.train.images)
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 1 and said[0].startswith(f"The decoded cache {cache} is damaged (")
    assert said[0].endswith(f"); deleting it and decoding {tree} again to rebuild it.")
    assert cache.exists()


def test_cache_write_is_atomic(isolated_data_dir, tmp_path, monkeypatch):
    tree = write_image_folder(tmp_path / "photos")

    def crash(obj, path):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        data.load_image_folder(tree, size=8, progress=False)
    assert list((isolated_data_dir / "cache").iterdir()) == []  # no partial file left behind


# ------------------------------------------------------------------------------- splits, subsets
def test_train_val_split_is_disjoint_stratified_and_seeded():
    d = data.synthetic_images(n_per_class=50, num_classes=4)
    d = data.ImageData(d.images, d.labels, d.classes)
    d.images[:, 0, 0, 0] = torch.arange(len(d)).to(torch.uint8)  # a tag per image
    tr, va = data.train_val_split(d, n_val=40, seed=1)
    assert len(tr) == 160 and len(va) == 40
    assert va.class_counts().tolist() == [10, 10, 10, 10]
    tags = lambda x: set(map(tuple, x.images[:, 0, :2, :2].flatten(1).tolist()))
    assert not tags(tr) & tags(va)
    tr2, va2 = data.train_val_split(d, n_val=40, seed=1)
    assert torch.equal(va.images, va2.images)
    _, va3 = data.train_val_split(d, n_val=40, seed=2)
    assert not torch.equal(va.images, va3.images)


def test_split_keeps_proportions_of_unbalanced_classes():
    d = data.synthetic_images(n_per_class=30, num_classes=2)
    d = d.subset(list(range(30)) + list(range(30, 40)))  # 30 of class 0, 10 of class 1
    _, va = data.train_val_split(d, n_val=8)
    assert va.class_counts().tolist() == [6, 2]


def test_per_class_and_select_classes():
    d = data.synthetic_images(n_per_class=10, num_classes=4)
    few = data.per_class(d, 3, seed=0)
    assert few.class_counts().tolist() == [3, 3, 3, 3]
    assert torch.equal(few.images, data.per_class(d, 3, seed=0).images)
    with pytest.raises(ValueError, match="fewer than"):
        data.per_class(d, 11)
    sub = data.select_classes(d, ["class3", "class1"])
    assert sub.classes == ["class3", "class1"] and len(sub) == 20
    assert torch.equal(sub.images[sub.labels == 0], d.images[d.labels == 3])
    with pytest.raises(ValueError, match="unknown classes"):
        data.select_classes(d, ["zebra"])


# ---------------------------------------------------------------------------------------- batches
def test_batches_shapes_ranges_and_order():
    d = data.synthetic_images(n_per_class=10, num_classes=3)
    plain = data.Batches(d, 8, normalize=None)
    xs = list(plain)
    assert len(xs) == len(plain) == 4 and xs[-1][0].shape == (6, 3, 32, 32)
    x = torch.cat([b[0] for b in xs])
    assert torch.allclose(x * 255, d.images.float(), atol=1e-3)
    assert len(data.Batches(d, 8, drop_last=True)) == 3


def test_normalization_and_resize():
    d = data.synthetic_images(n_per_class=10, num_classes=3)
    x, _ = next(iter(data.Batches(d, 30, normalize="imagenet", size=64)))
    assert x.shape == (30, 3, 64, 64)
    raw = d.images.float() / 255
    mean = torch.tensor(data.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(data.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(x.mean(dim=(2, 3)), ((raw - mean) / std).mean(dim=(2, 3)), atol=2e-2)
    with pytest.raises(ValueError, match="unknown normalization"):
        data.Batches(d, 4, normalize="imagnet")


def test_augmentation_is_a_seeded_crop_and_flip():
    d = data.synthetic_images(n_per_class=8, num_classes=2)
    run = lambda seed: [x for x, _ in data.Batches(d, 16, shuffle=True, augment=True, normalize=None, seed=seed)]
    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    x = torch.cat(a)
    assert x.shape == (16, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
    # each augmented image is a translated (and maybe flipped) window of its reflect-padded source
    loader = data.Batches(d, 16, augment=True, normalize=None, seed=3)
    (aug, y), = list(loader)
    src = torch.nn.functional.pad(d.images.float() / 255, (4, 4, 4, 4), mode="reflect")
    for i in range(16):
        found = any(torch.allclose(cand, aug[i], atol=1e-6)
                    for dy in range(9) for dx in range(9)
                    for cand in (src[i, :, dy:dy + 32, dx:dx + 32], src[i, :, dy:dy + 32, dx:dx + 32].flip(2)))
        assert found, f"image {i} is not a crop/flip of its source"


def test_epochs_differ_but_reruns_match():
    d = data.synthetic_images(n_per_class=8, num_classes=2)
    loader = data.Batches(d, 16, shuffle=True, normalize=None, seed=0)
    e1, e2 = [y for _, y in loader][0], [y for _, y in loader][0]
    loader2 = data.Batches(d, 16, shuffle=True, normalize=None, seed=0)
    assert torch.equal(e1, [y for _, y in loader2][0])
    assert sorted(e1.tolist()) == sorted(e2.tolist())


def test_torch_dataset_and_dataloader_view():
    from torchvision import transforms
    d = data.synthetic_images(n_per_class=4, num_classes=2)
    x, y = data.TorchDataset(d)[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 1
    pil_view = data.TorchDataset(d, transform=transforms.ToTensor(), pil=True)
    assert torch.allclose(pil_view[5][0], x)
    xb, yb = next(iter(data.data_loader(d, batch_size=8, shuffle=True, seed=0)))
    assert xb.shape == (8, 3, 32, 32) and yb.dtype == torch.int64


def test_synthetic_is_deterministic_and_has_cifar_shapes():
    a, b = data.synthetic_splits(), data.synthetic_splits()
    assert torch.equal(a.train.images, b.train.images)
    assert a.train.images.shape == (128, 3, 32, 32) and not torch.equal(a.train.images[:16], a.test.images[:16])


# ----------------------------------------------------------------------------- real CIFAR-10 copy
@pytest.mark.cifar
def test_real_cifar10_counts(cifar10):
    assert len(cifar10.train) == 50_000 and len(cifar10.test) == 10_000
    assert cifar10.train.classes == list(data.CIFAR10_CLASSES)
    assert cifar10.train.class_counts().tolist() == [5000] * 10
    assert cifar10.test.class_counts().tolist() == [1000] * 10
    tr, va = data.train_val_split(cifar10.train)
    assert (len(tr), len(va)) == (45_000, 5_000) and va.class_counts().tolist() == [500] * 10


@pytest.mark.cifar
def test_real_cifar10_second_load_comes_from_the_cache(cifar10, monkeypatch):
    from conftest import REAL_CIFAR10

    def no_decoding(*args):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data, "_decode_source", no_decoding)
    again = data.load_cifar10(REAL_CIFAR10, progress=False)
    assert torch.equal(again.test.images[:100], cifar10.test.images[:100])


def test_steps_make_an_epoch_of_full_batches_of_any_set():
    d = data.synthetic_images(n_per_class=1, num_classes=10)  # 10 images, the label names the image
    loader = data.Batches(d, 4, shuffle=True, steps=6, normalize=None)
    ys = [y for _, y in loader]
    assert len(loader) == len(ys) == 6 and all(len(y) == 4 for y in ys)
    shown = torch.bincount(torch.cat(ys), minlength=10)
    assert set(shown.tolist()) <= {2, 3} and shown.sum() == 24  # 24 draws from 3 shuffles: two full passes
    assert not torch.equal(torch.cat(ys[:2]), torch.cat(ys[2:4]))  # consecutive shuffles differ
    assert [len(y) for _, y in data.Batches(d, 4, steps=1, normalize=None)] == [4]


def test_a_shared_data_folder_lends_its_decode_without_being_written(isolated_data_dir, tmp_path, monkeypatch):
    """A grader decodes once into a read-only folder; a sandbox that sees the same copy under another path
    reads that decode (the sandbox's copy here holds other pixels, so reading them would show)."""
    shared = tmp_path / "shared"
    monkeypatch.setenv(config.DATA_DIR_ENV, str(shared))
    original = data.load_image_folder(write_image_folder(tmp_path / "grader" / "photos"), size=8, progress=False)
    elsewhere = write_image_folder(tmp_path / "sandbox" / "photos", n_train=4)
    monkeypatch.setenv(config.DATA_DIR_ENV, str(isolated_data_dir))
    monkeypatch.setenv(config.SHARED_DATA_ENV, str(shared))
    shared_files = sorted((p, p.stat().st_mtime_ns) for p in shared.rglob("*"))
    lent = data.load_image_folder(elsewhere, size=8, progress=False)
    assert torch.equal(lent.train.images, original.train.images) and len(lent.train) + len(lent.val) == 2 * 3
    assert sorted((p, p.stat().st_mtime_ns) for p in shared.rglob("*")) == shared_files
    assert not (isolated_data_dir / "cache").exists() or not any((isolated_data_dir / "cache").iterdir())
    # another size is not in the shared folder: decoded from the given copy, into the own data folder
    other_size = data.load_image_folder(elsewhere, size=4, progress=False)
    assert len(other_size.train) + len(other_size.val) == 2 * 4
    assert len(list((isolated_data_dir / "cache").glob("photos-4px-*.pt"))) == 1
