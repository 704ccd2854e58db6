"""Throughput of the course's training engine on this machine, every figure measured in this run.

    python benchmarks/engine.py            # CIFAR-10 from the data dir (or COURSE_CIFAR10)
    python benchmarks/engine.py --quick    # fewer images per measurement

Prints a Markdown table for the README's performance section. A benchmark, not a test: nothing here
asserts; the targets are printed beside the numbers.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchvision import transforms

from course_lib import config, data, features, models, train


def fit_throughput(model, subset, size, bs, device):
    hist = train.fit(model, data.Batches(subset, bs, shuffle=True, augment=True, drop_last=True, size=size),
                     epochs=2, lr=0.01, device=device, progress=False, schedule="constant")
    return hist.epochs[-1]["images_per_s"]  # second epoch: warm


def bare_step_throughput(size, bs, device, steps):
    model = models.build_resnet18(10)
    x = torch.randn(bs, 3, size, size, device=device)
    y = torch.randint(0, 10, (bs,), device=device)
    return train.step_throughput(model, [(x, y)] * (steps + 1), device=device)


def dataloader_throughput(subset, size, bs, device, steps, resize_first=False):
    tf = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    if size != 32:
        tf.append(transforms.Resize(size))
    tf += [transforms.ToTensor(), transforms.Normalize(data.CIFAR10_MEAN, data.CIFAR10_STD)]
    if resize_first:  # the seed-style recipe: Resize(224) + ToTensor per sample, nothing else
        tf = [transforms.Resize(size), transforms.ToTensor()]
    loader = data.data_loader(subset, bs, shuffle=True, transform=transforms.Compose(tf), pil=True)
    return train.step_throughput(models.build_resnet18(10), loader, device=device, amp=False, max_batches=steps)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    device = config.setup(seed=0)
    n = 1024 if args.quick else 4096
    rows = []

    def row(what, value, unit, target=""):
        rows.append((what, value, unit, target))
        print(f"  {what}: {value:,.1f} {unit} {target}", flush=True)

    # ---- data loading
    src = os.environ.get(data.CIFAR10_ENV)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[config.DATA_DIR_ENV], saved = tmp, os.environ.get(config.DATA_DIR_ENV)
        if src is None:
            found = data.find_local_cifar10(Path(saved) if saved else config.PROJECT_ROOT / "data")
            src = str(found) if found else None
        if src is None:
            sys.exit("CIFAR-10 not found: set COURSE_CIFAR10 or put a copy in data/")
        t = time.perf_counter()
        data.load_cifar10(src, progress=False)
        row("CIFAR-10 first load (decode + write cache)", time.perf_counter() - t, "s")
        t = time.perf_counter()
        cifar = data.load_cifar10(src, progress=False)
        row("CIFAR-10 cached load", time.perf_counter() - t, "s", "(target < 1 s)")
        cifar = data.Splits(data.ImageData(cifar.train.images.clone(), cifar.train.labels.clone(), cifar.train.classes),
                            cifar.test)
        if saved is None:
            del os.environ[config.DATA_DIR_ENV]
        else:
            os.environ[config.DATA_DIR_ENV] = saved
    subset = data.per_class(cifar.train, n // 10)

    # ---- fit vs ceiling vs DataLoader
    bs = 256 if device.type == "cpu" else 512
    for size in (32, 64):
        steps = max(4, n // bs - 1)
        # interleaved rounds, median: a 2-core machine's timings wander by ~10% from one run to the next
        fits, bares = [], []
        for _ in range(3):
            fits.append(fit_throughput(models.build_resnet18(10), subset, size, bs, device))
            bares.append(bare_step_throughput(size, bs, device, steps))
        fit_ips, bare = statistics.median(fits), statistics.median(bares)
        dl = dataloader_throughput(subset, size, bs, device, steps)
        target = "; target >= 95%" if size == 32 else ""
        row(f"fit at {size} px, batch {bs}", fit_ips, "img/s", f"({100 * fit_ips / bare:.0f}% of ceiling{target})")
        row(f"bare model step at {size} px (ceiling)", bare, "img/s")
        row(f"PIL + transforms + DataLoader at {size} px", dl, "img/s", f"(fit is {fit_ips / dl:.1f}x faster)")

    # ---- the seed-style recipe at 224 px
    recipe_steps = 3 if device.type == "cpu" else 30
    recipe = dataloader_throughput(subset, 224, 32, device, recipe_steps, resize_first=True)
    row("seed recipe: per-sample Resize(224), batch 32, SGD", recipe, "img/s",
        f"(projected epoch of 50,000: {50_000 / recipe / 60:.0f} min)")
    if device.type == "cuda":
        fit224 = fit_throughput(models.build_resnet18(10), data.per_class(subset, 50), 224, 128, device)
        row("fit at 224 px with AMP, batch 128", fit224, "img/s", f"({fit224 / recipe:.1f}x the recipe; target >= 3x)")

    # ---- freezing
    full = fit_throughput(models.build_resnet18(10), subset, 32, bs, device)
    frozen = fit_throughput(models.freeze(models.build_resnet18(10), "layer3"), subset, 32, bs, device)
    row("full fine-tuning at 32 px", full, "img/s")
    row("stages up to layer3 frozen at 32 px", frozen, "img/s", f"({frozen / full:.1f}x; target >= 2x)")

    # ---- linear probe: cached features vs recomputing the backbone
    model = models.freeze(models.build_resnet18(10), "layer4")
    features.clear_memory_cache()
    feats = features.extract_features(model, subset, device=device, progress=False, cache=False)
    probe = data.TensorBatches(feats, subset.labels, bs, shuffle=True)
    t = time.perf_counter()
    train.fit(model.fc, probe, epochs=1, lr=0.01, device=device, progress=False)
    cached = time.perf_counter() - t
    t = time.perf_counter()
    train.fit(model, data.Batches(subset, bs, shuffle=True), epochs=1, lr=0.01, device=device, progress=False)
    recompute = time.perf_counter() - t
    row(f"linear-probe epoch on cached features ({len(subset)} images)", cached * 1000, "ms")
    row(f"linear-probe epoch recomputing the frozen backbone", recompute * 1000, "ms", f"({recompute / cached:.0f}x; target >= 50x)")

    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n| measurement ({name}, torch {torch.__version__}) | value | note |\n| --- | --- | --- |")
    for what, value, unit, target in rows:
        print(f"| {what} | {value:,.2f} {unit} | {target.strip('()')} |")


if __name__ == "__main__":
    main()
