import math

import pytest
import torch

from course_lib import config, data, models, pipeline, train


def test_flops_grow_with_pixels_and_count_two_per_multiply_add():
    model = models.build_resnet18(1000)
    f32, f64 = pipeline.flops_per_image(model, 32), pipeline.flops_per_image(model, 64)
    assert 3.5 < f64 / f32 < 4.5
    # torchvision lists 1.814 GFLOPS for ResNet18 at 224 px, which are multiply-adds: twice that here
    assert pipeline.flops_per_image(model, 224) / 1e9 == pytest.approx(2 * 1.814, rel=0.01)


def test_resolution_costs_and_budget_choice():
    rows = pipeline.resolution_costs((32, 48), n_images=1000, device="cpu", batch_size=8, batches=1, timings=1)
    assert [r["size"] for r in rows] == [32, 48]
    assert all(r["images_per_s"] > 0 and r["epoch_seconds"] == pytest.approx(1000 / r["images_per_s"]) for r in rows)
    assert pipeline.format_costs(rows).splitlines()[1].split()[:3] == ["32", f"{rows[0]['gflops']:.3f}", "8"]
    assert "fwd GFLOPs" in pipeline.format_costs(rows).splitlines()[0]
    costs = [{"size": 32, "epoch_seconds": 10.0}, {"size": 64, "epoch_seconds": 40.0}]
    assert pipeline.largest_size_within(costs, 400, 10) == 64
    assert pipeline.largest_size_within(costs, 399, 10) == 32
    assert pipeline.largest_size_within(costs, 50, 10) is None
    assert pipeline.default_resolution(torch.device("cpu")) == 32
    assert pipeline.default_resolution(torch.device("cuda")) == 128


def test_resolution_costs_can_time_real_augmented_batches():
    toy = data.synthetic_splits(n_train=40, n_test=4, num_classes=2)
    (row,) = pipeline.resolution_costs((32,), n_images=500, images=toy.train, device="cpu", batch_size=8,
                                       batches=2, timings=1)
    assert row["batch"] == 8 and row["images_per_s"] > 0 and row["epoch_seconds"] == pytest.approx(500 / row["images_per_s"])


def test_resolution_costs_reports_the_median_timing(monkeypatch):
    timings = iter([100.0, 300.0, 200.0])
    monkeypatch.setattr(pipeline.train, "step_throughput", lambda model, batches, device: next(timings))
    (row,) = pipeline.resolution_costs((32,), n_images=600, device="cpu", batch_size=2, timings=3)
    assert row["images_per_s"] == 200.0 and row["epoch_seconds"] == 3.0


def test_onecycle_peak_is_four_times_the_steepest_point_within_bounds():
    assert pipeline.onecycle_peak(0.01) == pytest.approx(0.04)
    assert pipeline.onecycle_peak(1e-4) == 0.02 and pipeline.onecycle_peak(1.0) == 0.1


def test_describe_peak_says_whether_a_bound_or_the_sweep_set_the_peak():
    floor = pipeline.describe_peak(2.68e-5, pipeline.onecycle_peak(2.68e-5), 7.2e-5)
    assert "raised to the floor 0.02: the floor, not the sweep, set the peak" in floor
    assert f"= {0.02 / 7.2e-5:.3g}, at or above it" in floor.splitlines()[1]
    assert pipeline.describe_peak(0.01, 0.04, 0.1).endswith("= 0.4, below it")
    assert "the ceiling, not the sweep" in pipeline.describe_peak(1.0, 0.1, 0.5)
    assert "the sweep set the peak" in pipeline.describe_peak(0.01, pipeline.onecycle_peak(0.01), 0.05)


def test_no_descending_region_leaves_the_peak_to_the_floor_and_says_so():
    assert pipeline.onecycle_peak(None) == pipeline.PEAK_LOW
    text = pipeline.describe_peak(None, pipeline.PEAK_LOW, 1e-5)
    assert "no descending region" in text and "the floor 0.02 set the peak" in text
    assert "steepest" not in text and "lowest" not in text  # a loss that only rises has no meaningful lowest rate


def test_onecycle_rates_follow_fits_schedule():
    rates = pipeline.onecycle_rates(0.1, 4000)
    assert len(rates) == 4000
    assert rates[0] == pytest.approx(0.1 / 25) and max(rates) == pytest.approx(0.1, rel=1e-4)
    assert rates[-1] == pytest.approx(0.1 / 25 / 1000, rel=0.05)
    # cos warm-up over 25% of the steps from peak/25, cos anneal to ~0: above half the peak for
    # 0.25 * (1 - acos(1 - 2 * 0.46 / 0.96) / pi) + 0.75 * 0.5 = 50.3% of the steps
    above_half = sum(r > 0.05 for r in rates) / len(rates)
    assert above_half == pytest.approx(0.25 * (1 - math.acos(1 - 2 * 0.46 / 0.96) / math.pi) + 0.375, abs=0.002)


def test_warm_up_head_trains_only_the_head_then_unfreezes():
    splits = data.synthetic_splits(n_train=24, n_test=8, num_classes=3)
    model = models.build_resnet18(3)
    body = model.layer3[0].conv1.weight.clone()
    head = model.fc.weight.clone()
    hist = pipeline.warm_up_head(model, splits.train, splits.test, epochs=3, device="cpu", progress=False)
    assert len(hist) == 3
    assert torch.equal(body, model.layer3[0].conv1.weight) and not torch.equal(head, model.fc.weight)
    assert models.frozen_depth(model) == 0


def test_without_decay_on_norms_matches_the_librarys_groups():
    model = models.freeze(models.build_resnet18(4), "stem")
    by_stage = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            by_stage.setdefault(models.stage_of(name), []).append(p)
    rate = {"head": 0.1, "layer4": 0.05, "layer3": 0.025, "layer2": 0.0125, "layer1": 0.00625}
    mine = pipeline.without_decay_on_norms(model, [{"params": ps, "lr": rate[s]} for s, ps in by_stage.items()], 5e-4)
    library = models.param_groups(model, 0.1, body_factor=0.5, weight_decay=5e-4)

    def settings(groups):
        return {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}

    assert settings(mine) == settings(library)
    assert settings(mine)[id(model.layer1[0].bn1.weight)] == (0.00625, 0.0)
    assert settings(mine)[id(model.fc.weight)] == (0.1, 5e-4)


def test_fine_tune_trains_with_given_groups():
    splits = data.synthetic_splits(n_train=16, n_test=8, num_classes=2)
    model = models.build_resnet18(2)
    stem = model.conv1.weight.clone()
    groups = [{"params": list(model.fc.parameters()), "lr": 0.05},
              {"params": [p for n, p in model.named_parameters() if not n.startswith("fc.")], "lr": 0.0}]
    warm, history = pipeline.fine_tune(model, splits.train, splits.test, epochs=1, peak_lr=0.05, warmup_epochs=0,
                                       groups=groups, batch_size=8, device="cpu", progress=False)
    assert warm is None and len(history) == 1
    assert torch.equal(stem, model.conv1.weight)  # a rate of 0 for the body: only the head moved


def test_describe_rates_reads_each_stage_from_the_groups():
    model = models.freeze(models.build_resnet18(3), "stem")
    groups = [{"params": list(model.fc.parameters()), "lr": 0.1},
              {"params": [p for n, p in model.named_parameters() if n.startswith("layer")], "lr": 0.02}]
    lines = pipeline.describe_rates(model, groups).splitlines()
    assert lines[0].split() == ["head:", "0.1", "(1,539", "parameters)"]
    assert lines[1].split()[:2] == ["layer4:", "0.02"]
    assert lines[-1].split() == ["stem:", "frozen", "(no", "group)"]


def test_source_classifier_keeps_the_pretrained_head(tmp_path):
    trained = models.build_resnet18(5)
    torch.nn.init.constant_(trained.fc.bias, 0.25)
    path = train.save_checkpoint(tmp_path / "source.pt", trained)
    model = pipeline.source_classifier(path)
    assert torch.equal(model.fc.bias, torch.full((5,), 0.25))
    assert torch.equal(model.layer1[0].conv1.weight, trained.layer1[0].conv1.weight)


def test_accuracy_with_feeds_prepared_pixels():
    images = data.ImageData(torch.tensor([0, 255]).view(2, 1, 1, 1).expand(2, 3, 4, 4).to(torch.uint8).contiguous(),
                            torch.tensor([0, 1]), ["dark", "bright"])

    class Brightness(torch.nn.Module):
        """Class 1 when the mean input is above 0.5."""

        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            bright = x.mean(dim=(1, 2, 3)) > 0.5
            return torch.stack([(~bright).float(), bright.float()], 1)

    assert pipeline.accuracy_with(Brightness(), images, lambda x: x, device="cpu") == 1.0
    assert pipeline.accuracy_with(Brightness(), images, lambda x: 1 - x, device="cpu") == 0.0


def test_most_confident_mistakes_are_wrong_and_sorted():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    ev = train.Evaluation(loss=0, accuracy=0, probabilities=probs, predictions=probs.argmax(1),
                          labels=torch.tensor([1, 1, 1, 0]))
    assert pipeline.most_confident_mistakes(ev, k=5).tolist() == [0, 3, 2]


def test_reports_list_classes_and_confusions():
    confusion = torch.tensor([[8, 2], [5, 5]])
    ev = train.Evaluation(loss=0, accuracy=0.65, confusion=confusion,
                          per_class_accuracy=torch.tensor([0.8, 0.5]))
    assert pipeline.per_class_report(ev, ["cat", "dog"]).split() == ["cat", "80.0%", "dog", "50.0%"]
    assert pipeline.confusions_report(ev, ["cat", "dog"], k=2).split("\n") == ["  dog -> cat: 5", "  cat -> dog: 2"]


def test_seed_loop_structure_counts_ten_times_the_training():
    assert pipeline.seed_loop_structure(10, 10) == {"train_passes": 100, "validation_passes": 10, "log_lines": 100,
                                                    "last_log_line": "Epoch 10/10", "epoch_after_loops": 9}
    assert pipeline.seed_loop_structure(3, 2)["train_passes"] == 6


def test_leaky_recipe_reports_on_its_own_training_data(tmp_path):
    splits = data.synthetic_splits(n_train=20, n_test=20, num_classes=2)
    torch.manual_seed(0)
    ckpt = tmp_path / "w.pt"
    train.save_checkpoint(ckpt, models.build_resnet18(2))
    out = pipeline.leaky_recipe(ckpt, splits.train, splits.test, n_train=8, n_held_out=20, epochs=2, device="cpu",
                                progress=False)
    assert out["status"] == "trained" and out["n_train"] == 8 and out["n_held_out"] == 20
    assert 0 <= out["reported_acc"] <= 1 and 0 <= out["held_out_acc"] <= 1


@pytest.mark.cifar
def test_fast_end_to_end_on_cifar10(cifar10, monkeypatch):
    """Train briefly from the course's source model, evaluate once, and the leak demo inflates its number."""
    from course_lib import pretrained

    monkeypatch.setenv(config.FAST_ENV, "1")
    weights = pretrained.pretrain_source_model(cifar10, progress=False)
    train_part, val_part = data.course_split(cifar10.train)
    tr, va, te = data.per_class(train_part, 200), data.per_class(val_part, 30), data.per_class(cifar10.test, 50)
    model = models.build_resnet18(10, weights=weights)
    config.seed_everything(0)
    warm, history = pipeline.fine_tune(model, tr, va, epochs=3, peak_lr=0.05, warmup_epochs=2, device="cpu",
                                       progress=False)
    assert len(warm) == 2 and len(history) == 3
    ev = train.evaluate(model, data.Batches(te, 500), device="cpu")
    assert ev.confusion.sum() == len(te) == 500
    assert ev.accuracy > 0.2
    leak = pipeline.leaky_recipe(weights, train_part, val_part, n_train=200, n_held_out=500, epochs=3,
                                 device="cpu", progress=False)
    assert leak["reported_acc"] > leak["held_out_acc"]


@pytest.mark.cifar
def test_the_imagenet_weights_path_end_to_end_in_fast_mode(cifar10, monkeypatch, tmp_path):
    """The path most learners take (torchvision's ImageNet weights), through the same loader as theirs: a file
    in torchvision's cache layout under TORCH_HOME (random weights here: the file cannot be downloaded)."""
    import torchvision

    from course_lib import pretrained, transfer

    monkeypatch.setenv(config.FAST_ENV, "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), cached)
    weights, why = pretrained.course_weights()
    assert weights == "imagenet" and "ImageNet weights" in why
    model = models.build_resnet18(10, weights=weights)
    assert model.weights_info["mean"] == [0.485, 0.456, 0.406] and model.weights_info["std"] == [0.229, 0.224, 0.225]
    stats = (model.weights_info["mean"], model.weights_info["std"])
    size = 64  # more pixels than 32, as a plan on a faster machine would choose (transfer.choose_input_size)
    train_part, val_part = data.course_split(cifar10.train)
    tr, va, te = data.per_class(train_part, 40), data.per_class(val_part, 10), data.per_class(cifar10.test, 10)
    warm, history = pipeline.fine_tune(model, tr, va, epochs=1, peak_lr=0.02, warmup_epochs=1, normalize=stats,
                                       size=size, device="cpu", progress=False)
    assert history.diverged is None and history.best_val_acc is not None
    ev = train.evaluate(model, data.Batches(te, 100, normalize=stats, size=size), device="cpu")
    assert ev.confusion.sum() == 100


def test_a_model_without_mistakes_gets_a_figure_saying_so_not_an_error():
    from course_lib import plots

    images = data.synthetic_images(2, num_classes=3, size=8)
    ev = train.Evaluation(loss=0.1, accuracy=1.0, predictions=images.labels.clone(), labels=images.labels.clone(),
                          probabilities=torch.nn.functional.one_hot(images.labels, 3).float())
    indices = pipeline.most_confident_mistakes(ev, k=8)
    assert len(indices) == 0
    fig = plots.show_mistakes(images, indices, ev, title="validation mistakes")
    assert "none, every image is classified right" in fig.axes[0].texts[0].get_text()


def test_what_the_number_is_says_the_weights_size_positions_epochs_and_class_split(tmp_path):
    path = tmp_path / "source.pt"
    train.save_checkpoint(path, models.build_resnet18(2), meta={"classes": ["cat", "dog"], "source": "two pets",
                                                                "resolution": 32})
    model = models.build_resnet18(3, weights=path)
    confusion = torch.diag(torch.tensor([90, 50, 20])) + torch.tensor([[0, 10, 0], [0, 0, 50], [80, 0, 0]])
    ev = train.Evaluation(loss=1.0, accuracy=0.53, per_class_accuracy=torch.tensor([0.9, 0.5, 0.2]), confusion=confusion)
    said = pipeline.what_the_number_is(model, ev, ["cat", "dog", "frog"], input_size=32, epochs=3, best_epoch=2,
                                       budget_bound=True)
    assert "weights: checkpoint source.pt, learnt on cat, dog at 32 px" in said
    assert "32 px, which leaves layer4 1x1 position(s)" in said  # 32 / 32: ResNet18 halves the side five times
    assert "3 epoch(s) of full fine-tuning, as many as the time budget allowed; the best on validation was epoch 2" in said
    # 70% on 200 images against 20% on 100: 2 * sqrt(0.7 * 0.3 / 200 + 0.2 * 0.8 / 100) = 10.3 points of noise
    assert ("(cat, dog): 70.0% on average; the 1 new ones: 20.0%; 50.0 points apart, beyond the noise of a difference "
            "(±10.3): the pretrained classes scored higher here") in said
    assert "the two groups also differ in how hard their classes are" in said
    assert "at 15x the operations at this size" in said  # counted: 0.556 / 0.037 GFLOPs at 32 px
    assert ("what would raise it here: weights learnt on more images (ImageNet's), fed at the size they were learnt "
            "at (224 px: affordable on a GPU); more epochs (the budget, not the recipe, set them).") in said
    again = pipeline.what_the_number_is(model, ev, ["x", "y", "z"], input_size=128, epochs=1, best_epoch=1,
                                        budget_bound=False)
    assert "4x4 position(s)" in again and "the recipe's" in again and "more epochs" not in again
    imagenet = train.save_checkpoint(tmp_path / "imagenet.pt", models.build_resnet18(2),
                                     meta={"classes": [], "source": "ImageNet-1k", "resolution": 224})
    model = models.build_resnet18(3, weights=tmp_path / "imagenet.pt")
    at_224 = pipeline.what_the_number_is(model, ev, ["x", "y", "z"], input_size=224, epochs=1, best_epoch=1,
                                         budget_bound=False)
    assert "what would raise it here: nothing this run holds back" in at_224
    at_64 = pipeline.what_the_number_is(model, ev, ["x", "y", "z"], input_size=64, epochs=1, best_epoch=1,
                                        budget_bound=True)
    assert "inputs at the size the weights were learnt at (224 px" in at_64 and "more epochs" in at_64


def _trial(lr, factor, acc):
    return {"peak_lr": lr, "factor": factor, "val_acc": acc, "diverged": None if acc is not None else "diverged"}


def test_choose_trial_keeps_the_default_unless_beaten_beyond_the_noise():
    # the noise of a difference at 70% on 5,000 images: 2 x sqrt(0.7 x 0.3 x 2 / 5,000) = 1.83 points
    rows = [_trial(0.05, 1.0, 0.70), _trial(0.0125, 1.0, 0.66), _trial(0.2, 1.0, None), _trial(0.05, 0.5, 0.715)]
    chosen, why = pipeline.choose_trial(rows, n_val=5000)
    assert chosen is rows[0] and "kept the default" in why and "±1.8" in why and "led by 1.5" in why
    rows[3]["val_acc"] = 0.72  # 2.0 points ahead: beyond it
    chosen, why = pipeline.choose_trial(rows, n_val=5000)
    assert chosen is rows[3] and why.startswith("chose peak 0.05, factor 0.5: 2.0 points above the default")
    chosen, _ = pipeline.choose_trial(rows, n_val=500)  # on 500 images the noise is 5.8 points: the default stays
    assert chosen is rows[0]
    rows[0] = _trial(0.05, 1.0, None)  # the default diverged: the best of the rest
    chosen, why = pipeline.choose_trial(rows, n_val=5000)
    assert chosen is rows[3] and why.startswith("the default diverged")
    with pytest.raises(RuntimeError, match="every short trial diverged"):
        pipeline.choose_trial([_trial(0.05, 1.0, None), _trial(0.2, 1.0, None)], n_val=5000)


def test_short_trials_train_copies_with_the_given_groups_and_leave_the_model_alone():
    splits = data.synthetic_splits(n_train=32, n_test=16, num_classes=2)
    model = models.build_resnet18(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    asked = []

    def groups_of(m, lr, factor):
        asked.append((m is model, lr, factor))
        return [{"params": list(m.fc.parameters()), "lr": lr},
                {"params": [p for n, p in m.named_parameters() if not n.startswith("fc.")], "lr": lr * factor}]

    rows = pipeline.short_trials(model, splits.train, splits.test, [(0.05, 1.0), (0.05, 0.0), (1e6, 1.0)], groups_of,
                                 steps=3, batch_size=8, device="cpu", progress=False)
    assert [(r["peak_lr"], r["factor"]) for r in rows] == [(0.05, 1.0), (0.05, 0.0), (1e6, 1.0)]
    assert asked == [(False, 0.05, 1.0), (False, 0.05, 0.0), (False, 1e6, 1.0)]  # each a copy of the model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(0 <= r["val_acc"] <= 1 and r["diverged"] is None for r in rows[:2])
    assert rows[2]["val_acc"] is None and rows[2]["diverged"]  # a rate of a million diverges, and says so
    table = pipeline.trials_table(rows).splitlines()
    assert len(table) == 3 and "validation" in table[0] and "%" in table[0] and "validation" not in table[2]
