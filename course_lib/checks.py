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
    ordered = [{"size": 32, "epoch_seconds": 40.0}, {"size": 64, "epoch_seconds": 150.0},
               {"size": 128, "epoch_seconds": 600.0}, {"size": 224, "epoch_seconds": 1900.0}]
    shuffled = [ordered[2], ordered[0], ordered[3], ordered[1]]
    cases = [(ordered, 900, 10, 32), (ordered, 3000, 5, 128), (ordered, 20_000, 10, 224), (ordered, 100, 5, None),
             (shuffled, 3000, 5, 128), (shuffled, 900, 5, 64)]

    def sizes(costs, fits):
        return [r["size"] for r in costs if fits(r)]

    for costs, budget, epochs, want in cases:
        got = _call(pick_resolution, [dict(r) for r in costs], budget, epochs, what="pick_resolution")
        if (got is None and want is None) or (want is not None and not isinstance(got, bool) and got == want):
            continue
        case = f"with costs of {[r['size'] for r in costs]} px, a budget of {budget} s and {epochs} epochs you chose {got!r}"
        fitting = sizes(costs, lambda r: r["epoch_seconds"] * epochs <= budget)
        if isinstance(got, dict):
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


def check_replace_head(replace_head) -> None:
    """replace_head(network, num_classes) -> the same network with a fresh num_classes-way linear head."""
    from . import models

    for k in (3, 10):
        model = models.build_resnet18(5)
        body = model.layer4[1].conv2.weight
        old_head = model.fc
        out = _call(replace_head, model, k, what="replace_head")
        if not isinstance(out, torch.nn.Module):
            raise AssertionError(f"replace_head(model, {k}) should return the model, got {type(out).__name__}.")
        head = getattr(out, "fc", None)
        if head is old_head or not isinstance(head, torch.nn.Linear):
            raise AssertionError(f"replace_head(model, {k}): the model's fc should be a new torch.nn.Linear.")
        if head.in_features != 512 or head.out_features != k:
            raise AssertionError(f"replace_head(model, {k}): the new head maps {head.in_features} -> {head.out_features}; "
                                 f"ResNet18's pooled features have 512 values and there are {k} classes. "
                                 "Hint: read the old head's in_features.")
        if head.bias is None:
            raise AssertionError(f"replace_head(model, {k}): the new head has no bias; the old one had one.")
        if getattr(out, "layer4", None) is None or out.layer4[1].conv2.weight is not body:
            raise AssertionError(f"replace_head(model, {k}): the body was replaced too: keep the pretrained layers, "
                                 "change only the head.")
        if out(torch.zeros(2, 3, 32, 32)).shape != (2, k):
            raise AssertionError(f"replace_head(model, {k}): the model's output should have {k} columns.")
    _passed("replace_head", 2)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def check_normalize(normalize) -> None:
    """normalize(images, mean, std) -> (images - mean) / std per channel, as a new tensor."""
    gen = torch.Generator().manual_seed(0)
    cases = [(torch.rand(2, 3, 3, 3, generator=gen), [0.2, 0.5, 0.7], [0.1, 0.3, 0.6]),  # W == 3 on purpose
             (torch.rand(4, 3, 5, 7, generator=gen), (0.6, 0.3, 0.45), (0.25, 0.5, 0.2))]
    for images, mean, std in cases:
        given = images.clone()
        out = _call(normalize, images, mean, std, what="normalize")
        case = f"normalize(images of shape {tuple(given.shape)}, mean={list(mean)}, std={list(std)})"
        if not torch.equal(images, given):
            raise AssertionError(f"{case} changed the images it was given. Hint: the caller still needs its batch: "
                                 "compute a new tensor instead of modifying this one in place.")
        if not isinstance(out, torch.Tensor) or out.shape != given.shape:
            what = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise AssertionError(f"{case} returned {what}; it should return a tensor of the images' shape.")
        m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        if torch.allclose(out.double(), ((given - m) / s).double(), atol=1e-5):
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
        hint = next((h for value, h in near_misses if torch.allclose(out.double(), value.double(), atol=1e-5)),
                    "each channel c should become (pixel - mean[c]) / std[c]")
        raise AssertionError(f"{case} gave wrong values. Hint: {hint}.")
    _passed("normalize", len(cases))


def check_discriminative_groups(discriminative_groups) -> None:
    """discriminative_groups(model, lr, factor) -> groups: head at lr, each earlier stage `factor` times slower."""
    from . import models

    cases = [(models.build_resnet18(10), 0.01, 0.5, "no stage frozen"),
             (models.freeze(models.build_resnet18(10), "layer1"), 0.1, 0.3, "stem and layer1 frozen")]
    for model, lr, factor, frozen in cases:
        groups = _call(discriminative_groups, model, lr, factor, what="discriminative_groups")
        case = f"discriminative_groups(model with {frozen}, lr={lr:g}, factor={factor:g})"
        if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) and "params" in g for g in groups):
            raise AssertionError(f"{case} should return a list of dicts, each with 'params' and 'lr'.")
        if not all(isinstance(g.get("lr"), (int, float)) and not isinstance(g.get("lr"), bool) for g in groups):
            raise AssertionError(f"{case}: every group needs its own 'lr' (a number).")
        rate = {}
        for g in groups:
            for p in list(g["params"]):
                if id(p) in rate:
                    raise AssertionError(f"{case}: a parameter appears in two groups; each must be in exactly one "
                                         "(the optimizer would update it twice).")
                rate[id(p)] = float(g["lr"])
        stage = {id(p): models.stage_of(name) for name, p in model.named_parameters()}
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        if set(rate) - set(stage):
            raise AssertionError(f"{case}: the groups hold tensors that are not parameters of the model given.")
        if set(rate) - trainable:
            raise AssertionError(f"{case}: the groups include frozen parameters (requires_grad False); leave them out.")
        missing = sorted({stage[i] for i in trainable - set(rate)}, key=models.STAGES.index)
        if missing == ["stem"]:
            raise AssertionError(f"{case}: the stem (conv1 and bn1) is in no group; it is trainable too, one step "
                                 "before layer1.")
        if missing:
            raise AssertionError(f"{case}: trainable parameters of {missing} are in no group.")
        distance = {i: len(models.STAGES) - 1 - models.STAGES.index(stage[i]) for i in rate}  # head 0 ... stem 5

        def all_at(exponent) -> bool:
            return all(math.isclose(rate[i], lr * factor ** exponent(distance[i]), rel_tol=1e-6) for i in rate)

        if all_at(lambda d: d):
            continue
        if all_at(lambda d: d + 1) or all_at(lambda d: d - 1):
            hint = "every rate is one factor off: the head trains at lr itself, layer4 at lr * factor, and so on"
        elif all_at(lambda d: 5 - d):
            hint = "the rates are reversed: the new head needs the largest rate, the stem's generic features the smallest"
        elif len({rate[i] for i in rate if distance[i] > 0}) == 1:
            hint = "the whole body shares one rate: each stage one step further from the head is `factor` times slower"
        else:
            wrong = next(i for i in rate if not math.isclose(rate[i], lr * factor ** distance[i], rel_tol=1e-6))
            hint = (f"{stage[wrong]} trains at {rate[wrong]:.3g}; count how many stages it is from the head, and "
                    "multiply lr by factor that many times")
        raise AssertionError(f"{case}: wrong rates. Hint: {hint}.")
    _passed("discriminative_groups", len(cases))


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


def check_keep_best(keep_best) -> None:
    """keep_best(model, train_one_epoch, val_accuracy, epochs) -> (best epoch from 1, its validation accuracy),
    the model left holding a copy of that epoch's weights; the test set never consulted."""
    import types

    scripts = [[0.5, 0.7, 0.6, 0.7, 0.4], [0.9, 0.5, 0.6], [0.3, 0.4, 0.8]]
    namespace = getattr(keep_best, "__globals__", {})
    absent = object()
    real_test = namespace.get("evaluate_on_test", absent)
    test_calls = []

    def decoy_test(*args, **kwargs):
        test_calls.append(1)
        return types.SimpleNamespace(accuracy=1.0, loss=0.0)

    namespace["evaluate_on_test"] = decoy_test  # a test evaluation the answer must never call
    try:
        for script in scripts:
            model, trained = _OneNumberModel(), []

            def train_one_epoch(m):
                trained.append(1)
                with torch.no_grad():
                    m.weight.add_(1.0)

            def val_accuracy(m):
                return ([0.0] + script)[int(round(m.weight.item()))]

            epochs = len(script)
            result = _call(keep_best, model, train_one_epoch, val_accuracy, epochs, what="keep_best")
            case = f"with validation accuracies {script} over epochs 1..{epochs}, keep_best returned {result!r}"
            want = (script.index(max(script)) + 1, max(script))
            if test_calls:
                raise AssertionError(f"{case}, after calling evaluate_on_test. Hint: choose with validation only; the "
                                     "test set is for the final number of the chosen model.")
            if len(trained) != epochs:
                raise AssertionError(f"{case}, after training {len(trained)} epoch(s). Hint: train_one_epoch once per epoch.")
            if not isinstance(result, (tuple, list)) or len(result) != 2:
                raise AssertionError(f"{case}. Hint: return a pair, (best epoch, its validation accuracy).")
            epoch, acc = result
            last_best = epochs - script[::-1].index(max(script))
            if epoch != want[0]:
                hint = ("count epochs from 1, as people do" if epoch == want[0] - 1 else
                        "on a tie keep the first epoch that reached the best accuracy" if epoch == last_best else
                        "that is the last epoch, not the best" if epoch == epochs else
                        "the best epoch is the one with the highest validation accuracy")
                raise AssertionError(f"{case}. Hint: {hint}.")
            if acc != want[1]:
                raise AssertionError(f"{case}. Hint: return the best epoch's validation accuracy with it.")
            held = int(round(model.weight.item()))
            if held != want[0]:
                hint = ("weights were loaded back, but they are the last epoch's: state_dict() holds references to the "
                        "live tensors, which training keeps changing. Keep a copy" if model.loads and held == epochs else
                        "at the end, load a copy of the best epoch's weights back into the model (a copy: state_dict() "
                        "holds references to the live tensors, which training keeps changing)")
                raise AssertionError(f"{case}, but the model then holds epoch {held}'s weights. Hint: {hint}.")
    finally:
        if real_test is absent:
            namespace.pop("evaluate_on_test", None)
        else:
            namespace["evaluate_on_test"] = real_test
    _passed("keep_best", len(scripts))


def check_most_common_mistake(most_common_mistake) -> None:
    """most_common_mistake(confusion, classes) -> (true class name, predicted class name) of the largest
    off-diagonal count; rows of the confusion matrix are the true class, columns the prediction."""
    cases = [(torch.tensor([[50, 2, 9], [1, 40, 0], [3, 4, 30]]), ["cat", "dog", "frog"]),
             (torch.tensor([[30, 0, 1, 0], [2, 25, 0, 7], [0, 3, 28, 1], [4, 0, 0, 33]]), ["ship", "truck", "bird", "deer"])]
    for confusion, classes in cases:
        given = confusion.clone()
        answer = _call(most_common_mistake, confusion, list(classes), what="most_common_mistake")
        case = f"for the confusion matrix {given.tolist()} with classes {classes}, the answer was {answer!r}"
        if not torch.equal(confusion, given):
            raise AssertionError(f"{case}, and the matrix was changed. Hint: the caller still needs its matrix "
                                 "(e.g. don't fill its diagonal in place); work on a copy.")
        if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
            raise AssertionError(f"{case}. Hint: return a pair, (true class, predicted class).")
        if not all(isinstance(a, str) for a in answer):
            raise AssertionError(f"{case}. Hint: return class names (strings), not indices: look them up in classes.")
        unknown = [a for a in answer if a not in classes]
        if unknown:
            raise AssertionError(f"{case}. Hint: {unknown} are not among the class names given.")
        n = len(classes)
        off = given.clone().fill_diagonal_(0)
        t, p = classes.index(answer[0]), classes.index(answer[1])
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
