"""Lesson 3's exercise checks: each public check passes right answers and fails near misses with a hint
about the mistake; and every answer in source/cases/ scores the same on the public check and the hidden
tests (all wrong ones fail both, all right ones pass both), as run in a namespace like the lesson's."""
import copy
import importlib.util
import re

import nbformat
import pytest
import torch

from course_lib import checks, grading, models
from graded_cells import graded_parts_of, passes_with

SOURCE = grading.SOURCE_DIR / "03_cifar10_resnet18.ipynb"
CASES_FILE = grading.SOURCE_DIR / "cases" / "03_cifar10_resnet18.py"


# ------------------------------------------------------------------------------ pick_resolution
def test_check_pick_resolution():
    def largest(costs, budget, epochs):
        return max((r["size"] for r in costs if r["epoch_seconds"] * epochs <= budget), default=None)

    checks.check_pick_resolution(largest)
    with pytest.raises(AssertionError, match="return None"):
        checks.check_pick_resolution(lambda c, b, e: largest(c, b, e) or 32)
    with pytest.raises(AssertionError, match="every epoch"):
        checks.check_pick_resolution(lambda c, b, e: largest(c, b, 1))
    with pytest.raises(AssertionError, match="exactly the budget"):
        checks.check_pick_resolution(lambda c, b, e: largest(c, b - 1e-9, e))
    with pytest.raises(AssertionError, match="not necessarily sorted"):
        checks.check_pick_resolution(lambda c, b, e: ([r["size"] for r in c if r["epoch_seconds"] * e <= b] or [None])[-1])
    with pytest.raises(AssertionError, match="not the whole row"):
        checks.check_pick_resolution(lambda c, b, e: next((r for r in c if r["size"] == largest(c, b, e)), None))


# --------------------------------------------------------------------------------- replace_head
def test_check_replace_head():
    def right(model, k):
        model.fc = torch.nn.Linear(model.fc.in_features, k)
        return model

    checks.check_replace_head(right)
    with pytest.raises(AssertionError, match="512"):
        checks.check_replace_head(lambda m, k: setattr(m, "fc", torch.nn.Linear(256, k)) or m)
    with pytest.raises(AssertionError, match="body was replaced"):
        checks.check_replace_head(lambda m, k: right(models.build_resnet18(5), k))
    with pytest.raises(AssertionError, match="should return the model"):
        checks.check_replace_head(lambda m, k: right(m, k) and None)
    with pytest.raises(AssertionError, match="no bias"):
        checks.check_replace_head(lambda m, k: setattr(m, "fc", torch.nn.Linear(512, k, bias=False)) or m)


# ------------------------------------------------------------------------------------ normalize
def per_channel(values):
    return torch.tensor(values).view(1, 3, 1, 1)


def test_check_normalize():
    checks.check_normalize(lambda x, m, s: (x - per_channel(m)) / per_channel(s))
    checks.check_normalize(lambda x, m, s: torch.stack([(x[:, c] - m[c]) / s[c] for c in range(3)], 1))
    wrong = {"the last dim": lambda x, m, s: (x - torch.tensor(m)) / torch.tensor(s),
             "variance": lambda x, m, s: (x - per_channel(m)) / per_channel(s) ** 2,
             "multiplies by std": lambda x, m, s: (x - per_channel(m)) * per_channel(s),
             "ImageNet's constants": lambda x, m, s: (x - per_channel([0.485, 0.456, 0.406])) / per_channel([0.229, 0.224, 0.225]),
             "255 again": lambda x, m, s: (x / 255 - per_channel(m)) / per_channel(s),
             "changed the images": lambda x, m, s: x.sub_(per_channel(m)).div_(per_channel(s))}
    for hint, answer in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            checks.check_normalize(answer)


# ------------------------------------------------------------------------ discriminative_groups
NAMES_FROM_HEAD = [["fc"], ["layer4"], ["layer3"], ["layer2"], ["layer1"], ["conv1", "bn1"]]


def groups_by(model, rate_of_distance, trainable_only=True, stages=NAMES_FROM_HEAD):
    groups = []
    for d, names in enumerate(stages):
        params = [p for n in names for p in getattr(model, n).parameters() if p.requires_grad or not trainable_only]
        if params:
            groups.append({"params": params, "lr": rate_of_distance(d)})
    return groups


def test_check_discriminative_groups():
    checks.check_discriminative_groups(lambda m, lr, f: groups_by(m, lambda d: lr * f ** d))
    wrong = {"one factor off": lambda m, lr, f: groups_by(m, lambda d: lr * f ** (d + 1)),
             "reversed": lambda m, lr, f: groups_by(m, lambda d: lr * f ** (5 - d)),
             "shares one rate": lambda m, lr, f: groups_by(m, lambda d: lr if d == 0 else lr * f),
             "the stem": lambda m, lr, f: groups_by(m, lambda d: lr * f ** d, stages=NAMES_FROM_HEAD[:5]),
             "frozen parameters": lambda m, lr, f: groups_by(m, lambda d: lr * f ** d, trainable_only=False),
             "two groups": lambda m, lr, f: groups_by(m, lambda d: lr * f ** d) + [{"params": [m.fc.bias], "lr": lr}],
             "own 'lr'": lambda m, lr, f: [{k: v for k, v in g.items() if g["lr"] != lr or k != "lr"}
                                          for g in groups_by(m, lambda d: lr * f ** d)]}
    for hint, answer in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            checks.check_discriminative_groups(answer)


# ------------------------------------------------------------------------------------ keep_best
def keep_best_with(copy_state=True, first=True, restore=True, start=1):
    def keep_best(model, train_one_epoch, val_accuracy, epochs):
        best = (None, float("-inf"), None)
        for epoch in range(start, epochs + start):
            train_one_epoch(model)
            acc = val_accuracy(model)
            if acc > best[1] or (not first and acc == best[1]):
                state = model.state_dict()
                best = (epoch, acc, copy.deepcopy(state) if copy_state else state)
        if restore:
            model.load_state_dict(best[2])
        return best[0], best[1]
    return keep_best


def evaluate_on_test(model):
    """Stands for the lesson's test evaluation; a right keep_best never calls it."""
    raise RuntimeError("the real test set was used")


def keep_best_on_test(model, train_one_epoch, val_accuracy, epochs):
    best = (0, -1.0, None)
    for epoch in range(1, epochs + 1):
        train_one_epoch(model)
        acc = evaluate_on_test(model).accuracy
        if acc > best[1]:
            best = (epoch, acc, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    return best[:2]


def test_check_keep_best():
    checks.check_keep_best(keep_best_with())
    for hint, answer in {"Keep a copy": keep_best_with(copy_state=False),
                         "on a tie keep the first": keep_best_with(first=False),
                         "load a copy of the best": keep_best_with(restore=False),
                         "count epochs from 1": keep_best_with(start=0),
                         "validation only": keep_best_on_test}.items():
        with pytest.raises(AssertionError, match=hint):
            checks.check_keep_best(answer)
    assert globals()["evaluate_on_test"] is evaluate_on_test  # the decoy is gone again


# -------------------------------------------------------------------------- most_common_mistake
def test_check_most_common_mistake():
    def right(confusion, classes):
        off = confusion.clone().fill_diagonal_(0)
        t, p = divmod(int(off.argmax()), len(classes))
        return classes[t], classes[p]

    checks.check_most_common_mistake(right)
    wrong = {"other way round": lambda c, names: right(c, names)[::-1],
             "leave the diagonal out": lambda c, names: (names[int(c.argmax()) // len(names)],) * 2,
             "not indices": lambda c, names: tuple(names.index(n) for n in right(c, names)),
             "the matrix was changed": lambda c, names: (c.fill_diagonal_(0), right(c, names))[1],
             "wrong row length": lambda c, names: (names[int(c.clone().fill_diagonal_(0).argmax()) // (len(names) - 1)],
                                                   names[int(c.clone().fill_diagonal_(0).argmax()) % (len(names) - 1)])}
    for hint, answer in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            checks.check_most_common_mistake(answer)


# ------------------------------------------------------------- the case suite, public and hidden
def load_cases() -> dict:
    spec = importlib.util.spec_from_file_location("lesson3_cases", CASES_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES


CASES = load_cases()
ALL = [(gid, kind, name) for gid, kinds in CASES.items() for kind in ("wrong", "right") for name in kinds[kind]]


def test_every_exercise_has_its_cases():
    nb = nbformat.read(SOURCE, as_version=4)
    assert sorted(CASES) == sorted(grading.grade_id(c) for c in nb.cells if grading.is_answer(c))
    for kinds in CASES.values():
        assert len(kinds["wrong"]) >= 4 and len(kinds["right"]) >= 3


@pytest.mark.parametrize("gid,kind,name", ALL, ids=[f"{g}-{k}-{n}" for g, k, n in ALL])
def test_case_scores_the_same_on_public_check_and_hidden_tests(gid, kind, name):
    answer = CASES[gid][kind][name]
    public, hidden = graded_parts_of(SOURCE, gid)
    want = kind == "right"
    lesson = {"evaluate_on_test": evaluate_on_test}
    assert passes_with(answer, public, lesson) is want, f"public check: {name}"
    assert passes_with(answer, hidden, lesson) is want, f"hidden tests: {name}"


def test_right_cases_are_not_mistaken_for_tampering():
    """Right answers draw no advisory note for the instructor, and assemble without notes."""
    pytest.importorskip("nbgrader", reason="instructor tools not installed")
    source = nbformat.read(SOURCE, as_version=4)
    lesson_names = grading._lesson_names(source)
    for gid, kinds in CASES.items():
        for name, answer in kinds["right"].items():
            assert grading.advisories(answer, lesson_names) == [], name
    submission = grading.submission_of({"nbformat": 4, "cells": [
        {"cell_type": "code", "source": answer, "metadata": {"nbgrader": {"grade_id": gid, "solution": True}}}
        for gid, kinds in CASES.items() for answer in list(kinds["right"].values())[:1]]})
    _, notes = grading.assemble(source, submission, grading.probes_of(source))
    assert [n for n in notes if "was deleted; it was restored" not in n] == []  # the submission holds answers only


def test_stubs_name_what_the_checks_expect():
    """Answer cells for functions keep their def line and docstring ahead of the solution."""
    nb = nbformat.read(SOURCE, as_version=4)
    for cell in nb.cells:
        if grading.is_answer(cell):
            head = cell.source.split("### BEGIN SOLUTION")[0]
            assert re.match(rf'def {grading.grade_id(cell)}\(.*\):\n    """', head), head
