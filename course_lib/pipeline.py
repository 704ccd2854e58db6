"""The full fine-tuning pipeline of lesson 3: what a resolution costs, the recipe (head warm-up, then
every layer under a one-cycle schedule, discriminative rates optional), mistakes worth looking at, and the
"common mistake" recipe that reports accuracy on the data it trained on.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import config, data, features, models, train


# ------------------------------------------------------------------------------- resolution, cost
def flops_per_image(model: nn.Module, size: int) -> float:
    """Forward-pass floating-point operations for one size x size image (counted, not estimated)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    model.train(was_training)
    return float(counter.get_total_flops())


def resolution_costs(sizes=(32, 64, 128, 224), *, n_images: int = 45_000, device=None,
                     batch_size: int | None = None) -> list[dict]:
    """Per resolution: GFLOPs per image (forward), measured training images/s, and the epoch time it implies."""
    device = torch.device(device) if device is not None else config.get_device()
    rows = []
    for size in sizes:
        model = models.build_resnet18(10)
        gflops = flops_per_image(model, size) / 1e9
        bs = batch_size or (256 if device.type == "cuda" else max(8, min(64, 64 * 32 * 32 // (size * size) * 4)))
        batch = (torch.randn(bs, 3, size, size, device=device), torch.randint(0, 10, (bs,), device=device))
        ips = train.step_throughput(model, [batch] * (3 if device.type == "cpu" else 6), device=device)
        rows.append({"size": size, "gflops": gflops, "images_per_s": ips, "epoch_seconds": n_images / ips})
    return rows


def default_resolution(device: torch.device) -> int:
    """32 px on a CPU (minutes per epoch); 128 px on a GPU, where more pixels are affordable and let
    pretrained features see objects at a scale closer to their training."""
    return 128 if device.type == "cuda" else 32


def largest_size_within(costs: list[dict], budget_seconds: float, epochs: int) -> int | None:
    """The largest resolution whose `epochs` fit in the budget (None if even the smallest does not)."""
    fitting = [r["size"] for r in costs if r["epoch_seconds"] * epochs <= budget_seconds]
    return max(fitting) if fitting else None


# -------------------------------------------------------------------------------------- the recipe
def warm_up_head(model: nn.Module, train_data: data.ImageData, val_data: data.ImageData, *, epochs: int,
                 lr: float = 0.05, normalize="cifar", size=None, device=None, progress: bool = True) -> train.History:
    """Train only the new head on cached features of the frozen backbone (one backbone pass, then
    milliseconds per epoch), so full fine-tuning starts from a head that already makes sense."""
    history = features.fit_head(model, train_data, val_data, epochs=epochs, lr=lr, normalize=normalize, size=size,
                                device=device, progress=progress, desc="head warm-up (cached features)")
    models.unfreeze(model)
    return history


def fine_tune(model: nn.Module, train_data: data.ImageData, val_data: data.ImageData, *, epochs: int,
              peak_lr: float, warmup_epochs: int = 2, body_factor: float = 1.0, batch_size: int = 128,
              label_smoothing: float = 0.0, normalize="cifar", size=None, device=None, checkpoint=None,
              callback=None, progress: bool = True) -> tuple[train.History | None, train.History]:
    """The lesson's recipe: head warm-up on cached features (skipped with warmup_epochs=0, e.g. for a
    random init), then every layer (each stage at `body_factor` times the next one's rate: 1.0 is one
    rate for all, < 1 discriminative), one-cycle, flip/crop; the best validation epoch's weights are kept."""
    device = torch.device(device) if device is not None else config.get_device()
    warm = None
    if warmup_epochs:
        warm = warm_up_head(model, train_data, val_data, epochs=warmup_epochs, normalize=normalize, size=size,
                            device=device, progress=progress)
    batches = dict(normalize=normalize, size=size, device=device)
    history = train.fit(model, data.Batches(train_data, batch_size, shuffle=True, augment=True, drop_last=True, **batches),
                        data.Batches(val_data, 500, **batches), epochs=epochs, lr=peak_lr,
                        groups=models.param_groups(model, peak_lr, body_factor=body_factor), schedule="onecycle",
                        label_smoothing=label_smoothing, device=device, checkpoint=checkpoint, callback=callback,
                        progress=progress, desc="fine-tuning")
    return warm, history


def onecycle_peak(suggestion: float, low: float = 0.02, high: float = 0.1) -> float:
    """One-cycle's peak from lr_find's steepest-descent rate: one-cycle spends most steps well below its
    peak (it warms up from peak/25 and anneals towards 0), so the peak sits a few times above the steepest
    point; 4x, kept within [low, high]."""
    return min(max(4 * suggestion, low), high)


def most_confident_mistakes(ev: train.Evaluation, k: int = 12) -> torch.Tensor:
    """Indices of the k wrong predictions made with the highest confidence."""
    wrong = torch.nonzero(ev.predictions != ev.labels).flatten()
    confidence = ev.probabilities[wrong, ev.predictions[wrong]]
    return wrong[confidence.argsort(descending=True)[:k]]


# ------------------------------------------------------------------------------ the common mistake
def leaky_recipe(weights, splits_train: data.ImageData, test: data.ImageData, *, n_train: int, n_test: int,
                 epochs: int, size=None, seed: int = 0, device=None, progress: bool = True) -> dict:
    """A widely copied recipe in miniature: it fine-tunes on the set it calls "validation", reports accuracy
    on that same set, and feeds unnormalized pixels. Returns its reported number and the same model's
    accuracy on held-out test images. (It also loads weights with the deprecated `pretrained=True`; here
    the weights come through the same loader as everywhere else, since that call needs the internet.)"""
    config.seed_everything(seed)
    device = torch.device(device) if device is not None else config.get_device()
    per = max(1, n_train // len(splits_train.classes))
    its_validation = data.per_class(splits_train, per, seed=seed)
    held_out = data.per_class(test, max(1, n_test // len(test.classes)), seed=seed)
    model = models.build_resnet18(len(splits_train.classes), weights=weights)
    batches = data.Batches(its_validation, 32, shuffle=True, normalize=None, size=size, device=device, seed=seed)
    train.fit(model, batches, epochs=epochs, lr=1e-3, momentum=0.9, weight_decay=0.0, schedule="constant",
              device=device, progress=progress, keep_best=False, desc="the leaky recipe")
    reported = train.evaluate(model, data.Batches(its_validation, 500, normalize=None, size=size), device=device)
    honest = train.evaluate(model, data.Batches(held_out, 500, normalize=None, size=size), device=device)
    return {"reported_acc": reported.accuracy, "test_acc": honest.accuracy, "n_train": len(its_validation),
            "n_test": len(held_out)}
