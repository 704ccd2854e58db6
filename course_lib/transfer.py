"""Transfer learning experiments: the same few-label task solved by several strategies, on the same data
and the same budget; the BatchNorm trap; what the pretrained features see; the freeze explorer's runs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import budget, config, data, features, models, pretrained, train


@dataclass
class Task:
    """A few-label classification task: training and validation images, and the weights to start from.

    There is no test set here on purpose: everything decided with a Task (strategy, freeze depth, learning
    rate, best epoch) is decided on validation data. Test images are handed over once, to `accuracy_on_test`.
    """

    train: data.ImageData
    val: data.ImageData
    weights: str | Path
    normalization: str = "cifar"
    size: int | None = None  # input resolution the model sees (None: the images' own)

    @property
    def labels_per_class(self) -> int:
        return int(self.train.class_counts().min())

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def labelled_per_class(self) -> int:
        """Labels the task really uses per class: training images plus validation images."""
        return int(self.train.class_counts().min() + self.val.class_counts().min())


def make_task(splits: data.Splits, weights, labels_per_class: int, *, classes=pretrained.TARGET_CLASSES,
              size: int | None = None, seed: int = 0) -> Task:
    """`labels_per_class` training images of each target class from the course split's training part,
    and as many validation images per class from its validation part (a validation set larger than the
    training budget would be labels the budget does not count). Only `splits.train` is read."""
    course_train, course_val = data.course_split(splits.train)
    train_part = data.per_class(data.select_classes(course_train, classes), labels_per_class, seed=seed)
    val_part = data.per_class(data.select_classes(course_val, classes), labels_per_class, seed=seed)
    return Task(train_part, val_part, weights, normalization_of(weights), size)


def normalization_of(weights) -> str:
    """The input normalization the weights were trained with."""
    return models.describe_weights(weights)["normalization"]


def target_test_set(splits: data.Splits, classes=pretrained.TARGET_CLASSES, per_class: int | None = None,
                    seed: int = 0) -> data.ImageData:
    """The target classes' test images (all, or `per_class` of each): for the chosen model only."""
    test = data.select_classes(splits.test, classes)
    return test if per_class is None else data.per_class(test, per_class, seed=seed)


INPUT_SIZES = (32, 64, 128, 224)  # the sizes lesson 3 measures too: one resolution policy for both lessons


def choose_input_size(splits: data.Splits, weights, labels_per_class, *, spent, max_epochs: int, sizes=INPUT_SIZES,
                      **plan_kw) -> tuple[int, budget.Plan]:
    """Lesson 3's rule for lesson 2: the largest size at which the recipe's `max_epochs` fit the budget, else
    the smallest, with the plan at that size. Sizes are planned in ascending order and the search stops at the
    first that does not fit (more pixels only cost more), so a slow machine measures only what it can afford.
    `spent()` says how many seconds of the budget are gone, measurements included."""
    chosen = None
    for size in sorted(sizes):
        plan = plan_lesson(splits, weights, labels_per_class, spent_seconds=spent(), max_epochs=max_epochs,
                           size=size, **plan_kw)
        recipe_fits = plan.epochs == max_epochs and plan.fits
        if chosen is None or recipe_fits:
            chosen = (size, plan)
        if not recipe_fits:
            break
    return chosen


def _batches(task: Task, part: str, shuffle: bool, seed: int, device):
    if shuffle:
        return training_batches(task, device, seed)
    return evaluation_batches(task, getattr(task, part), device)


def training_batches(task: Task, device=None, seed: int = 0) -> data.Batches:
    """Shuffled, augmented batches of the task's training images: epoch_steps() batches of BATCH_SIZE per
    epoch, drawn from consecutive shuffles, whatever the label budget."""
    d = task.train
    return data.Batches(d, min(BATCH_SIZE, len(d)), shuffle=True, augment=True, normalize=task.normalization,
                        size=task.size, device=device, seed=seed, steps=epoch_steps())


def evaluation_batches(task: Task, images: data.ImageData, device=None) -> data.Batches:
    """Unaugmented batches of `images`, prepared like the task's training images."""
    return data.Batches(images, 500, normalize=task.normalization, size=task.size, device=device)


# -------------------------------------------------------------------------------------- strategies
STRATEGIES = {
    # name: (what is trained, peak learning rate). The rates are the usual starting points (a fresh
    # network or a lone head tolerates larger steps than pretrained layers); they were not tuned on
    # this task, and certainly not on its test images.
    "from scratch": ("every layer, random init", 0.05),
    "linear probe": ("the head only, on cached features of the frozen backbone", 0.05),
    "fine-tune layer4": ("layer4 and the head; stem..layer3 frozen", 0.02),
    "fine-tune all": ("every layer, from the pretrained weights", 0.01),
    "warm-up, then all": ("the head at 10x lr for a third of the epochs (at least one), then everything at lr", 0.01),
    "discriminative rates": ("everything; each earlier stage at 0.4x the next one's rate", 0.02),
}


# A training "epoch" of this lesson is EPOCH_STEPS optimizer steps of BATCH_SIZE images for every strategy and
# label budget: a few-label set is shown several times (reshuffled), so budgets differ in labels, not in steps.
BATCH_SIZE = 50  # the smallest budget's whole training set: 10 labels x 5 classes
EPOCH_STEPS = 20


def epoch_steps() -> int:
    """EPOCH_STEPS, or a fifth of it in fast mode (same code, fewer steps)."""
    return config.pick(EPOCH_STEPS, max(1, EPOCH_STEPS // 5))


def warm_up_split(epochs: int) -> tuple[int, int]:
    """Epochs of "warm-up, then all": (head only, then everything). A third on the head, at least one each,
    so a short budget still runs both phases (2 epochs: one and one)."""
    warm = max(1, epochs // 3)
    return warm, max(1, epochs - warm)


def run_strategy(name: str, task: Task, *, epochs: int, lr: float | None = None, seed: int = 0, device=None,
                 progress: bool = True) -> tuple[dict, torch.nn.Module]:
    """Train with one of STRATEGIES, keep its best validation epoch, and return (result row, model).

    The row's `val_acc` is None for a run that diverged; `diverged` then says where."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {list(STRATEGIES)}")
    device = torch.device(device) if device is not None else config.get_device()
    lr = lr if lr is not None else STRATEGIES[name][1]
    config.seed_everything(seed)
    model = models.build_model(task.num_classes, models.scratch_of(task.weights) if name == "from scratch" else task.weights)
    t0 = time.perf_counter()
    fit_kw = dict(device=device, progress=progress, desc=f"{name} ({task.labels_per_class}/class)")
    train_b = _batches(task, "train", True, seed, device)
    val_b = _batches(task, "val", False, seed, device)
    if name == "linear probe":
        history = features.fit_head(model, task.train, task.val, epochs=epochs, lr=lr, batch_size=BATCH_SIZE,
                                    normalize=task.normalization, size=task.size, seed=seed,
                                    steps=epoch_steps(), **fit_kw)  # as many steps as the others
        trainable = sum(p.numel() for p in model.fc.parameters())
    elif name == "warm-up, then all":
        warm, rest = warm_up_split(epochs)
        models.freeze(model, "layer4")
        first = train.fit(model, train_b, val_b, epochs=warm, lr=10 * lr, **dict(fit_kw, desc=fit_kw["desc"] + " (head)"))
        models.unfreeze(model)
        trainable = models.trainable_parameters(model)
        # the row reports the phase whose best epoch the returned model holds: the second one
        history = first if first.diverged else train.fit(model, train_b, val_b, epochs=rest, lr=lr,
                                                         **dict(fit_kw, desc=fit_kw["desc"] + " (all)"))
    else:
        if name == "fine-tune layer4":
            models.freeze(model, "layer3")
        groups = models.param_groups(model, lr, body_factor=0.4) if name == "discriminative rates" else None
        history = train.fit(model, train_b, val_b, epochs=epochs, lr=lr, groups=groups, **fit_kw)
        trainable = models.trainable_parameters(model)
    row = {"strategy": name, "labels_per_class": task.labels_per_class, "labelled_per_class": task.labelled_per_class,
           "val_acc": None if history.diverged else history.best_val_acc, "diverged": history.status() if history.diverged else None,
           "trainable_params": trainable, "seconds": time.perf_counter() - t0, "seed": seed}
    return row, model


def strategy_speeds(task: Task, device=None) -> dict[str, float]:
    """Training images/s of this task's batches with everything trainable ("all"), stem..layer3 frozen
    ("layer4") and only the head trainable ("head"), measured on a few steps: what a plan of the lesson's
    runs is built from."""
    device = torch.device(device) if device is not None else config.get_device()
    batch = next(iter(training_batches(task, device)))
    scratch = models.scratch_of(task.weights)  # the same network: speed does not depend on the weights' values
    return {name: train.step_throughput(models.freeze(models.build_model(task.num_classes, scratch), depth), [batch] * 4,
                                        device=device)
            for name, depth in (("all", 0), ("layer4", "layer3"), ("head", "layer4"))}


def strategy_epoch_seconds(name: str, task: Task, speeds: dict[str, float]) -> float:
    """Expected seconds of one epoch of a strategy (validation included) at measured speeds. "Warm-up, then
    all" is counted as if every epoch trained everything (its head-only epochs cost less: an upper bound, as
    its split depends on the epochs planned), and the linear probe trains on cached features (one backbone
    pass, counted here as if spread over a single epoch)."""
    batches = training_batches(task)
    train_images = len(batches) * batches.batch_size
    val_images = len(task.val)
    per_image = {"from scratch": 1 / speeds["all"], "fine-tune all": 1 / speeds["all"],
                 "discriminative rates": 1 / speeds["all"], "fine-tune layer4": 1 / speeds["layer4"],
                 "warm-up, then all": 1 / speeds["all"], "linear probe": 0.0}[name]
    passes = (len(task.train) + val_images) / (budget.EVAL_SPEEDUP * speeds["all"])
    return train_images * per_image + budget.training_seconds(0, val_images, speeds["all"]) + (
        passes if name == "linear probe" else 0.0)


def plan_lesson(splits: data.Splits, weights, labels_per_class, *, budget_seconds: float, spent_seconds: float,
                max_epochs: int, trap_epochs: int, learner_epochs: int, test_images: int, seeds: int = 3,
                size: int | None = None, device=None) -> budget.Plan:
    """Lesson 2's epochs (every strategy at every label budget, the seed spread of two strategies at the
    smallest budget, and the freeze sweep over six depths at half the epochs), planned from speeds measured
    here so that the lesson fits `budget_seconds`. Its fixed work (the BatchNorm trap, the learner's own loop,
    the test measurements: `test_images` evaluated in all) is estimated at the same speeds and budgeted too; all
    of it with budget.UNREVISED_PLAN_OVERHEAD, since this plan is made once and never revised."""
    tasks = {n: make_task(splits, weights, n, size=size) for n in labels_per_class}
    fewest = tasks[min(labels_per_class)]
    speeds = strategy_speeds(fewest, device)
    per_epoch = sum(strategy_epoch_seconds(name, t, speeds) for t in tasks.values() for name in STRATEGIES)
    full = strategy_epoch_seconds("fine-tune all", fewest, speeds)
    per_epoch += 2 * seeds * full + 6 * full / 2  # the seed spread, the freeze sweep
    per_epoch *= budget.UNREVISED_PLAN_OVERHEAD
    epoch_images = epoch_steps() * BATCH_SIZE
    fixed = budget.UNREVISED_PLAN_OVERHEAD * (
        2 * trap_epochs * epoch_images / speeds["head"] + learner_epochs * epoch_images / speeds["layer4"]
        + budget.training_seconds(0, test_images, speeds["all"]))
    return budget.plan_epochs("each of this lesson's training runs", per_epoch, budget_seconds, max_epochs=max_epochs,
                              other_seconds=spent_seconds + fixed, per_epoch="one epoch of all of them together")


@dataclass
class Comparison:
    """Every strategy's validation result per label budget, and the model chosen on validation for each."""

    rows: list[dict]
    chosen: dict[int, tuple[dict, torch.nn.Module]]  # labels per class -> (row, model)
    tasks: dict[int, Task]


def compare_strategies(splits: data.Splits, weights, labels_per_class=(10, 50, 100), strategies=None, *,
                       epochs: int = 30, seed: int = 0, size: int | None = None, classes=pretrained.TARGET_CLASSES,
                       device=None, progress: bool = True) -> Comparison:
    """Every strategy for every label budget, on the same data with the same number of epochs, judged on
    validation. Only the best model per budget is kept, for `accuracy_on_test`. Never reads `splits.test`."""
    rows, chosen, tasks = [], {}, {}
    for n in labels_per_class:
        task = tasks[n] = make_task(splits, weights, n, classes=classes, size=size, seed=seed)
        for name in strategies or STRATEGIES:
            row, model = run_strategy(name, task, epochs=epochs, seed=seed, device=device, progress=progress)
            rows.append(row)
            if row["val_acc"] is not None and (n not in chosen or row["val_acc"] > chosen[n][0]["val_acc"]):
                chosen[n] = (row, model)
    return Comparison(rows, chosen, tasks)


def accuracy_on_test(model: torch.nn.Module, task: Task, test: data.ImageData, device=None) -> float:
    """Accuracy of a model chosen on validation, on the test images: the one number to report."""
    return train.evaluate(model, evaluation_batches(task, test, device), device=device, details=False).accuracy


def seed_spread(splits: data.Splits, weights, labels_per_class: int, strategies, seeds=(0, 1, 2), *,
                epochs: int, size: int | None = None, classes=pretrained.TARGET_CLASSES, device=None,
                progress: bool = True) -> dict[str, list]:
    """Validation accuracy of each strategy for several seeds (another sample of labelled images and
    another initialization each time): how far apart two numbers must be to mean something."""
    out = {}
    for name in strategies:
        out[name] = [run_strategy(name, make_task(splits, weights, labels_per_class, classes=classes, size=size, seed=s),
                                  epochs=epochs, seed=s, device=device, progress=progress)[0]["val_acc"] for s in seeds]
    return out


def _percent(value) -> str:
    return "diverged" if value is None else f"{100 * value:.1f}%"


def gains_over_scratch(rows: list[dict], spread: dict[str, list], labels_per_class) -> dict[int, dict]:
    """Transfer's gain per label budget: "fine-tune all" minus "from scratch" on validation. Where the seed
    spread ran both (the smallest budget), the gain is the mean over its seeds and `seed_range` says how far
    the gain itself moved between seeds; elsewhere it is one seed's difference. A diverged run gives None."""
    out = {}
    for n in labels_per_class:
        full, scratch = accuracy_of(rows, "fine-tune all", n), accuracy_of(rows, "from scratch", n)
        seeds = [f - s for f, s in zip(spread.get("fine-tune all", []), spread.get("from scratch", []))
                 if f is not None and s is not None]
        if n == min(labels_per_class) and seeds and len(seeds) == len(spread["fine-tune all"]):
            out[n] = {"gain": sum(seeds) / len(seeds), "seeds": len(seeds), "seed_range": max(seeds) - min(seeds)}
        else:
            out[n] = {"gain": None if full is None or scratch is None else full - scratch, "seeds": 1,
                      "seed_range": None}
    return out


def accuracy_grid(rows: list[dict], down: str, across: str, title: str, unit: str, widths=(22, 18)) -> str:
    """Validation accuracies as aligned text: one line per value of `down` (in first-seen order), one column per
    value of `across` (sorted, headed with `unit`); a blank where a pair did not run, "diverged" where it diverged."""
    columns = sorted({r[across] for r in rows})
    acc = {(r[down], r[across]): r["val_acc"] for r in rows}
    first, rest = widths
    lines = [f"{title:<{first}}" + "".join(f"{f'{c} {unit}':>{rest}}" for c in columns)]
    lines += [f"{name:<{first}}" + "".join(f"{_percent(acc[(name, c)]) if (name, c) in acc else '':>{rest}}" for c in columns)
              for name in dict.fromkeys(r[down] for r in rows)]
    return "\n".join(lines)


def results_table(rows: list[dict]) -> str:
    """Validation accuracy per strategy (rows) and label budget (columns), as aligned text."""
    return accuracy_grid(rows, "strategy", "labels_per_class", "validation accuracy", "labels/class")


def best_strategy(rows: list[dict], labels_per_class: int) -> dict:
    """The row with the highest validation accuracy for this budget (diverged runs excluded)."""
    return max((r for r in rows if r["labels_per_class"] == labels_per_class and r["val_acc"] is not None),
               key=lambda r: r["val_acc"])


def accuracy_of(rows: list[dict], strategy: str, labels_per_class: int) -> float | None:
    """Validation accuracy of one strategy at one budget (None: it diverged)."""
    return next(r["val_acc"] for r in rows if r["strategy"] == strategy and r["labels_per_class"] == labels_per_class)


# --------------------------------------------------------------------------- input size and budget
IMAGENET_SIZES = (224, 160, 128, 96, 64)  # from ImageNet's native 224 px down: what ImageNet weights are tried at


def candidate_sizes(weights) -> tuple[int, ...]:
    """Input sizes worth trying for `weights`, largest first: ImageNet weights from their native 224 px down
    (features need the scale they were learnt at), the course's CIFAR source model at its 32 px, random init
    at 32 px (nothing to match). Fast mode tries the smallest alone."""
    native = models.describe_weights(weights)["native_size"]
    if native is None or native < min(IMAGENET_SIZES):
        return (native or 32,)
    sizes = tuple(size for size in IMAGENET_SIZES if size <= native)
    return config.pick(sizes, sizes[-1:])


def runs_epoch_seconds(task: Task, run_names, device=None) -> float:
    """Seconds of one epoch of every run named (STRATEGIES' names), validation included, at speeds measured on
    this task's batches, at its input size."""
    speeds = strategy_speeds(task, device)
    return sum(strategy_epoch_seconds(name, task, speeds) for name in run_names)


def choose_size_and_plan(train_data: data.ImageData, val_data: data.ImageData, weights, run_names, *,
                         budget_seconds: float, spent, max_epochs: int, min_epochs: int = 2, other_seconds: float = 0.0,
                         device=None) -> tuple[Task, budget.Plan, str]:
    """The largest of candidate_sizes(weights) at which `min_epochs` of every run fit the budget, the task at that
    size, its plan (as many epochs as fit, up to `max_epochs`) and a few lines saying why.

    The cost of one epoch is measured at the smallest size and scaled by the pixel count to the larger ones
    (an upper bound: a convolution's fixed costs weigh more at small sizes), then measured again at the size
    chosen, which is taken one size down if it then does not fit. `spent()`: seconds of the budget gone."""
    sizes = candidate_sizes(weights)
    normalization = normalization_of(weights)
    measured = {}

    def plan_at(size: int, epoch_seconds: float) -> budget.Plan:
        return budget.plan_epochs(f"each run at {size} px", epoch_seconds, budget_seconds, max_epochs=max_epochs,
                                  other_seconds=spent() + other_seconds, per_epoch="one epoch of every run together")

    def measure(size: int) -> float:
        if size not in measured:
            measured[size] = runs_epoch_seconds(Task(train_data, val_data, weights, normalization, size), run_names, device)
        return measured[size]

    smallest = sizes[-1]
    base = measure(smallest)
    estimates = {size: base * (size / smallest) ** 2 for size in sizes}
    chosen = next((size for size in sizes if plan_at(size, estimates[size]).epochs >= min_epochs
                   and plan_at(size, estimates[size]).fits), smallest)
    while True:
        plan = plan_at(chosen, measure(chosen))
        if (plan.fits and plan.epochs >= min_epochs) or chosen == smallest:
            break
        chosen = sizes[sizes.index(chosen) + 1]
    def shown(size: int) -> str:  # an estimate from the closest measured size below (fixed costs weigh less there)
        if size in measured:
            return f"{size} px ≈ {measured[size] / 60:.1f} min/epoch (measured)"
        ref = max([s for s in measured if s <= size] or [min(measured)])
        return f"{size} px ≈ {measured[ref] * (size / ref) ** 2 / 60:.1f} min/epoch (estimated from {ref} px)"

    lines = [f"sizes tried for these weights (native {models.describe_weights(weights)['native_size'] or 'none'}): "
             + ", ".join(shown(s) for s in sizes)]
    if len(sizes) > 1:
        lines.append(f"chosen: {chosen} px, the largest at which {min_epochs} epochs of every run fit the "
                     f"{budget_seconds / 60:.0f}-minute budget" if plan.fits and plan.epochs >= min_epochs else
                     f"chosen: {chosen} px, the smallest; {plan.epochs} epoch(s) of every run "
                     + ("fit the budget" if plan.fits else "do not even fit the budget"))
    lines.append(plan.describe())
    return Task(train_data, val_data, weights, normalization, chosen), plan, "\n".join(lines)


# ------------------------------------------------------------------------- where features come from
def probe_by_size(train_data: data.ImageData, val_data: data.ImageData, sources: dict, sizes, *, epochs: int = 10,
                  lr: float = 0.05, seed: int = 0, device=None, progress: bool = True) -> list[dict]:
    """Validation accuracy of a linear probe (a linear classifier on the pooled features of the frozen network,
    computed once and cached) for each source of weights (name -> weights) at each input size: where features
    transfer. Features are standardized with the training images' statistics first: networks and sizes give
    features of very different scales, and one learning rate must suit them all."""
    rows = []
    for name, weights in sources.items():
        normalization = normalization_of(weights)
        for size in sizes:
            t0 = time.perf_counter()
            config.seed_everything(seed)
            network = models.build_model(len(train_data.classes), weights)
            kw = dict(normalize=normalization, size=size, device=device, progress=progress)
            fit_feats, val_feats = (features.extract_features(network, part, **kw) for part in (train_data, val_data))
            mean, std = fit_feats.mean(0), fit_feats.std(0).clamp(min=1e-6)
            probe = torch.nn.Linear(fit_feats.shape[1], len(train_data.classes))
            history = train.fit(probe, data.TensorBatches((fit_feats - mean) / std, train_data.labels,
                                                          min(BATCH_SIZE, len(train_data)), shuffle=True, seed=seed,
                                                          steps=epoch_steps()),
                                data.TensorBatches((val_feats - mean) / std, val_data.labels, 1000), epochs=epochs,
                                lr=lr, device=device, progress=progress, desc=f"{name}, {size} px")
            rows.append({"source": name, "size": size, "val_acc": None if history.diverged else history.best_val_acc,
                         "diverged": history.status() if history.diverged else None,
                         "seconds": time.perf_counter() - t0})
    return rows


def probe_table(rows: list[dict]) -> str:
    """probe_by_size's rows as a table: sources down, sizes across."""
    return accuracy_grid(rows, "source", "size", "linear probe, validation", "px", widths=(34, 9))


# ---------------------------------------------------------------------------------- BatchNorm trap
def batchnorm_trap(task: Task, *, epochs: int, lr: float = 0.05, seed: int = 0, device=None,
                   progress: bool = True) -> dict:
    """Train only the head of a frozen backbone twice, same data and seed: with frozen BatchNorm in eval
    mode (the default), and with `requires_grad=False` alone, which lets BN's running statistics move."""
    device = torch.device(device) if device is not None else config.get_device()
    out = {}
    for policy in ("frozen", "naive"):
        config.seed_everything(seed)
        model = models.freeze(models.build_model(task.num_classes, task.weights), "layer4", bn=policy)
        before = {n: b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")}
        train.fit(model, _batches(task, "train", True, seed, device), epochs=epochs, lr=lr, device=device,
                  progress=progress, desc=f"head only, BN {policy}")
        moved = sum((b.cpu() - before[n]).abs().mean().item() for n, b in model.named_buffers() if n in before) / len(before)
        ev = train.evaluate(model, _batches(task, "val", False, seed, device), device=device)
        out[policy] = {"val_acc": ev.accuracy, "running_mean_change": moved}
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


def filter_smoothness(weight: torch.Tensor) -> float:
    """Mean correlation between horizontally and vertically neighbouring weights of conv filters: about 0
    for random noise, near 1 for smooth blobs and edges."""
    w = weight.detach().float().cpu()
    w = w - w.mean(dim=(-2, -1), keepdim=True)
    pairs = [(w[..., :, :-1], w[..., :, 1:]), (w[..., :-1, :], w[..., 1:, :])]
    corr = [((a * b).sum() / ((a * a).sum() * (b * b).sum()).sqrt()).item() for a, b in pairs]
    return sum(corr) / len(corr)


def project_2d(feats: torch.Tensor) -> torch.Tensor:
    """The two principal components of the features (centred), for a scatter plot."""
    centred = feats - feats.mean(0)
    _, _, v = torch.pca_lowrank(centred, q=2, center=False)
    return centred @ v[:, :2]


# ------------------------------------------------------------------------------- freeze explorer
@dataclass
class FreezeExperiment:
    """Short fine-tunes at a chosen freeze depth and learning rate, judged on validation and remembered,
    so a repeat is instant. The weights of the best run so far are kept for the one test measurement.

    depth: how many stages are frozen, 0 (none) .. 5 (everything but the head).
    """

    task: Task
    epochs: int = 10
    seed: int = 0
    device: torch.device | None = None
    runs: dict = field(default_factory=dict)
    _throughput: dict = field(default_factory=dict)
    _best: tuple | None = None  # (key, state dict) of the run with the best validation accuracy

    def __post_init__(self):
        self.device = torch.device(self.device) if self.device is not None else config.get_device()

    def estimate_seconds(self, depth: int) -> float:
        """About how long a run takes: measured training steps at this depth, times the run's images,
        plus validation. A rough guide: a busy machine can take several times longer."""
        if depth not in self._throughput:
            model = models.freeze(models.build_model(self.task.num_classes, self.task.weights), depth)
            batch = next(iter(_batches(self.task, "train", True, self.seed, self.device)))
            self._throughput[depth] = train.step_throughput(model, [batch] * 3, device=self.device)
        images = self.epochs * epoch_steps() * BATCH_SIZE
        eval_images = self.epochs * len(self.task.val)
        return images / self._throughput[depth] + eval_images / (3 * self._throughput[depth])

    @staticmethod
    def key(depth: int, lr: float) -> tuple[int, float]:
        return int(depth), float(f"{lr:.3g}")

    def _train(self, depth: int, lr: float, progress: bool) -> tuple[torch.nn.Module, train.History]:
        config.seed_everything(self.seed)
        model = models.freeze(models.build_model(self.task.num_classes, self.task.weights), depth)
        history = train.fit(model, _batches(self.task, "train", True, self.seed, self.device),
                            _batches(self.task, "val", False, self.seed, self.device), epochs=self.epochs, lr=lr,
                            device=self.device, progress=progress, desc=f"{depth} stages frozen, lr {lr:g}")
        return model, history

    def run(self, depth: int, lr: float, progress: bool = True) -> dict:
        """Fine-tune with the first `depth` stages frozen; a (depth, lr) already run is recalled, not rerun."""
        key = self.key(depth, lr)
        if key in self.runs:
            return {**self.runs[key], "cached": True}
        t0 = time.perf_counter()
        model, history = self._train(*key, progress)
        val_acc = None if history.diverged else history.best_val_acc
        row = {"depth": key[0], "frozen": ", ".join(models.STAGES[:key[0]]) or "nothing", "lr": key[1],
               "val_acc": val_acc, "diverged": history.status() if history.diverged else None,
               "trainable_params": models.trainable_parameters(model), "seconds": time.perf_counter() - t0,
               "cached": False}
        self.runs[key] = row
        if val_acc is not None and (self._best is None or val_acc > self.runs[self._best[0]]["val_acc"]):
            self._best = (key, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        return row

    def best(self) -> dict | None:
        """The run with the highest validation accuracy so far (None before any run that did not diverge)."""
        return None if self._best is None else self.runs[self._best[0]]

    def model(self, depth: int, lr: float) -> torch.nn.Module:
        """The model of the run at (depth, lr): the kept weights when it is the best run so far, else trained
        again (same seed, same result)."""
        key = self.key(depth, lr)
        if key not in self.runs:
            raise ValueError(f"no run at depth {key[0]}, lr {key[1]:g} yet: choose among the runs made on validation")
        if self.runs[key]["diverged"]:
            raise ValueError(f"the run at depth {key[0]}, lr {key[1]:g} diverged; it has no accuracy to test")
        if self._best is not None and self._best[0] == key:
            model = models.build_model(self.task.num_classes, models.scratch_of(self.task.weights))
            model.load_state_dict(self._best[1])
            model.weights_info = models.describe_weights(self.task.weights)
            models.freeze(model, key[0])
        else:
            model, _ = self._train(*key, progress=False)
        return model

    def test(self, depth: int, lr: float, test: data.ImageData) -> float:
        """Test accuracy of the run at (depth, lr): call it once, for the configuration chosen on validation."""
        return accuracy_on_test(self.model(depth, lr), self.task, test, self.device)

    def table(self) -> list[dict]:
        return [self.runs[k] for k in sorted(self.runs)]
