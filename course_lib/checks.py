"""Instant feedback for exercises: each check runs the learner's answer on several cases and either
prints what passed or raises AssertionError with a hint that points at the mistake without giving the
answer away. These are the *public* checks; graded notebooks may also hold hidden tests, so passing
here says "public checks passed", never "all tests passed".
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import gd


class ExerciseNotDone(AssertionError):
    """The answer cell still raises NotImplementedError."""


def _call(fn, *args, what: str):
    try:
        return fn(*args)
    except NotImplementedError as e:
        raise ExerciseNotDone(f"{what} is not implemented yet: replace the `raise NotImplementedError` line.") from e
    except Exception as e:
        raise AssertionError(f"{what} raised {type(e).__name__}: {e}") from e


def _passed(name: str, cases: int) -> None:
    print(f"✓ {name}: public checks passed ({cases} case{'' if cases == 1 else 's'})")


def _array(value, what: str) -> np.ndarray:
    try:
        return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=float)
    except (TypeError, ValueError) as e:
        raise AssertionError(f"{what} should return numbers (an array), got {type(value).__name__}") from e


# ------------------------------------------------------------------------------------ lesson 1
def _returned(value, what: str):
    """The answer's return value; None gets its own message, since a missing `return` is the usual cause."""
    if value is None:
        raise AssertionError(f"{what} returned None. Hint: end the function with `return` and the result.")
    return value


def check_gd_step(gd_step) -> None:
    """gd_step(theta, grad, lr) -> the parameters after one gradient-descent step, in a new array."""
    cases = [(np.array([1.0, 2.0]), np.array([0.5, -1.0]), 0.1),
             (np.array([3.0]), np.array([6.0]), 0.5),
             (np.array([-1.0, 0.0, 4.0]), np.array([2.0, 2.0, -2.0]), 0.0)]
    for number, (theta, grad, lr) in enumerate(cases, 1):
        before = theta.copy()
        where = f"case {number} of {len(cases)}, gd_step(theta={before}, grad={grad}, lr={lr})"
        out = _array(_returned(_call(gd_step, theta, grad.copy(), lr, what="gd_step"), "gd_step"), "gd_step")
        if not np.array_equal(theta, before):
            raise AssertionError(f"{where} changed the caller's theta to {theta}. Hint: leave the caller's "
                                 "parameters as they were and return the new ones in a new array.")
        expected = before - lr * grad
        if out.shape != expected.shape:
            raise AssertionError(f"{where} returned shape {out.shape} for parameters of shape {before.shape}: "
                                 "it should return the whole updated parameter vector.")
        if np.allclose(out, before + lr * grad) and lr:
            raise AssertionError(f"{where} moved *up* the gradient. Descent goes against it.")
        if not np.allclose(out, expected):
            raise AssertionError(f"{where} returned {out}. "
                                 "Hint: the step is proportional to both the learning rate and the gradient.")
    _passed("gd_step", len(cases))


def check_numerical_grad(numerical_grad) -> None:
    """numerical_grad(fn, theta, eps) -> central-difference estimate of ∇fn(θ), θ left unchanged.

    The last case is a steep valley near its minimum: large curvature, small gradient. There a one-sided
    difference (fn(θ + eps) − fn(θ)) / eps is off by eps/2 × curvature, far beyond the tolerance, while the
    central difference stays exact (on a quadratic, up to rounding).
    """
    x = np.linspace(-2, 2, 7)
    y = np.sin(x)
    eps = 1e-5
    cases = [("a bowl, f(θ) = Σ θ_i²", lambda t: float(np.sum(t ** 2)), np.array([1.0, -2.0, 0.5]),
              lambda t: 2 * t),
             ("f(θ) = sin(θ₀)·θ₁", lambda t: float(np.sin(t[0]) * t[1]), np.array([0.3, 2.0]),
              lambda t: np.array([np.cos(t[0]) * t[1], np.sin(t[0])])),
             ("the squared error of section 3's model", lambda t: gd.squared_error(t, x, y), np.array([1.0, 0.8, 0.1]),
              lambda t: gd.grad_by_hand(t, x, y)),
             ("a steep valley near its minimum, f(θ) = 1000·(θ₀ − 1)² + (θ₁ + 2)²",
              lambda t: float(1000 * (t[0] - 1) ** 2 + (t[1] + 2) ** 2), np.array([1.001, -1.5]),
              lambda t: np.array([2000 * (t[0] - 1), 2 * (t[1] + 2)]))]
    for number, (name, fn, theta, exact) in enumerate(cases, 1):
        before = theta.copy()
        where = f"case {number} of {len(cases)} ({name}, θ={before}, eps={eps:g})"
        out = _array(_returned(_call(numerical_grad, fn, theta, eps, what="numerical_grad"), "numerical_grad"),
                     "numerical_grad")
        if not np.allclose(theta, before, rtol=0, atol=1e-12):
            raise AssertionError(f"{where}: numerical_grad changed the theta it was given to {theta}. "
                                 "Perturb a copy, not the caller's array.")
        want = exact(before)
        if out.shape != want.shape:
            raise AssertionError(f"{where}: numerical_grad returned shape {out.shape}; the gradient has one entry "
                                 f"per parameter, {want.shape}.")
        if np.allclose(out, want, rtol=1e-4, atol=1e-6):
            continue
        units = np.eye(len(before)) * eps
        forward = np.array([(fn(before + e) - fn(before)) / eps for e in units])
        backward = np.array([(fn(before) - fn(before - e)) / eps for e in units])
        ratio = out / np.where(np.abs(want) > 1e-9, want, np.nan)
        if np.allclose(out, forward, rtol=1e-6, atol=1e-9) or np.allclose(out, backward, rtol=1e-6, atol=1e-9):
            hint = ("this is a one-sided difference, which is off by about eps/2 × the curvature: large here. "
                    "A central difference nudges each coordinate both ways and cancels that error.")
        elif np.nanstd(ratio) < 1e-3 * max(1, abs(np.nanmean(ratio))):
            hint = "the result is off by a constant factor: check what you divide the difference by."
        else:
            hint = "nudge one coordinate at a time, by +eps and by -eps, and compare the two losses."
        raise AssertionError(f"{where}: numerical_grad gave {np.round(out, 6)}, the true gradient is "
                             f"{np.round(want, 6)}. Hint: {hint}")
    _passed("numerical_grad", len(cases))


def check_converging_lr(lr, problem: gd.Quadratic, start, steps: int, tol: float = 1e-6) -> None:
    """Plain GD with `lr` on `problem` from `start` ends its whole budget of `steps` with loss < tol.

    The final loss counts, not the first step below tol: a run can dip below tol and then grow.
    """
    is_number = isinstance(lr, (int, float, np.integer, np.floating)) and not isinstance(lr, bool)
    if not is_number or not math.isfinite(lr) or lr <= 0:
        raise AssertionError(f"my_lr should be a positive number, got {lr!r}")
    run = gd.run_on(problem, float(lr), steps, start=start)
    if not run.diverged and run.final_loss < tol:
        print(f"✓ lr={lr:g}: after {steps} steps from {tuple(start)} the loss is {run.final_loss:.2g} < {tol:g}")
        _passed("converging learning rate", 1)
        return
    ended = (f"diverged at step {run.diverged_at}" if run.diverged else
             f"ends its {steps} steps at loss {run.final_loss:.3g}, not below {tol:g}")
    bound = gd.stability_bound(problem)
    if lr >= bound:
        hint = (f"it is at or above 2/L = {bound:.4g}: along the steepest direction every step lands at least "
                "as far from the minimum as the one before.")
    elif lr * problem.largest_curvature > 1:
        hint = "it overshoots across the steep direction and does not settle within the budget: try smaller."
    else:
        hint = "it creeps along the shallow direction and runs out of steps: a larger rate would go faster."
    raise AssertionError(f"with lr={lr:g}, gradient descent from {tuple(start)} {ended}. Hint: {hint}")


def check_training_loop(train_linear) -> None:
    """train_linear(x, y, lr, steps) -> a trained nn.Linear(1, 1) that fits the line."""
    lines = [(2.0, -1.0), (-0.5, 3.0)]
    for seed, (w, b) in enumerate(lines):
        where = f"case {seed + 1} of {len(lines)} (points around y = {w:g}x {'+' if b >= 0 else '−'} {abs(b):g})"
        x, y = gd.make_regression(200, w=w, b=b, noise=0.3, seed=seed)
        torch.manual_seed(seed)
        untrained = torch.nn.Linear(1, 1)  # what the answer's own nn.Linear(1, 1) starts from, same seed
        torch.manual_seed(seed)
        model = _returned(_call(train_linear, x, y, 0.1, 150, what="train_linear"), "train_linear")
        if not isinstance(model, torch.nn.Module):
            raise AssertionError(f"train_linear should return the trained model, got {type(model).__name__}")
        with torch.no_grad():
            loss = float(torch.nn.functional.mse_loss(model(x), y))
            start_loss = float(torch.nn.functional.mse_loss(untrained(x), y))
        best_w, best_b = gd.least_squares(x, y)
        best = float(np.mean((best_w * x.flatten().numpy() + best_b - y.flatten().numpy()) ** 2))
        if math.isfinite(loss) and loss <= best * 1.02 + 1e-4:
            continue
        if all(torch.equal(p, q) for p, q in zip(model.parameters(), untrained.parameters())):
            hint = ("the parameters never moved. Only optimizer.step() changes them, from .grad: is it called, "
                    "and when it runs, does .grad hold the gradient backward() just computed?")
        elif not math.isfinite(loss) or loss > start_loss:
            hint = "the loss grew from where it started: does each update go against the gradient?"
        else:
            hint = ("run the loop by hand for 3 steps and print the weight's .grad each time. "
                    "Is each step's gradient only from that step?")
        raise AssertionError(f"{where}: after training, the loss is {loss:.4g}, but the best line reaches "
                             f"{best:.4g}. Hint: {hint}")
    _passed("train_linear", len(lines))


# ------------------------------------------------------------------------------------ lesson 2
def check_count_trainable(count_trainable) -> None:
    """count_trainable(model) -> how many parameter values (not tensors) training would change."""
    from . import models

    for depth in (0, 3, 5):
        model = models.freeze(models.build_resnet18(5), depth)
        got = _call(count_trainable, model, what="count_trainable")
        want = models.trainable_parameters(model)
        if isinstance(got, torch.Tensor):
            got = got.item()
        if got == want:
            continue
        everything = sum(p.numel() for p in model.parameters())
        tensors = sum(1 for p in model.parameters() if p.requires_grad)
        hint = ("that is every parameter, frozen ones included: which ones does the optimizer change?" if got == everything
                else "that counts tensors; count the numbers inside them (Tensor.numel())" if got == tensors
                else "count the elements of the parameters whose requires_grad is True")
        raise AssertionError(f"with {depth} stage(s) frozen, count_trainable gave {got!r}. Hint: {hint}")
    _passed("count_trainable", 3)


def check_head_groups(head_groups) -> None:
    """head_groups(model, lr) -> optimizer parameter groups: the head at 10 x lr, the other trainable ones at lr."""
    from . import models

    model = models.freeze(models.build_resnet18(5), "layer2")
    lr = 0.003
    groups = _call(head_groups, model, lr, what="head_groups")
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) and "params" in g for g in groups):
        raise AssertionError("head_groups should return a list of dicts, each with 'params' (and 'lr').")
    seen = {}
    for g in groups:
        for p in g["params"]:
            if id(p) in seen:
                raise AssertionError("a parameter appears in two groups; each must be in exactly one.")
            seen[id(p)] = g.get("lr", lr)
    head = {id(p) for p in model.fc.parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if set(seen) - trainable:
        raise AssertionError("the groups include frozen parameters; leave out those with requires_grad False.")
    if trainable - set(seen):
        raise AssertionError(f"{len(trainable - set(seen))} trainable parameter tensors are in no group.")
    for pid, rate in seen.items():
        want = 10 * lr if pid in head else lr
        if not math.isclose(rate, want, rel_tol=1e-9):
            where = "the head" if pid in head else "the body"
            raise AssertionError(f"a parameter of {where} has lr {rate:g}; expected {want:g} with lr={lr:g}. "
                                 "Hint: which group should be 10 times faster?")
    torch.optim.SGD(groups, lr=lr)  # a real optimizer must accept them
    _passed("head_groups", 1)


def check_freeze_depth(depth, reason, rows: list[dict], tolerance: float = 0.02) -> None:
    """A freeze depth whose test accuracy in the lesson's own sweep is within `tolerance` of the best."""
    if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= 5:
        raise AssertionError(f"my_depth should be a whole number of stages from 0 to 5, got {depth!r}")
    if not isinstance(reason, str) or len(reason.split()) < 5:
        raise AssertionError("my_reason should say in a sentence why, citing the table above.")
    accs = {r["depth"]: r["test_acc"] for r in rows if not r.get("diverged")}
    if depth not in accs:
        raise AssertionError(f"depth {depth} is not in the sweep's table; choose one of {sorted(accs)}")
    best = max(accs.values())
    if accs[depth] < best - tolerance:
        raise AssertionError(f"depth {depth} reached {100 * accs[depth]:.1f}% in the sweep, more than "
                             f"{100 * tolerance:.0f} points below the best depth. Read the table again.")
    _passed("freeze depth", 1)


# ------------------------------------------------------------------------------------ lesson 3
def check_pick_resolution(pick_resolution) -> None:
    """pick_resolution(costs, budget_seconds, epochs) -> the largest size whose epochs fit, or None."""
    from .pipeline import largest_size_within

    costs = [{"size": 32, "epoch_seconds": 40.0}, {"size": 64, "epoch_seconds": 150.0},
             {"size": 128, "epoch_seconds": 600.0}, {"size": 224, "epoch_seconds": 1900.0}]
    cases = [(900, 10), (900, 5), (3000, 5), (20_000, 10), (100, 5)]
    for budget, epochs in cases:
        got = _call(pick_resolution, costs, budget, epochs, what="pick_resolution")
        want = largest_size_within(costs, budget, epochs)
        if got != want:
            hint = ("when even the smallest size does not fit, return None" if want is None else
                    "multiply the time of one epoch by the number of epochs, then keep the largest size that fits")
            raise AssertionError(f"with a budget of {budget} s and {epochs} epochs you chose {got!r}. Hint: {hint}.")
    _passed("pick_resolution", len(cases))


def check_replace_head(replace_head) -> None:
    """replace_head(model, num_classes) -> the same model with a fresh num_classes-way linear head."""
    from . import models

    for k in (3, 10):
        model = models.build_resnet18(5)
        body = model.layer4[1].conv2.weight
        old_head = model.fc
        out = _call(replace_head, model, k, what="replace_head")
        if not isinstance(out, torch.nn.Module):
            raise AssertionError("replace_head should return the model.")
        head = getattr(out, "fc", None)
        if head is old_head or not isinstance(head, torch.nn.Linear):
            raise AssertionError("the model's fc should be a new torch.nn.Linear.")
        if head.in_features != 512 or head.out_features != k:
            raise AssertionError(f"the new head maps {head.in_features} -> {head.out_features}; ResNet18's pooled "
                                 f"features have 512 values and there are {k} classes. Hint: read model.fc.in_features.")
        if out.layer4[1].conv2.weight is not body:
            raise AssertionError("the body was replaced too: keep the pretrained layers, change only the head.")
        if out(torch.zeros(2, 3, 32, 32)).shape != (2, k):
            raise AssertionError(f"the model's output should have {k} columns.")
    _passed("replace_head", 2)


def check_confusion_reading(answer, confusion: torch.Tensor, classes: list[str]) -> None:
    """answer = (true class, predicted class) of the most frequent mistake in `confusion`."""
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2 and all(isinstance(a, str) for a in answer)):
        raise AssertionError("answer with a pair of class names: (true class, predicted class)")
    unknown = [a for a in answer if a not in classes]
    if unknown:
        raise AssertionError(f"{unknown} are not class names; the classes are {classes}")
    off = confusion.clone()
    off.fill_diagonal_(0)
    t, p = classes.index(answer[0]), classes.index(answer[1])
    if off[t, p] == off.max():
        _passed("reading the confusion matrix", 1)
        return
    if off[p, t] == off.max():
        raise AssertionError("that pair is the most confused one, but the other way round. Hint: rows are the true "
                             "class, columns the prediction.")
    raise AssertionError(f"{answer[0]} predicted as {answer[1]} happened {int(off[t, p])} times; another pair "
                         "happened more often. Hint: look for the largest number off the diagonal.")
