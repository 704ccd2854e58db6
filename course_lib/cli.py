"""Lesson 3's recipe outside Jupyter, on one device or, under torchrun, on several:

    python -m course_lib.cli finetune --data PATH --epochs 12 --out runs/resnet18
    torchrun --nproc_per_node=2 -m course_lib.cli finetune --data PATH --epochs 12 --out runs/resnet18

The recipe is source/03_cifar10_resnet18.ipynb's: pretrained weights with a new head, the input normalized
as the weights declare, the head warmed up on cached features, a learning-rate sweep of the warmed-up model
for one-cycle's peak, every layer fine-tuned under one-cycle, the best validation epoch kept, and the test
set used once, at the end. Under torchrun the same code trains data-parallel (course_lib.distributed): every
rank computes the same numbers, rank 0 prints them and writes the files.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config, data, distributed, models, pipeline, pretrained, train
from .storage import atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course_lib.cli", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("finetune", help="lesson 3's fine-tuning recipe, from data to one test number")
    run.add_argument("--data", type=Path, default=None,
                     help="an ImageFolder (a folder or .tar.gz with train/<class>/* and test/<class>/*) or a CIFAR-10 "
                          "copy; default: the CIFAR-10 copy the lessons use")
    run.add_argument("--epochs", type=int, required=True, help="fine-tuning epochs (the one-cycle schedule spans them)")
    run.add_argument("--out", type=Path, required=True,
                     help="folder for checkpoint.pt (every epoch), model.pt (the chosen weights) and summary.json")
    run.add_argument("--weights", default="course",
                     help="course (ImageNet's when available, else the course's source model), imagenet, random, "
                          "or a checkpoint file")
    run.add_argument("--batch-size", type=int, default=128,
                     help="images per step and process: under torchrun the global batch is N times this")
    run.add_argument("--lr", type=float, default=None,
                     help="one-cycle's peak for one process's batch (scaled by N under torchrun); default: 4x the "
                          "sweep's steepest descent, within [0.02, 0.1], as in the lesson")
    run.add_argument("--sweep-steps", type=int, default=80, help="steps of the learning-rate sweep")
    run.add_argument("--warmup-epochs", type=int, default=2, help="head warm-up epochs on cached features")
    run.add_argument("--body-factor", type=float, default=1.0,
                     help="each stage's rate as a fraction of the next one's (1.0: one rate for all)")
    run.add_argument("--size", type=int, default=None, help="input size in pixels (default: 32 on a CPU, 128 on a GPU)")
    run.add_argument("--image-size", type=int, default=32, help="size image-folder images are decoded at")
    run.add_argument("--val-size", type=int, default=None,
                     help="training images held out for validation (default: the course split's 5,000)")
    run.add_argument("--sync-batchnorm", action="store_true",
                     help="BatchNorm statistics over the global batch (GPUs only; see distributed.wrap)")
    run.add_argument("--resume", action="store_true", help="continue --out's checkpoint.pt where it stopped")
    run.add_argument("--seed", type=int, default=0)
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "sweep_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be 1 or more, got {getattr(args, name)}")
    if args.warmup_epochs < 0:
        parser.error(f"--warmup-epochs must be 0 or more, got {args.warmup_epochs}")
    if args.data is not None and not args.data.exists():
        parser.error(f"--data {args.data} does not exist: give a folder or .tar.gz with train/<class>/* and "
                     "test/<class>/*, or leave --data out to use the lessons' CIFAR-10 copy")
    if (args.out / "checkpoint.pt").exists() and not args.resume:
        parser.error(f"{args.out / 'checkpoint.pt'} exists: pass --resume to continue it, or give another --out")


def course_weights_here() -> tuple[str | Path, str]:
    """pretrained.course_weights, but never pretraining inside a process group: the pretraining is a
    single-process run, which the other ranks would wait on forever."""
    ready = models.imagenet_cache_path().exists() or pretrained.source_checkpoint_path().exists()
    if distributed.world_size() > 1 and not ready:
        raise SystemExit("Neither ImageNet weights nor the course's source model are on disk, and the source model is "
                         "pretrained by a single process: run this command once without torchrun (or lesson 2 or 3), "
                         "or pass --weights imagenet (online), --weights random or --weights <checkpoint file>.")
    return pretrained.course_weights()


def choose_weights(choice: str) -> tuple[str | Path | None, str]:
    """(weights for models.build_resnet18, a sentence saying which they are)."""
    if choice == "course":
        return course_weights_here()
    if choice == "imagenet":
        return "imagenet", "Using torchvision's ImageNet weights (ResNet18_Weights.IMAGENET1K_V1)."
    if choice == "random":
        return None, "Using no pretrained weights: random init (a baseline, not transfer)."
    path = Path(choice)
    if not path.exists():
        raise SystemExit(f"--weights {choice}: no such file. Give course, imagenet, random or a checkpoint file.")
    return path, f"Using the weights in {path}."


def load_splits(args) -> tuple[data.ImageData, data.ImageData, data.ImageData]:
    """(train, validation, test): validation carved from the training part, as the course split does."""
    progress = distributed.is_main()
    splits = (data.load_image_folder(args.data, size=args.image_size, progress=progress) if args.data is not None
              else data.load_cifar10(progress=progress))
    if args.val_size is None:
        if len(splits.train) <= data.COURSE_VAL_SIZE:
            raise SystemExit(f"{len(splits.train):,} training images are too few for the course split's "
                             f"{data.COURSE_VAL_SIZE:,} validation images: pass --val-size (e.g. "
                             f"{max(1, len(splits.train) // 10)}).")
        train_set, val_set = data.course_split(splits.train)
    else:
        train_set, val_set = data.train_val_split(splits.train, n_val=args.val_size, seed=args.seed)
    return train_set, val_set, splits.test


def finetune(args) -> int:
    device = distributed.init_from_env(config.get_device())
    say = print if distributed.is_main() else (lambda *a, **k: None)
    progress = distributed.is_main()
    config.setup(seed=args.seed, device=str(device), quiet=not distributed.is_main())
    n = distributed.world_size()
    say(f"{n} process(es) on {device.type}" + (f" ({'nccl' if device.type == 'cuda' else 'gloo'})" if n > 1 else "")
        + f"; batch {args.batch_size} per process, global batch {n * args.batch_size}")
    with distributed.main_first():  # rank 0 decodes and caches, downloads or pretrains; the others read its files
        train_set, val_set, test_set = load_splits(args)
        weights, why = choose_weights(args.weights)
        config.seed_everything(args.seed)  # the same new head on every rank (DDP copies rank 0's anyway)
        model = models.build_resnet18(len(train_set.classes), weights=weights)
    say(f"train {len(train_set):,}  validation {len(val_set):,}  test {len(test_set):,}  "
        f"({len(train_set.classes)} classes)")
    say(why)
    stats = (model.weights_info["mean"], model.weights_info["std"])
    size = args.size or pipeline.default_resolution(device)
    say(f"input: {size} px, normalized with mean {[round(v, 3) for v in stats[0]]} and std "
        f"{[round(v, 3) for v in stats[1]]}, as the weights declare")

    if args.warmup_epochs:
        warm = pipeline.warm_up_head(model, train_set, val_set, epochs=args.warmup_epochs, normalize=stats,
                                     size=size, device=device, progress=progress)
        say(f"head warm-up: {warm.status()}")
    if args.lr is not None:
        peak_lr = args.lr
        say(f"one-cycle peak: {peak_lr:g} (given)")
    else:
        peak_lr = distributed.from_main(lambda: sweep_peak(model, train_set, args, stats, size, device, say))
    say(f"peak learning rate per stage for one process's batch of {args.batch_size}:")
    say(pipeline.describe_rates(model, models.param_groups(model, peak_lr, body_factor=args.body_factor)))
    scaled_peak = distributed.scaled_rates([], peak_lr)[1]
    if n > 1:
        say(f"linear scaling rule: the global batch is {n} x {args.batch_size}, so every rate is multiplied by {n} "
            f"(peak {scaled_peak:g})")

    _, history = pipeline.fine_tune(model, train_set, val_set, epochs=args.epochs, peak_lr=peak_lr, warmup_epochs=0,
                                    body_factor=args.body_factor, batch_size=args.batch_size, normalize=stats,
                                    size=size, device=device, checkpoint=args.out / "checkpoint.pt",
                                    resume=args.resume, sync_batchnorm=args.sync_batchnorm, progress=progress)
    for record in history.epochs:
        say(f"  epoch {record['epoch']}: training loss {record['train_loss']:.3f}, validation accuracy "
            f"{100 * record['val_acc']:.1f}%")
    say(f"fine-tuning: {len(history)} epoch(s) in {sum(history['seconds']) / 60:.1f} min, "
        f"{history.last.get('images_per_s', 0):.0f} training images/s in the last: {history.status()}")
    if history.diverged is not None:
        say("a diverged run has no test number: lower --lr and run again")
        return 1
    ev = train.evaluate(model, data.Batches(test_set, 500, normalize=stats, size=size, device=device), device=device)
    say(f"test accuracy of the chosen model (epoch {history.best_epoch}): {100 * ev.accuracy:.2f}% "
        f"on {len(test_set):,} test images")
    say(pipeline.per_class_report(ev, test_set.classes))
    if distributed.is_main():
        write_results(args.out, model, history, ev, {
            "processes": n, "batch_per_process": args.batch_size, "global_batch": n * args.batch_size,
            "peak_lr": peak_lr, "scaled_peak_lr": scaled_peak})
        say(f"written: {args.out / 'model.pt'} (the chosen weights), {args.out / 'summary.json'}")
    return 0


def sweep_peak(model, train_set, args, stats, size, device, say) -> float:
    """The lesson's peak: lr_find on the warmed-up model, then pipeline.onecycle_peak."""
    batches = data.Batches(train_set, args.batch_size, shuffle=True, augment=True, drop_last=True, normalize=stats,
                           size=size, device=device, seed=args.seed)
    finder = train.lr_find(model, batches, steps=args.sweep_steps, device=device, progress=distributed.is_main())
    peak_lr = pipeline.onecycle_peak(finder.suggestion)
    say(pipeline.describe_peak(finder.suggestion, peak_lr, finder.lowest_loss_lr))
    return peak_lr


def write_results(out: Path, model, history: train.History, ev: train.Evaluation, run: dict) -> None:
    """The chosen weights (model.pt) and the run's numbers (summary.json), for scripts and tests to read."""
    train.save_checkpoint(out / "model.pt", model, history=history)
    summary = {**run, "epochs": history.epochs, "best_epoch": history.best_epoch,
               "best_val_acc": history.best_val_acc, "test_acc": ev.accuracy, "test_images": int(ev.confusion.sum())}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    try:
        return finetune(args)
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
