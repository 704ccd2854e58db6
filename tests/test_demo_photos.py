import pytest
from PIL import Image

from course_lib import config, data, demo_photos, pretrained


def cifar_named(n_per_class: int) -> data.ImageData:
    images = data.synthetic_images(n_per_class, num_classes=10, size=8)
    return data.ImageData(images.images, images.labels, list(data.CIFAR10_CLASSES))


@pytest.fixture
def splits(monkeypatch):
    monkeypatch.setattr(data, "COURSE_VAL_SIZE", 200)  # 20 held-out images per class
    return data.Splits(cifar_named(100), cifar_named(5))


def test_demo_images_come_only_from_held_out_images_of_non_source_classes(splits):
    chosen = demo_photos.demo_images(splits, per_class=15)
    _, held_out = data.train_val_split(splits.train, n_val=200, seed=0)  # the course split, rebuilt
    assert set(chosen.index.tolist()) <= set(held_out.index.tolist())
    assert chosen.classes == ["dog", "frog", "horse", "ship"] and chosen.class_counts().tolist() == [15] * 4
    assert not set(chosen.classes) & set(pretrained.SOURCE_CLASSES)


def test_demo_folder_is_written_once_in_mixed_sizes_and_loads(splits, isolated_data_dir, monkeypatch):
    monkeypatch.delenv(config.FAST_ENV, raising=False)  # normal mode's folder (the test command sets fast mode)
    path = demo_photos.write_demo_folder(splits, per_class=6)
    assert path == isolated_data_dir / "demo-photos" and path.stat().st_mode & 0o777 == 0o755
    files = sorted(path.glob("*/*.jpg"))
    assert len(files) == 24 and sorted({f.parent.name for f in files}) == ["dog", "frog", "horse", "ship"]
    assert len({Image.open(f).size for f in files}) > 12  # photos of many sizes
    loaded = data.load_image_folder(path, size=16, progress=False)
    assert [len(loaded.train), len(loaded.val), len(loaded.test)] == [16, 4, 4]
    (path / "dog" / "mine.jpg").write_bytes(files[0].read_bytes())  # a learner's own addition
    assert demo_photos.write_demo_folder(splits, per_class=6) == path
    assert (path / "dog" / "mine.jpg").exists() and len(list(path.glob("*/*.jpg"))) == 25
    assert [p.name for p in isolated_data_dir.iterdir() if p.name.startswith(".demo")] == []


def test_fast_mode_writes_its_own_folder(splits, monkeypatch, isolated_data_dir):
    monkeypatch.setenv("COURSE_FAST", "1")
    assert demo_photos.write_demo_folder(splits, per_class=3) == isolated_data_dir / "demo-photos-fast"
