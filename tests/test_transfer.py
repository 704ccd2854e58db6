import math

import pytest
import torch

from course_lib import checks, data, models, train, transfer, widgets


@pytest.fixture
def task(tmp_path, monkeypatch):
    monkeypatch.setattr(transfer, "EPOCH_IMAGES", 48)
    splits = data.synthetic_splits(n_train=24, n_test=8, num_classes=3)
    torch.manual_seed(0)
    ckpt = tmp_path / "source.pt"
    train.save_checkpoint(ckpt, models.build_resnet18(7), meta={"normalization": "cifar", "source": "test"})
    return transfer.make_task(splits, ckpt, labels_per_class=8, classes=splits.train.classes, val_per_class=4)


def test_make_task_has_few_labels_disjoint_validation_and_full_test(task):
    assert task.labels_per_class == 8 and len(task.train) == 24 and len(task.val) == 12 and len(task.test) == 24
    assert task.normalization == "cifar"
    tags = lambda d: {tuple(im.flatten()[:64].tolist()) for im in d.images}
    assert not tags(task.train) & tags(task.val)


def test_strategies_run_and_are_reproducible(task):
    for name in ("linear probe", "warm-up, then all", "discriminative rates"):
        a = transfer.run_strategy(name, task, epochs=2, device="cpu", progress=False)
        b = transfer.run_strategy(name, task, epochs=2, device="cpu", progress=False)
        assert a["test_acc"] == b["test_acc"] and a["best_val_acc"] == b["best_val_acc"], name
        assert 0 <= a["test_acc"] <= 1 and not a["diverged"]
    probe = transfer.run_strategy("linear probe", task, epochs=1, device="cpu", progress=False)
    assert probe["trainable_params"] == 512 * 3 + 3
    with pytest.raises(ValueError, match="unknown strategy"):
        transfer.run_strategy("magic", task, epochs=1)


def test_compare_strategies_table(task, monkeypatch):
    splits = data.Splits(data.ImageData(torch.cat([task.train.images, task.val.images]),
                                        torch.cat([task.train.labels, task.val.labels]), task.train.classes), task.test)
    monkeypatch.setattr(transfer, "make_task", lambda s, w, n, **kw: task)
    rows = transfer.compare_strategies(splits, task.weights, [8], ["from scratch", "linear probe"], epochs=1,
                                       device="cpu", progress=False)
    assert [r["strategy"] for r in rows] == ["from scratch", "linear probe"]
    table = transfer.results_table(rows)
    assert "from scratch" in table and "8 labels/class" in table
    assert transfer.best_strategy(rows, 8)["test_acc"] == max(r["test_acc"] for r in rows)


def test_batchnorm_trap_moves_statistics_only_when_naive(task):
    trap = transfer.batchnorm_trap(task, epochs=1, device="cpu", progress=False)
    assert trap["frozen"]["running_mean_change"] == 0.0
    assert trap["naive"]["running_mean_change"] > 0.0


def test_nearest_neighbours_and_projection(task):
    model = models.build_resnet18(3, weights=task.weights)
    idx, sims = transfer.nearest_neighbours(model, task.test, task.train, k=4, device="cpu")
    assert idx.shape == (24, 4) and torch.all(sims[:, :-1] >= sims[:, 1:])
    assert 0 <= transfer.neighbour_label_agreement(idx, task.test, task.train) <= 1
    same, _ = transfer.nearest_neighbours(model, task.train, task.train, k=1, device="cpu")
    assert torch.equal(same.flatten(), torch.arange(24))  # each image is its own nearest neighbour
    assert transfer.project_2d(torch.randn(30, 512)).shape == (30, 2)


def test_freeze_experiment_caches_and_reports_divergence(task, monkeypatch):
    exp = transfer.FreezeExperiment(task, epochs=1, device="cpu")
    assert exp.estimate_seconds(5) > 0
    row = exp.run(5, 0.05, progress=False)
    assert row["depth"] == 5 and row["trainable_params"] == 512 * 3 + 3 and not row["cached"]
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("a cached run was trained again"))
    again = exp.run(5, 0.05, progress=False)
    assert again["cached"] and again["test_acc"] == row["test_acc"]
    monkeypatch.undo()
    bad = exp.run(0, 1e4, progress=False)
    assert bad["diverged"] and math.isnan(bad["test_acc"])
    assert [r["depth"] for r in exp.table()] == [0, 5]


def test_freeze_explorer_widget_driven_without_a_browser(task, monkeypatch):
    explorer = widgets.FreezeExplorer(transfer.FreezeExperiment(task, epochs=2, device="cpu"))
    explorer.depth.value, explorer.lr.value = 4, 0.05
    explorer.button.click()
    assert explorer.result["depth"] == 4 and "done" in explorer.status.value
    assert explorer.table.value.count("<tr>") == 2
    explorer.run(4, 0.05)
    assert "recalled" in explorer.status.value and explorer.table.value.count("<tr>") == 2
    explorer.run(0, 30.0)  # the slider's top
    assert "diverged" in explorer.status.value and explorer.table.value.count("<tr>") == 3
    explorer.depth.value = 2
    assert "stem, layer1" in explorer.frozen.value


# ------------------------------------------------------------------ lesson 2 exercise checks
def test_check_count_trainable():
    checks.check_count_trainable(models.trainable_parameters)
    for wrong in (lambda m: sum(p.numel() for p in m.parameters()),
                  lambda m: sum(1 for p in m.parameters() if p.requires_grad),
                  lambda m: sum(p.numel() for p in m.parameters() if not p.requires_grad)):
        with pytest.raises(AssertionError, match="Hint"):
            checks.check_count_trainable(wrong)


def test_check_head_groups():
    def right(model, lr):
        head = list(model.fc.parameters())
        ids = {id(p) for p in head}
        return [{"params": [p for p in model.parameters() if p.requires_grad and id(p) not in ids], "lr": lr},
                {"params": head, "lr": 10 * lr}]

    checks.check_head_groups(right)
    wrong_answers = {
        "frozen": lambda m, lr: [{"params": [p for p in m.parameters() if id(p) not in {id(q) for q in m.fc.parameters()}], "lr": lr},
                                 {"params": list(m.fc.parameters()), "lr": 10 * lr}],
        "twice": lambda m, lr: [{"params": [p for p in m.parameters() if p.requires_grad], "lr": lr},
                                {"params": list(m.fc.parameters()), "lr": 10 * lr}],
        "swapped": lambda m, lr: [{"params": right(m, lr)[0]["params"], "lr": 10 * lr},
                                  {"params": right(m, lr)[1]["params"], "lr": lr}],
        "not a list": lambda m, lr: m.parameters(),
    }
    for name, wrong in wrong_answers.items():
        with pytest.raises(AssertionError):
            checks.check_head_groups(wrong)


def test_check_freeze_depth():
    rows = [{"depth": d, "test_acc": acc, "diverged": False} for d, acc in enumerate([0.5, 0.52, 0.55, 0.6, 0.7, 0.71])]
    checks.check_freeze_depth(5, "depth five has the best accuracy in the table", rows)
    checks.check_freeze_depth(4, "depth four is within a point of the best one", rows)
    with pytest.raises(AssertionError, match="below the best"):
        checks.check_freeze_depth(0, "I like training everything at once here", rows)
    with pytest.raises(AssertionError, match="in a sentence"):
        checks.check_freeze_depth(5, "", rows)
    with pytest.raises(AssertionError, match="whole number"):
        checks.check_freeze_depth(7, "out of range depth is not allowed here", rows)
