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
def check_gd_step(gd_step) -> None:
    """gd_step(theta, grad, lr) -> the parameters after one gradient-descent step."""
    cases = [(np.array([1.0, 2.0]), np.array([0.5, -1.0]), 0.1),
             (np.array([3.0]), np.array([6.0]), 0.5),
             (np.array([-1.0, 0.0, 4.0]), np.array([2.0, 2.0, -2.0]), 0.0)]
    for theta, grad, lr in cases:
        before = theta.copy()
        out = _array(_call(gd_step, theta.copy(), grad.copy(), lr, what="gd_step"), "gd_step")
        expected = theta - lr * grad
        if out.shape != expected.shape:
            raise AssertionError(f"gd_step returned shape {out.shape} for parameters of shape {theta.shape}: "
                                 "it should return the whole updated parameter vector.")
        if np.allclose(out, theta + lr * grad) and lr:
            raise AssertionError(f"gd_step({before}, grad={grad}, lr={lr}) moved *up* the gradient. "
                                 "Descent goes against it.")
        if not np.allclose(out, expected):
            raise AssertionError(f"gd_step({before}, grad={grad}, lr={lr}) returned {out}. "
                                 "Hint: the step is proportional to both the learning rate and the gradient.")
    _passed("gd_step", len(cases))


def check_numerical_grad(numerical_grad) -> None:
    """numerical_grad(fn, theta, eps) -> finite-difference estimate of ∇fn(θ), θ left unchanged."""
    x = np.linspace(-2, 2, 7)
    y = np.sin(x)
    cases = [(lambda t: float(np.sum(t ** 2)), np.array([1.0, -2.0, 0.5]), lambda t: 2 * t),
             (lambda t: float(np.sin(t[0]) * t[1]), np.array([0.3, 2.0]), lambda t: np.array([np.cos(t[0]) * t[1], np.sin(t[0])])),
             (lambda t: gd.squared_error(t, x, y), np.array([1.0, 0.8, 0.1]), lambda t: gd.grad_by_hand(t, x, y))]
    for fn, theta, exact in cases:
        before = theta.copy()
        out = _array(_call(numerical_grad, fn, theta, 1e-5, what="numerical_grad"), "numerical_grad")
        if not np.array_equal(theta, before):
            raise AssertionError("numerical_grad changed the theta it was given. Perturb a copy, not the caller's array.")
        want = exact(before)
        if out.shape != want.shape:
            raise AssertionError(f"numerical_grad returned shape {out.shape}; the gradient has one entry per parameter, {want.shape}.")
        if not np.allclose(out, want, rtol=1e-4, atol=1e-6):
            ratio = out / np.where(np.abs(want) > 1e-9, want, np.nan)
            hint = ("the result is off by a constant factor: check what you divide the difference by."
                    if np.nanstd(ratio) < 1e-3 * max(1, abs(np.nanmean(ratio))) else
                    "nudge one coordinate at a time, by +eps and by -eps, and compare the two losses.")
            raise AssertionError(f"numerical_grad at θ={before} gave {np.round(out, 6)}, the true gradient is "
                                 f"{np.round(want, 6)}. Hint: {hint}")
    _passed("numerical_grad", len(cases))


def check_converging_lr(lr, problem: gd.Quadratic, steps: int, tol: float = 1e-6) -> None:
    """Plain GD with `lr` on `problem` reaches loss < tol within `steps` steps (from the lesson's start)."""
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise AssertionError(f"the learning rate should be a positive number, got {lr!r}")
    run = gd.run_on(problem, float(lr), steps)
    if run.diverged:
        raise AssertionError(f"with lr={lr:g} gradient descent diverged at step {run.diverged_at}. "
                             "Hint: the steepest direction sets an upper limit on the rate.")
    k = run.steps_to(tol)
    if k is None:
        raise AssertionError(f"with lr={lr:g} the loss is {run.final_loss:.3g} after {steps} steps, not below {tol:g}. "
                             + ("It oscillates: look at the path and try smaller." if lr * problem.largest_curvature > 1
                                else "It creeps: a larger rate would go faster."))
    print(f"✓ lr={lr:g} reaches loss < {tol:g} at step {k} of {steps}")
    _passed("converging learning rate", 1)


def check_training_loop(train_linear) -> None:
    """train_linear(x, y, lr, steps) -> a trained nn.Linear(1, 1) that fits the line."""
    for seed, (w, b) in enumerate([(2.0, -1.0), (-0.5, 3.0)]):
        x, y = gd.make_regression(200, w=w, b=b, noise=0.3, seed=seed)
        torch.manual_seed(seed)
        model = _call(train_linear, x, y, 0.1, 150, what="train_linear")
        if not isinstance(model, torch.nn.Module):
            raise AssertionError(f"train_linear should return the trained model, got {type(model).__name__}")
        with torch.no_grad():
            loss = float(torch.nn.functional.mse_loss(model(x), y))
        best_w, best_b = gd.least_squares(x, y)
        best = float(np.mean((best_w * x.flatten().numpy() + best_b - y.flatten().numpy()) ** 2))
        if not math.isfinite(loss) or loss > best * 1.02 + 1e-4:
            raise AssertionError(f"after training, the loss is {loss:.4g}, but the best line reaches {best:.4g}. "
                                 "Hint: run the loop by hand for 3 steps and print the weight's .grad each time. "
                                 "Is each step's gradient only from that step?")
    _passed("train_linear", 2)


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
