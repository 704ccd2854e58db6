"""Transfer learning experiments: the same few-label task solved by several strategies, on the same data
and the same budget; the BatchNorm trap; what the pretrained features see; the freeze explorer's runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import config, data, features, models, pretrained, train


@dataclass
class Task:
    """A few-label classification task and the pretrained weights to start from."""

    train: data.ImageData
    val: data.ImageData
    test: data.ImageData
    weights: str | Path
    normalization: str = "cifar"
    size: int | None = None  # input resolution the model sees (None: the images' own)

    @property
    def labels_per_class(self) -> int:
        return int(self.train.class_counts().min())

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)


def make_task(splits: data.Splits, weights, labels_per_class: int, *, classes=pretrained.TARGET_CLASSES,
              val_per_class: int = 50, test_per_class: int | None = None, size: int | None = None,
              seed: int = 0) -> Task:
    """`labels_per_class` training images of each target class, a validation set from the rest of the
    training split, and the target classes' test images (all, or `test_per_class` of each)."""
    pool = data.select_classes(splits.train, classes)
    fit_pool, val_pool = data.train_val_split(pool, n_val=val_per_class * len(classes), seed=seed)
    test = data.select_classes(splits.test, classes)
    if test_per_class is not None:
        test = data.per_class(test, test_per_class, seed=seed)
    normalization = "imagenet" if weights == "imagenet" else models.read_state_dict(Path(weights))[1].get("normalization", "cifar")
    return Task(data.per_class(fit_pool, labels_per_class, seed=seed), val_pool, test, weights, normalization, size)


def input_size_for(weights, device: torch.device) -> int:
    """The resolution to feed: 32 px for the course's source model (its training size); ImageNet
    weights were learnt on 224 px objects, so give them more pixels: 64 on a CPU, 128 on a GPU."""
    if weights != "imagenet":
        return 32
    return 128 if device.type == "cuda" else 64


# -------------------------------------------------------------------------------------- strategies
STRATEGIES = {
    # name: (what is trained, peak learning rate)
    "from scratch": ("every layer, random init", 0.05),
    "linear probe": ("the head only, on cached features of the frozen backbone", 0.05),
    "fine-tune layer4": ("layer4 and the head; stem..layer3 frozen", 0.02),
    "fine-tune all": ("every layer, from the pretrained weights", 0.01),
    "warm-up, then all": ("the head for the first third of the epochs, then everything", 0.01),
    "discriminative rates": ("everything; each earlier stage at 0.4x the next one's rate", 0.02),
}


EPOCH_IMAGES = 1000  # a training "epoch" shows at least this many images (a few-label set repeats)


def _batches(task: Task, part: str, shuffle: bool, seed: int, device, batch_size: int = 64):
    d = getattr(task, part)
    if not shuffle:
        return data.Batches(d, 500, normalize=task.normalization, size=task.size, device=device)
    bs = min(batch_size, len(d))
    return data.Batches(d, bs, shuffle=True, augment=True, drop_last=True, normalize=task.normalization,
                        size=task.size, device=device, seed=seed, repeats=max(1, -(-EPOCH_IMAGES // len(d))))


def run_strategy(name: str, task: Task, *, epochs: int, lr: float | None = None, seed: int = 0, device=None,
                 progress: bool = True) -> dict:
    """Train with one of STRATEGIES and measure it on the task's test set. Returns a result row."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {list(STRATEGIES)}")
    device = torch.device(device) if device is not None else config.get_device()
    lr = lr if lr is not None else STRATEGIES[name][1]
    config.seed_everything(seed)
    k = task.num_classes
    model = models.build_resnet18(k, weights=None if name == "from scratch" else task.weights)
    t0 = time.perf_counter()
    fit_kw = dict(device=device, progress=progress, desc=f"{name} ({task.labels_per_class}/class)")
    train_b = _batches(task, "train", True, seed, device)
    val_b = _batches(task, "val", False, seed, device)
    if name == "linear probe":
        history = features.fit_head(model, task.train, task.val, epochs=epochs, lr=lr, batch_size=64,
                                    normalize=task.normalization, size=task.size, seed=seed, **fit_kw)
        test_features = features.extract_features(model, task.test, normalize=task.normalization, size=task.size,
                                                  device=device, progress=False)
        ev = train.evaluate(model.fc, data.TensorBatches(test_features, task.test.labels, 1000), device=device)
    else:
        if name == "fine-tune layer4":
            models.freeze(model, "layer3")
        if name == "warm-up, then all":
            warm = max(1, epochs // 3)
            models.freeze(model, "layer4")
            first = train.fit(model, train_b, val_b, epochs=warm, lr=10 * lr, **fit_kw)
            models.unfreeze(model)
            history = train.fit(model, train_b, val_b, epochs=epochs - warm, lr=lr, **fit_kw)
            history.epochs = first.epochs + history.epochs
            history.diverged = first.diverged or history.diverged
        else:
            groups = models.param_groups(model, lr, body_factor=0.4) if name == "discriminative rates" else None
            history = train.fit(model, train_b, val_b, epochs=epochs, lr=lr, groups=groups, **fit_kw)
        ev = train.evaluate(model, _batches(task, "test", False, seed, device), device=device)
    return {"strategy": name, "labels_per_class": task.labels_per_class, "test_acc": ev.accuracy,
            "best_val_acc": max(history["val_acc"]) if len(history) else float("nan"),
            "trainable_params": models.trainable_parameters(model) if name != "linear probe" else
            sum(p.numel() for p in model.fc.parameters()),
            "seconds": time.perf_counter() - t0, "diverged": history.diverged is not None}


def compare_strategies(splits: data.Splits, weights, labels_per_class=(10, 50, 100), strategies=None, *,
                       epochs: int = 30, seed: int = 0, test_per_class: int | None = None, size: int | None = None,
                       device=None, progress: bool = True) -> list[dict]:
    """Every strategy for every label count, on the same data with the same number of epochs."""
    rows = []
    for n in labels_per_class:
        task = make_task(splits, weights, n, test_per_class=test_per_class, size=size, seed=seed)
        for name in strategies or STRATEGIES:
            rows.append(run_strategy(name, task, epochs=epochs, seed=seed, device=device, progress=progress))
    return rows


def results_table(rows: list[dict]) -> str:
    """Test accuracy (%) per strategy (rows) and labels per class (columns), as aligned text."""
    labels = sorted({r["labels_per_class"] for r in rows})
    names = list(dict.fromkeys(r["strategy"] for r in rows))
    acc = {(r["strategy"], r["labels_per_class"]): r["test_acc"] for r in rows}
    lines = [f"{'strategy':<22}" + "".join(f"{str(n) + ' labels/class':>18}" for n in labels)]
    for name in names:
        lines.append(f"{name:<22}" + "".join(f"{100 * acc[(name, n)]:>17.1f}%" for n in labels))
    return "\n".join(lines)


def best_strategy(rows: list[dict], labels_per_class: int) -> dict:
    return max((r for r in rows if r["labels_per_class"] == labels_per_class), key=lambda r: r["test_acc"])


def accuracy_of(rows: list[dict], strategy: str, labels_per_class: int) -> float:
    return next(r["test_acc"] for r in rows if r["strategy"] == strategy and r["labels_per_class"] == labels_per_class)


# ---------------------------------------------------------------------------------- BatchNorm trap
def batchnorm_trap(task: Task, *, epochs: int, lr: float = 0.05, seed: int = 0, device=None,
                   progress: bool = True) -> dict:
    """Train only the head of a frozen backbone twice, same data and seed: with frozen BatchNorm in eval
    mode (the default), and with `requires_grad=False` alone, which lets BN's running statistics move."""
    device = torch.device(device) if device is not None else config.get_device()
    out = {}
    for policy in ("frozen", "naive"):
        config.seed_everything(seed)
        model = models.freeze(models.build_resnet18(task.num_classes, weights=task.weights), "layer4", bn=policy)
        before = {n: b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")}
        train.fit(model, _batches(task, "train", True, seed, device), epochs=epochs, lr=lr, device=device,
                  progress=progress, desc=f"head only, BN {policy}")
        moved = sum((b.cpu() - before[n]).abs().mean().item() for n, b in model.named_buffers() if n in before) / len(before)
        ev = train.evaluate(model, _batches(task, "test", False, seed, device), device=device)
        out[policy] = {"test_acc": ev.accuracy, "running_mean_change": moved}
    return out


# ------------------------------------------------------------------------------ what features see
@torch.no_grad()
def nearest_neighbours(model, queries: data.ImageData, pool: data.ImageData, k: int = 5, *, normalize="cifar",
                       size=None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (Q, k) into `pool` of each query's k most similar images by cosine similarity of the
    pooled backbone features, and the similarities."""
    kw = dict(normalize=normalize, size=size, device=device, progress=False)
    q = torch.nn.functional.normalize(features.extract_features(model, queries, **kw), dim=1)
    p = torch.nn.functional.normalize(features.extract_features(model, pool, **kw), dim=1)
    sims, idx = (q @ p.T).topk(k, dim=1)
    return idx, sims


def neighbour_label_agreement(idx: torch.Tensor, queries: data.ImageData, pool: data.ImageData) -> float:
    """Share of neighbours that have their query's class."""
    return (pool.labels[idx] == queries.labels[:, None]).float().mean().item()


def project_2d(feats: torch.Tensor) -> torch.Tensor:
    """The two principal components of the features (centred), for a scatter plot."""
    centred = feats - feats.mean(0)
    _, _, v = torch.pca_lowrank(centred, q=2, center=False)
    return centred @ v[:, :2]


# ------------------------------------------------------------------------------- freeze explorer
@dataclass
class FreezeExperiment:
    """Short fine-tunes at a chosen freeze depth and learning rate, remembered so a repeat is instant.

    depth: how many stages are frozen, 0 (none) .. 5 (everything but the head).
    """

    task: Task
    epochs: int = 10
    seed: int = 0
    device: torch.device | None = None
    runs: dict = field(default_factory=dict)
    _throughput: dict = field(default_factory=dict)

    def __post_init__(self):
        self.device = torch.device(self.device) if self.device is not None else config.get_device()

    def estimate_seconds(self, depth: int) -> float:
        """Measured speed of two training steps at this depth, times the run's images, plus evaluation."""
        if depth not in self._throughput:
            model = models.freeze(models.build_resnet18(self.task.num_classes, weights=self.task.weights), depth)
            batch = next(iter(_batches(self.task, "train", True, self.seed, self.device)))
            self._throughput[depth] = train.step_throughput(model, [batch] * 3, device=self.device)
        images = self.epochs * len(self.task.train)
        eval_images = self.epochs * len(self.task.val) + len(self.task.test)
        return images / self._throughput[depth] + eval_images / (3 * self._throughput[depth])

    def run(self, depth: int, lr: float, progress: bool = True) -> dict:
        """Fine-tune with the first `depth` stages frozen; a (depth, lr) already run is recalled, not rerun."""
        key = (int(depth), float(f"{lr:.3g}"))
        if key in self.runs:
            return {**self.runs[key], "cached": True}
        config.seed_everything(self.seed)
        model = models.build_resnet18(self.task.num_classes, weights=self.task.weights)
        models.freeze(model, depth)
        t0 = time.perf_counter()
        history = train.fit(model, _batches(self.task, "train", True, self.seed, self.device),
                            _batches(self.task, "val", False, self.seed, self.device), epochs=self.epochs, lr=key[1],
                            device=self.device, progress=progress, desc=f"{depth} stages frozen, lr {key[1]:g}")
        if history.diverged:
            acc = float("nan")
        else:
            acc = train.evaluate(model, _batches(self.task, "test", False, self.seed, self.device), device=self.device).accuracy
        row = {"depth": key[0], "frozen": ", ".join(models.STAGES[:key[0]]) or "nothing", "lr": key[1],
               "test_acc": acc, "trainable_params": models.trainable_parameters(model),
               "seconds": time.perf_counter() - t0, "diverged": history.diverged is not None, "cached": False}
        self.runs[key] = row
        return row

    def table(self) -> list[dict]:
        return [self.runs[k] for k in sorted(self.runs)]
