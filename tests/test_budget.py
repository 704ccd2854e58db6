"""Time budgets: the epoch plans of lessons 2 and 3 and the pretraining, checked against hand arithmetic."""
import time

import pytest
import torch

from course_lib import budget, data, pipeline, train, transfer


def test_plan_takes_as_many_epochs_as_fit_after_the_other_work():
    # (600 - 100) / 45 = 11.1: 11 epochs, 11 * 45 + 100 = 595 s; all 15 would take 775 s
    plan = budget.plan_epochs("x", 45.0, 600.0, max_epochs=15, other_seconds=100.0)
    assert (plan.epochs, plan.seconds, plan.fits) == (11, 595.0, True)
    assert "11 epoch(s)" in plan.describe() and "15 epochs would take ≈ 13 min" in plan.describe()
    assert "exceed" not in plan.describe()
    runs = budget.plan_epochs("runs", 45.0, 600.0, max_epochs=15, per_epoch="one epoch of every run together")
    assert "one epoch of every run together takes about 0.8 min" in runs.describe()


def test_plan_stops_at_the_recipe_and_never_below_the_minimum():
    assert budget.plan_epochs("x", 10.0, 10_000.0, max_epochs=12).epochs == 12
    full = budget.plan_epochs("x", 10.0, 10_000.0, max_epochs=12).describe()
    assert "raise the budget" not in full
    short = budget.plan_epochs("x", 400.0, 900.0, max_epochs=12, other_seconds=600.0, min_epochs=1)
    assert (short.epochs, short.fits) == (1, False)
    assert "exceed the budget" in short.describe() and "about 17 min" in short.describe()
    assert budget.plan_epochs("x", 400.0, 300.0, max_epochs=12, min_epochs=2).epochs == 2


def test_plan_rejects_nonsense_inputs():
    with pytest.raises(ValueError, match="positive"):
        budget.plan_epochs("x", 0.0, 60.0, max_epochs=3)
    with pytest.raises(ValueError, match="positive"):
        budget.plan_epochs("x", 5.0, -1.0, max_epochs=3)


def test_training_seconds_counts_an_evaluated_image_as_a_sixth_of_a_trained_one():
    assert budget.training_seconds(300, 900, 100.0) == pytest.approx(3.0 + 1.5)


def test_clock_and_report():
    clock = budget.Clock()
    time.sleep(0.01)
    assert 0.01 <= clock.seconds() < 5
    assert budget.budget_report(14 * 60, 0.0, 15) == "this lesson ran 14.0 min against its budget of 15 min (within it)"
    over = budget.budget_report(27 * 60, 10 * 60, 15)
    assert over.startswith("this lesson ran 17.0 min against its budget of 15 min (over it)")
    assert "plus 10.0 min getting the pretrained weights" in over


def test_lesson3_plan_budgets_the_whole_lesson():
    work = pipeline.LessonWork(n_train=45_000, n_val=5_000, n_test=10_000, sweep_images=10_240,
                               leak_train_images=5_000, leak_eval_images=3_000)
    row = {"size": 32, "images_per_s": 200.0}
    # an epoch: 1.05 x 45,000 / 200 + 5,000 / 1,200 = 240.4 s; the rest: (10,240 + 5,000) / 200 + (45,000 + 10,000
    # + 10,000 + 3,000) / 1,200 = 76.2 + 56.7 = 132.9 s
    assert budget.FIT_OVERHEAD == 1.05
    assert work.epoch_seconds(row) == pytest.approx(240.42, abs=0.01)
    assert work.rest_seconds(row) == pytest.approx(132.87, abs=0.01)
    plan = pipeline.plan_fine_tuning(row, work, 900.0, 60.0, max_epochs=12)
    assert plan.epochs == 2 and plan.fits  # (900 - 60 - 132.9) / 240.4 = 2.94
    assert plan.what == "fine-tuning at 32 px"
    fast_machine = pipeline.plan_fine_tuning({"size": 128, "images_per_s": 20_000.0}, work, 900.0, 60.0, max_epochs=12)
    assert fast_machine.epochs == 12


def test_lesson3_plan_is_revised_with_the_sweeps_speed():
    work = pipeline.LessonWork(n_train=45_000, n_val=5_000, n_test=10_000, sweep_images=10_240,
                               leak_train_images=5_000, leak_eval_images=3_000)
    row = {"size": 32, "images_per_s": 200.0}
    # after the sweep only the leaky demo and the test evaluation are to come: 5,000 / 300 + 13,000 / 1,800 = 23.9 s
    assert work.after_sweep_seconds({"images_per_s": 300.0}) == pytest.approx(23.89, abs=0.01)
    faster = train.LRFinder([1e-3], [1.0], None, images_per_s=300.0)
    plan, said = pipeline.revise_plan_after_sweep(row, faster, work, 900.0, 300.0, max_epochs=12)
    # an epoch at 300 images/s: 1.05 x 45,000 / 300 + 5,000 / 1,800 = 160.3 s; (900 - 300 - 23.9) / 160.3 = 3.59
    assert plan.epochs == 3 and plan.epoch_seconds == pytest.approx(160.28, abs=0.01)
    assert plan.other_seconds == pytest.approx(323.89, abs=0.01) and plan.what == "fine-tuning at 32 px"
    assert said.startswith("the rate sweep trained at 300 images/s, section 2's timing said 200")
    untimed = train.LRFinder([1e-3], [1.0], None)  # no timed step: section 2's speed, 240.4 s an epoch
    plan, said = pipeline.revise_plan_after_sweep(row, untimed, work, 900.0, 300.0, max_epochs=12)
    assert plan.epochs == 2 and plan.epoch_seconds == pytest.approx(240.42, abs=0.01)  # (900 - 300 - 35.8) / 240.4
    assert "timed no step" in said and "200 images/s" in said
    slower = train.LRFinder([1e-3], [1.0], None, images_per_s=100.0)
    assert pipeline.revise_plan_after_sweep(row, slower, work, 900.0, 300.0, max_epochs=12)[0].epochs == 1


def _task(n_per_class: int, classes: int = 5) -> transfer.Task:
    def part(n):
        labels = torch.arange(classes).repeat_interleave(n)
        return data.ImageData(torch.zeros(len(labels), 3, 32, 32, dtype=torch.uint8), labels,
                              [f"c{i}" for i in range(classes)])
    return transfer.Task(part(n_per_class), part(n_per_class), "unused.pt")


def test_strategy_epochs_cost_what_their_steps_cost(monkeypatch):
    monkeypatch.setattr(transfer, "epoch_steps", lambda: 20)
    speeds = {"all": 100.0, "layer4": 200.0, "head": 1000.0}
    task = _task(10)  # 50 images: 20 steps of 50 are 1,000 training images an epoch, 50 to validate
    evaluate = 50 / 600
    assert transfer.strategy_epoch_seconds("fine-tune all", task, speeds) == pytest.approx(10 + evaluate)
    assert transfer.strategy_epoch_seconds("fine-tune layer4", task, speeds) == pytest.approx(5 + evaluate)
    # counted as training everything throughout: an upper bound whatever the split of its epochs
    assert transfer.strategy_epoch_seconds("warm-up, then all", task, speeds) == pytest.approx(10 + evaluate)
    bigger = _task(100)  # 500 images, the same 20 steps of 50: the same training cost, more to validate
    assert transfer.strategy_epoch_seconds("fine-tune all", bigger, speeds) == pytest.approx(10 + 500 / 600)
    assert transfer.strategy_epoch_seconds("linear probe", task, speeds) == pytest.approx(evaluate + 100 / 600)


def test_lesson2_takes_the_largest_size_where_the_recipe_fits_and_measures_no_further(monkeypatch):
    """Lesson 3's resolution rule in lesson 2: planned in ascending order, stopping at the first size where
    the recipe's epochs do not fit; the smallest when none fits."""
    planned = []

    def fake_plan(splits, weights, labels, *, spent_seconds, max_epochs, size, **kw):
        planned.append(size)
        epochs = {32: 15, 64: 15, 128: 6, 224: 2}[size]
        return budget.Plan("x", epochs, max_epochs, 30.0, spent_seconds, 600.0)

    monkeypatch.setattr(transfer, "plan_lesson", fake_plan)
    size, plan = transfer.choose_input_size(None, "imagenet", (10,), spent=lambda: 5.0, max_epochs=15)
    assert (size, plan.epochs, planned) == (64, 15, [32, 64, 128])
    planned.clear()
    size, plan = transfer.choose_input_size(None, "imagenet", (10,), spent=lambda: 5.0, max_epochs=15,
                                            sizes=(128, 224))
    assert (size, plan.epochs, planned) == (128, 6, [128])  # none fits: the smallest, and nothing larger measured


def test_lesson3_budgets_its_short_trials_before_and_after_the_sweep():
    work = pipeline.LessonWork(n_train=45_000, n_val=5_000, n_test=10_000, sweep_images=10_240,
                               leak_train_images=5_000, leak_eval_images=3_000, trial_images=30_720,
                               trial_eval_images=20_000)
    # four trials of 60 steps of 128 images, four validation passes: at 300 images/s (evaluation 6x faster)
    # (5,000 + 30,720) / 300 + (13,000 + 20,000) / 1,800 = 119.07 + 18.33 = 137.4 s still to come after the sweep
    assert work.after_sweep_seconds({"images_per_s": 300.0}) == pytest.approx(137.40, abs=0.01)
    # before it, also the sweep and the warm-up's passes: (10,240 + 30,720 + 5,000) / 200
    # + (45,000 + 10,000 + 10,000 + 20,000 + 3,000) / 1,200 = 229.8 + 73.33 = 303.1 s
    assert work.rest_seconds({"images_per_s": 200.0}) == pytest.approx(303.13, abs=0.01)


def test_lesson2_plans_with_the_margin_of_a_plan_made_once(monkeypatch):
    """Lesson 2 never revises its plan: every estimate carries budget.UNREVISED_PLAN_OVERHEAD."""
    monkeypatch.setattr(transfer, "make_task", lambda splits, weights, n, size=None: n)
    monkeypatch.setattr(transfer, "strategy_speeds", lambda task, device: {"all": 100.0, "layer4": 200.0, "head": 1000.0})
    monkeypatch.setattr(transfer, "strategy_epoch_seconds", lambda name, task, speeds: 1.0)  # 1 s per strategy epoch
    monkeypatch.setattr(transfer, "epoch_steps", lambda: 10)
    plan = transfer.plan_lesson(None, None, (10, 50), budget_seconds=600, spent_seconds=60, max_epochs=15,
                                trap_epochs=2, learner_epochs=3, test_images=600)
    # an epoch: 2 budgets x 6 strategies x 1 s + seed spread 2 x 3 x 1 s + freeze sweep 6 x 1 / 2 s = 21 s, x 1.12
    assert plan.epoch_seconds == pytest.approx(21 * 1.12)
    # fixed work, with BATCH_SIZE images a step: trap 2 x 2 epochs at 1,000/s, the learner's 3 epochs at 200/s,
    # 600 test images evaluated at 6 x 100/s; x 1.12, after the 60 s already spent
    images = 10 * transfer.BATCH_SIZE
    fixed = 2 * 2 * images / 1000 + 3 * images / 200 + 600 / 600
    assert plan.other_seconds == pytest.approx(60 + 1.12 * fixed)
    assert plan.epochs == 15  # (600 - 71.8) / 23.5 = 22 fit: the recipe's 15 are planned
    tight = transfer.plan_lesson(None, None, (10, 50), budget_seconds=300, spent_seconds=60, max_epochs=15,
                                 trap_epochs=2, learner_epochs=3, test_images=600)
    assert tight.epochs == 9  # (300 - 71.8) / 23.52 = 9.7; without the margin (300 - 70.5) / 21 = 10.9 would plan 10


def test_lesson3_one_call_plans_the_size_with_the_learners_pick_and_the_epochs():
    work = pipeline.LessonWork(n_train=45_000, n_val=5_000, n_test=10_000, sweep_images=10_240,
                               leak_train_images=5_000, leak_eval_images=3_000)
    table = [{"size": 64, "images_per_s": 50.0}, {"size": 32, "images_per_s": 200.0}]
    asked = []

    def pick(costs, seconds, epochs):
        asked.append((sorted(r["size"] for r in costs), round(seconds, 1), epochs,
                      [round(r["epoch_seconds"], 1) for r in costs]))
        return None

    size, plan, said = pipeline.plan_size_and_epochs(table, work, 900.0, 60.0, max_epochs=12, pick=pick)
    # what the budget leaves for epochs: 900 - 60 - 132.9 (the rest at 32 px) = 707.1 s; an epoch at 64 px:
    # 1.05 x 45,000 / 50 + 5,000 / 300 = 961.7 s, at 32 px 240.4 s (as the plan counts them)
    assert asked == [([32, 64], 707.1, 12, [961.7, 240.4])]
    assert size == 32 and plan.epochs == 2 and plan.what == "fine-tuning at 32 px"
    assert "fit at none of the measured sizes" in said and plan.describe() in said
    size, plan, said = pipeline.plan_size_and_epochs(table, work, 900.0, 60.0, max_epochs=12, pick=lambda *a: 64)
    assert size == 64 and plan.what == "fine-tuning at 64 px" and "fit at 64 px at most" in said
    with pytest.raises(ValueError, match="not one of the measured sizes"):
        pipeline.plan_size_and_epochs(table, work, 900.0, 60.0, max_epochs=12, pick=lambda *a: 48)
