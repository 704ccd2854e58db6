"""Lesson 2's public checks against the mutant suite's answers (source/cases/02_transfer_learning.py):
every wrong answer fails with a hint, every right one passes. `validate` runs the same answers through the
whole graded notebook, hidden tests included."""
import runpy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import checks, config, models

CASES = runpy.run_path(str(config.PROJECT_ROOT / "source" / "cases" / "02_transfer_learning.py"))["CASES"]
RUN_CHECK = {
    "count_trainable": lambda ns: checks.check_count_trainable(ns["count_trainable"]),
    "head_groups": lambda ns: checks.check_head_groups(ns["head_groups"]),
    "evaluate_accuracy": lambda ns: checks.check_evaluate_accuracy(ns["evaluate_accuracy"]),
    "train_one_epoch": lambda ns: checks.check_train_one_epoch(ns["train_one_epoch"]),
    "freeze_by_hand": lambda ns: checks.check_freeze_by_hand(ns["freeze_through_layer3"], ns["train_mode"]),
    "choose_depth": lambda ns: checks.check_choose_depth(ns["choose_depth"]),
}
ANSWERS = [(gid, kind, name, code) for gid, kinds in CASES.items() for kind, items in kinds.items()
           for name, code in items.items()]


def namespace(code: str) -> dict:
    ns = {"torch": torch, "F": F, "np": np, "models": models}
    exec(code, ns)
    return ns


def test_every_exercise_has_a_check_and_enough_cases():
    assert set(CASES) == set(RUN_CHECK)
    for gid, kinds in CASES.items():
        assert len(kinds["wrong"]) >= 4 and len(kinds["right"]) >= 3, gid


@pytest.mark.parametrize("gid, kind, name, code", ANSWERS, ids=[f"{g}-{k}-{n}" for g, k, n, _ in ANSWERS])
def test_public_check_on_case(gid, kind, name, code):
    if kind == "right":
        RUN_CHECK[gid](namespace(code))
    else:
        with pytest.raises(AssertionError) as failure:
            RUN_CHECK[gid](namespace(code))
        assert "Hint" in str(failure.value) or "should" in str(failure.value), str(failure.value)


def test_a_stub_is_reported_as_not_done():
    def stub(*args):
        raise NotImplementedError
    with pytest.raises(checks.ExerciseNotDone):
        checks.check_evaluate_accuracy(stub)
    with pytest.raises(checks.ExerciseNotDone):
        checks.check_choose_depth(stub)
