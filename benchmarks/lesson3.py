"""Lesson 3's pipeline against the seed-style recipe, on this machine, every figure measured in this run.

    python benchmarks/lesson3.py                       # the lesson with the course's pretrained weights
    python benchmarks/lesson3.py --weights random --out benchmarks/results/lesson3-random.md
    python benchmarks/lesson3.py --recipe-only         # only the recipe's throughput (a few minutes)
    python benchmarks/lesson3.py --body-factor 0.8 --out benchmarks/results/lesson3-body-0.8.md

Writes benchmarks/results/lesson3.md (--out): one file per configuration, each with its own machine header,
because runs of different configurations happen on different days and machines, and a row appended under
another run's header would claim a machine it never ran on.

The recipe: per-sample PIL Resize(224) + ToTensor, DataLoader batch 32, SGD lr 1e-3 momentum 0.9, 10 epochs
of 50,000 images (its time is projected from a few measured batches, ROUNDS rounds). The lesson: CIFAR-10 as
tensors, head warm-up, then every layer with one-cycle (each stage at --body-factor times the next one's rate:
1.0 is one rate for all, < 1 discriminative), timed from data load to test accuracy. The run is judged on
validation; the test set is measured once, at the end.

--epochs keeps the recipe's 12, the same on every machine so runs compare; on a slow CPU that takes long:
12 x 45,000 images at the machine's training speed (benchmarks/results/lesson_times.md records one). The
lesson itself plans its epochs from a time budget and this machine's measured speed (course_lib/budget.py,
course_lib/pipeline.py::plan_fine_tuning); pass a smaller --epochs to see what such a plan gives here.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from course_lib import config, data, models, pipeline, pretrained, train
from engine import RESULTS, ROUNDS, dataloader_throughput, fit_throughput, spread
from machine import header, load_note

RECIPE_EPOCHS, RECIPE_IMAGES = 10, 50_000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", choices=("course", "random"), default="course",
                        help="course: ImageNet if available, else the course's source model")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=0.08, help="one-cycle peak")
    parser.add_argument("--body-factor", type=float, default=1.0,
                        help="each stage's rate as a fraction of the next one's (1.0: one rate for all)")
    parser.add_argument("--recipe-only", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "lesson3.md")
    args = parser.parse_args()
    device = config.setup(seed=0)
    load_before = os.getloadavg()[0]
    rows = []

    splits = data.load_cifar10()
    sample = data.per_class(splits.train, 100)
    recipe_rounds, amp224_rounds = [], []
    for _ in range(ROUNDS):  # interleaved, as in engine.py
        recipe_rounds.append(dataloader_throughput(sample, 224, 32, device, 3 if device.type == "cpu" else 40,
                                                   resize_first=True))
        if device.type == "cuda":
            amp224_rounds.append(fit_throughput(models.build_resnet18(10), data.per_class(sample, 50), 224, 128, device))
    recipe = statistics.median(recipe_rounds)
    recipe_hours = RECIPE_EPOCHS * RECIPE_IMAGES / recipe / 3600
    rows.append(("seed recipe at 224 px: training images/s", f"{recipe:.1f}",
                 f"median of {ROUNDS} rounds, min–max {spread(recipe_rounds, '{:.1f}')}"))
    rows.append(("seed recipe: projected 10 epochs", f"{recipe_hours:.1f} h", "from the median"))
    if device.type == "cuda":
        amp224 = statistics.median(amp224_rounds)
        rows.append(("fit at 224 px with AMP: training images/s", f"{amp224:.0f}",
                     f"min–max {spread(amp224_rounds, '{:.0f}')}; {amp224 / recipe:.1f}x the recipe; target >= 3x"))

    if not args.recipe_only:
        start = time.perf_counter()
        splits = data.load_cifar10()
        train_set, val_set = data.course_split(splits.train)
        size = pipeline.default_resolution(device)
        if args.weights == "random":
            model, normalize, warmup, what = models.build_resnet18(10), "cifar", 0, "random init"
        else:
            weights, _ = pretrained.course_weights()
            what = "ImageNet weights" if weights == "imagenet" else "the course's source model"
            model = models.build_resnet18(10, weights=weights)
            normalize, warmup = model.weights_info["normalization"], 3
        _, history = pipeline.fine_tune(model, train_set, val_set, epochs=args.epochs, peak_lr=args.lr,
                                        warmup_epochs=warmup, body_factor=args.body_factor, normalize=normalize, size=size, device=device)
        ev = train.evaluate(model, data.Batches(splits.test, 500, normalize=normalize, size=size), device=device)
        minutes = (time.perf_counter() - start) / 60
        pipeline_rows = [
            (f"lesson pipeline ({what}; {args.epochs} epochs at {size} px, peak {args.lr:g}, "
             f"body factor {args.body_factor:g}): validation", history.status(), "what the run is judged on"),
            ("test accuracy", f"{100 * ev.accuracy:.2f}%", "measured once, after training"),
            ("lesson wall time, data load to test accuracy", f"{minutes:.1f} min", "one run"),
            ("lesson vs the recipe's projected 10 epochs", f"{recipe_hours * 60 / minutes:.0f}x sooner", "target >= 30x"),
        ]
        rows = pipeline_rows + rows

    lines = [f"{header(device, torch.get_num_threads())}; {load_note(load_before)}.", "",
             "| measurement | value | note |", "| --- | --- | --- |"]
    lines += [f"| {what} | {value} | {note} |" for what, value, note in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
