"""What lessons 2 and 3 would plan on this machine, for the course's source model and for torchvision's
ImageNet weights (the path most learners with internet take, whose accuracy no CI here can measure).
Writes benchmarks/results/plans.md, which benchmarks/README.md quotes verbatim.

    python benchmarks/plans.py [--threads N]

The plans come from the lessons' own code (transfer.choose_input_size, pipeline.resolution_costs and
plan_fine_tuning) with nothing spent before them; lesson 3 revises its plan after its rate sweep
(pipeline.revise_plan_after_sweep), which needs a model and a sweep, so its row is the first plan. A plan's cost depends on the input size, not on the
weights' values, and both lessons choose the size by the same rule for either weights, so no weights are
loaded and one row per lesson serves both paths.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import header  # noqa: E402  (benchmarks/ is the script's folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the course's choice)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "plans.md")
    args = parser.parse_args()
    if args.threads:
        os.environ["COURSE_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="plans-") as data_dir:
        os.environ.setdefault("COURSE_DATA_DIR", data_dir)

        from course_lib import config, data, pipeline, transfer

        device = config.setup(seed=0, quiet=True)
        splits = data.load_cifar10(progress=False)
        train_set, val_set = data.course_split(splits.train)
        rows = []
        start = time.perf_counter()
        size, plan = transfer.choose_input_size(splits, "imagenet", (10, 50, 100), spent=lambda: time.perf_counter() - start,
                                                max_epochs=15, budget_seconds=600, trap_epochs=10, learner_epochs=6,
                                                test_images=4 * len(transfer.target_test_set(splits)), device=device)
        rows.append(("02_transfer_learning, either weights", f"{size} px", plan))
        start = time.perf_counter()
        costs = pipeline.resolution_costs((32, 64, 128, 224), n_images=len(train_set), images=train_set, device=device)
        work = pipeline.LessonWork(n_train=len(train_set), n_val=len(val_set), n_test=len(splits.test),
                                   sweep_images=80 * 128, leak_train_images=5 * 1000, leak_eval_images=3000,
                                   trial_images=4 * 60 * 128, trial_eval_images=4 * len(val_set))  # as lesson 3's
        smallest = min(costs, key=lambda r: r["size"])
        epoch_costs = [dict(r, epoch_seconds=work.epoch_seconds(r)) for r in costs]  # as lesson 3 counts an epoch
        size = pipeline.largest_size_within(epoch_costs, 900 - work.rest_seconds(smallest), 16) or smallest["size"]
        plan = pipeline.plan_fine_tuning(next(r for r in costs if r["size"] == size), work, 900,
                                         time.perf_counter() - start, max_epochs=16)
        rows.append(("03_cifar10_resnet18, either weights", f"{size} px", plan))
    lines = [header(device, config.torch_threads()) + "; lesson 3's row is its first plan, from section 2's timed "
             "steps, which the lesson revises after its rate sweep from the sweep's speed and the time it has spent.", "",
             "| lesson, weights | input size | budget | planned epochs (recipe's) | one epoch | planned total |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, size, plan in rows:
        lines.append(f"| {name} | {size} | {plan.budget_seconds / 60:.0f} min | {plan.epochs} ({plan.max_epochs}) | "
                     f"{plan.epoch_seconds / 60:.1f} min | {plan.seconds / 60:.1f} min |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
