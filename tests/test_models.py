import pytest
import torch
import torch.nn as nn
import torchvision

from course_lib import models, train
from course_lib.models import WeightsError


def step(model, x, y, lr=0.1):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 32, 32, generator=g) * 2 + 1, torch.randint(0, 5, (8,), generator=g)


def bn_stats(module):
    return [m.running_mean.clone() for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_frozen_parameters_do_not_move_and_the_rest_do(batch):
    torch.manual_seed(0)
    model = models.freeze(models.build_resnet18(5), "layer3")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step(model, *batch)
    after = model.state_dict()
    for name in before:
        if name.endswith(("weight", "bias")):
            moved = not torch.equal(before[name], after[name])
            assert moved == (models.stage_of(name) in ("layer4", "head")), name


def test_frozen_batchnorm_stays_in_eval_even_after_train(batch):
    model = models.freeze(models.build_resnet18(5), "layer2")
    model.train()
    assert not model.layer1[0].bn1.training and model.layer3[0].bn1.training
    before = bn_stats(model.layer2)
    step(model, *batch)
    assert all(torch.equal(a, b) for a, b in zip(before, bn_stats(model.layer2)))
    assert not all(torch.equal(a, b) for a, b in zip(bn_stats(model.layer3), bn_stats(models.build_resnet18(5).layer3)))


def test_naive_freeze_lets_batchnorm_statistics_drift(batch):
    model = models.freeze(models.build_resnet18(5), "layer2", bn="naive")
    model.train()
    before = bn_stats(model.layer2)
    params = [p.clone() for p in model.layer2.parameters()]
    step(model, *batch)
    assert not all(torch.equal(a, b) for a, b in zip(before, bn_stats(model.layer2)))
    assert all(torch.equal(a, b) for a, b in zip(params, model.layer2.parameters()))


def test_unfreeze_restores_training_mode_and_gradients():
    model = models.freeze(models.build_resnet18(5), "layer4")
    assert models.frozen_depth(model) == 5 and models.trainable_parameters(model) == 512 * 5 + 5
    models.unfreeze(model)
    model.train()
    assert models.frozen_depth(model) == 0 and model.bn1.training
    assert all(p.requires_grad for p in model.parameters())


def test_gradual_unfreezing_by_depth():
    model = models.build_resnet18(5)
    for depth in (5, 4, 3, 0):
        models.freeze(model, depth)
        assert models.frozen_depth(model) == depth
    with pytest.raises(ValueError, match="unknown stage"):
        models.freeze(model, "layer5")


def test_frozen_prefix_does_no_backward_work(batch):
    model = models.freeze(models.build_resnet18(5), "layer3")
    x, y = batch
    feats = models.body_upto(model, "layer3")(x)
    assert not feats.requires_grad  # no graph is recorded through the frozen stages
    nn.functional.cross_entropy(model(x), y).backward()
    assert all(p.grad is None for p in model.layer3.parameters())
    assert all(p.grad is not None for p in model.layer4.parameters())


def test_body_and_rest_compose_to_the_model(batch):
    model = models.build_resnet18(5).eval()
    x, _ = batch
    for cut in ("stem", "layer2", "layer4"):
        assert torch.allclose(models.rest_after(model, cut)(models.body_upto(model, cut)(x)), model(x), atol=1e-5)


def test_param_groups_cover_each_trainable_parameter_once():
    model = models.freeze(models.build_resnet18(5), "layer1")
    groups = models.param_groups(model, 1e-2, body_factor=0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(ids) == len(set(ids)) and set(ids) == set(trainable)
    lr = {g["name"]: g["lr"] for g in groups}
    assert lr["head"] == pytest.approx(1e-2) and lr["layer4"] == pytest.approx(1e-3) and lr["layer2"] == pytest.approx(1e-5)
    for g in groups:
        assert (g["weight_decay"] == 0) == g["name"].endswith("(no decay)")
    bn_weight = model.layer2[0].bn1.weight
    assert any(bn_weight is p for g in groups if g["weight_decay"] == 0 for p in g["params"])


def test_parameter_counts_per_stage():
    counts = models.parameter_counts(models.freeze(models.build_resnet18(10), "stem"))
    assert counts["stem"] == (0, 64 * 3 * 7 * 7 + 128)
    assert counts["head"] == (5130, 5130)
    assert sum(total for _, total in counts.values()) == 11_181_642


def test_weights_from_full_and_backbone_only_checkpoints(tmp_path):
    source = models.build_resnet18(5)
    torch.save(source.state_dict(), tmp_path / "full.pt")
    torch.save({k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}, tmp_path / "backbone.pt")
    torch.save({"model": {"module." + k: v for k, v in source.state_dict().items()}, "meta": {"normalization": "imagenet"}},
               tmp_path / "wrapped.pt")
    for name in ("full.pt", "backbone.pt", "wrapped.pt"):
        model = models.build_resnet18(10, weights=tmp_path / name)
        assert torch.equal(model.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
        assert model.fc.out_features == 10  # the 5-class head was replaced
    assert models.build_resnet18(10, weights=tmp_path / "wrapped.pt").weights_info["normalization"] == "imagenet"


def test_garbage_and_wrong_architecture_give_clear_errors(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        models.build_resnet18(weights=tmp_path / "garbage.pt")
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pt")
    with pytest.raises(WeightsError, match="does not fit a ResNet18"):
        models.build_resnet18(weights=tmp_path / "r34.pt")
    torch.save(models.build_resnet18(cifar_stem=True).state_dict(), tmp_path / "cifar_stem.pt")
    with pytest.raises(WeightsError, match="cifar_stem"):
        models.build_resnet18(weights=tmp_path / "cifar_stem.pt")
    assert models.build_resnet18(weights=tmp_path / "cifar_stem.pt", cifar_stem=True).conv1.stride == (1, 1)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="no state dict"):
        models.build_resnet18(weights=tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="No weights file"):
        models.build_resnet18(weights=tmp_path / "missing.pt")


def test_offline_imagenet_request_names_the_file_to_place(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError) as e:
        models.build_resnet18(weights="imagenet")
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in str(e.value) and "download.pytorch.org" in str(e.value)
    assert not models.imagenet_weights_available()


def test_cached_imagenet_file_is_used_through_the_weights_api(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = models.imagenet_cache_path()
    path.parent.mkdir(parents=True)
    fake = torchvision.models.resnet18().state_dict()
    torch.save(fake, path)
    model = models.build_resnet18(weights="imagenet")  # offline: read from TORCH_HOME, no download
    assert torch.equal(model.layer2[0].conv1.weight, fake["layer2.0.conv1.weight"])
    info = models.weights_summary(model)
    assert info["normalization"] == "imagenet" and info["imagenet_acc@1"] == pytest.approx(69.758)


def test_weights_summary_and_cifar_stem():
    model = models.build_resnet18(10)
    info = models.weights_summary(model)
    assert info["source"] == "random init" and info["parameters"] == 11_181_642
    stem = models.build_resnet18(10, cifar_stem=True)
    assert stem.conv1.kernel_size == (3, 3) and isinstance(stem.maxpool, nn.Identity)


def test_a_course_checkpoint_with_changed_numbers_is_refused_by_name(tmp_path):
    path = tmp_path / "mine.pt"
    train.save_checkpoint(path, models.build_resnet18(3))
    assert models.read_state_dict(path)[0]["fc.bias"].shape == (3,)
    blob = torch.load(path, weights_only=True)
    blob["model"]["fc.bias"][0] += 1.0  # loads fine, but is not what was written
    torch.save(blob, path)
    with pytest.raises(WeightsError, match=f"{path} is damaged: its content does not match its checksum"):
        models.build_resnet18(3, weights=path)
