"""Instant feedback for exercises: each check runs the learner's answer on several cases and either
prints what passed or raises AssertionError with a hint that points at the mistake without giving the
answer away. These are the *public* checks; graded notebooks may also hold hidden tests, so passing
here says "public checks passed", never "all tests passed".

Each graded check is split in two, so that grading can run the learner's code in a sandbox and decide
the score outside it (course_lib.grading):

- a *probe* runs in the learner's kernel: it calls the answer on the check's inputs and returns only
  plain data (numbers, lists, strings, booleans: what JSON holds), never the answer's own objects;
- a *judge* is a pure function of that data and of the check's other arguments: it rebuilds the inputs
  and the expected values itself and raises AssertionError with the hint, or prints what passed.

`check_x(answer)` in a notebook is `judge_x(probe_x(answer))`, with the record passed through JSON as
grading passes it. `seed` picks the inputs: 0 is the public check, other seeds are hidden tests.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import gd


def judge_only(fn):
    """Marks a helper that only judges use (expected values, reference implementations): the sandbox's copy of
    this module leaves it out (course_lib.sandbox.probes_only)."""
    return fn


class ExerciseNotDone(AssertionError):
    """The answer cell still raises NotImplementedError."""


class MalformedRecord(AssertionError):
    """A probe's record lacks a field or holds the wrong type: the check fails rather than guess."""


def _call(fn, *args, what: str):
    try:
        return fn(*args)
    except NotImplementedError as e:
        raise ExerciseNotDone(f"{what} is not implemented yet: replace the `raise NotImplementedError` line.") from e
    except Exception as e:
        raise AssertionError(f"{what} raised {type(e).__name__}: {e}") from e


def _passed(name: str, cases: int) -> None:
    print(f"✓ {name}: public checks passed ({cases} case{'' if cases == 1 else 's'})")


# ------------------------------------------------------------------------ probes: kernel side
def _outcome(fn, *args, convert: Callable) -> dict:
    """One call of an answer, as plain data: {"value": convert(result)}, or what went wrong instead."""
    try:
        value = fn(*args)
    except NotImplementedError:
        return {"not_done": True}
    except Exception as e:
        return {"raised": type(e).__name__, "message": str(e)[:300]}
    if value is None:
        return {"none": True}
    try:
        return {"value": convert(value)}
    except Exception:
        return {"wrong_type": type(value).__name__, "repr": _repr(value)}


def _repr(value) -> str:
    try:
        return repr(value)[:200]
    except Exception:
        return f"<{type(value).__name__}>"


def _plain_value(value):
    """A tensor as a plain torch.Tensor, detached and copied (no subclass's __torch_function__ runs); a numpy
    array or scalar as a plain one; anything else as it is."""
    if isinstance(value, torch.Tensor):
        with torch._C.DisableTorchFunctionSubclass():
            return torch.Tensor.as_subclass(value, torch.Tensor).detach().cpu().clone()
    if isinstance(value, np.ndarray) and type(value) is not np.ndarray:
        return np.array(value)
    return value


def _float_list(value) -> dict:
    """An array-like as {"shape", "values"}: float64 values, flattened."""
    value = _plain_value(value)
    if isinstance(value, torch.Tensor):
        value = value.double().numpy()
    array = np.asarray(value, dtype=float)
    return {"shape": list(array.shape), "values": [float(v) for v in array.ravel()]}


def _scalar(value) -> int | float:
    """A number as a plain int or float; a one-element tensor or a numpy scalar counts as its value. Types are
    exact: a subclass of int or float (whose conversions could say anything) is no number."""
    value = _plain_value(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if type(value) in (int, *NUMPY_INTS):
        return int(value)
    if type(value) in (float, *NUMPY_FLOATS):
        return float(value)
    raise TypeError(f"not a number: {type(value).__name__}")


NUMPY_INTS = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
NUMPY_FLOATS = (np.float16, np.float32, np.float64)


def _state(module: torch.nn.Module) -> dict:
    """A module's state dict as plain data."""
    return {k: _float_list(v) for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------ judges: plain data only
def _field(record, key, kind):
    if not isinstance(record, dict) or key not in record:
        raise MalformedRecord(f"the check's record has no '{key}'")
    value = record[key]
    if kind is float:
        ok = type(value) in (int, float)
    elif kind is int:
        ok = type(value) is int
    else:
        ok = type(value) is kind
    if not ok:
        raise MalformedRecord(f"the check's record holds a {type(value).__name__} as '{key}'")
    return value


MAX_DIMS = 8  # no check's array has more dimensions


def _array_of(data) -> np.ndarray:
    """The float array a probe recorded with _float_list, its shape checked."""
    shape = _field(data, "shape", list)
    values = _field(data, "values", list)
    if len(shape) > MAX_DIMS or not all(type(n) is int and 0 <= n <= len(values) + 1 for n in shape) \
            or not all(type(v) in (int, float) for v in values):
        raise MalformedRecord("the check's record holds an array of other things than numbers")
    size = 1
    for n in shape:  # each factor at most len(values) + 1: the product stays small, whatever the record says
        size = min(size * n, len(values) + 1)
    if size != len(values):
        raise MalformedRecord("the check's record holds an array whose shape does not match its values")
    return np.array(values, dtype=float).reshape(shape)


def _value(outcome, what: str):
    """The answer's converted result, or the AssertionError its check gives for what happened instead."""
    if not isinstance(outcome, dict):
        raise MalformedRecord("the check's record is not a record of a call")
    if outcome.get("not_done") is True:
        raise ExerciseNotDone(f"{what} is not implemented yet: replace the `raise NotImplementedError` line.")
    if "raised" in outcome:
        raise AssertionError(f"{what} raised {_field(outcome, 'raised', str)}: {_field(outcome, 'message', str)}")
    if outcome.get("none") is True:
        raise AssertionError(f"{what} returned None. Hint: end the function with `return` and the result.")
    if "wrong_type" in outcome:
        raise AssertionError(f"{what} should return numbers (an array), got {_field(outcome, 'wrong_type', str)}")
    if "value" not in outcome:
        raise MalformedRecord("the check's record holds no result")
    return outcome["value"]


def _number_value(outcome, what: str) -> float:
    """The answer's result as a finite number, as _number said it for the loop exercises."""
    if isinstance(outcome, dict) and ("none" in outcome or "wrong_type" in outcome):
        shown = "None" if outcome.get("none") is True else _field(outcome, "repr", str)
        raise AssertionError(f"{what} should return a number, got {shown}")
    value = _value(outcome, what)
    if type(value) not in (int, float) or not math.isfinite(value):
        raise AssertionError(f"{what} should return a number, got {value!r}")
    return float(value)


def as_record(data):
    """The record as grading sees it: through JSON, so a check run in a notebook judges the same data."""
    return json.loads(json.dumps(data))


# ------------------------------------------------------------------------------------ lesson 1
def _gd_step_cases(seed: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    if seed == 0:
        return [(np.array([1.0, 2.0]), np.array([0.5, -1.0]), 0.1),
                (np.array([3.0]), np.array([6.0]), 0.5),
                (np.array([-1.0, 0.0, 4.0]), np.array([2.0, 2.0, -2.0]), 0.0)]
    rng = np.random.default_rng(seed)
    cases = [(rng.normal(0, 2, n).round(3), rng.normal(0, 2, n).round(3), round(float(rng.uniform(0.05, 2)), 3))
             for n in (2, 1, 4)]
    theta = rng.normal(0, 2, 2).round(3)
    return cases + [(theta, np.zeros(2), 10.0)]


def probe_gd_step(gd_step, seed: int = 0) -> dict:
    out = []
    for theta, grad, lr in _gd_step_cases(seed):
        theta = theta.copy()
        record = _outcome(gd_step, theta, grad.copy(), lr, convert=_float_list)
        record["theta_after"] = _float_list(theta)
        out.append(record)
    return {"cases": out}


def judge_gd_step(record, seed: int = 0) -> None:
    cases = _gd_step_cases(seed)
    got = _field(record, "cases", list)
    if len(got) != len(cases):
        raise MalformedRecord("the check's record has the wrong number of cases")
    for number, ((before, grad, lr), result) in enumerate(zip(cases, got), 1):
        where = f"case {number} of {len(cases)}, gd_step(theta={before}, grad={grad}, lr={lr})"
        out = _array_of(_value(result, "gd_step"))
        theta = _array_of(_field(result, "theta_after", dict))
        if theta.shape != before.shape or not np.array_equal(theta, before):
            raise AssertionError(f"{where} changed the caller's theta to {theta}. Hint: leave the caller's "
                                 "parameters as they were and return the new ones in a new array.")
        expected = before - lr * grad
        if out.shape != expected.shape:
            raise AssertionError(f"{where} returned shape {out.shape} for parameters of shape {before.shape}: "
                                 "it should return the whole updated parameter vector.")
        if np.allclose(out, before + lr * grad) and not np.allclose(out, expected):
            raise AssertionError(f"{where} moved *up* the gradient. Descent goes against it.")
        if not np.allclose(out, expected):
            raise AssertionError(f"{where} returned {out}. "
                                 "Hint: the step is proportional to both the learning rate and the gradient.")
    _passed("gd_step", len(cases))


def check_gd_step(gd_step, seed: int = 0) -> None:
    """gd_step(theta, grad, lr) -> the parameters after one gradient-descent step, in a new array."""
    judge_gd_step(as_record(probe_gd_step(gd_step, seed)), seed)


NUMERICAL_GRAD_EPS = 1e-5


def _numerical_grad_cases(seed: int) -> list[tuple]:
    """(name, fn, theta) per case (the exact gradients are the judge's: _numerical_grad_exact).

    The steep valley near its minimum has large curvature and a small gradient. There a one-sided
    difference (fn(θ + eps) − fn(θ)) / eps is off by eps/2 × curvature, far beyond the tolerance, while the
    central difference stays exact (on a quadratic, up to rounding)."""
    if seed == 0:
        x = np.linspace(-2, 2, 7)
        y = np.sin(x)
        return [("a bowl, f(θ) = Σ θ_i²", lambda t: float(np.sum(t ** 2)), np.array([1.0, -2.0, 0.5])),
                ("f(θ) = sin(θ₀)·θ₁", lambda t: float(np.sin(t[0]) * t[1]), np.array([0.3, 2.0])),
                ("the squared error of section 3's model", lambda t: gd.squared_error(t, x, y),
                 np.array([1.0, 0.8, 0.1])),
                ("a steep valley near its minimum, f(θ) = 1000·(θ₀ − 1)² + (θ₁ + 2)²",
                 lambda t: float(1000 * (t[0] - 1) ** 2 + (t[1] + 2) ** 2), np.array([1.001, -1.5]))]
    rng = np.random.default_rng(seed)
    a, c = float(round(rng.uniform(1000, 3000))), round(float(rng.uniform(-1, 1)), 3)
    valley = np.array([c + round(float(rng.uniform(1e-4, 3e-4)), 5), round(float(rng.uniform(0.5, 1.5)), 2)])
    point = rng.normal(0, 1.5, 3).round(2)
    return [("a steep valley", lambda t: float(a * (t[0] - c) ** 2 + t[1] ** 3 - 3 * t[1]), valley),
            ("a product", lambda t: float(t[0] * t[1] + t[2] ** 2), point)]


@judge_only
def _numerical_grad_exact(seed: int) -> list:
    """The exact gradient of each of _numerical_grad_cases(seed)'s functions."""
    if seed == 0:
        x = np.linspace(-2, 2, 7)
        y = np.sin(x)
        return [lambda t: 2 * t, lambda t: np.array([np.cos(t[0]) * t[1], np.sin(t[0])]),
                lambda t: gd.grad_by_hand(t, x, y), lambda t: np.array([2000 * (t[0] - 1), 2 * (t[1] + 2)])]
    rng = np.random.default_rng(seed)
    a, c = float(round(rng.uniform(1000, 3000))), round(float(rng.uniform(-1, 1)), 3)
    return [lambda t: np.array([2 * a * (t[0] - c), 3 * t[1] ** 2 - 3]), lambda t: np.array([t[1], t[0], 2 * t[2]])]


def probe_numerical_grad(numerical_grad, seed: int = 0) -> dict:
    out = []
    for _, fn, theta in _numerical_grad_cases(seed):
        theta = theta.copy()
        record = _outcome(numerical_grad, fn, theta, NUMERICAL_GRAD_EPS, convert=_float_list)
        record["theta_after"] = _float_list(theta)
        out.append(record)
    return {"cases": out}


def judge_numerical_grad(record, seed: int = 0) -> None:
    eps = NUMERICAL_GRAD_EPS
    cases = _numerical_grad_cases(seed)
    got = _field(record, "cases", list)
    if len(got) != len(cases):
        raise MalformedRecord("the check's record has the wrong number of cases")
    for number, ((name, fn, before), exact, result) in enumerate(zip(cases, _numerical_grad_exact(seed), got), 1):
        where = f"case {number} of {len(cases)} ({name}, θ={before}, eps={eps:g})"
        out = _array_of(_value(result, "numerical_grad"))
        theta = _array_of(_field(result, "theta_after", dict))
        if theta.shape != before.shape or not np.allclose(theta, before, rtol=0, atol=1e-12):
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
        with np.errstate(divide="ignore", invalid="ignore"):
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


def check_numerical_grad(numerical_grad, seed: int = 0) -> None:
    """numerical_grad(fn, theta, eps) -> central-difference estimate of ∇fn(θ), θ left unchanged."""
    judge_numerical_grad(as_record(probe_numerical_grad(numerical_grad, seed)), seed)


def probe_converging_lr(lr, problem=None, start=None, steps=None, tol: float = 1e-6) -> dict:
    """Only the learner's rate is recorded; the run happens on the judge's side, on its own problem."""
    try:
        rate = float(_scalar(lr))
    except TypeError:
        rate = None
    return {"lr": rate, "repr": _repr(lr) if rate is None else repr(rate)}


def judge_converging_lr(record, problem: gd.Quadratic, start, steps: int, tol: float = 1e-6) -> None:
    """Plain GD with the recorded rate on `problem` from `start` ends its whole budget of `steps` with
    loss < tol. The final loss counts, not the first step below tol: a run can dip below tol and then grow."""
    lr, shown = record.get("lr") if isinstance(record, dict) else None, _field(record, "repr", str)
    if type(lr) not in (int, float) or not math.isfinite(lr) or lr <= 0:
        raise AssertionError(f"my_lr should be a positive number, got {shown}")
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


def check_converging_lr(lr, problem: gd.Quadratic, start, steps: int, tol: float = 1e-6) -> None:
    """Plain GD with `lr` on `problem` from `start` ends its whole budget of `steps` with loss < tol."""
    judge_converging_lr(as_record(probe_converging_lr(lr, problem, start, steps, tol)), problem, start, steps, tol)


def _training_loop_cases(seed: int) -> list[tuple[float, float, int]]:
    """(w, b, data and torch seed) per case."""
    if seed == 0:
        return [(2.0, -1.0, 0), (-0.5, 3.0, 1)]
    rng = np.random.default_rng(seed)
    return [(round(float(rng.uniform(-3, 3)), 2), round(float(rng.uniform(-3, 3)), 2), seed * 10 + k) for k in range(2)]


def probe_training_loop(train_linear, seed: int = 0) -> dict:
    out = []
    for w, b, case_seed in _training_loop_cases(seed):
        x, y = gd.make_regression(200, w=w, b=b, noise=0.3, seed=case_seed)
        torch.manual_seed(case_seed)  # so the answer's own nn.Linear(1, 1) starts where the judge's does
        record = _outcome(train_linear, x, y, 0.1, 150, convert=lambda m: m)
        model = record.pop("value", None)
        if model is not None:
            record["type"] = type(model).__name__
            record["is_module"] = isinstance(model, torch.nn.Module)
            if record["is_module"]:
                try:  # judged on a fresh nn.Linear(1, 1) holding its weights: its own forward is not asked
                    fresh = torch.nn.Linear(1, 1)
                    fresh.load_state_dict({k: _plain_value(v) for k, v in model.state_dict().items()})
                    with torch.no_grad():
                        record["predictions"] = _float_list(fresh(x))
                    record["parameters"] = [_float_list(p) for p in fresh.parameters()]
                except Exception as e:
                    record["forward_raised"] = f"{type(e).__name__}: {str(e)[:300]}"
        out.append(record)
    return {"cases": out}


def judge_training_loop(record, seed: int = 0) -> None:
    cases = _training_loop_cases(seed)
    got = _field(record, "cases", list)
    if len(got) != len(cases):
        raise MalformedRecord("the check's record has the wrong number of cases")
    for number, ((w, b, case_seed), result) in enumerate(zip(cases, got), 1):
        where = f"case {number} of {len(cases)} (points around y = {w:g}x {'+' if b >= 0 else '−'} {abs(b):g})"
        if "type" not in result:
            _value(result, "train_linear")
            raise MalformedRecord("the check's record holds no model")
        if not _field(result, "is_module", bool):
            raise AssertionError(f"train_linear should return the trained model, got {_field(result, 'type', str)}")
        if "forward_raised" in result:
            raise AssertionError(f"the model train_linear returned raised {_field(result, 'forward_raised', str)}")
        x, y = gd.make_regression(200, w=w, b=b, noise=0.3, seed=case_seed)
        predictions = _array_of(_field(result, "predictions", dict))
        if predictions.shape != tuple(y.shape):
            raise AssertionError(f"{where}: the model's output has shape {predictions.shape} for inputs of shape "
                                 f"{tuple(x.shape)}; expected {tuple(y.shape)}, one prediction per point.")
        torch.manual_seed(case_seed)
        untrained = torch.nn.Linear(1, 1)  # what the answer's own nn.Linear(1, 1) starts from, same seed
        with torch.no_grad():
            loss = float(torch.nn.functional.mse_loss(torch.tensor(predictions, dtype=y.dtype), y))
            start_loss = float(torch.nn.functional.mse_loss(untrained(x), y))
        best_w, best_b = gd.least_squares(x, y)
        best = float(np.mean((best_w * x.flatten().numpy() + best_b - y.flatten().numpy()) ** 2))
        if math.isfinite(loss) and loss <= best * 1.02 + 1e-4:
            continue
        parameters = [_array_of(p) for p in _field(result, "parameters", list)]
        if all(p.shape == tuple(q.shape) and np.array_equal(p, q.detach().double().numpy())
               for p, q in zip(parameters, untrained.parameters())):
            hint = ("the parameters never moved. Only optimizer.step() changes them, from .grad: is it called, "
                    "and when it runs, does .grad hold the gradient backward() just computed?")
        elif not math.isfinite(loss) or loss > start_loss:
            hint = "the loss grew from where it started: does each update go against the gradient?"
        else:
            hint = ("run the loop by hand for 3 steps and print the weight's .grad each time. "
                    "Is each step's gradient only from that step?")
        raise AssertionError(f"{where}: after training, the loss is {loss:.4g}, but the best line reaches "
                             f"{best:.4g}. Hint: {hint}")
    _passed("train_linear", len(cases))


def check_training_loop(train_linear, seed: int = 0) -> None:
    """train_linear(x, y, lr, steps) -> a trained nn.Linear(1, 1) that fits the line."""
    judge_training_loop(as_record(probe_training_loop(train_linear, seed)), seed)


# ------------------------------------------------------------------------------------ lesson 2
def _count_trainable_cases(seed: int) -> list[tuple[int, int]]:
    """(number of classes, frozen depth) per case."""
    if seed == 0:
        return [(5, 0), (5, 3), (5, 5)]
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(2, 10)), int(d)) for d in sorted(rng.choice(6, 3, replace=False))]


def probe_count_trainable(count_trainable, seed: int = 0) -> dict:
    from . import models

    return {"cases": [_outcome(count_trainable, models.freeze(models.build_resnet18(k), depth), convert=_scalar)
                      for k, depth in _count_trainable_cases(seed)]}


def judge_count_trainable(record, seed: int = 0) -> None:
    from . import models

    cases = _count_trainable_cases(seed)
    got_all = _field(record, "cases", list)
    if len(got_all) != len(cases):
        raise MalformedRecord("the check's record has the wrong number of cases")
    for (k, depth), result in zip(cases, got_all):
        if isinstance(result, dict) and ("none" in result or "wrong_type" in result):
            got, shown = None, "None" if result.get("none") is True else _field(result, "repr", str)
        else:
            got = _value(result, "count_trainable")
            shown = repr(got)
        model = models.freeze(models.build_resnet18(k), depth)
        want = models.trainable_parameters(model)
        if type(got) is int and got == want:
            continue
        everything = sum(p.numel() for p in model.parameters())
        tensors = sum(1 for p in model.parameters() if p.requires_grad)
        hint = ("that is every parameter, frozen ones included: which ones does the optimizer change?" if got == everything
                else "that counts tensors; count the numbers inside them (Tensor.numel())" if got == tensors
                else "count the elements of the parameters whose requires_grad is True")
        raise AssertionError(f"with {depth} stage(s) frozen, count_trainable gave {shown}. Hint: {hint}")
    _passed("count_trainable", len(cases))


def check_count_trainable(count_trainable, seed: int = 0) -> None:
    """count_trainable(model) -> how many parameter values (not tensors) training would change."""
    judge_count_trainable(as_record(probe_count_trainable(count_trainable, seed)), seed)


def _head_groups_case(seed: int) -> tuple[int, str, float]:
    """(number of classes, last frozen stage, lr)."""
    if seed == 0:
        return 5, "layer2", 0.003
    rng = np.random.default_rng(seed)
    return int(rng.integers(2, 10)), str(rng.choice(["stem", "layer1", "layer2", "layer3", "layer4"])), \
        float(rng.choice([0.001, 0.002, 0.005, 0.01, 0.02]))


def probe_head_groups(head_groups, seed: int = 0) -> dict:
    """The groups with each parameter named (None: not one of the model's) and each lr as a number."""
    from . import models

    k, stage, lr = _head_groups_case(seed)
    model = models.freeze(models.build_resnet18(k), stage)
    names = {id(p): n for n, p in model.named_parameters()}
    record = _outcome(head_groups, model, lr, convert=lambda g: g)
    groups = record.pop("value", None)
    if groups is None:
        return record
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) and "params" in g for g in groups):
        return {"not_groups": True}
    plain = []
    try:
        for g in groups:
            rate = g.get("lr", lr)
            plain.append({"params": [names.get(id(p)) for p in g["params"]],
                          "lr": float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool)
                          else _repr(rate)})
    except Exception:
        return {"not_groups": True}
    try:
        torch.optim.SGD(groups, lr=lr)  # a real optimizer must accept them
        refused = None
    except Exception as e:
        refused = f"{type(e).__name__}: {str(e)[:300]}"
    return {"groups": plain, "optimizer_refused": refused}


def judge_head_groups(record, seed: int = 0) -> None:
    from . import models

    k, stage, lr = _head_groups_case(seed)
    if not isinstance(record, dict):
        raise MalformedRecord("the check's record is not a record of a call")
    if "raised" in record or "not_done" in record:
        _value(record, "head_groups")
    if "groups" not in record:
        raise AssertionError("head_groups should return a list of dicts, each with 'params' (and 'lr').")
    model = models.freeze(models.build_resnet18(k), stage)
    head = {f"fc.{n}" for n, _ in model.fc.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    seen = {}
    for g in _field(record, "groups", list):
        rate = g.get("lr") if isinstance(g, dict) else None
        if type(rate) not in (int, float, str):
            raise MalformedRecord("the check's record holds a group without a learning rate")
        for name in _field(g, "params", list):
            if name is not None and type(name) is not str:
                raise MalformedRecord("the check's record names a parameter with something else than a string")
            if name is not None and name in seen:
                raise AssertionError("a parameter appears in two groups. Hint: each must be in exactly one.")
            seen[name] = rate
    if set(seen) - trainable:
        raise AssertionError("the groups include frozen parameters. Hint: leave out those with requires_grad False.")
    if trainable - set(seen):
        raise AssertionError(f"{len(trainable - set(seen))} trainable parameter tensors are in no group. "
                             "Hint: every trainable parameter belongs to the head or to the body.")
    for name, rate in seen.items():
        want = 10 * lr if name in head else lr
        if isinstance(rate, str) or not math.isclose(rate, want, rel_tol=1e-9):
            where = "the head" if name in head else "the body"
            shown = rate if isinstance(rate, str) else f"{rate:g}"
            raise AssertionError(f"a parameter of {where} has lr {shown}; expected {want:g} with lr={lr:g}. "
                                 "Hint: which group should be 10 times faster?")
    refused = record.get("optimizer_refused")
    if refused is not None:
        raise AssertionError(f"torch.optim.SGD refused the groups: {_field(record, 'optimizer_refused', str)}")
    _passed("head_groups", 1)


def check_head_groups(head_groups, seed: int = 0) -> None:
    """head_groups(model, lr) -> optimizer parameter groups: the head at 10 x lr, the other trainable ones at lr."""
    judge_head_groups(as_record(probe_head_groups(head_groups, seed)), seed)


def _depth_row(depth, val_acc, lr=0.02):
    return {"depth": depth, "frozen": "...", "lr": lr, "val_acc": val_acc, "trainable_params": 1000 * (6 - depth),
            "seconds": 10.0 + depth, "diverged": None if val_acc is not None else "diverged at step 3 (epoch 1)"}


def _choose_depth_cases(seed: int) -> list[list[dict]]:
    """The rows of a sweep, per case (the right depths are the judge's: _best_depths)."""
    row = _depth_row
    if seed == 0:
        return [[row(d, a) for d, a in zip(range(6), (0.48, 0.52, 0.55, 0.61, 0.70, 0.66))],
                [row(3, 0.61), row(0, 0.72), row(5, 0.66), row(1, 0.50)],
                [row(0, None), row(2, 0.58), row(4, 0.64), row(5, 0.60), row(1, None)],
                [row(5, 0.62), row(2, 0.62), row(3, 0.55)]]
    rng = np.random.default_rng(seed)
    cases = []
    for n in (6, 5, 4):
        depths = [int(d) for d in rng.permutation(6)[:n]]
        accs = [round(float(a), 3) for a in rng.choice(np.arange(0.40, 0.80, 0.005), n, replace=False)]
        diverged = set(int(i) for i in rng.choice(n, 2, replace=False)) if n < 6 else set()
        cases.append([row(d, None if i in diverged else a) for i, (d, a) in enumerate(zip(depths, accs))])
    return cases


@judge_only
def _best_depths(rows: list[dict]) -> set[int]:
    best = max(r["val_acc"] for r in rows if r["val_acc"] is not None)
    return {r["depth"] for r in rows if r["val_acc"] == best}


def _depth_plain(got) -> dict:
    """A depth answer as plain data: an int, a whole row, or something else shown."""
    return {"row": True} if isinstance(got, dict) else {"int": got} if type(got) is int else {"repr": _repr(got)}


def _depth_answer(result, name: str, case: str, shown: str) -> int:
    """The depth an answer returned, or the AssertionError that says what it returned instead."""
    if isinstance(result, dict) and result.get("raised") == "TypeError":
        raise AssertionError(f"{case}: {name} raised TypeError ({_field(result, 'message', str)}) on {shown}. Hint: "
                             "a diverged run has val_acc None; leave such runs out before comparing.")
    if isinstance(result, dict) and "raised" in result:
        raise AssertionError(f"{case}: {name} raised {_field(result, 'raised', str)}: {_field(result, 'message', str)}")
    value = {"repr": "None"} if isinstance(result, dict) and result.get("none") is True else _value(result, name)
    if not isinstance(value, dict):
        raise MalformedRecord("the check's record holds no result")
    if value.get("row") is True:
        raise AssertionError(f"{case}: {name} returned a whole row. Hint: return its depth (an int).")
    if "int" not in value:
        raise AssertionError(f"{case}: {name} should return a depth (an int), got {_field(value, 'repr', str)}")
    return _field(value, "int", int)


def probe_choose_depth(choose_depth, seed: int = 0) -> dict:
    return {"cases": [_outcome(choose_depth, [dict(r) for r in rows], convert=_depth_plain)
                      for rows in _choose_depth_cases(seed)]}


def judge_choose_depth(record, seed: int = 0) -> None:
    """The depth of the run with the highest validation accuracy (diverged runs, whose val_acc is None,
    skipped)."""
    cases = _choose_depth_cases(seed)
    got_all = _field(record, "cases", list)
    if len(got_all) != len(cases):
        raise MalformedRecord("the check's record has the wrong number of cases")
    for i, (rows, result) in enumerate(zip(cases, got_all), 1):
        best = _best_depths(rows)
        shown = [(r["depth"], r["val_acc"]) for r in rows]
        got = _depth_answer(result, "choose_depth", f"case {i}", f"runs (depth, val_acc) {shown}")
        if got in best:
            continue
        positions = [r["depth"] for r in rows]
        hint = ("that is the run's position in the list, not its depth: read the row's 'depth'." if
                0 <= got < len(rows) and positions[got] in best and got not in positions[:1] else
                "pick the run with the HIGHEST validation accuracy." if got == min(
                    (r for r in rows if r["val_acc"] is not None), key=lambda r: r["val_acc"])["depth"] else
                "compare the runs' 'val_acc' values and return the depth of the best one.")
        raise AssertionError(f"case {i}: for runs (depth, val_acc) {shown} you chose depth {got!r}. Hint: {hint}")
    _passed("choose_depth", len(cases))


def check_choose_depth(choose_depth, seed: int = 0) -> None:
    """choose_depth(rows) -> the depth of the run with the highest validation accuracy (diverged runs,
    whose val_acc is None, skipped)."""
    judge_choose_depth(as_record(probe_choose_depth(choose_depth, seed)), seed)


# Shared by the loop exercises: a tiny classifier on 4 features whose BatchNorm (and dropout) make train
# mode visibly different from eval mode, and batches that must be moved to the device before use.
class NotMoved(torch.Tensor):
    """A batch tensor as a loader yields it, before `.to(device)`. The check's model refuses it, as a GPU
    model refuses a CPU batch, so a missing device move shows on any machine."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        result = super().__torch_function__(func, types, args, kwargs or {})
        if func in (torch.Tensor.to, torch.Tensor.cuda) and isinstance(result, torch.Tensor):
            return result.as_subclass(torch.Tensor)
        return result


class ProbeNet(torch.nn.Module):
    """Records, for every forward pass, whether it ran in train mode and with gradients on."""

    def __init__(self, num_classes: int = 3, dropout: float = 0.5, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.bn = torch.nn.BatchNorm1d(4)
        self.drop = torch.nn.Dropout(dropout)
        self.fc = torch.nn.Linear(4, num_classes)
        with torch.no_grad():  # running statistics far from any batch's: train mode changes the answer
            self.bn.running_mean.fill_(1.5)
            self.bn.running_var.fill_(4.0)
        self.calls = []

    def forward(self, x):
        if isinstance(x, NotMoved):
            raise RuntimeError("Expected all tensors to be on the same device: this batch was never moved to "
                               "`device`. Hint: x = x.to(device) (and y too) before using a batch.")
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.fc(self.drop(self.bn(x)))


def _probe_batches(sizes, seed: int, num_classes: int = 3):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        x = torch.randn(n, 4, generator=gen) * 2 + 1
        y = torch.randint(0, num_classes, (n,), generator=gen)
        out.append((x.as_subclass(NotMoved), y.as_subclass(NotMoved)))
    return out


def _plain(batches):
    return [(x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)) for x, y in batches]


def _calls(model: ProbeNet) -> list[list[bool]]:
    return [[bool(training), bool(grad)] for training, grad in model.calls]


def _recorded_calls(result) -> list[tuple[bool, bool]]:
    calls = _field(result, "calls", list)
    if not all(isinstance(c, list) and len(c) == 2 and all(type(v) is bool for v in c) for c in calls):
        raise MalformedRecord("the check's record holds malformed forward passes")
    return [tuple(c) for c in calls]


EVALUATE_ACCURACY_SIZES = [(64, 64, 5), (100, 7), (33, 33, 33, 2)]


def probe_evaluate_accuracy(evaluate_accuracy, seed: int = 0) -> dict:
    out = []
    for i, sz in enumerate(EVALUATE_ACCURACY_SIZES, 1):
        model = ProbeNet(seed=seed + i)
        model.train()  # as a training loop leaves it
        record = _outcome(evaluate_accuracy, model, _probe_batches(sz, seed + 10 * i), torch.device("cpu"),
                          convert=_scalar)
        record["calls"] = _calls(model)
        out.append(record)
    return {"cases": out}


def judge_evaluate_accuracy(record, seed: int = 0) -> None:
    got_all = _field(record, "cases", list)
    if len(got_all) != len(EVALUATE_ACCURACY_SIZES):
        raise MalformedRecord("the check's record has the wrong number of cases")
    for i, (sz, result) in enumerate(zip(EVALUATE_ACCURACY_SIZES, got_all), 1):
        got = _number_value(result, "evaluate_accuracy")
        calls = _recorded_calls(result)
        if not calls:
            raise AssertionError("evaluate_accuracy never called the model.")
        if any(training for training, _ in calls):
            raise AssertionError("the model ran in training mode: BatchNorm then normalises with each batch's own "
                                 "statistics and dropout drops units, so the accuracy is not the model's. "
                                 "Hint: switch the model to evaluation mode first.")
        if any(grad for _, grad in calls):
            raise AssertionError("gradients were tracked during evaluation, which costs memory and time for "
                                 "nothing. Hint: run the loop under torch.no_grad() (or torch.inference_mode()).")
        model = ProbeNet(seed=seed + i)
        model.eval()
        with torch.no_grad():
            hits = [(model(x).argmax(1) == y).sum().item() for x, y in _plain(_probe_batches(sz, seed + 10 * i))]
        want = sum(hits) / sum(sz)
        per_batch = sum(h / n for h, n in zip(hits, sz)) / len(sz)
        if math.isclose(got, 100 * want, rel_tol=1e-6):
            raise AssertionError(f"case {i}: you returned {got:g}, a percentage. Hint: return the fraction (0..1).")
        if not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9):
            hint = ("that is the mean of the batches' accuracies, but the batches have different sizes "
                    f"{list(sz)}: count correct predictions and examples over the whole set, then divide."
                    if math.isclose(got, per_batch, rel_tol=1e-6) else
                    "count predictions (argmax over the classes) equal to the labels, over all batches.")
            raise AssertionError(f"case {i}: batches of sizes {list(sz)} gave {got:.4f}. Hint: {hint}")
    _passed("evaluate_accuracy", len(EVALUATE_ACCURACY_SIZES))


def check_evaluate_accuracy(evaluate_accuracy, seed: int = 0) -> None:
    """evaluate_accuracy(model, batches, device) -> the share of correctly classified examples (0..1)."""
    judge_evaluate_accuracy(as_record(probe_evaluate_accuracy(evaluate_accuracy, seed)), seed)


@judge_only
def _reference_epoch(model, batches, optimizer) -> float:
    model.train()
    total, n = 0.0, 0
    for x, y in _plain(batches):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        total, n = total + loss.item() * len(y), n + len(y)
    return total / n


TRAIN_ONE_EPOCH_SIZES = [(32, 32, 32, 8), (50, 50, 3)]


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def probe_train_one_epoch(train_one_epoch, seed: int = 0) -> dict:
    device, out = torch.device("cpu"), []
    for i, sz in enumerate(TRAIN_ONE_EPOCH_SIZES, 1):
        model = ProbeNet(dropout=0.0, seed=seed + i)
        model.eval()  # as an evaluation leaves it: the epoch must switch back to training mode
        record = _outcome(train_one_epoch, model, _probe_batches(sz, seed + 20 * i), _sgd(model), device,
                          convert=_scalar)
        record["calls"] = _calls(model)
        record["state"] = _state(model)
        out.append(record)
    model = ProbeNet(dropout=0.0, seed=seed)
    optimizer = _sgd(model)
    repeated = []
    for _ in range(4):
        repeated.append(_outcome(train_one_epoch, model, _probe_batches((64, 64), seed + 99), optimizer, device,
                                 convert=_scalar))
        if "value" not in repeated[-1]:
            break
    return {"cases": out, "repeated": repeated}


def judge_train_one_epoch(record, seed: int = 0) -> None:
    """One pass of zero_grad / forward / cross-entropy / backward / step over every batch, returning the
    epoch's mean training loss per example."""
    got_all = _field(record, "cases", list)
    if len(got_all) != len(TRAIN_ONE_EPOCH_SIZES):
        raise MalformedRecord("the check's record has the wrong number of cases")
    for i, (sz, result) in enumerate(zip(TRAIN_ONE_EPOCH_SIZES, got_all), 1):
        got = _number_value(result, "train_one_epoch")
        calls = _recorded_calls(result)
        reference = ProbeNet(dropout=0.0, seed=seed + i)
        before = {k: v.clone() for k, v in reference.state_dict().items()}
        ref_loss = _reference_epoch(reference, _probe_batches(sz, seed + 20 * i), _sgd(reference))
        if not calls or not any(training for training, _ in calls):
            raise AssertionError("the model never ran in training mode (it came in evaluation mode). "
                                 "Hint: switch it to training mode at the start of the epoch.")
        if len(calls) != len(sz):
            raise AssertionError(f"the model ran {len(calls)} forward passes for {len(sz)} batches: "
                                 "one forward pass per batch.")
        recorded = _field(result, "state", dict)
        ref_state = reference.state_dict()
        if set(recorded) != set(ref_state):
            raise MalformedRecord("the check's record holds another model's state")
        state = {k: torch.from_numpy(_array_of(v)) for k, v in recorded.items()}
        if any(state[k].shape != ref_state[k].shape for k in ref_state):
            raise MalformedRecord("the check's record holds another model's state")
        if all(torch.equal(state[k], before[k].double()) for k in ("fc.weight", "bn.weight")):
            raise AssertionError("the weights did not change. Hint: the optimizer's step must come after "
                                 "backward and before the gradients are zeroed again.")
        moved = [k for k in ref_state if not torch.allclose(state[k].float(), ref_state[k].float(), rtol=1e-4, atol=1e-6)]
        if moved:
            raise AssertionError(f"case {i}: after the epoch, {', '.join(moved)} differ from one correct epoch. "
                                 "Hint: each step must use only its own batch's gradient (zero the gradients before "
                                 "backward), in the order zero_grad, forward, loss, backward, step; the loss is "
                                 "torch.nn.functional.cross_entropy.")
        if not math.isclose(got, ref_loss, rel_tol=1e-4):
            hint = (f"weight each batch's loss by its number of examples (batches of {list(sz)}), or sum the "
                    "per-example losses and divide by the total.")
            raise AssertionError(f"case {i}: the weights are right, but the returned loss is {got:.5f}; the mean "
                                 f"loss per example over the epoch is {ref_loss:.5f}. Hint: {hint}")
    losses = [_number_value(r, "train_one_epoch") for r in _field(record, "repeated", list)]
    if len(losses) != 4:
        raise MalformedRecord("the check's record has the wrong number of epochs")
    if not losses[-1] < losses[0]:
        raise AssertionError(f"over 4 epochs on the same batches the loss went {[round(l, 4) for l in losses]}: "
                             "it should go down.")
    _passed("train_one_epoch", len(TRAIN_ONE_EPOCH_SIZES) + 1)


def check_train_one_epoch(train_one_epoch, seed: int = 0) -> None:
    """train_one_epoch(model, batches, optimizer, device) -> the epoch's mean training loss per example,
    after one pass of zero_grad / forward / cross-entropy / backward / step over every batch."""
    judge_train_one_epoch(as_record(probe_train_one_epoch(train_one_epoch, seed)), seed)


FROZEN_STAGES = ("conv1", "bn1", "layer1", "layer2", "layer3")


def _freeze_by_hand_cases(seed: int) -> list[tuple[int, int]]:
    """(torch seed, number of classes) per case."""
    return [(1, 5), (2, 5)] if seed == 0 else [(seed + 1, 2 + seed % 7), (seed + 2, 3 + seed % 5)]


def probe_freeze_by_hand(freeze_through_layer3, train_mode, seed: int = 0) -> dict:
    """Per case: requires_grad per parameter after freezing, training flags after train_mode, and the
    BatchNorm running means before and after one training batch."""
    from . import models

    out = []
    for torch_seed, k in _freeze_by_hand_cases(seed):
        torch.manual_seed(torch_seed)
        model = models.build_resnet18(k)
        record = {"freeze": _outcome(freeze_through_layer3, model, convert=lambda _: True)}
        out.append(record)
        if "raised" in record["freeze"] or "not_done" in record["freeze"]:
            break
        record["requires_grad"] = {n: bool(p.requires_grad) for n, p in model.named_parameters()}
        model.eval()
        record["train_mode"] = _outcome(train_mode, model, convert=lambda _: True)
        if "raised" in record["train_mode"] or "not_done" in record["train_mode"]:
            break
        bns = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
        record["training"] = {n: bool(m.training) for n, m in bns.items()}
        record["fc_training"] = bool(model.fc.training)
        record["before"] = {n: _float_list(m.running_mean) for n, m in bns.items()}
        model(torch.randn(8, 3, 32, 32) * 3 + 1)
        record["after"] = {n: _float_list(m.running_mean) for n, m in bns.items()}
    return {"cases": out}


def judge_freeze_by_hand(record, seed: int = 0) -> None:
    """freeze_through_layer3(model) freezes the stem (conv1, bn1) and layer1..layer3; train_mode(model) is
    what a training loop calls instead of model.train(): everything trains except the frozen BatchNorm
    layers, which stay in eval mode so their running statistics do not move."""
    from . import models

    cases = _freeze_by_hand_cases(seed)
    got_all = _field(record, "cases", list)
    if not got_all:
        raise MalformedRecord("the check's record has no case")
    for (torch_seed, k), result in zip(cases, got_all):
        outcome = _field(result, "freeze", dict)
        if "raised" in outcome or "not_done" in outcome:
            _value(outcome, "freeze_through_layer3")
        names = [n for n, _ in models.build_resnet18(k).named_parameters()]
        requires_grad = _field(result, "requires_grad", dict)
        if set(requires_grad) != set(names) or not all(type(v) is bool for v in requires_grad.values()):
            raise MalformedRecord("the check's record holds another model's parameters")
        wrong = sorted({n.split(".")[0] for n in names if requires_grad[n] == n.startswith(FROZEN_STAGES)})
        if wrong:
            parts = ", ".join(wrong)
            hint = ("layer4 and the head must keep learning" if set(wrong) & {"layer4", "fc"} else
                    "the stem is conv1 and bn1: freeze it too" if set(wrong) <= {"conv1", "bn1"} else
                    "set requires_grad to False (p.requires_grad_(False)) on every parameter of those stages")
            raise AssertionError(f"after freeze_through_layer3, these parts have the wrong requires_grad: {parts}. "
                                 f"Hint: {hint}.")
        outcome = _field(result, "train_mode", dict)
        if "raised" in outcome or "not_done" in outcome:
            _value(outcome, "train_mode")
        training = _field(result, "training", dict)
        if not all(type(v) is bool for v in training.values()):
            raise MalformedRecord("the check's record holds malformed training flags")
        should_learn = {n for n in training if n.startswith("layer4")}
        if any(training[n] for n in training if n not in should_learn):
            raise AssertionError("after train_mode, frozen BatchNorm layers are in training mode, so a training "
                                 "batch would move their running statistics. Hint: model.train() switches every "
                                 "module to training mode; put the frozen BatchNorm layers back in eval mode after it.")
        if not all(training[n] for n in should_learn) or not _field(result, "fc_training", bool):
            raise AssertionError("after train_mode, layer4's BatchNorm layers (or the model) are in eval mode: only "
                                 "the frozen ones should be. Hint: start from model.train().")
        before, after = _field(result, "before", dict), _field(result, "after", dict)
        if set(before) != set(training) or set(after) != set(training):
            raise MalformedRecord("the check's record holds another model's BatchNorm layers")
        same = {n: np.array_equal(_array_of(before[n]), _array_of(after[n])) for n in training}
        moved = [n for n in training if n not in should_learn and not same[n]]
        if moved:
            raise AssertionError(f"a training batch moved the running statistics of frozen layers ({moved[0]}, ...).")
        if all(same[n] for n in should_learn):
            raise AssertionError("layer4's BatchNorm statistics did not update in training mode.")
    if len(got_all) != len(cases):
        raise MalformedRecord("the check's record has the wrong number of cases")
    _passed("freeze by hand", len(cases))


def check_freeze_by_hand(freeze_through_layer3, train_mode, seed: int = 0) -> None:
    """freeze_through_layer3(model) freezes the stem and layer1..layer3; train_mode(model) keeps the frozen
    BatchNorm layers in eval mode."""
    judge_freeze_by_hand(as_record(probe_freeze_by_hand(freeze_through_layer3, train_mode, seed)), seed)


# ------------------------------------------------------------------------------------ graded checks
@dataclass(frozen=True)
class Graded:
    """How grading runs a check: the probe in the learner's sandboxed kernel, the judge outside it.
    `answers` are the check's parameters that are learner answers; the judge gets the others."""

    probe: Callable
    judge: Callable
    answers: tuple[str, ...]
    max_items: int = 20_000  # values in a record (course_lib.judging.within_bounds); honest ones hold far fewer


GRADED = {
    "check_gd_step": Graded(probe_gd_step, judge_gd_step, ("gd_step",)),
    "check_numerical_grad": Graded(probe_numerical_grad, judge_numerical_grad, ("numerical_grad",)),
    "check_converging_lr": Graded(probe_converging_lr, judge_converging_lr, ("lr",)),
    "check_training_loop": Graded(probe_training_loop, judge_training_loop, ("train_linear",)),
    "check_count_trainable": Graded(probe_count_trainable, judge_count_trainable, ("count_trainable",)),
    "check_head_groups": Graded(probe_head_groups, judge_head_groups, ("head_groups",)),
    "check_choose_depth": Graded(probe_choose_depth, judge_choose_depth, ("choose_depth",)),
    "check_evaluate_accuracy": Graded(probe_evaluate_accuracy, judge_evaluate_accuracy, ("evaluate_accuracy",)),
    "check_train_one_epoch": Graded(probe_train_one_epoch, judge_train_one_epoch, ("train_one_epoch",)),
    "check_freeze_by_hand": Graded(probe_freeze_by_hand, judge_freeze_by_hand, ("freeze_through_layer3", "train_mode"),
                                   max_items=100_000),
}


# ------------------------------------------------------------------------------------ lesson 3
def _pick_resolution_cases(seed: int) -> list[tuple[list[dict], float, int]]:
    """(costs, budget, epochs) per case (the right size is the judge's: _fitting_size)."""
    if seed == 0:
        ordered = [{"size": 32, "epoch_seconds": 40.0}, {"size": 64, "epoch_seconds": 150.0},
                   {"size": 128, "epoch_seconds": 600.0}, {"size": 224, "epoch_seconds": 1900.0}]
        shuffled = [ordered[2], ordered[0], ordered[3], ordered[1]]
        return [(ordered, 900, 10), (ordered, 3000, 5), (ordered, 20_000, 10), (ordered, 100, 5), (shuffled, 3000, 5),
                (shuffled, 900, 5)]
    rng = np.random.default_rng(seed)
    sizes = sorted(int(s) for s in rng.choice([32, 48, 64, 96, 128, 160, 192, 224], 4, replace=False))
    seconds = np.cumsum(rng.integers(3, 40, 4)).astype(float)
    costs = [{"size": s, "epoch_seconds": float(t)} for s, t in zip(sizes, seconds)]
    costs = [costs[i] for i in rng.permutation(4)]
    epochs = int(rng.integers(3, 12))
    return [(costs, float(budget), epochs)
            for budget in (seconds[1] * epochs, seconds[1] * epochs - 1, seconds[3] * epochs + 7, seconds[0] * epochs - 1)]


@judge_only
def _fitting_size(costs: list[dict], budget: float, epochs: int) -> int | None:
    """The largest size whose epochs fit in the budget, or None."""
    return max((r["size"] for r in costs if r["epoch_seconds"] * epochs <= budget), default=None)


def _plain_number_or_row(value) -> dict:
    """A size-like answer: a plain number, or a note that it is a whole row; with its repr for messages."""
    if isinstance(value, dict):
        return {"row": True, "repr": _repr(value)}
    if type(value) in (int, float):
        return {"number": value, "repr": _repr(value)}
    return {"repr": _repr(value)}


def probe_pick_resolution(pick_resolution, seed: int = 0) -> dict:
    return {"cases": [_outcome(pick_resolution, [dict(r) for r in costs], budget, epochs, convert=_plain_number_or_row)
                      for costs, budget, epochs in _pick_resolution_cases(seed)]}


def judge_pick_resolution(record, seed: int = 0) -> None:
    """pick_resolution(costs, budget_seconds, epochs) -> the largest size whose epochs fit, or None."""
    cases = _pick_resolution_cases(seed)
    got_all = _field(record, "cases", list)
    if len(got_all) != len(cases):
        raise MalformedRecord("the check's record has the wrong number of cases")

    def sizes(costs, fits):
        return [r["size"] for r in costs if fits(r)]

    for (costs, budget, epochs), result in zip(cases, got_all):
        want = _fitting_size(costs, budget, epochs)
        answer = {"number": None, "repr": "None"} if isinstance(result, dict) and result.get("none") is True else \
            _value(result, "pick_resolution")
        got = answer.get("number") if isinstance(answer, dict) else None
        if type(got) not in (int, float, type(None)):
            raise MalformedRecord("the check's record holds a size that is no number")
        shown = _field(answer, "repr", str)
        if "number" not in answer and answer.get("row") is not True:
            got = shown  # neither a number nor None: compares unequal to every size
        if (got is None and want is None) or (want is not None and got == want):
            continue
        case = f"with costs of {[r['size'] for r in costs]} px, a budget of {budget:g} s and {epochs} epochs you chose {shown}"
        fitting = sizes(costs, lambda r: r["epoch_seconds"] * epochs <= budget)
        if answer.get("row") is True:
            hint = "return the size (a number), not the whole row"
        elif want is None:
            hint = "when even the smallest size does not fit, return None"
        elif got == fitting[-1]:  # only differs from the largest when the rows are out of order
            hint = "the rows are not necessarily sorted by size: the last row that fits need not be the largest size"
        elif got == max(sizes(costs, lambda r: r["epoch_seconds"] * epochs < budget), default=None):
            hint = "a plan that takes exactly the budget still fits in it"
        elif got == max(sizes(costs, lambda r: r["epoch_seconds"] <= budget), default=None):
            hint = "the budget has to hold every epoch, not just one"
        elif got == min(fitting):
            hint = "of the sizes that fit, keep the largest"
        else:
            hint = "multiply the time of one epoch by the number of epochs, then keep the largest size that fits"
        raise AssertionError(f"{case}. Hint: {hint}.")
    _passed("pick_resolution", len(cases))


def check_pick_resolution(pick_resolution, seed: int = 0) -> None:
    """pick_resolution(costs, budget_seconds, epochs) -> the largest size whose epochs fit, or None."""
    judge_pick_resolution(as_record(probe_pick_resolution(pick_resolution, seed)), seed)


def _replace_head_cases(seed: int) -> list[tuple[int, int]]:
    """(classes of the model given, classes of the new head) per case."""
    if seed == 0:
        return [(5, 3), (5, 10)]
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(2, 12)), int(k)) for k in rng.choice(np.arange(2, 20), 2, replace=False)]


def probe_replace_head(replace_head, seed: int = 0) -> dict:
    """Per case: what came back, its head's kind and sizes, whether the body's weights are the same
    tensors, and the output's shape."""
    from . import models

    out = []
    for classes, k in _replace_head_cases(seed):
        model = models.build_resnet18(classes)
        body, old_head = model.layer4[1].conv2.weight, model.fc
        record = _outcome(replace_head, model, k, convert=lambda m: m)
        returned = record.pop("value", None)
        out.append(record)
        if returned is None:
            continue
        record["type"] = type(returned).__name__
        record["is_module"] = isinstance(returned, torch.nn.Module)
        if not record["is_module"]:
            continue
        head = getattr(returned, "fc", None)
        record["head_is_new_linear"] = head is not old_head and isinstance(head, torch.nn.Linear)
        if record["head_is_new_linear"]:
            record["features"] = [int(head.in_features), int(head.out_features)]
            record["has_bias"] = head.bias is not None
        layer4 = getattr(returned, "layer4", None)
        record["body_kept"] = layer4 is not None and layer4[1].conv2.weight is body
        try:
            record["output_shape"] = [int(n) for n in returned(torch.zeros(2, 3, 32, 32)).shape]
        except Exception as e:
            record["forward_raised"] = f"{type(e).__name__}: {str(e)[:300]}"
    return {"cases": out}


def judge_replace_head(record, seed: int = 0) -> None:
    """replace_head(network, num_classes) -> the same network with a fresh num_classes-way linear head."""
    cases = _replace_head_cases(seed)
    got_all = _field(record, "cases", list)
    if len(got_all) != len(cases):
        raise MalformedRecord("the check's record has the wrong number of cases")
    for (_, k), result in zip(cases, got_all):
        if isinstance(result, dict) and result.get("none") is True:
            raise AssertionError(f"replace_head(model, {k}) should return the model, got NoneType.")
        if "type" not in result:
            _value(result, "replace_head")
            raise MalformedRecord("the check's record holds no model")
        if not _field(result, "is_module", bool):
            raise AssertionError(f"replace_head(model, {k}) should return the model, got {_field(result, 'type', str)}.")
        if not _field(result, "head_is_new_linear", bool):
            raise AssertionError(f"replace_head(model, {k}): the model's fc should be a new torch.nn.Linear.")
        features = _field(result, "features", list)
        if features != [512, k]:
            raise AssertionError(f"replace_head(model, {k}): the new head maps {features[0]} -> {features[1]}; "
                                 f"ResNet18's pooled features have 512 values and there are {k} classes. "
                                 "Hint: read the old head's in_features.")
        if not _field(result, "has_bias", bool):
            raise AssertionError(f"replace_head(model, {k}): the new head has no bias; the old one had one.")
        if not _field(result, "body_kept", bool):
            raise AssertionError(f"replace_head(model, {k}): the body was replaced too: keep the pretrained layers, "
                                 "change only the head.")
        if "forward_raised" in result or _field(result, "output_shape", list) != [2, k]:
            raise AssertionError(f"replace_head(model, {k}): the model's output should have {k} columns.")
    _passed("replace_head", len(cases))


def check_replace_head(replace_head, seed: int = 0) -> None:
    """replace_head(network, num_classes) -> the same network with a fresh num_classes-way linear head."""
    judge_replace_head(as_record(probe_replace_head(replace_head, seed)), seed)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _normalize_cases(seed: int) -> list[tuple[torch.Tensor, list[float], list[float]]]:
    """(images, mean, std) per case; the images come from a generator, so the judge rebuilds them exactly."""
    gen = torch.Generator().manual_seed(seed)
    if seed == 0:
        return [(torch.rand(2, 3, 3, 3, generator=gen), [0.2, 0.5, 0.7], [0.1, 0.3, 0.6]),  # W == 3 on purpose
                (torch.rand(4, 3, 5, 7, generator=gen), (0.6, 0.3, 0.45), (0.25, 0.5, 0.2))]
    rng = np.random.default_rng(seed)
    return [(torch.rand(*shape, generator=gen), [round(float(v), 2) for v in rng.uniform(0.1, 0.9, 3)],
             tuple(round(float(v), 2) for v in rng.uniform(0.15, 0.6, 3))) for shape in [(3, 3, 2, 3), (1, 3, 4, 6)]]


def probe_normalize(normalize, seed: int = 0) -> dict:
    out = []
    for images, mean, std in _normalize_cases(seed):
        record = _outcome(normalize, images, mean, std, convert=lambda v: v)
        returned = record.pop("value", None)
        record["images_after"] = _float_list(images)
        if returned is not None:
            record["type"] = type(returned).__name__
            if isinstance(returned, torch.Tensor):
                record["output"] = _float_list(returned)
        out.append(record)
    return {"cases": out}


def judge_normalize(record, seed: int = 0) -> None:
    """normalize(images, mean, std) -> (images - mean) / std per channel, as a new tensor."""
    cases = _normalize_cases(seed)
    got_all = _field(record, "cases", list)
    if len(got_all) != len(cases):
        raise MalformedRecord("the check's record has the wrong number of cases")
    for (given, mean, std), result in zip(cases, got_all):
        if not (isinstance(result, dict) and result.get("none") is True) and "type" not in result:
            _value(result, "normalize")
        case = f"normalize(images of shape {tuple(given.shape)}, mean={list(mean)}, std={list(std)})"
        after = _array_of(_field(result, "images_after", dict))
        if after.shape != tuple(given.shape) or not np.array_equal(after, given.double().numpy()):
            raise AssertionError(f"{case} changed the images it was given. Hint: the caller still needs its batch: "
                                 "compute a new tensor instead of modifying this one in place.")
        output = _array_of(result["output"]) if isinstance(result.get("output"), dict) else None
        if output is None or output.shape != tuple(given.shape):
            what = tuple(output.shape) if output is not None else (
                "NoneType" if result.get("none") is True else _field(result, "type", str))
            raise AssertionError(f"{case} returned {what}; it should return a tensor of the images' shape.")
        out = torch.from_numpy(output)
        m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        if torch.allclose(out, ((given - m) / s).double(), atol=1e-5):
            continue
        near_misses = [
            ((given - torch.tensor(mean)) / torch.tensor(std),
             "mean and std hold one value per channel, and the channels are dim 1 of (N, 3, H, W); a tensor of "
             "shape (3,) lines up with the last dim (the width) instead. Give them a shape that broadcasts over dim 1"),
            ((given - m) / s ** 2, "that divides by the variance (std squared); divide by the standard deviation"),
            ((given - m) * s, "that multiplies by std; normalization divides by it"),
            ((given - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
             "those are ImageNet's constants, not the mean and std passed in: each set of weights declares its own"),
            ((given / 255 - m) / s, "the images are already in [0, 1]: dividing by 255 again shrinks them to almost 0"),
            (given / s - m, "subtract the mean first, then divide the difference by std"),
        ]
        hint = next((h for value, h in near_misses if value.shape == out.shape and torch.allclose(out, value.double(), atol=1e-5)),
                    "each channel c should become (pixel - mean[c]) / std[c]")
        raise AssertionError(f"{case} gave wrong values. Hint: {hint}.")
    _passed("normalize", len(cases))


def check_normalize(normalize, seed: int = 0) -> None:
    """normalize(images, mean, std) -> (images - mean) / std per channel, as a new tensor."""
    judge_normalize(as_record(probe_normalize(normalize, seed)), seed)


def _discriminative_cases(seed: int) -> list[tuple[int, int | str, float, float, str]]:
    """(classes, frozen depth, lr, factor, what is frozen) per case."""
    if seed == 0:
        return [(10, 0, 0.01, 0.5, "no stage frozen"), (10, "layer1", 0.1, 0.3, "stem and layer1 frozen")]
    rng = np.random.default_rng(seed)
    return [(4, 0, round(float(rng.uniform(0.01, 0.3)), 3), round(float(rng.uniform(0.3, 0.8)), 2), "no stage frozen"),
            (4, "stem", round(float(rng.uniform(0.01, 0.3)), 3), round(float(rng.uniform(0.3, 0.8)), 2), "the stem frozen")]


def _groups_record(groups, model) -> dict:
    """Optimizer groups as plain data: each group's parameters by name (None: not the model's) and its lr."""
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) and "params" in g for g in groups):
        return {"not_groups": True}
    names = {id(p): n for n, p in model.named_parameters()}
    plain = []
    for g in groups:
        rate = g.get("lr")
        plain.append({"params": [names.get(id(p)) for p in list(g["params"])],
                      "lr": rate if type(rate) in (int, float) else None})
    return {"groups": plain}


def probe_discriminative_groups(discriminative_groups, seed: int = 0) -> dict:
    from . import models

    out = []
    for classes, frozen, lr, factor, _ in _discriminative_cases(seed):
        model = models.freeze(models.build_resnet18(classes), frozen)
        record = _outcome(discriminative_groups, model, lr, factor, convert=lambda g: g)
        if "value" in record:
            try:
                record = _groups_record(record["value"], model)
            except Exception:
                record = {"not_groups": True}
        out.append(record)
    return {"cases": out}


def judge_discriminative_groups(record, seed: int = 0) -> None:
    """discriminative_groups(model, lr, factor) -> groups: head at lr, each earlier stage `factor` times slower."""
    from . import models

    cases = _discriminative_cases(seed)
    got_all = _field(record, "cases", list)
    if len(got_all) != len(cases):
        raise MalformedRecord("the check's record has the wrong number of cases")
    for (classes, frozen, lr, factor, frozen_text), result in zip(cases, got_all):
        case = f"discriminative_groups(model with {frozen_text}, lr={lr:g}, factor={factor:g})"
        if isinstance(result, dict) and ("raised" in result or "not_done" in result):
            _value(result, "discriminative_groups")
        if not isinstance(result, dict) or "groups" not in result:
            raise AssertionError(f"{case} should return a list of dicts, each with 'params' and 'lr'.")
        groups = _field(result, "groups", list)
        if not all(isinstance(g, dict) and type(g.get("lr")) in (int, float) for g in groups):
            raise AssertionError(f"{case}: every group needs its own 'lr' (a number).")
        rate = {}
        for g in groups:
            for name in _field(g, "params", list):
                if name is not None and type(name) is not str:
                    raise MalformedRecord("the check's record names a parameter with something else than a string")
                if name is not None and name in rate:
                    raise AssertionError(f"{case}: a parameter appears in two groups; each must be in exactly one "
                                         "(the optimizer would update it twice).")
                rate[name] = float(g["lr"])
        model = models.freeze(models.build_resnet18(classes), frozen)
        stage = {name: models.stage_of(name) for name, _ in model.named_parameters()}
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        if set(rate) - set(stage):
            raise AssertionError(f"{case}: the groups hold tensors that are not parameters of the model given.")
        if set(rate) - trainable:
            raise AssertionError(f"{case}: the groups include frozen parameters (requires_grad False); leave them out.")
        missing = sorted({stage[n] for n in trainable - set(rate)}, key=models.STAGES.index)
        if missing == ["stem"]:
            raise AssertionError(f"{case}: the stem (conv1 and bn1) is in no group; it is trainable too, one step "
                                 "before layer1.")
        if missing:
            raise AssertionError(f"{case}: trainable parameters of {missing} are in no group.")
        distance = {n: len(models.STAGES) - 1 - models.STAGES.index(stage[n]) for n in rate}  # head 0 ... stem 5

        def all_at(exponent) -> bool:
            return all(math.isclose(rate[n], lr * factor ** exponent(distance[n]), rel_tol=1e-6) for n in rate)

        if all_at(lambda d: d):
            continue
        if all_at(lambda d: d + 1) or all_at(lambda d: d - 1):
            hint = "every rate is one factor off: the head trains at lr itself, layer4 at lr * factor, and so on"
        elif all_at(lambda d: 5 - d):
            hint = "the rates are reversed: the new head needs the largest rate, the stem's generic features the smallest"
        elif len({rate[n] for n in rate if distance[n] > 0}) == 1:
            hint = "the whole body shares one rate: each stage one step further from the head is `factor` times slower"
        else:
            wrong = next(n for n in rate if not math.isclose(rate[n], lr * factor ** distance[n], rel_tol=1e-6))
            hint = (f"{stage[wrong]} trains at {rate[wrong]:.3g}; count how many stages it is from the head, and "
                    "multiply lr by factor that many times")
        raise AssertionError(f"{case}: wrong rates. Hint: {hint}.")
    _passed("discriminative_groups", len(cases))


def check_discriminative_groups(discriminative_groups, seed: int = 0) -> None:
    """discriminative_groups(model, lr, factor) -> groups: head at lr, each earlier stage `factor` times slower."""
    judge_discriminative_groups(as_record(probe_discriminative_groups(discriminative_groups, seed)), seed)


class _OneNumberModel(torch.nn.Module):
    """A model whose one weight counts the epochs trained (training adds 1 in place), and which counts how
    often weights were loaded back into it: enough to tell a copy of the best weights from a reference."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.loads = 0

    def load_state_dict(self, *args, **kwargs):
        self.loads += 1
        return super().load_state_dict(*args, **kwargs)


def _keep_best_scripts(seed: int) -> list[list[float]]:
    """Validation accuracies per epoch, one list per case."""
    if seed == 0:
        return [[0.5, 0.7, 0.6, 0.7, 0.4], [0.9, 0.5, 0.6], [0.3, 0.4, 0.8]]
    rng = np.random.default_rng(seed)
    scripts = [[round(float(a), 2) for a in rng.choice(np.arange(0.1, 0.95, 0.05), n, replace=False)] for n in (4, 6)]
    tie = [round(float(a), 2) for a in rng.choice(np.arange(0.1, 0.5, 0.05), 5, replace=False)]
    tie[1] = tie[3] = 0.6  # a tie at the best: the first one counts
    return scripts + [tie]


def probe_keep_best(keep_best, seed: int = 0) -> dict:
    """Runs keep_best on scripted training, with a decoy evaluate_on_test in its globals that it must not
    call; records per case the pair returned, the epochs trained, test calls, the weights held, the loads."""
    import types

    namespace = getattr(keep_best, "__globals__", {})
    absent = object()
    real_test = namespace.get("evaluate_on_test", absent) if isinstance(namespace, dict) else absent
    test_calls = []

    def decoy_test(*args, **kwargs):
        test_calls.append(1)
        return types.SimpleNamespace(accuracy=1.0, loss=0.0)

    def pair(result):
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise TypeError("not a pair")
        return [_scalar(v) for v in result]

    out = []
    restore = _swap_everywhere(keep_best, namespace, real_test, decoy_test) if real_test is not absent else []
    if isinstance(namespace, dict):
        namespace["evaluate_on_test"] = decoy_test  # a test evaluation the answer must never call
    try:
        for script in _keep_best_scripts(seed):
            model, trained = _OneNumberModel(), []
            test_calls.clear()

            def train_one_epoch(m):
                trained.append(1)
                with torch.no_grad():
                    m.weight.add_(1.0)

            def val_accuracy(m, script=script):
                return ([0.0] + script)[int(round(m.weight.item()))]

            record = _outcome(keep_best, model, train_one_epoch, val_accuracy, len(script), convert=pair)
            if "none" in record:
                record["repr"] = "None"
            elif "value" in record:
                record["repr"] = repr(tuple(record["value"]))
            record.update(test_calls=len(test_calls), trained=len(trained), loads=int(model.loads),
                          held=int(round(model.weight.detach().as_subclass(torch.Tensor).item())))
            out.append(record)
    finally:
        if isinstance(namespace, dict):
            if real_test is absent:
                namespace.pop("evaluate_on_test", None)
            else:
                namespace["evaluate_on_test"] = real_test
        for undo in restore:
            undo()
    return {"cases": out}


def _swap_everywhere(fn, namespace, real, decoy) -> list[Callable]:
    """Put `decoy` wherever `fn` could reach `real` besides its name: other global names, default arguments,
    closure cells. Returns what undoes each swap."""
    undo = []
    if isinstance(namespace, dict):
        for name, value in list(namespace.items()):
            if value is real:
                namespace[name] = decoy
                undo.append(lambda name=name: namespace.__setitem__(name, real))
    defaults, kwdefaults = getattr(fn, "__defaults__", None), getattr(fn, "__kwdefaults__", None)
    if isinstance(defaults, tuple) and any(d is real for d in defaults):
        fn.__defaults__ = tuple(decoy if d is real else d for d in defaults)
        undo.append(lambda: setattr(fn, "__defaults__", defaults))
    if isinstance(kwdefaults, dict) and any(d is real for d in kwdefaults.values()):
        fn.__kwdefaults__ = {k: decoy if d is real else d for k, d in kwdefaults.items()}
        undo.append(lambda: setattr(fn, "__kwdefaults__", kwdefaults))
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            held = cell.cell_contents
        except ValueError:
            continue
        if held is real:
            cell.cell_contents = decoy
            undo.append(lambda cell=cell: setattr(cell, "cell_contents", real))
    return undo


def judge_keep_best(record, seed: int = 0) -> None:
    """keep_best(model, train_one_epoch, val_accuracy, epochs) -> (best epoch from 1, its validation accuracy),
    the model left holding a copy of that epoch's weights; the test set never consulted."""
    scripts = _keep_best_scripts(seed)
    got_all = _field(record, "cases", list)
    if len(got_all) != len(scripts):
        raise MalformedRecord("the check's record has the wrong number of cases")
    for script, result in zip(scripts, got_all):
        if isinstance(result, dict) and ("raised" in result or "not_done" in result):
            _value(result, "keep_best")
        epochs = len(script)
        case = f"with validation accuracies {script} over epochs 1..{epochs}, keep_best returned {_field(result, 'repr', str)}"
        want = (script.index(max(script)) + 1, max(script))
        if _field(result, "test_calls", int):
            raise AssertionError(f"{case}, after calling evaluate_on_test. Hint: choose with validation only; the "
                                 "test set is for the final number of the chosen model.")
        trained = _field(result, "trained", int)
        if trained != epochs:
            raise AssertionError(f"{case}, after training {trained} epoch(s). Hint: train_one_epoch once per epoch.")
        value = result.get("value")
        if not isinstance(value, list) or len(value) != 2 or not all(type(v) in (int, float) for v in value):
            raise AssertionError(f"{case}. Hint: return a pair, (best epoch, its validation accuracy).")
        epoch, acc = value
        last_best = epochs - script[::-1].index(max(script))
        if epoch != want[0]:
            hint = ("count epochs from 1, as people do" if epoch == want[0] - 1 else
                    "on a tie keep the first epoch that reached the best accuracy" if epoch == last_best else
                    "that is the last epoch, not the best" if epoch == epochs else
                    "the best epoch is the one with the highest validation accuracy")
            raise AssertionError(f"{case}. Hint: {hint}.")
        if acc != want[1]:
            raise AssertionError(f"{case}. Hint: return the best epoch's validation accuracy with it.")
        held = _field(result, "held", int)
        if held != want[0]:
            hint = ("weights were loaded back, but they are the last epoch's: state_dict() holds references to the "
                    "live tensors, which training keeps changing. Keep a copy"
                    if _field(result, "loads", int) and held == epochs else
                    "at the end, load a copy of the best epoch's weights back into the model (a copy: state_dict() "
                    "holds references to the live tensors, which training keeps changing)")
            raise AssertionError(f"{case}, but the model then holds epoch {held}'s weights. Hint: {hint}.")
    _passed("keep_best", len(scripts))


def check_keep_best(keep_best, seed: int = 0) -> None:
    """keep_best(model, train_one_epoch, val_accuracy, epochs) -> (best epoch from 1, its validation accuracy),
    the model left holding a copy of that epoch's weights; the test set never consulted."""
    judge_keep_best(as_record(probe_keep_best(keep_best, seed)), seed)


def _mistake_cases(seed: int) -> list[tuple[torch.Tensor, list[str]]]:
    """(confusion matrix, class names) per case, each with one largest count off the diagonal."""
    if seed == 0:
        return [(torch.tensor([[50, 2, 9], [1, 40, 0], [3, 4, 30]]), ["cat", "dog", "frog"]),
                (torch.tensor([[30, 0, 1, 0], [2, 25, 0, 7], [0, 3, 28, 1], [4, 0, 0, 33]]), ["ship", "truck", "bird", "deer"])]
    rng = np.random.default_rng(seed)
    cases = []
    for n in (5, 4):
        counts = rng.integers(0, 6, (n, n))
        np.fill_diagonal(counts, rng.integers(20, 40, n))
        t, p = rng.choice(n, 2, replace=False)
        counts[t, p] = 12
        cases.append((torch.tensor(counts), [f"class{i}" for i in rng.permutation(n)]))
    return cases


def probe_most_common_mistake(most_common_mistake, seed: int = 0) -> dict:
    def pair(answer):
        if isinstance(answer, (tuple, list)) and len(answer) == 2:
            return {"pair": [a if type(a) is str else None for a in answer], "repr": _repr(answer)}
        return {"repr": _repr(answer)}

    out = []
    for confusion, classes in _mistake_cases(seed):
        confusion = confusion.clone()
        record = _outcome(most_common_mistake, confusion, list(classes), convert=pair)
        record["matrix_after"] = _float_list(confusion)
        out.append(record)
    return {"cases": out}


def judge_most_common_mistake(record, seed: int = 0) -> None:
    """most_common_mistake(confusion, classes) -> (true class name, predicted class name) of the largest
    off-diagonal count; rows of the confusion matrix are the true class, columns the prediction."""
    cases = _mistake_cases(seed)
    got_all = _field(record, "cases", list)
    if len(got_all) != len(cases):
        raise MalformedRecord("the check's record has the wrong number of cases")
    for (given, classes), result in zip(cases, got_all):
        answer = {"repr": "None"} if isinstance(result, dict) and result.get("none") is True else \
            _value(result, "most_common_mistake")
        case = f"for the confusion matrix {given.tolist()} with classes {classes}, the answer was {_field(answer, 'repr', str)}"
        after = _array_of(_field(result, "matrix_after", dict))
        if after.shape != tuple(given.shape) or not np.array_equal(after, given.double().numpy()):
            raise AssertionError(f"{case}, and the matrix was changed. Hint: the caller still needs its matrix "
                                 "(e.g. don't fill its diagonal in place); work on a copy.")
        if "pair" not in answer:
            raise AssertionError(f"{case}. Hint: return a pair, (true class, predicted class).")
        names = _field(answer, "pair", list)
        if len(names) != 2 or not all(type(a) is str for a in names):
            raise AssertionError(f"{case}. Hint: return class names (strings), not indices: look them up in classes.")
        unknown = [a for a in names if a not in classes]
        if unknown:
            raise AssertionError(f"{case}. Hint: {unknown} are not among the class names given.")
        n = len(classes)
        off = given.clone().fill_diagonal_(0)
        t, p = classes.index(names[0]), classes.index(names[1])
        if t != p and off[t, p] == off.max():
            continue
        flat = int(off.argmax())
        split_wrong = {divmod(flat, k) for k in (n - 1, n + 1)}
        hint = ("a class predicted as itself is a correct prediction: leave the diagonal out" if t == p else
                "that pair is the most frequent mistake the other way round: rows are the true class, columns the "
                "prediction" if off[p, t] == off.max() else
                "the flat index was split with the wrong row length: each row of an n x n matrix has n entries"
                if (t, p) in split_wrong else
                "look for the largest count off the diagonal")
        raise AssertionError(f"{case}. Hint: {hint}.")
    _passed("most_common_mistake", len(cases))


def check_most_common_mistake(most_common_mistake, seed: int = 0) -> None:
    """most_common_mistake(confusion, classes) -> (true class name, predicted class name) of the largest
    off-diagonal count; rows of the confusion matrix are the true class, columns the prediction."""
    judge_most_common_mistake(as_record(probe_most_common_mistake(most_common_mistake, seed)), seed)


GRADED.update({
    "check_pick_resolution": Graded(probe_pick_resolution, judge_pick_resolution, ("pick_resolution",)),
    "check_replace_head": Graded(probe_replace_head, judge_replace_head, ("replace_head",)),
    "check_normalize": Graded(probe_normalize, judge_normalize, ("normalize",)),
    "check_discriminative_groups": Graded(probe_discriminative_groups, judge_discriminative_groups,
                                          ("discriminative_groups",)),
    "check_keep_best": Graded(probe_keep_best, judge_keep_best, ("keep_best",)),
    "check_most_common_mistake": Graded(probe_most_common_mistake, judge_most_common_mistake, ("most_common_mistake",)),
})


# ------------------------------------------------------------------------------------ lesson 4
def _split_cases(seed: int) -> list[tuple[list[int], float]]:
    """(labels, val_fraction) per case: balanced, unbalanced with a class of two, labels that are not 0..k-1."""
    if seed == 0:
        rng = np.random.default_rng(4)
        return [([int(v) for v in rng.permutation([0] * 10 + [1] * 10 + [2] * 10)], 0.2),
                ([0] * 20 + [1] * 5 + [2] * 2, 0.25),
                ([3, 1, 3, 3, 1, 1, 3, 1, 3, 1, 3, 1], 0.4)]
    rng = np.random.default_rng(seed)
    cases = []
    for k, fraction in ((3, 0.2), (4, 0.3)):
        counts = [int(c) for c in rng.integers(2, 16, k)]
        names = [int(v) for v in rng.choice(10, k, replace=False)]
        cases.append(([int(v) for v in rng.permutation(np.repeat(names, counts))], fraction))
    return cases


def _index_lists(value) -> dict:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError("not a pair")
    parts = [v.tolist() if isinstance(v, (torch.Tensor, np.ndarray)) else list(v) for v in value]
    return {"train": [_scalar(i) for i in parts[0]], "val": [_scalar(i) for i in parts[1]]}


def probe_split_by_class(split_by_class, seed: int = 0) -> dict:
    """Each case called with the seed twice, then with another seed."""
    return {"cases": [[_outcome(split_by_class, list(labels), fraction, s, convert=_index_lists)
                       for s in (seed, seed, seed + 1)] for labels, fraction in _split_cases(seed)]}


def judge_split_by_class(record, seed: int = 0) -> None:
    """split_by_class(labels, val_fraction, seed) -> (train indices, val indices): each class's share rounded
    either way but at least one image, every index in exactly one part, the same split for the same seed."""
    cases = _split_cases(seed)
    got_all = _field(record, "cases", list)
    if len(got_all) != len(cases) or not all(isinstance(g, list) and len(g) == 3 for g in got_all):
        raise MalformedRecord("the check's record has the wrong number of cases")
    changed_with_seed = False
    for i, ((labels, fraction), (first, again, other)) in enumerate(zip(cases, got_all), 1):
        case = f"case {i}: split_by_class(labels={labels}, val_fraction={fraction}, seed={seed})"
        if isinstance(first, dict) and "wrong_type" in first:
            raise AssertionError(f"{case} returned {_field(first, 'repr', str)}. Hint: return two lists of indices, "
                                 "(train_indices, val_indices).")
        got = _value(first, "split_by_class")
        train, val = _field(got, "train", list), _field(got, "val", list)
        n = len(labels)
        if sorted(train + val) == sorted(labels) != list(range(n)):
            raise AssertionError(f"{case} returned labels. Hint: return the indices of the images (positions in "
                                 "labels), not their labels.")
        if not all(type(v) is int and 0 <= v < n for v in train + val):
            raise AssertionError(f"{case} returned values that are not positions 0..{n - 1} in labels. Hint: return "
                                 "the indices of the images (positions in labels), not their labels.")
        if set(train) & set(val) or len(set(train)) != len(train) or len(set(val)) != len(val):
            raise AssertionError(f"{case} put an index in a part twice or in both parts. Hint: each image goes to "
                                 "exactly one part, once.")
        if set(train) | set(val) != set(range(n)):
            raise AssertionError(f"{case} left {n - len(set(train) | set(val))} image(s) out of both parts. "
                                 "Hint: every image goes to train or to validation.")
        for c in sorted(set(labels)):
            members = [j for j, label in enumerate(labels) if label == c]
            k = sum(1 for j in val if labels[j] == c)
            share = len(members) * fraction
            if math.floor(share) <= k <= math.ceil(share) and k >= 1 or k == 1 and share < 1:
                continue
            if k == 0:
                hint = ("every class needs at least one validation image, however small the class (and however "
                        "the fraction rounds)")
            elif math.floor(len(members) * (1 - fraction)) <= k <= math.ceil(len(members) * (1 - fraction)):
                hint = "the parts are swapped: val_fraction is validation's share, the rest trains"
            else:
                hint = ("take val_fraction of EACH class separately (stratify): a sample drawn from all images at "
                        "once gives small classes too many or too few")
            raise AssertionError(f"{case}: class {c} has {len(members)} images and {k} went to validation, where "
                                 f"{len(members)} x {fraction} = {share:g} (rounded either way, at least 1) was "
                                 f"asked. Hint: {hint}.")
        if _value(again, "split_by_class") != got:
            raise AssertionError(f"{case} gave another split when called again with the same seed. Hint: shuffle "
                                 "with a random generator seeded by `seed`, so the split is the same every run.")
        changed_with_seed |= _value(other, "split_by_class") != got
    if not changed_with_seed:
        raise AssertionError("split_by_class gives the same split for every seed. Hint: shuffle each class's indices "
                             "with a generator seeded by `seed` before taking validation's share (photos in a "
                             "folder are often in an order: by date, by place).")
    _passed("split_by_class", len(cases))


def check_split_by_class(split_by_class, seed: int = 0) -> None:
    """split_by_class(labels, val_fraction, seed) -> (train indices, val indices), stratified and seeded."""
    judge_split_by_class(as_record(probe_split_by_class(split_by_class, seed)), seed)


class _PhotoNet(torch.nn.Module):
    """A small classifier whose BatchNorm statistics are far from a batch's own, so eval and train mode
    differ; its weights come from the seed, so the judge rebuilds it exactly."""

    def __init__(self, seed: int, num_classes: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3)
        self.bn = torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6 * 4, num_classes)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            self.bn.running_mean.copy_(torch.randn(6, generator=gen) * 0.3)
            self.bn.running_var.copy_(torch.rand(6, generator=gen) + 0.5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1))


def _photo_cases(seed: int) -> list[dict]:
    """Photos (PNG bytes, not square, one grayscale) and the preparation each asks for; the last one's model
    tells two classes apart, so fewer than three pairs come back."""
    from PIL import Image

    rng = np.random.default_rng(seed + 17)
    classes = ["cat", "dog", "owl", "fox"] if seed == 0 else [f"class{i}" for i in rng.permutation(5)]
    cases = []
    for (width, height), mode, size, k in (((40, 24), "RGB", 16, len(classes)), ((18, 30), "L", 12, len(classes)),
                                           ((33, 33), "RGB", 8, len(classes)), ((26, 20), "RGB", 10, 2)):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pixels[:, : width // 3] //= 4  # a dark left third: a squashed photo differs from a centre-cropped one
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(buffer, "PNG")
        mean = [round(float(v), 2) for v in rng.uniform(0.3, 0.6, 3)]
        std = [round(float(v), 2) for v in rng.uniform(0.15, 0.3, 3)]
        cases.append({"png": buffer.getvalue(), "size": size, "mean": mean, "std": std, "classes": classes[:k]})
    return cases


def probe_predict_file(predict_file, seed: int = 0) -> dict:
    import tempfile
    from pathlib import Path

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(_photo_cases(seed)):
            path = Path(tmp) / f"photo{i}.png"
            path.write_bytes(case["png"])
            model = _PhotoNet(seed, len(case["classes"])).train()
            out.append(_outcome(predict_file, model, str(path), list(case["classes"]), case["size"], list(case["mean"]),
                                list(case["std"]), convert=lambda top: [[_repr(name) if type(name) is not str else name,
                                                                         _scalar(p)] for name, p in top]))
    return {"cases": out}


@judge_only
def _photo_outputs(case: dict, seed: int) -> dict[str, torch.Tensor]:
    """The model's outputs for the photo prepared right, and prepared in each of the usual wrong ways."""
    from PIL import Image

    from .data import _decode_bytes

    size, model = case["size"], _PhotoNet(seed, len(case["classes"])).eval()
    fitted = _decode_bytes(case["png"], size).unsqueeze(0).float()
    with Image.open(io.BytesIO(case["png"])) as img:
        squashed = torch.from_numpy(np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)).copy())
    squashed = squashed.permute(2, 0, 1).unsqueeze(0).float()
    m, s = torch.tensor(case["mean"]).view(1, 3, 1, 1), torch.tensor(case["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        outputs = {"right": model((fitted / 255 - m) / s).softmax(1)[0],
                   "no normalization": model(fitted / 255).softmax(1)[0],
                   "no scaling": model((fitted - m) / s).softmax(1)[0],
                   "squashed": model((squashed / 255 - m) / s).softmax(1)[0],
                   "logits": model((fitted / 255 - m) / s)[0]}
        outputs["train mode"] = model.train()((fitted / 255 - m) / s).softmax(1)[0]
    return outputs


def judge_predict_file(record, seed: int = 0) -> None:
    """predict_file(model, path, classes, size, mean, std) -> the min(3, len(classes)) most probable (class
    name, probability), most probable first, for the photo prepared as the training images were."""
    cases = _photo_cases(seed)
    got_all = _field(record, "cases", list)
    if len(got_all) != len(cases):
        raise MalformedRecord("the check's record has the wrong number of cases")
    hints = {"no normalization": "normalize the pixels with mean and std (the statistics the weights expect)",
             "no scaling": "scale the pixels to [0, 1] (divide by 255) before normalizing",
             "squashed": "fit the photo as the training images were: shorter side to `size`, then a centre crop "
                         "(data.decode_image_file does this); a plain resize squashes it",
             "logits": "turn the model's outputs into probabilities (softmax over the classes)",
             "train mode": "put the model in eval mode first: in train mode BatchNorm normalizes with the photo's "
                           "own statistics instead of the ones learnt in training"}
    for i, (case, result) in enumerate(zip(cases, got_all), 1):
        what = f"case {i}: a {case['size']} px model, classes {case['classes']}"
        if isinstance(result, dict) and "wrong_type" in result:
            raise AssertionError(f"{what}: predict_file returned {_field(result, 'repr', str)}. Hint: return a list "
                                 "of (class name, probability) pairs.")
        top = _value(result, "predict_file")
        if not isinstance(top, list) or not all(isinstance(t, list) and len(t) == 2 and type(t[1]) in (int, float)
                                                for t in top):
            raise MalformedRecord("the check's record holds no (class, probability) pairs")
        wanted = min(3, len(case["classes"]))
        if len(top) != wanted:
            raise AssertionError(f"{what}: predict_file returned {len(top)} pair(s), expected {wanted}. Hint: the "
                                 "three most probable classes, or every class when there are fewer than three.")
        if not all(type(name) is str and name in case["classes"] for name, _ in top):
            raise AssertionError(f"{what}: predict_file returned {[name for name, _ in top]}. Hint: return class "
                                 "names from `classes`, not indices.")
        outputs = _photo_outputs(case, seed)
        got = {name: p for name, p in top}
        probs = [p for _, p in top]
        for kind, output in outputs.items():
            matches = all(abs(float(output[case["classes"].index(name)]) - p) < 1e-4 for name, p in got.items())
            if not matches:
                continue
            if kind != "right":
                raise AssertionError(f"{what}: wrong probabilities. Hint: {hints[kind]}.")
            want = [case["classes"][j] for j in output.topk(wanted).indices.tolist()]
            if [name for name, _ in top] != want or probs != sorted(probs, reverse=True):
                raise AssertionError(f"{what}: the right probabilities, in the wrong order or of the wrong classes. "
                                     f"Hint: the {wanted} MOST probable classes, most probable first.")
            break
        else:
            raise AssertionError(f"{what}: the probabilities {[round(p, 4) for p in probs]} are not the model's for "
                                 "this photo prepared as its training images were. Hint: the photo fitted to `size` "
                                 "(data.decode_image_file), scaled to [0, 1], normalized, the model in eval mode, "
                                 "softmax.")
    _passed("predict_file", len(cases))


def check_predict_file(predict_file, seed: int = 0) -> None:
    """predict_file(model, path, classes, size, mean, std) -> the min(3, len(classes)) most probable (class name,
    probability)."""
    judge_predict_file(as_record(probe_predict_file(predict_file, seed)), seed)


def _freeze_cases(seed: int) -> list[tuple[list[dict], float]]:
    """(rows of a freeze sweep, margin) per case (the right depth is the judge's: _deepest_within)."""
    row = _depth_row
    if seed == 0:
        return [([row(0, 0.625), row(4, 0.5), row(2, 0.75), row(3, 0.6875), row(5, 0.375)], 0.25),  # 0.5: exactly
                # the margin off, in binary fractions so that no rounding blurs the boundary
                ([row(5, 0.60), row(0, 0.70), row(3, 0.68), row(1, 0.69)], 0.05),
                ([row(2, None), row(4, 0.55), row(1, 0.80), row(3, 0.50)], 0.1)]
    rng = np.random.default_rng(seed)
    cases = []
    for n, margin in ((5, 0.1), (6, 0.05), (4, 0.2)):
        depths = [int(d) for d in rng.permutation(6)[:n]]
        accs = [round(float(a), 3) for a in rng.choice(np.arange(0.40, 0.90, 0.005), n, replace=False)]
        cases.append(([row(d, None if i == n - 1 else a) for i, (d, a) in enumerate(zip(depths, accs))], margin))
    depths = sorted(int(d) for d in rng.permutation(6)[:4])  # and the deepest run exactly `margin` below the best,
    top, m = int(rng.integers(20, 28)), int(rng.integers(2, 6))  # in 32nds, which floats hold exactly
    accs = [top, int(rng.integers(top - m - 3, top)), int(rng.integers(top - m - 3, top)), top - m]
    rows = [row(d, a / 32) for d, a in zip(depths, accs)]
    cases.append(([rows[i] for i in rng.permutation(4)], m / 32))
    return cases


@judge_only
def _deepest_within(rows: list[dict], margin: float) -> int:
    """The deepest freeze among the runs within `margin` of the best validation accuracy."""
    best = max(r["val_acc"] for r in rows if r["val_acc"] is not None)
    return max(r["depth"] for r in rows if r["val_acc"] is not None and r["val_acc"] >= best - margin - 1e-9)


def probe_choose_freeze_depth(choose_freeze_depth, seed: int = 0) -> dict:
    return {"cases": [_outcome(choose_freeze_depth, [dict(r) for r in rows], margin, convert=_depth_plain)
                      for rows, margin in _freeze_cases(seed)]}


def judge_choose_freeze_depth(record, seed: int = 0) -> None:
    """choose_freeze_depth(rows, margin) -> the deepest freeze among runs whose validation accuracy is within
    `margin` of the best (diverged runs, val_acc None, skipped)."""
    cases = _freeze_cases(seed)
    got_all = _field(record, "cases", list)
    if len(got_all) != len(cases):
        raise MalformedRecord("the check's record has the wrong number of cases")
    for i, ((rows, margin), result) in enumerate(zip(cases, got_all), 1):
        want = _deepest_within(rows, margin)
        shown = f"runs (depth, val_acc) {[(r['depth'], r['val_acc']) for r in rows]}, margin {margin}"
        got = _depth_answer(result, "choose_freeze_depth", f"case {i}", shown)
        if got == want:
            continue
        valid = [r for r in rows if r["val_acc"] is not None]
        best = max(valid, key=lambda r: r["val_acc"])
        close = [r["depth"] for r in valid if r["val_acc"] >= best["val_acc"] - margin - 1e-9]
        strictly_close = [r["depth"] for r in valid if r["val_acc"] > best["val_acc"] - margin + 1e-9]
        hint = ("a run exactly `margin` below the best counts as within it" if got == max(strictly_close) else
                "that is the most accurate run; on a small validation set, runs within `margin` of it are as good "
                "as far as can be told: take the one that trains the fewest parameters (the deepest freeze)"
                if got == best["depth"] else
                "among the runs within the margin take the DEEPEST freeze (the largest depth): it trains the fewest "
                "parameters" if got in close else
                "that is the run's position in the list, not its depth" if 0 <= got < len(rows) and
                rows[got]["depth"] == want else
                "keep the runs whose val_acc is at least the best val_acc minus margin, then take the largest depth")
        raise AssertionError(f"case {i}: for {shown} you chose depth {got}. Hint: {hint}.")
    _passed("choose_freeze_depth", len(cases))


def check_choose_freeze_depth(choose_freeze_depth, seed: int = 0) -> None:
    """choose_freeze_depth(rows, margin) -> the deepest freeze within `margin` of the best validation accuracy."""
    judge_choose_freeze_depth(as_record(probe_choose_freeze_depth(choose_freeze_depth, seed)), seed)


GRADED.update({
    "check_split_by_class": Graded(probe_split_by_class, judge_split_by_class, ("split_by_class",)),
    "check_predict_file": Graded(probe_predict_file, judge_predict_file, ("predict_file",)),
    "check_choose_freeze_depth": Graded(probe_choose_freeze_depth, judge_choose_freeze_depth, ("choose_freeze_depth",)),
})
