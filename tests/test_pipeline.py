import pytest
import torch

from course_lib import checks, config, data, models, pipeline, train


def test_flops_grow_with_pixels():
    model = models.build_resnet18(10)
    f32, f64 = pipeline.flops_per_image(model, 32), pipeline.flops_per_image(model, 64)
    assert 3.5 < f64 / f32 < 4.5
    assert 3.4e9 < pipeline.flops_per_image(model, 224) < 3.8e9  # ResNet18: 1.8 GMACs at 224 px


def test_resolution_costs_and_budget_choice():
    rows = pipeline.resolution_costs((32, 48), n_images=1000, device="cpu", batch_size=8)
    assert [r["size"] for r in rows] == [32, 48]
    assert all(r["images_per_s"] > 0 and r["epoch_seconds"] == pytest.approx(1000 / r["images_per_s"]) for r in rows)
    costs = [{"size": 32, "epoch_seconds": 10.0}, {"size": 64, "epoch_seconds": 40.0}]
    assert pipeline.largest_size_within(costs, 400, 10) == 64
    assert pipeline.largest_size_within(costs, 399, 10) == 32
    assert pipeline.largest_size_within(costs, 50, 10) is None
    assert pipeline.default_resolution(torch.device("cpu")) == 32
    assert pipeline.default_resolution(torch.device("cuda")) == 128


def test_onecycle_peak_is_a_few_times_the_steepest_point_within_bounds():
    assert pipeline.onecycle_peak(0.01) == pytest.approx(0.04)
    assert pipeline.onecycle_peak(1e-4) == 0.02 and pipeline.onecycle_peak(1.0) == 0.1


def test_warm_up_head_trains_only_the_head_then_unfreezes():
    splits = data.synthetic_splits(n_train=24, n_test=8, num_classes=3)
    model = models.build_resnet18(3)
    body = model.layer3[0].conv1.weight.clone()
    head = model.fc.weight.clone()
    hist = pipeline.warm_up_head(model, splits.train, splits.test, epochs=3, device="cpu", progress=False)
    assert len(hist) == 3
    assert torch.equal(body, model.layer3[0].conv1.weight) and not torch.equal(head, model.fc.weight)
    assert models.frozen_depth(model) == 0


def test_most_confident_mistakes_are_wrong_and_sorted():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    ev = train.Evaluation(loss=0, accuracy=0, probabilities=probs, predictions=probs.argmax(1),
                          labels=torch.tensor([1, 1, 1, 0]))
    assert pipeline.most_confident_mistakes(ev, k=5).tolist() == [0, 3, 2]


def test_leaky_recipe_reports_on_its_own_training_data(tmp_path):
    splits = data.synthetic_splits(n_train=20, n_test=20, num_classes=2)
    torch.manual_seed(0)
    ckpt = tmp_path / "w.pt"
    train.save_checkpoint(ckpt, models.build_resnet18(2))
    out = pipeline.leaky_recipe(ckpt, splits.train, splits.test, n_train=8, n_test=20, epochs=2, device="cpu",
                                progress=False)
    assert out["n_train"] == 8 and out["n_test"] == 20
    assert 0 <= out["reported_acc"] <= 1 and 0 <= out["test_acc"] <= 1


@pytest.mark.cifar
def test_fast_end_to_end_on_cifar10(cifar10, monkeypatch):
    """Train briefly from the course's source model, evaluate once, and the leak demo inflates its number."""
    from course_lib import pretrained

    monkeypatch.setenv(config.FAST_ENV, "1")
    weights = pretrained.pretrain_source_model(cifar10, progress=False)
    tr, va = data.train_val_split(cifar10.train)
    tr, va, te = data.per_class(tr, 200), data.per_class(va, 30), data.per_class(cifar10.test, 50)
    model = models.build_resnet18(10, weights=weights)
    config.seed_everything(0)
    warm, history = pipeline.fine_tune(model, tr, va, epochs=3, peak_lr=0.05, warmup_epochs=2, device="cpu",
                                       progress=False)
    assert len(warm) == 2 and len(history) == 3
    ev = train.evaluate(model, data.Batches(te, 500), device="cpu")
    assert ev.confusion.sum() == len(te) == 500
    assert ev.accuracy > 0.2
    leak = pipeline.leaky_recipe(weights, cifar10.train, cifar10.test, n_train=200, n_test=500, epochs=3,
                                 device="cpu", progress=False)
    assert leak["reported_acc"] > leak["test_acc"]


# ------------------------------------------------------------------ lesson 3 exercise checks
def test_check_pick_resolution():
    checks.check_pick_resolution(pipeline.largest_size_within)
    with pytest.raises(AssertionError, match="return None"):
        checks.check_pick_resolution(lambda c, b, e: pipeline.largest_size_within(c, b, e) or 32)
    with pytest.raises(AssertionError, match="multiply"):
        checks.check_pick_resolution(lambda c, b, e: max(r["size"] for r in c if r["epoch_seconds"] <= b))


def test_check_replace_head():
    def right(model, k):
        model.fc = torch.nn.Linear(model.fc.in_features, k)
        return model

    checks.check_replace_head(right)
    with pytest.raises(AssertionError, match="512"):
        checks.check_replace_head(lambda m, k: setattr(m, "fc", torch.nn.Linear(256, k)) or m)
    with pytest.raises(AssertionError, match="body was replaced"):
        checks.check_replace_head(lambda m, k: right(models.build_resnet18(5), k))
    with pytest.raises(AssertionError, match="should return the model"):
        checks.check_replace_head(lambda m, k: right(m, k) and None)


def test_check_confusion_reading():
    conf = torch.tensor([[50, 2, 9], [1, 40, 0], [3, 4, 30]])
    classes = ["cat", "dog", "frog"]
    checks.check_confusion_reading(("cat", "frog"), conf, classes)
    with pytest.raises(AssertionError, match="other way round"):
        checks.check_confusion_reading(("frog", "cat"), conf, classes)
    with pytest.raises(AssertionError, match="largest number off the diagonal"):
        checks.check_confusion_reading(("dog", "cat"), conf, classes)
    with pytest.raises(AssertionError, match="not class names"):
        checks.check_confusion_reading(("cat", "zebra"), conf, classes)
