"""Throughput of the course's training engine on this machine, every figure measured in this run.

    python benchmarks/engine.py            # CIFAR-10 from the data dir (or COURSE_CIFAR10)
    python benchmarks/engine.py --quick    # fewer images per measurement: a smoke run, not reference figures

Writes benchmarks/results/engine.md (--out), which benchmarks/README.md quotes verbatim. Every timing is the median of
ROUNDS interleaved rounds with its min–max, because a small CPU's timings wander by ~10% between runs; ratios
are taken within a round, so both sides met the same load. A benchmark, not a test: nothing here asserts;
the targets are printed beside the numbers.
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
from machine import header, load_note

ROUNDS = 3
RESULTS = Path(__file__).resolve().parent / "results"


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


def probe_epoch_seconds(subset, bs, device):
    """(cached, recomputed): one linear-probe epoch on extracted features, and the same epoch through the
    frozen backbone."""
    model = models.freeze(models.build_resnet18(10), "layer4")
    features.clear_memory_cache()
    feats = features.extract_features(model, subset, device=device, progress=False, cache=False)
    t = time.perf_counter()
    train.fit(model.fc, data.TensorBatches(feats, subset.labels, bs, shuffle=True), epochs=1, lr=0.01,
              device=device, progress=False)
    cached = time.perf_counter() - t
    t = time.perf_counter()
    train.fit(model, data.Batches(subset, bs, shuffle=True), epochs=1, lr=0.01, device=device, progress=False)
    return cached, time.perf_counter() - t


def ratio(numerators, denominators):
    """The median of the per-round ratios (both sides of a round met the same load), and those ratios."""
    each = [a / b for a, b in zip(numerators, denominators)]
    return statistics.median(each), each


def spread(values, fmt):
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}"


def load_cifar10_timed(record):
    """CIFAR-10 decoded into a throwaway cache (first load, once) and read back from it (ROUNDS times)."""
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
        record("CIFAR-10 first load (decode + write cache)", [time.perf_counter() - t], "s",
               "one run: the cache is written once")
        loads = []
        for _ in range(ROUNDS):
            t = time.perf_counter()
            cifar = data.load_cifar10(src, progress=False)
            loads.append(time.perf_counter() - t)
        record("CIFAR-10 cached load", loads, "s", "target < 1 s", fmt="{:,.3f}")
        train_images = data.ImageData(cifar.train.images.clone(), cifar.train.labels.clone(), cifar.train.classes)
        if saved is None:
            del os.environ[config.DATA_DIR_ENV]
        else:
            os.environ[config.DATA_DIR_ENV] = saved
    return train_images


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "engine.md")
    args = parser.parse_args()
    device = config.setup(seed=0)
    n = 1024 if args.quick else 4096
    rows = []

    def record(what, values, unit, note="", fmt="{:,.1f}"):
        """A row: the median, the rounds' min–max (none for a single run) and the note (targets, ratios)."""
        median = fmt.format(statistics.median(values))
        min_max = spread(values, fmt) if len(values) > 1 else "—"
        rows.append((what, f"{median} {unit}", min_max, note))
        print(f"  {what}: {median} {unit} ({min_max}) {note}", flush=True)

    load_before = os.getloadavg()[0]
    subset = data.per_class(load_cifar10_timed(record), n // 10)
    bs = 256 if device.type == "cpu" else 512
    steps = max(4, n // bs - 1)
    recipe_steps = 3 if device.type == "cpu" else 30
    sizes = (32, 64)
    rounds = {name: [] for name in ("probe cached", "probe recomputed", "frozen", "recipe", "fit224",
                                    *(f"{kind} {size}" for kind in ("fit", "bare", "dataloader") for size in sizes))}
    for r in range(ROUNDS):  # interleaved: a slow spell of the machine hits every measurement, not just one
        print(f"round {r + 1} of {ROUNDS}", flush=True)
        for size in sizes:
            rounds[f"fit {size}"].append(fit_throughput(models.build_resnet18(10), subset, size, bs, device))
            rounds[f"bare {size}"].append(bare_step_throughput(size, bs, device, steps))
            rounds[f"dataloader {size}"].append(dataloader_throughput(subset, size, bs, device, steps))
        rounds["recipe"].append(dataloader_throughput(subset, 224, 32, device, recipe_steps, resize_first=True))
        if device.type == "cuda":
            rounds["fit224"].append(fit_throughput(models.build_resnet18(10), data.per_class(subset, 50), 224, 128, device))
        rounds["frozen"].append(fit_throughput(models.freeze(models.build_resnet18(10), "layer3"), subset, 32, bs, device))
        cached, recomputed = probe_epoch_seconds(subset, bs, device)
        rounds["probe cached"].append(cached * 1000)
        rounds["probe recomputed"].append(recomputed * 1000)

    for size in sizes:
        fits, bares = rounds[f"fit {size}"], rounds[f"bare {size}"]
        of_ceiling, each = ratio(fits, bares)
        target = "; target >= 95%" if size == 32 else ""
        if max(each) >= 1:  # fit cannot beat the bare step it is built on: the difference is noise
            vs_ceiling = f"equal to its ceiling within noise (lowest round {min(each):.0%}){target}"
        else:
            vs_ceiling = f"{of_ceiling:.0%} of its ceiling (rounds {spread(each, '{:.0%}')}){target}"
        full = " (full fine-tuning)" if size == 32 else ""
        record(f"fit at {size} px, batch {bs}{full}", fits, "img/s", vs_ceiling)
        record(f"bare model step at {size} px (ceiling)", bares, "img/s")
        faster, each = ratio(fits, rounds[f"dataloader {size}"])
        record(f"PIL + transforms + DataLoader at {size} px", rounds[f"dataloader {size}"], "img/s",
               f"fit is {faster:.1f}x faster (rounds {spread(each, '{:.1f}x')})")
    recipe = statistics.median(rounds["recipe"])
    record("seed recipe: per-sample Resize(224), batch 32, SGD", rounds["recipe"], "img/s",
           f"projected epoch of 50,000: {50_000 / recipe / 60:.0f} min")
    if device.type == "cuda":
        faster, each = ratio(rounds["fit224"], rounds["recipe"])
        record("fit at 224 px with AMP, batch 128", rounds["fit224"], "img/s",
               f"{faster:.1f}x the recipe (rounds {spread(each, '{:.1f}x')}); target >= 3x")
    faster, each = ratio(rounds["frozen"], rounds["fit 32"])
    record("stages up to layer3 frozen at 32 px", rounds["frozen"], "img/s",
           f"{faster:.1f}x full fine-tuning (rounds {spread(each, '{:.1f}x')}); target >= 2x")
    record(f"linear-probe epoch on cached features ({len(subset):,} images)", rounds["probe cached"], "ms")
    slower, each = ratio(rounds["probe recomputed"], rounds["probe cached"])
    record("linear-probe epoch recomputing the frozen backbone", rounds["probe recomputed"], "ms",
           f"{slower:.0f}x (rounds {spread(each, '{:.0f}x')}); target >= 50x")

    run = f"{len(subset):,} CIFAR-10 training images per measurement" + (
        ": --quick, a smoke run, not reference figures" if args.quick else "")
    lines = [f"{header(device, torch.get_num_threads())}; {run}; medians of {ROUNDS} interleaved rounds; "
             f"{load_note(load_before)}.", "",
             f"| measurement | median | min–max of {ROUNDS} rounds | note |", "| --- | --- | --- | --- |"]
    lines += [f"| {what} | {value} | {min_max} | {note} |" for what, value, min_max, note in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
