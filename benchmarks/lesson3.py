"""Lesson 3's pipeline against the seed-style recipe, on this machine, every figure measured in this run.

    python benchmarks/lesson3.py                       # the lesson with the course's pretrained weights
    python benchmarks/lesson3.py --weights random      # the same pipeline from random initialization
    python benchmarks/lesson3.py --recipe-only         # only the recipe's throughput
    python benchmarks/lesson3.py --body-factor 0.8     # discriminative rates: each stage at 0.8x the next

The recipe: per-sample PIL Resize(224) + ToTensor, DataLoader batch 32, SGD lr 1e-3 momentum 0.9, 10 epochs
of 50,000 images (its time is projected from a few measured batches). The lesson: CIFAR-10 as tensors,
head warm-up, then every layer with one-cycle (each stage at --body-factor times the next one's rate: 1.0 is
one rate for all, < 1 discriminative), timed from data load to test accuracy.
"""
from __future__ import annotations

import argparse
import time

import torch

from course_lib import config, data, models, pipeline, pretrained, train
from engine import dataloader_throughput, fit_throughput

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
    args = parser.parse_args()
    device = config.setup(seed=0)
    rows = []

    splits = data.load_cifar10()
    sample = data.per_class(splits.train, 100)
    recipe = dataloader_throughput(sample, 224, 32, device, 3 if device.type == "cpu" else 40, resize_first=True)
    recipe_hours = RECIPE_EPOCHS * RECIPE_IMAGES / recipe / 3600
    rows.append(("seed recipe at 224 px: training images/s", f"{recipe:.1f}"))
    rows.append(("seed recipe: projected 10 epochs", f"{recipe_hours:.1f} h"))
    if device.type == "cuda":
        amp224 = fit_throughput(models.build_resnet18(10), data.per_class(sample, 50), 224, 128, device)
        rows.append(("fit at 224 px with AMP: training images/s", f"{amp224:.0f} ({amp224 / recipe:.1f}x the recipe; target >= 3x)"))

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
        rows.append((f"lesson pipeline ({what}; {args.epochs} epochs at {size} px, "
                      f"peak {args.lr:g}, body factor {args.body_factor:g})",
                     f"test accuracy {100 * ev.accuracy:.2f}% in {minutes:.1f} min"))
        rows.append(("validation", history.status()))
        rows.append(("lesson vs the recipe's projected 10 epochs", f"{recipe_hours * 60 / minutes:.0f}x sooner (target >= 30x)"))

    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n| measurement ({name}) | value |\n| --- | --- |")
    for what, value in rows:
        print(f"| {what} | {value} |")


if __name__ == "__main__":
    main()
