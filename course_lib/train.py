"""Training and evaluation: `fit` with schedules, progress, a divergence guard and resumable checkpoints;
`evaluate`, `predict` and `lr_find`.

On CUDA it switches on autocast (bf16 where supported, else fp16 with a GradScaler), channels_last and
cudnn.benchmark, and reads metrics back from the GPU once per epoch, not every step.
"""
from __future__ import annotations

import copy
import functools
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import config, distributed
from .storage import DamagedFileError, load_verified, save_verified

SCHEDULES = ("onecycle", "cosine", "constant")


@dataclass
class History:
    """Per-epoch records of a run; `diverged` holds the reason when training was stopped early, and
    `diverged_step` the 1-based optimizer step (counted over the whole run) where that was detected."""

    epochs: list[dict] = field(default_factory=list)
    diverged: str | None = None
    best_epoch: int | None = None
    diverged_step: int | None = None

    def __getitem__(self, key: str) -> list:
        return [e[key] for e in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def last(self) -> dict:
        return self.epochs[-1] if self.epochs else {}

    @property
    def best_val_acc(self) -> float | None:
        """None when no epoch was validated, or when the run diverged: its weights then belong to no
        validated epoch, so no accuracy may stand for it."""
        accs = [e["val_acc"] for e in self.epochs if "val_acc" in e]
        return max(accs) if accs and self.diverged is None else None

    def status(self) -> str:
        """One line a lesson can print for any run, so a diverged one never reads as an accuracy."""
        if self.diverged is not None:
            step = f" at step {self.diverged_step}" if self.diverged_step is not None else ""
            return f"diverged{step} (epoch {len(self.epochs) + 1})"
        if not self.epochs:
            return "not trained"
        if self.best_val_acc is None:
            return "no validation data"
        best = max(self.epochs, key=lambda e: e.get("val_acc", -1.0))
        return f"best validation accuracy {100 * self.best_val_acc:.1f}% at epoch {best['epoch']}"

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "diverged": self.diverged, "best_epoch": self.best_epoch,
                "diverged_step": self.diverged_step}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(list(d["epochs"]), d.get("diverged"), d.get("best_epoch"), d.get("diverged_step"))


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


# ------------------------------------------------------------------------------------ device setup
def prepare(model: nn.Module, device: torch.device) -> tuple[nn.Module, bool]:
    """Move the model in channels_last memory, on CUDA and on CPUs alike (on the course's 2-core CPU machines
    ResNet18 trained and evaluated faster with it too); cudnn autotuning on CUDA. Returns (model, channels_last)."""
    channels_last = device.type in ("cuda", "cpu")
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif device.type == "cpu":
        torch.set_num_threads(config.torch_threads())
    return model, channels_last


CPU_BF16_ENV = "COURSE_CPU_BF16"  # 1 or 0 forces bf16 autocast on the CPU on or off; unset: timed


@functools.cache
def cpu_bf16_faster() -> bool:
    """Whether bf16 autocast runs convolutions faster than fp32 on this CPU: timed once per process on a
    ResNet-sized layer (about a second). CPUs with bf16 instructions (AVX512-BF16, AMX) run it 2-3x faster;
    elsewhere bf16 is emulated and slower."""
    given = os.environ.get(CPU_BF16_ENV, "").strip()
    if given in ("0", "1"):
        return given == "1"
    conv = nn.Conv2d(64, 64, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(16, 64, 56, 56).contiguous(memory_format=torch.channels_last)

    def best_of(bf16: bool) -> float:
        times = []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for _ in range(4):
                start = time.perf_counter()
                conv(x)
                times.append(time.perf_counter() - start)
        return min(times[1:])  # the first call warms up

    return best_of(True) < 0.8 * best_of(False)


def autocast_for(device: torch.device, enabled: bool = True):
    """(autocast context, GradScaler or None): bf16 on GPUs that have it, fp16 + scaler otherwise; on a CPU,
    bf16 where cpu_bf16_faster() (training, evaluation and feature extraction alike), else fp32."""
    if not enabled or device.type not in ("cpu", "cuda"):
        return nullcontext(), None
    if device.type == "cpu":
        return (torch.autocast("cpu", dtype=torch.bfloat16) if cpu_bf16_faster() else nullcontext()), None
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), None
    return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")


def _on_device(batches, device: torch.device, channels_last: bool):
    """Let a Batches object produce its tensors on the training device (moved once)."""
    if hasattr(batches, "to"):
        batches = batches.to(device, channels_last=channels_last)
    return batches


# -------------------------------------------------------------------------------------- schedules
def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, pct_start: float = 0.25):
    """Per-step schedules: one-cycle (warm up to each group's lr, then anneal), cosine, or constant."""
    if schedule == "onecycle":
        total_steps = max(total_steps, 2)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_steps,
            pct_start=max(pct_start, 1.5 / total_steps),  # at least one warm-up step in very short runs
            anneal_strategy="cos", div_factor=25.0, final_div_factor=1e3, cycle_momentum=False)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise ValueError(f"unknown schedule {schedule!r}; use one of {SCHEDULES}")


def make_optimizer(params, lr: float, name: str = "sgd", momentum: float = 0.9, weight_decay: float = 5e-4):
    """SGD with Nesterov momentum, or AdamW. `params` may be parameter groups from models.param_groups."""
    params = list(params)
    if params and not isinstance(params[0], dict):
        params = [{"params": params}]
    if not any(p.requires_grad for g in params for p in g["params"]):
        raise ValueError("nothing to train: every parameter is frozen")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use 'sgd' or 'adamw'")


def _default_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters, with no weight decay on normalization weights and biases."""
    decay, no_decay = [], []
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                norm = isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
                (no_decay if norm or pname == "bias" else decay).append(p)
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


# -------------------------------------------------------------------------------------------- fit
def fit(model: nn.Module, train, val=None, *, epochs: int = 1, lr: float = 0.05, optimizer: str = "sgd",
        momentum: float = 0.9, weight_decay: float = 5e-4, groups: list[dict] | None = None,
        schedule: str = "onecycle", label_smoothing: float = 0.0, grad_clip: float | None = None,
        device=None, amp: bool = True, callback: Callable[[History], None] | None = None,
        progress: bool = True, checkpoint: str | Path | None = None, resume: bool = False,
        keep_best: bool = True, sync_batchnorm: bool = False, desc: str = "fit") -> History:
    """Train `model` on `train` batches for `epochs`, validating on `val` after each epoch.

    train/val: iterables of (x, y) batches, usually data.Batches. groups: parameter groups (e.g.
    models.param_groups for discriminative learning rates); their "lr" values are the peak rates.
    callback: called with the History after every epoch, and once more when training diverges.
    checkpoint: a file rewritten atomically after every epoch; with resume=True an existing one is
    continued where it stopped (a ValueError says so when it was written for another model or another
    number of epochs or steps per epoch). keep_best: at the end, restore the best validation epoch's weights.
    A NaN or infinite loss, or a training loss 20x above the first step's, stops training (the validation
    loss after each epoch catches NaN weights from an epoch's last step); the History up to then is
    returned with `diverged` and `diverged_step` set. The model then keeps the weights it diverged with
    (often NaN; keep_best does not restore them), so callers must check `history.diverged` before
    evaluating or saving it.

    Under torchrun (see course_lib.distributed) the same call trains data-parallel: each rank reads its own
    part of every epoch in batches of the size `train` was made with (so a step sees world_size times as many
    images as in a single process), the rates
    are scaled by the linear scaling rule (distributed.scaled_rates), gradients are averaged, metrics are
    summed over the ranks so every rank records the same History, and only rank 0 shows progress and writes
    the checkpoint, which every rank resumes from. sync_batchnorm: see distributed.wrap.
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else config.get_device()
    model, channels_last = prepare(model, device)
    train = _on_device(train, device, channels_last)
    val = _on_device(val, device, channels_last) if val is not None else None
    if not distributed.shard(train, equal=True) and distributed.world_size() > 1:
        raise ValueError(f"fit runs in a process group of {distributed.world_size()} ranks, but its training batches "
                         f"({type(train).__name__}) cannot be split between them: pass data.Batches or "
                         "data.TensorBatches, which give each rank its own part of every epoch.")
    if groups is None:
        groups = _default_groups(model, weight_decay)
    groups, lr = distributed.scaled_rates(groups, lr)
    opt = make_optimizer(groups, lr, optimizer, momentum, weight_decay)
    steps_per_epoch = len(train)
    distributed.check_same_on_all_ranks(steps_per_epoch, "the number of steps per epoch",
                                        "give every rank the same training data and batch size")
    net = distributed.wrap(model, device, sync_batchnorm=sync_batchnorm)
    sched = make_scheduler(opt, schedule, epochs * steps_per_epoch)
    autocast, scaler = autocast_for(device, amp)
    history = History()
    best_state, best_acc = None, -1.0
    if checkpoint is not None and resume and Path(checkpoint).exists():
        state = _resumable_state(Path(checkpoint), model, epochs, steps_per_epoch)
        model.load_state_dict(state["model"])
        try:
            opt.load_state_dict(state["optimizer"])
        except ValueError as e:  # torch: another number or size of parameter groups
            raise ValueError(_cannot_resume(Path(checkpoint), f"its optimizer had other parameter groups ({e}): "
                                            "were other layers frozen, or other groups given?")) from e
        sched.load_state_dict(state["scheduler"])
        history = History.from_dict(state["history"])
        best_state, best_acc = state.get("best_model"), state.get("best_acc", -1.0)
        if state.get("rng") is not None:
            torch.set_rng_state(state["rng"])
        if state.get("batches_rng") is not None and hasattr(train, "generator"):
            train.generator.set_state(state["batches_rng"])
    sync_every = 1 if device.type == "cpu" else 25
    first_loss = None  # a loss 20x above where training started counts as divergence, as does NaN/inf
    bar = tqdm(total=epochs * steps_per_epoch, initial=len(history) * steps_per_epoch, desc=desc,
               unit="batch", disable=not (progress and distributed.is_main()), leave=True, dynamic_ncols=True)
    try:
        for epoch in range(len(history), epochs):
            net.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            for step, (x, y) in enumerate(train):
                with autocast:
                    out = net(x)
                    loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                sched.step()
                loss_sum += loss.detach().float() * len(y)
                correct += (out.argmax(1) == y).sum()
                seen += len(y)
                if step % sync_every == 0 or step == steps_per_epoch - 1:
                    # the global batch's loss, the same on every rank, so that all ranks stop together
                    current, = distributed.totals(loss.detach() / distributed.world_size())
                    first_loss = first_loss if first_loss is not None else current
                    if not math.isfinite(current) or current > 20 * max(first_loss, 0.1):
                        history.diverged_step = epoch * steps_per_epoch + step + 1
                        raise Diverged(f"loss became {current:.4g} at epoch {epoch + 1}, step {step + 1}"
                                       + ("" if not math.isfinite(current) else f" (it started at {first_loss:.3g})"))
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", lr=f"{opt.param_groups[-1]['lr']:.2g}")
                bar.update(1)
            loss_total, correct_total, seen_total = distributed.totals(loss_sum, correct, seen)
            record = {"epoch": epoch + 1, "train_loss": loss_total / seen_total, "train_acc": correct_total / seen_total,
                      "lr": max(g["lr"] for g in opt.param_groups)}
            train_seconds = time.perf_counter() - t0
            if val is not None:
                ev = evaluate(model, val, device=device, amp=amp, details=False)
                # weights made NaN or infinite by the epoch's last steps, which no training loss has seen yet (a
                # large but finite validation loss is no proof: early in training from scratch, BatchNorm's
                # running statistics lag behind the weights and validation losses in the hundreds are common)
                if not math.isfinite(ev.loss):
                    history.diverged_step = (epoch + 1) * steps_per_epoch
                    raise Diverged(f"validation loss became {ev.loss:.4g} after epoch {epoch + 1}, whose last training "
                                   f"loss checked was finite (training started at {first_loss:.3g})")
                record.update(val_loss=ev.loss, val_acc=ev.accuracy)
                if keep_best and ev.accuracy > best_acc:
                    best_acc, history.best_epoch = ev.accuracy, epoch + 1
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            record["seconds"] = time.perf_counter() - t0
            record["images_per_s"] = seen_total / train_seconds  # training throughput, all ranks, validation excluded
            history.epochs.append(record)
            if checkpoint is not None and distributed.is_main():
                save_checkpoint(checkpoint, model, opt, sched, history,
                                extra={"best_model": best_state, "best_acc": best_acc, "rng": torch.get_rng_state(),
                                       "batches_rng": train.generator.get_state() if hasattr(train, "generator") else None,
                                       "epochs": epochs, "steps_per_epoch": steps_per_epoch,
                                       "world_size": distributed.world_size()})
            if callback is not None:
                callback(history)
    except Diverged as e:
        history.diverged = (f"Training stopped: the {e}. The learning rate is most likely too high "
                            f"(peak lr {lr:g}); try 3-10x lower. The History keeps the {len(history)} finished epoch(s).")
        if distributed.is_main():
            print(history.diverged)
    finally:
        bar.close()
    if history.diverged is not None and callback is not None:
        callback(history)  # a live plot shows the divergence too
    if keep_best and best_state is not None and history.diverged is None:
        model.load_state_dict(best_state)
    return history


def _run_length(epochs: int, steps_per_epoch: int) -> str:
    return f"{epochs} epoch{'s' * (epochs != 1)} of {steps_per_epoch} step{'s' * (steps_per_epoch != 1)}"


def _cannot_resume(path: Path, why: str) -> str:
    return (f"Cannot resume from {path}: {why}. To start this run afresh, delete the file or pass resume=False "
            "(the file is then overwritten); to keep it, give this run another checkpoint path.")


def _resumable_state(path: Path, model: nn.Module, epochs: int, steps_per_epoch: int) -> dict:
    """The checkpoint, if fit wrote it for this model and this run's length: torch's own errors on a
    mismatch (or a scheduler silently stepping past its end) do not say which file or what to do."""
    try:
        state = load_verified(path, map_location="cpu")
    except DamagedFileError as e:
        raise ValueError(_cannot_resume(path, f"it is not a readable checkpoint, perhaps damaged or cut short: {e}")) from e
    if "steps_per_epoch" not in state:
        raise ValueError(_cannot_resume(path, "it was not written by fit (or by an older version of the course)"))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state["model"].items()}
    if ours != theirs:
        differ = sorted(set(ours) ^ set(theirs)) + [k for k in ours if k in theirs and ours[k] != theirs[k]]
        first = differ[0]
        raise ValueError(_cannot_resume(path, f"it was written for another model ({len(differ)} weights differ, "
                                              f"e.g. {first}: {theirs.get(first, 'absent')} there, "
                                              f"{ours.get(first, 'absent')} here)"))
    written_by = state.get("world_size", 1)
    if written_by != distributed.world_size():
        raise ValueError(_cannot_resume(path, f"it was written by a run of {written_by} process(es), this run has "
                                              f"{distributed.world_size()}: each one's part of an epoch, and so the "
                                              f"schedule, depend on it (resume with --nproc_per_node={written_by})"))
    if (state["epochs"], state["steps_per_epoch"]) != (epochs, steps_per_epoch):
        written = _run_length(state["epochs"], state["steps_per_epoch"])
        raise ValueError(_cannot_resume(path, f"it was written for {written}, this run has "
                                              f"{_run_length(epochs, steps_per_epoch)}"))
    return state


def step_throughput(model: nn.Module, batches, *, device=None, amp: bool = True, max_batches: int | None = None) -> float:
    """Training images/s of `model` fed by `batches` (fit's optimizer, autocast and memory format; the first
    batch warms up and is not counted): one way of timing a step for resolutions, freeze depths and loaders."""
    device = torch.device(device) if device is not None else config.get_device()
    model, channels_last = prepare(model, device)
    autocast, scaler = autocast_for(device, amp)
    opt = make_optimizer(_default_groups(model, 5e-4), 1e-3)
    model.train()
    n, start = 0, None
    for i, (x, y) in enumerate(batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        (scaler.step(opt), scaler.update()) if scaler else opt.step()
        if i == 0:
            _sync(device)
            start = time.perf_counter()
            continue
        n += len(y)
        if max_batches and i >= max_batches:
            break
    if n == 0:
        raise ValueError("step_throughput needs at least two batches (the first one only warms up)")
    _sync(device)
    return n / (time.perf_counter() - start)


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------- evaluate
def difference_noise(accuracy: float, images: int, other_images: int | None = None,
                     other_accuracy: float | None = None) -> float:
    """Two standard errors of the difference between two accuracies, `accuracy` on `images` images and
    `other_accuracy` (default: the same) on `other_images` (default: as many) images (binomial): a difference
    smaller than this is within noise. Give both accuracies when both are known: above 50%, the higher one
    alone understates the noise. Conservative for two models scored on the same images."""
    other_images = other_images or images
    other_accuracy = accuracy if other_accuracy is None else other_accuracy
    return 2 * math.sqrt(accuracy * (1 - accuracy) / images + other_accuracy * (1 - other_accuracy) / other_images)


@dataclass
class Evaluation:
    """Everything a lesson reports about a model on a dataset."""

    loss: float
    accuracy: float
    per_class_accuracy: torch.Tensor | None = None
    confusion: torch.Tensor | None = None  # rows: true class, columns: predicted class
    predictions: torch.Tensor | None = None
    probabilities: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def most_confused(self, classes: list[str], k: int = 5) -> list[tuple[str, str, int]]:
        """The k most frequent (true, predicted) mistakes."""
        off = self.confusion.clone()
        off.fill_diagonal_(0)
        values, flat = off.flatten().topk(min(k, off.numel()))
        n = off.shape[0]
        return [(classes[i // n], classes[i % n], int(v)) for v, i in zip(values.tolist(), flat.tolist()) if v > 0]


@torch.no_grad()
def evaluate(model: nn.Module, batches, *, device=None, amp: bool = True, details: bool = True,
             num_classes: int | None = None) -> Evaluation:
    """Loss, accuracy and (details=True) per-class accuracy, confusion matrix, predictions, probabilities.

    Under torchrun, data.Batches are split between the ranks (every image once) and the sums behind loss,
    accuracy and confusion matrix are added up over all ranks, so every rank gets the same numbers; the
    per-image predictions, probabilities and labels are then left out (None), since each rank saw only its part."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model, channels_last = prepare(model, device)
    batches = _on_device(batches, device, channels_last)
    split = distributed.shard(batches, equal=False)
    autocast, _ = autocast_for(device, amp)
    was_training = model.training
    model.eval()
    loss_sum, probs, labels = torch.zeros((), device=device), [], []
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in batches:
        with autocast:
            out = model(x)
        out = out.float()
        loss_sum += F.cross_entropy(out, y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
        n += len(y)
        if details:
            probs.append(out.softmax(1).cpu())
            labels.append(y.cpu())
    model.train(was_training)
    if split:
        loss_sum, correct, n = distributed.totals(loss_sum, correct, n)
    ev = Evaluation(loss=float(loss_sum) / max(n, 1), accuracy=float(correct) / max(n, 1))
    if details and probs:
        probabilities, labels = torch.cat(probs), torch.cat(labels)
        predictions = probabilities.argmax(1)
        k = num_classes or probabilities.shape[1]
        ev.confusion = torch.bincount(labels * k + predictions, minlength=k * k).view(k, k)
        if split:
            ev.confusion = distributed.sum_tensor(ev.confusion)
        else:
            ev.probabilities, ev.labels, ev.predictions = probabilities, labels, predictions
        ev.per_class_accuracy = ev.confusion.diag().float() / ev.confusion.sum(1).clamp(min=1).float()
    return ev


@torch.no_grad()
def predict(model: nn.Module, files: Iterable[str | Path], classes: list[str], *, size: int = 32,
            input_size: int | None = None, normalize="cifar", device=None, top: int = 3) -> list[list[tuple[str, float]]]:
    """Classify image files of any size: each is decoded, fitted to `size` (as the training data was),
    resized to the model's `input_size` and normalized like the training batches. Returns top-k (class, p)
    per file; a file that cannot be read gets [] and is named with its problem, so that one bad photo does not
    cost the others their prediction (a DataError when none can be read). In fp32 on every device, as an
    exported model predicts: the probabilities a learner reads match those of the file they take away."""
    from .data import Batches, DataError, ImageData, decode_image_file

    files, pixels, unreadable = list(files), {}, []
    for i, f in enumerate(files):
        try:
            pixels[i] = decode_image_file(f, size)
        except DataError as e:
            unreadable.append(str(e))
    if not pixels:
        raise DataError(" ".join(unreadable) or "no image files given")
    if unreadable:
        print(f"Not predicted: {' '.join(unreadable)}")
    images = torch.stack(list(pixels.values()))
    batches = Batches(ImageData(images, torch.zeros(len(images), dtype=torch.long), classes), 64,
                      normalize=normalize, size=input_size)
    ev = evaluate(model, batches, device=device, amp=False)
    out = [[] for _ in files]
    for i, p in zip(pixels, ev.probabilities):
        values, idx = p.topk(min(top, len(classes)))
        out[i] = [(classes[c], float(v)) for v, c in zip(values.tolist(), idx.tolist())]
    return out


# ------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(path: str | Path, model: nn.Module, optimizer=None, scheduler=None,
                    history: History | None = None, *, meta: dict | None = None, extra: dict | None = None) -> Path:
    """Model, optimizer, scheduler, history and metadata in one file, written atomically."""
    blob = {"model": model.state_dict(), "meta": meta or dict(getattr(model, "weights_info", {}) or {}),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "history": history.to_dict() if history is not None else None}
    blob.update(extra or {})
    return save_verified(blob, path)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by save_checkpoint (or fit), checked against the checksum written with it: a
    damaged file is a DamagedFileError naming it, never weights with changed bytes."""
    try:
        return load_verified(path, map_location="cpu")
    except DamagedFileError as e:
        raise DamagedFileError(f"{path} is not a readable checkpoint, perhaps damaged or cut short: {e}. Delete it "
                               "and train again, or copy it again from where it came from.") from e


# ---------------------------------------------------------------------------------------- lr_find
@dataclass
class LRFinder:
    lrs: list[float]
    losses: list[float]
    suggestion: float | None  # None: the sweep found no descending region
    images_per_s: float | None = None  # training speed over the sweep's steps after its first (None: < 2 steps)

    @property
    def lowest_loss_lr(self) -> float:
        """The rate of the lowest smoothed loss after the sweep's noisy first tenth (see suggest_lr)."""
        skip = min(noise_steps(len(self.losses)), len(self.losses) - 1)
        return self.lrs[min(range(skip, len(self.losses)), key=self.losses.__getitem__)]


def lr_find(model: nn.Module, train, *, start_lr: float = 1e-5, end_lr: float = 10.0, steps: int = 100,
            groups: list[dict] | None = None, optimizer: str = "sgd", momentum: float = 0.9,
            weight_decay: float = 5e-4, device=None, amp: bool = True, progress: bool = True) -> LRFinder:
    """Raise the learning rate exponentially from start_lr to end_lr, one batch per step, and record the
    smoothed loss; stop early once it explodes. The model's weights are restored afterwards.

    The suggestion is the rate where the smoothed loss falls fastest, before its minimum (None when it
    never clearly falls, see suggest_lr).
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else config.get_device()
    model, channels_last = prepare(model, device)
    train = _on_device(train, device, channels_last)
    saved = copy.deepcopy(model.state_dict())
    if groups is None:
        groups = _default_groups(model, weight_decay)
    base = [g.get("lr", 1.0) for g in groups]
    top = max(base)
    opt = make_optimizer(groups, top, optimizer, momentum, weight_decay)
    ratios = [b / top for b in base]
    autocast, scaler = autocast_for(device, amp)
    lrs, losses, smooth, best = [], [], 0.0, float("inf")
    model.train()

    def endless():
        while True:
            yield from train

    batches = endless()
    bar = tqdm(total=steps, desc="lr_find", disable=not progress)
    timed_images, timed_from, timed_seconds = 0, None, 0.0
    try:
        for i in range(steps):
            bar.update(1)
            lr = start_lr * (end_lr / start_lr) ** (i / max(steps - 1, 1))
            for g, r in zip(opt.param_groups, ratios):
                g["lr"] = lr * r
            x, y = next(batches)
            with autocast:
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            value = loss.item()  # waits for the step: the timing below covers whole steps
            if timed_from is None:
                timed_from = time.perf_counter()  # the first step warms up and is not timed
            else:
                timed_images, timed_seconds = timed_images + len(y), time.perf_counter() - timed_from
            if not math.isfinite(value):
                break
            smooth = 0.9 * smooth + 0.1 * value
            debiased = smooth / (1 - 0.9 ** (i + 1))
            lrs.append(lr)
            losses.append(debiased)
            best = min(best, debiased)
            if debiased > 4 * best and i > 10:
                break
    finally:
        model.load_state_dict(saved)
        if bar.n < steps:  # stopped on purpose once the loss exploded: a finished sweep, not a failure
            bar.set_postfix_str("stopped: the loss exploded")
            bar.total = bar.n
            bar.refresh()
        bar.close()
    speed = timed_images / timed_seconds if timed_images else None
    return LRFinder(lrs, losses, suggest_lr(lrs, losses), speed)


DESCENT_MIN_DROP = 0.02  # a fall of the smoothed loss smaller than this fraction is noise, not a descent


def noise_steps(steps: int) -> int:
    """The first tenth of a sweep (at least one step), whose smoothed loss is mostly the first batches' noise."""
    return max(1, steps // 10)


def suggest_lr(lrs: list[float], losses: list[float]) -> float | None:
    """The rate where the smoothed loss falls fastest (per log-lr) before its minimum, or None when the
    sweep has no descending region. The first tenth of the sweep is skipped: there the smoothed loss is
    mostly the first batches' noise, and a minimum at the very start is no descent."""
    skip = noise_steps(len(losses))
    if len(losses) < skip + 3:
        return None
    low = skip + min(range(len(losses) - skip), key=lambda i: losses[skip + i])
    if low < skip + 2 or losses[low] > (1 - DESCENT_MIN_DROP) * losses[skip]:
        return None
    slopes = {i: (losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
              for i in range(skip + 1, low)}
    return lrs[min(slopes, key=slopes.__getitem__)]
