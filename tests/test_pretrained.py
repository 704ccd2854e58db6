"""The course's offline stand-in for ImageNet weights, and transfer from it, on the real CIFAR-10 copy."""
import pytest
import torch

from course_lib import config, data, models, pretrained, train


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setenv(config.FAST_ENV, "1")


def test_course_weights_fall_back_to_the_source_model_loudly(fast, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(pretrained, "pretrain_source_model", lambda: tmp_path / "source.pt")
    weights, why = pretrained.course_weights()
    assert weights == tmp_path / "source.pt"
    assert "not cached" in why and "course's own source model" in why


@pytest.mark.cifar
def test_source_pretraining_then_transfer_beats_chance(fast, cifar10):
    path = pretrained.pretrain_source_model(cifar10, progress=False)
    assert path.name == "resnet18-cifar5-source-v2-fast.pt"
    assert pretrained.pretrain_source_model(cifar10, progress=False) == path  # cached: no second training
    meta = models.read_state_dict(path)[1]
    assert meta["classes"] == list(pretrained.SOURCE_CLASSES) and meta["fast_mode"] is True

    model = models.build_resnet18(10, weights=path)
    assert model.weights_info["source"].startswith("checkpoint")
    tr, va = data.train_val_split(cifar10.train)
    small = data.per_class(tr, 200)
    config.seed_everything(0)
    hist = train.fit(model, data.Batches(small, 128, shuffle=True, augment=True, drop_last=True),
                     data.Batches(data.per_class(va, 50), 500), epochs=3, lr=0.05, device="cpu", progress=False)
    ev = train.evaluate(model, data.Batches(data.per_class(cifar10.test, 100), 500), device="cpu")
    assert hist.diverged is None
    assert ev.accuracy > 0.25, f"test accuracy {ev.accuracy:.3f} is not far above chance (0.10)"
    assert ev.confusion.sum() == 1000


def _cifar_named(n_per_class: int) -> data.ImageData:
    images = data.synthetic_images(n_per_class, num_classes=10, size=8)
    return data.ImageData(images.images, images.labels, list(data.CIFAR10_CLASSES))


@pytest.mark.parametrize("mode", ["normal", "fast"])
def test_source_model_never_sees_an_image_a_lesson_validates_on(mode, monkeypatch):
    if mode == "fast":
        monkeypatch.setenv(config.FAST_ENV, "1")
    train_part = _cifar_named(5200)  # 52,000 > CIFAR's 50,000, so the split's sizes are exercised too
    splits = data.Splits(train_part, _cifar_named(10))
    src_train, src_val = pretrained.source_task(splits)
    course_train, course_val = data.course_split(train_part)
    used = set(src_train.index.tolist()) | set(src_val.index.tolist())
    assert len(course_val) == 5000 and len(course_train) == 52000 - 5000
    assert used.isdisjoint(course_val.index.tolist())
    assert used <= set(course_train.index.tolist())
    assert set(src_train.index.tolist()).isdisjoint(src_val.index.tolist())
    # the source classes only, and their labels are the five source classes
    names = [data.CIFAR10_CLASSES[int(train_part.labels[i])] for i in used]
    assert set(names) == set(pretrained.SOURCE_CLASSES)


def test_the_source_model_is_read_from_the_shared_data_folder_when_not_in_ones_own(fast, monkeypatch, tmp_path):
    """A grader prepares the fast-mode source model once; sandboxes read it there and train none."""
    own, shared = tmp_path / "own", tmp_path / "shared"
    monkeypatch.setenv(config.DATA_DIR_ENV, str(own))
    name = "checkpoints/resnet18-cifar5-source-v2-fast.pt"
    assert pretrained.source_checkpoint_path() == own / name
    monkeypatch.setenv(config.SHARED_DATA_ENV, str(shared))
    assert pretrained.source_checkpoint_path() == own / name  # the shared folder does not hold one
    (shared / "checkpoints").mkdir(parents=True)
    train.save_checkpoint(shared / name, models.build_resnet18(5), meta={"fast_mode": True})
    monkeypatch.setattr(data, "load_cifar10", lambda *a, **k: pytest.fail("trained instead of reading the shared model"))
    assert pretrained.pretrain_source_model(progress=False) == shared / name
    (own / "checkpoints").mkdir(parents=True)
    (own / name).write_bytes((shared / name).read_bytes())
    assert pretrained.source_checkpoint_path() == own / name  # one's own comes first
