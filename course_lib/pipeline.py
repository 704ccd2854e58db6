"""The full fine-tuning pipeline of lesson 3: what a resolution costs, the recipe (head warm-up, then
every layer under a one-cycle schedule, discriminative rates optional), mistakes worth looking at, and the
"common mistake" recipe that reports accuracy on the data it trained on.
"""
from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from . import budget, config, data, features, models, pretrained, train


# ------------------------------------------------------------------------------- resolution, cost
def flops_per_image(model: nn.Module, size: int) -> float:
    """Forward-pass floating-point operations for one size x size image, counted by torch's FlopCounterMode,
    which counts a multiply-add as 2 operations (torchvision's "GFLOPS" figures count it as 1)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    model.train(was_training)
    return float(counter.get_total_flops())


def resolution_costs(sizes=(32, 64, 128, 224), *, n_images: int = 45_000, images: data.ImageData | None = None,
                     device=None, batch_size: int | None = None, batches: int = 6, timings: int = 3) -> list[dict]:
    """Per resolution: forward-pass GFLOPs per image (2 per multiply-add), training images/s (the median of
    `timings` timings of `batches` steps each, after a warm-up step: one short timing is at the mercy of
    whatever else the machine does) at the batch size in the row's "batch", and the epoch time it implies
    for n_images. With `images`, each step takes a fresh augmented, normalized batch of them, as fine-tuning
    does, so the time of preparing batches is counted too; else random tensors. On a CPU the batch is
    fine-tuning's 128 at 32 px and smaller for more pixels, to keep the measurement short."""
    device = torch.device(device) if device is not None else config.get_device()
    rows = []
    for size in sizes:
        model = models.build_resnet18(10)
        gflops = flops_per_image(model, size) / 1e9
        bs = batch_size or (256 if device.type == "cuda" else max(8, 128 * 32 * 32 // (size * size)))
        if images is not None:
            steps = data.Batches(images.subset(range(min(len(images), bs * (batches + 1)))), bs, shuffle=True,
                                 augment=True, drop_last=True, size=size, device=device)
        else:
            steps = [(torch.randn(bs, 3, size, size, device=device), torch.randint(0, 10, (bs,), device=device))] * (batches + 1)
        ips = statistics.median(train.step_throughput(model, steps, device=device) for _ in range(timings))
        rows.append({"size": size, "gflops": gflops, "batch": bs, "images_per_s": ips,
                     "epoch_seconds": n_images / ips})
    return rows


def format_costs(costs: list[dict]) -> str:
    """resolution_costs' rows as a table: forward-pass GFLOPs per image, the batch size timed, training
    images/s at that batch size, and the epoch time it implies."""
    lines = [f"{'size':>5} {'fwd GFLOPs/img':>15} {'batch':>6} {'train img/s':>12} {'epoch':>10}"]
    lines += [f"{r['size']:>5} {r['gflops']:>15.3f} {r.get('batch', ''):>6} {r['images_per_s']:>12.0f} "
              f"{r['epoch_seconds'] / 60:>6.1f} min" for r in costs]
    return "\n".join(lines)


def default_resolution(device: torch.device) -> int:
    """32 px on a CPU (minutes per epoch); 128 px on a GPU, where more pixels are affordable and let
    pretrained features see objects at a scale closer to their training."""
    return 128 if device.type == "cuda" else 32


def largest_size_within(costs: list[dict], budget_seconds: float, epochs: int) -> int | None:
    """The largest resolution whose `epochs` fit in the budget (None if even the smallest does not)."""
    fitting = [r["size"] for r in costs if r["epoch_seconds"] * epochs <= budget_seconds]
    return max(fitting) if fitting else None


@dataclass(frozen=True)
class LessonWork:
    """What lesson 3 trains on and evaluates besides its fine-tuning epochs, so a plan can budget for it."""

    n_train: int
    n_val: int
    n_test: int
    sweep_images: int  # the learning-rate sweep's training images
    leak_train_images: int  # the leaky-recipe demo's training images (all its epochs)
    leak_eval_images: int
    trial_images: int = 0  # the short trials' training images (all trials), and their validation passes
    trial_eval_images: int = 0

    def rest_seconds(self, row: dict) -> float:
        """Seconds outside the fine-tuning epochs at a resolution_costs row's speed: the head warm-up's
        feature pass over training and validation images, the rate sweep, the source model's normalization
        check (half the validation images, twice), the short trials, the test evaluation and the leaky-recipe demo."""
        return budget.training_seconds(self.sweep_images + self.trial_images + self.leak_train_images,
                                       self.n_train + 2 * self.n_val + self.n_test + self.trial_eval_images
                                       + self.leak_eval_images, row["images_per_s"])

    def after_sweep_seconds(self, row: dict) -> float:
        """What rest_seconds still has to come once the warm-up and the sweep have run: the short trials, the
        test evaluation and the leaky-recipe demo."""
        return budget.training_seconds(self.trial_images + self.leak_train_images,
                                       self.n_test + self.trial_eval_images + self.leak_eval_images,
                                       row["images_per_s"])

    def epoch_seconds(self, row: dict) -> float:
        """One fine-tuning epoch with its validation, at a resolution_costs row's speed, budget.FIT_OVERHEAD included."""
        return budget.training_seconds(self.n_train * budget.FIT_OVERHEAD, self.n_val, row["images_per_s"])


def plan_fine_tuning(row: dict, work: LessonWork, budget_seconds: float, spent_seconds: float, *,
                     max_epochs: int) -> budget.Plan:
    """As many fine-tuning epochs (up to the recipe's max_epochs) as the budget leaves at this resolution,
    after what the lesson has spent so far and the rest of its work: the one-cycle schedule is then built
    for these epochs, so a shorter plan is still a complete schedule."""
    return budget.plan_epochs(f"fine-tuning at {row['size']} px", work.epoch_seconds(row), budget_seconds,
                              max_epochs=max_epochs, other_seconds=spent_seconds + work.rest_seconds(row))


def plan_size_and_epochs(resolution_table: list[dict], work: LessonWork, budget_seconds: float,
                         spent_seconds: float, *, max_epochs: int, pick) -> tuple[int, budget.Plan, str]:
    """Section 2's plan: `pick(costs, seconds, epochs)` (the learner's pick_resolution) chooses among the
    measured sizes the largest at which max_epochs fit what the budget leaves after the rest of the lesson's
    work (an epoch counted as the plan counts it); the smallest when none does; then as many epochs as fit at
    that size. Returns (size, plan, what to print)."""
    smallest = min(resolution_table, key=lambda r: r["size"])
    seconds_for_epochs = budget_seconds - spent_seconds - work.rest_seconds(smallest)
    measured = [r["size"] for r in resolution_table]
    affordable = pick([dict(r, epoch_seconds=work.epoch_seconds(r)) for r in resolution_table], seconds_for_epochs,
                      max_epochs)
    if affordable is not None and affordable not in measured:
        raise ValueError(f"pick_resolution returned {affordable!r}, which is not one of the measured sizes {measured}")
    size = smallest["size"] if affordable is None else affordable
    plan = plan_fine_tuning(next(r for r in resolution_table if r["size"] == size), work, budget_seconds,
                            spent_seconds, max_epochs=max_epochs)
    said = (f"{spent_seconds / 60:.1f} of the lesson's {budget_seconds / 60:g} minutes spent; about "
            f"{seconds_for_epochs / 60:.0f} min are left for fine-tuning epochs. "
            + (f"The recipe's {max_epochs} epoch(s) fit at {size} px at most: this notebook trains at it."
               if affordable is not None else
               f"The recipe's {max_epochs} epoch(s) fit at none of the measured sizes: this notebook trains at the "
               f"smallest, {size} px, for as many epochs as fit."))
    return size, plan, said + "\n" + plan.describe()


def revise_plan_after_sweep(row: dict, finder: train.LRFinder, work: LessonWork, budget_seconds: float,
                            spent_seconds: float, *, max_epochs: int) -> tuple[budget.Plan, str]:
    """The plan again, at the same size, from the speed of the sweep's real training steps (tens of them, a
    steadier measure than section 2's few) and what the budget has left after the warm-up and the sweep.
    Returns the plan and a line saying which speed it used (section 2's when the sweep timed no step)."""
    speed = finder.images_per_s or row["images_per_s"]
    said = (f"the rate sweep trained at {speed:.0f} images/s, section 2's timing said {row['images_per_s']:.0f}: "
            "the plan, revised with the sweep's speed and the time spent so far (it replaces section 2's):"
            if finder.images_per_s else
            f"the rate sweep timed no step; the plan, revised with section 2's speed ({speed:.0f} images/s) and "
            "the time spent so far (it replaces section 2's):")
    swept = dict(row, images_per_s=speed)
    plan = budget.plan_epochs(f"fine-tuning at {row['size']} px", work.epoch_seconds(swept), budget_seconds,
                              max_epochs=max_epochs, other_seconds=spent_seconds + work.after_sweep_seconds(swept))
    return plan, said


# ------------------------------------------------------------------------------------ the weights
def source_classifier(path: str | Path) -> nn.Module:
    """The course's source model as it was pretrained, its 5-way head included: build_resnet18 loads a
    checkpoint's backbone only, which is what transfer wants but not what measuring the source task needs."""
    model = models.build_resnet18(len(pretrained.SOURCE_CLASSES), weights=path)
    state, _ = models.read_state_dict(Path(path))
    model.fc.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
    return model


def accuracy_with(model: nn.Module, images: data.ImageData, prepare, *, device=None) -> float:
    """Accuracy of `model` when every batch of [0, 1] pixels goes through `prepare` first (a learner's
    normalization, or none at all), so what the input preparation is worth can be measured."""
    device = torch.device(device) if device is not None else config.get_device()
    batches = data.Batches(images, 500, normalize=None, device=device)
    return train.evaluate(model, [(prepare(x), y) for x, y in batches], device=device, details=False).accuracy


# -------------------------------------------------------------------------------------- the recipe
def warm_up_head(model: nn.Module, train_data: data.ImageData, val_data: data.ImageData, *, epochs: int,
                 lr: float = 0.05, normalize="cifar", size=None, device=None, progress: bool = True) -> train.History:
    """Train only the new head on cached features of the frozen backbone (one backbone pass, then
    milliseconds per epoch), so full fine-tuning starts from a head that already makes sense."""
    history = features.fit_head(model, train_data, val_data, epochs=epochs, lr=lr, normalize=normalize, size=size,
                                device=device, progress=progress, desc="head warm-up (cached features)")
    models.unfreeze(model)
    return history


def without_decay_on_norms(model: nn.Module, groups: list[dict], weight_decay: float = 5e-4) -> list[dict]:
    """`groups` with each one split so that BatchNorm weights and biases get no weight decay (as
    models.param_groups does), and the rest `weight_decay`: a learner's groups then train like the library's."""
    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    no_decay = {id(p) for m in model.modules() if isinstance(m, norms) for p in m.parameters(recurse=False)}
    no_decay |= {id(p) for name, p in model.named_parameters() if name.endswith("bias")}
    split = []
    for group in groups:
        params = list(group["params"])
        for wd, part in ((weight_decay, [p for p in params if id(p) not in no_decay]),
                         (0.0, [p for p in params if id(p) in no_decay])):
            if part:
                split.append({**group, "params": part, "weight_decay": wd})
    return split


def fine_tune(model: nn.Module, train_data: data.ImageData, val_data: data.ImageData, *, epochs: int,
              peak_lr: float, warmup_epochs: int = 2, body_factor: float = 1.0, groups: list[dict] | None = None,
              batch_size: int = 128, label_smoothing: float = 0.0, normalize="cifar", size=None, device=None,
              checkpoint=None, resume: bool = False, sync_batchnorm: bool = False, callback=None,
              progress: bool = True) -> tuple[train.History | None, train.History]:
    """The lesson's recipe: head warm-up on cached features (skipped with warmup_epochs=0: a random init,
    or a head already warmed up with warm_up_head), then every layer under one-cycle with flip/crop; the
    best validation epoch's weights are kept. Rates: `groups` (parameter groups with their peak "lr", e.g.
    a learner's discriminative groups) or else each stage at `body_factor` times the next one's rate
    (1.0: one rate for all). Under torchrun each rank takes `batch_size` images per step, and fit scales
    the rates with the global batch (see train.fit; resume and sync_batchnorm are fit's too)."""
    device = torch.device(device) if device is not None else config.get_device()
    warm = None
    if warmup_epochs:
        warm = warm_up_head(model, train_data, val_data, epochs=warmup_epochs, normalize=normalize, size=size,
                            device=device, progress=progress)
    groups = (without_decay_on_norms(model, groups) if groups is not None
              else models.param_groups(model, peak_lr, body_factor=body_factor))
    batches = dict(normalize=normalize, size=size, device=device)
    history = train.fit(model, data.Batches(train_data, batch_size, shuffle=True, augment=True, drop_last=True, **batches),
                        data.Batches(val_data, 500, **batches), epochs=epochs, lr=peak_lr, groups=groups,
                        schedule="onecycle", label_smoothing=label_smoothing, device=device, checkpoint=checkpoint,
                        resume=resume, sync_batchnorm=sync_batchnorm, callback=callback, progress=progress,
                        desc="fine-tuning")
    return warm, history


def short_trials(model: nn.Module, train_data: data.ImageData, val_data: data.ImageData, settings, groups_of, *,
                 steps: int, batch_size: int = 128, normalize="cifar", size=None, device=None,
                 progress: bool = True) -> list[dict]:
    """Each (peak_lr, factor) of `settings` trained from the same start (a copy of `model`, left unchanged) for
    `steps` steps of its own one-cycle schedule, on the same batches, then measured on `val_data`: rows with
    peak_lr, factor, val_acc (None when the trial diverged) and diverged. `groups_of(model, lr, factor)` builds
    the parameter groups, e.g. the learner's discriminative_groups. Short runs are a proxy for the long one."""
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else config.get_device()
    batches = dict(normalize=normalize, size=size, device=device)
    rows = []
    for lr, factor in tqdm(list(settings), desc="short trials", disable=not progress):
        trial = copy.deepcopy(model)
        history = train.fit(trial, data.Batches(train_data, batch_size, shuffle=True, augment=True, drop_last=True,
                                                steps=steps, **batches),
                            data.Batches(val_data, 500, **batches), epochs=1, lr=lr,
                            groups=without_decay_on_norms(trial, groups_of(trial, lr, factor)), schedule="onecycle",
                            device=device, progress=False, keep_best=False)
        rows.append({"peak_lr": lr, "factor": factor, "diverged": history.diverged,
                     "val_acc": None if history.diverged else history["val_acc"][-1]})
    return rows


def choose_trial(rows: list[dict], n_val: int) -> tuple[dict, str]:
    """The first row (the default) unless another beat it on validation by more than the noise of a
    difference on n_val images (then the best of those): a proxy's small lead is not a reason to leave the
    default. Returns the row and a sentence saying why."""
    default = rows[0]
    finished = [r for r in rows if r["val_acc"] is not None]
    if default["val_acc"] is None:
        if not finished:
            raise RuntimeError("every short trial diverged: lower the peak learning rate in section 4")
        best = max(finished, key=lambda r: r["val_acc"])
        return best, (f"the default diverged; the best trial on validation is kept: peak {best['peak_lr']:.3g}, "
                      f"factor {best['factor']:g}")
    noise = train.difference_noise(default["val_acc"], n_val)
    best = max(finished, key=lambda r: r["val_acc"])
    lead = best["val_acc"] - default["val_acc"]
    if best is default or lead <= noise:
        return default, (f"kept the default (peak {default['peak_lr']:.3g}, factor {default['factor']:g}): no trial "
                         f"beat it by more than the noise of a difference (±{100 * noise:.1f} points on {n_val:,} "
                         f"validation images)" + ("" if best is default else
                                                 f"; the best led by {100 * lead:.1f}, within it"))
    return best, (f"chose peak {best['peak_lr']:.3g}, factor {best['factor']:g}: {100 * lead:.1f} points above the "
                  f"default on validation, beyond the noise of a difference (±{100 * noise:.1f} on {n_val:,} images)")


def trials_table(rows: list[dict]) -> str:
    """One line per short trial: its peak rate, factor and validation accuracy (or how it diverged)."""
    return "\n".join(f"peak {r['peak_lr']:<7.3g} factor {r['factor']:<4g} "
                     + (f"validation {100 * r['val_acc']:5.1f}%" if r["val_acc"] is not None else f"{r['diverged']}")
                     for r in rows)


def describe_rates(model: nn.Module, groups: list[dict]) -> str:
    """Each stage's learning rate(s) and trainable parameter count, read from optimizer groups, so a
    learner sees what their groups will do before training with them."""
    stage_of = {id(p): models.stage_of(name) for name, p in model.named_parameters()}
    rates = {stage: set() for stage in models.STAGES}
    counts = dict.fromkeys(models.STAGES, 0)
    for group in groups:
        for p in group["params"]:
            rates[stage_of[id(p)]].add(group["lr"])
            counts[stage_of[id(p)]] += p.numel()
    return "\n".join(f"{stage:>7}: " + (", ".join(f"{r:.3g}" for r in sorted(rates[stage])) or "frozen (no group)")
                     + (f"  ({counts[stage]:,} parameters)" if counts[stage] else "")
                     for stage in reversed(models.STAGES))


PEAK_FACTOR, PEAK_LOW, PEAK_HIGH = 4, 0.02, 0.1


def onecycle_peak(suggestion: float | None, low: float = PEAK_LOW, high: float = PEAK_HIGH) -> float:
    """One-cycle's peak from lr_find's steepest-descent rate: PEAK_FACTOR (4) times it, kept within
    [low, high]; the floor when the sweep found no descending region. The course's default, a heuristic,
    not a derivation and not chosen on validation: a hint, not a law for this or other tasks."""
    if suggestion is None:
        return low
    return min(max(PEAK_FACTOR * suggestion, low), high)


def describe_peak(suggestion: float | None, peak: float, lowest_loss_lr: float,
                  low: float = PEAK_LOW, high: float = PEAK_HIGH) -> str:
    """Says what the sweep found, what set one-cycle's peak (the sweep, PEAK_FACTOR x its suggestion, or a
    bound of the clamp), and, when the sweep descended, how the peak compares with the rate of its lowest
    loss (after the noisy first tenth), beyond which the loss climbs."""
    if suggestion is None:
        return (f"no descending region: the smoothed loss never fell {100 * train.DESCENT_MIN_DROP:g}% below its "
                f"early values, so the sweep suggests nothing and the floor {peak:.3g} set the peak; a loss that only "
                "rises marks no rate where it starts to climb either")
    raw = PEAK_FACTOR * suggestion
    what = f"steepest descent at {suggestion:.3g}; {PEAK_FACTOR} × {suggestion:.3g} = {raw:.3g}"
    if raw < low:
        what += f", raised to the floor {peak:.3g}: the floor, not the sweep, set the peak"
    elif raw > high:
        what += f", lowered to the ceiling {peak:.3g}: the ceiling, not the sweep, set the peak"
    else:
        what += f", within [{low:g}, {high:g}]: the sweep set the peak"
    return (f"{what}\nlowest smoothed loss at {lowest_loss_lr:.3g}; peak / that rate: {peak:.3g} / "
            f"{lowest_loss_lr:.3g} = {peak / lowest_loss_lr:.3g}, "
            + ("below it" if peak < lowest_loss_lr else "at or above it: if fine-tuning diverges, lower the peak"))


def onecycle_rates(peak: float, total_steps: int) -> list[float]:
    """The learning rate of each of `total_steps` optimizer steps under fit's one-cycle schedule, read off
    the scheduler itself, so claims about the schedule's shape are measured rather than remembered."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    scheduler = train.make_scheduler(optimizer, "onecycle", total_steps)
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def per_class_report(ev: train.Evaluation, classes: list[str]) -> str:
    """One line per class: its accuracy."""
    return "\n".join(f"  {name:<11} {100 * acc:5.1f}%" for name, acc in zip(classes, ev.per_class_accuracy.tolist()))


def what_the_number_is(model: nn.Module, ev: train.Evaluation, classes: list[str], *, input_size: int, epochs: int,
                       best_epoch: int, budget_bound: bool) -> str:
    """What a test accuracy is the result of, computed from the run: the weights and the classes they were
    pretrained on (their accuracy apart from the new classes'), the input size and how many positions it leaves
    layer4, the epochs trained (`budget_bound`: the budget, not the recipe, set them); then what of that would
    raise it, each only where it applies."""
    info = models.describe_weights_of(model)
    was_training = model.training
    with torch.no_grad():  # layer4's output before pooling, for one input of this size
        probe = torch.zeros(1, 3, input_size, input_size, device=next(model.parameters()).device)
        positions = models.body_upto(model.eval(), "layer4")[:-2](probe).shape[-1]
    model.train(was_training)
    cifar_stem_cost = (flops_per_image(models.build_resnet18(len(classes), cifar_stem=True), input_size)
                       / flops_per_image(models.build_resnet18(len(classes)), input_size))
    learnt = ", ".join(info["classes"]) if 0 < len(info.get("classes", [])) <= 10 else info["trained_on"] or "nothing"
    lines = [f"weights: {info['source']}, learnt on {learnt}"
             + (f" at {info['native_size']} px" if info.get("native_size") else ""),
             f"input: {input_size} px, which leaves layer4 {positions}x{positions} position(s) to pool (a 224-px input "
             f"leaves 7x7; CIFAR ResNets keep more by starting with a 3x3 stride-1 conv and no max-pool, at "
             f"{cifar_stem_cost:.0f}x the operations at this size)",
             f"training: {epochs} epoch(s) of full fine-tuning, "
             + ("as many as the time budget allowed" if budget_bound else "the recipe's (the budget allowed them)")
             + f"; the best on validation was epoch {best_epoch}"]
    seen = [c for c in classes if c in info.get("classes", [])]
    if seen and len(seen) < len(classes):
        acc = dict(zip(classes, ev.per_class_accuracy.tolist()))
        old = sum(acc[c] for c in seen) / len(seen)
        new = sum(acc[c] for c in classes if c not in seen) / (len(classes) - len(seen))
        per_class = int(ev.confusion.sum(1).min()) if ev.confusion is not None else 100
        noise = train.difference_noise(old, per_class * len(seen), per_class * (len(classes) - len(seen)), new)
        lines.append(f"classes the weights were pretrained on ({', '.join(seen)}): {100 * old:.1f}% on average; the "
                     f"{len(classes) - len(seen)} new ones: {100 * new:.1f}%; {100 * abs(old - new):.1f} points apart, "
                     + ("within" if abs(old - new) <= noise else "beyond") + f" the noise of a difference (±{100 * noise:.1f})"
                     + ("" if abs(old - new) <= noise else
                        ": the pretrained classes scored higher here" if old > new else ": the new classes scored higher here")
                     + "; the two groups also differ in how hard their classes are, so this split alone does not say "
                       "what pretraining did")
    remedies = []
    native = info.get("native_size")
    if info.get("trained_on") != "ImageNet-1k":
        remedies.append("weights learnt on more images (ImageNet's), fed at the size they were learnt at (224 px: "
                        "affordable on a GPU)")
    elif native and input_size < native:
        remedies.append(f"inputs at the size the weights were learnt at ({native} px: affordable on a GPU)")
    if budget_bound:
        remedies.append("more epochs (the budget, not the recipe, set them)")
    lines.append("what would raise it here: " + ("; ".join(remedies) if remedies else
                                                "nothing this run holds back (ImageNet weights at their size, the "
                                                "recipe's epochs): a longer recipe or a larger network")
                 + ". Fine-tuned ImageNet networks are reported at 95% and more on CIFAR-10 (Kornblith et al., 2019, "
                   "Do Better ImageNet Models Transfer Better?)")
    return "\n".join(lines)


def confusions_report(ev: train.Evaluation, classes: list[str], k: int = 5) -> str:
    """The k most frequent mistakes, one line each: true -> predicted: count."""
    return "\n".join(f"  {true} -> {predicted}: {count}" for true, predicted, count in ev.most_confused(classes, k=k))


def most_confident_mistakes(ev: train.Evaluation, k: int = 12) -> torch.Tensor:
    """Indices of the k wrong predictions made with the highest confidence."""
    wrong = torch.nonzero(ev.predictions != ev.labels).flatten()
    confidence = ev.probabilities[wrong, ev.predictions[wrong]]
    return wrong[confidence.argsort(descending=True)[:k]]


# ------------------------------------------------------------------------------ the common mistake
def leaky_recipe(weights, train_part: data.ImageData, held_out: data.ImageData, *, n_train: int, n_held_out: int,
                 epochs: int, size=None, seed: int = 0, device=None, progress: bool = True) -> dict:
    """A widely copied recipe in miniature: it fine-tunes on the set it calls "validation", reports accuracy
    on that same set, and feeds unnormalized pixels. Its "validation" images come from `train_part` (the
    course split's training part) and the honest number from `held_out` (the course's validation part), so
    the demo never touches the test set. Returns the recipe's reported number and the held-out accuracy.
    (It also loads weights with the deprecated `pretrained=True`; here the weights come through the same
    loader as everywhere else, since that call needs the internet.)"""
    config.seed_everything(seed)
    device = torch.device(device) if device is not None else config.get_device()
    its_validation = data.per_class(train_part, max(1, n_train // len(train_part.classes)), seed=seed)
    honest_part = data.per_class(held_out, max(1, n_held_out // len(held_out.classes)), seed=seed)
    model = models.build_resnet18(len(train_part.classes), weights=weights)
    batches = data.Batches(its_validation, 32, shuffle=True, normalize=None, size=size, device=device, seed=seed)
    history = train.fit(model, batches, epochs=epochs, lr=1e-3, momentum=0.9, weight_decay=0.0, schedule="constant",
                        device=device, progress=progress, keep_best=False, desc="the leaky recipe")
    if history.diverged is not None:
        return {"status": history.status(), "n_train": len(its_validation), "n_held_out": len(honest_part)}
    reported = train.evaluate(model, data.Batches(its_validation, 500, normalize=None, size=size), device=device)
    honest = train.evaluate(model, data.Batches(honest_part, 500, normalize=None, size=size), device=device)
    return {"status": "trained", "reported_acc": reported.accuracy, "held_out_acc": honest.accuracy,
            "n_train": len(its_validation), "n_held_out": len(honest_part)}


def seed_loop_structure(num_epochs: int = 10, outer_epochs: int = 10) -> dict:
    """The seed recipe's epoch loops with each pass over the data replaced by a counter: a function that
    trains for num_epochs epochs, called from an outer loop that counts epochs too (with the same loop
    variable name) and validates once per round. Returns what happened and what its log says."""
    passes = {"train": 0, "validation": 0}
    log = []

    def train_model(num_epochs):
        for epoch in range(num_epochs):  # the seed's inner loop variable, named like the outer one
            passes["train"] += 1
            log.append(f"Epoch {epoch + 1}/{num_epochs}")

    for epoch in range(outer_epochs):
        train_model(num_epochs)
        passes["validation"] += 1
    return {"train_passes": passes["train"], "validation_passes": passes["validation"], "log_lines": len(log),
            "last_log_line": log[-1], "epoch_after_loops": epoch}
