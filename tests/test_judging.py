"""No record stalls the grader (issue #27, item 3): records are checked against their check's bounds before any
work, arrays' shapes are read without big-number arithmetic, and judges run in worker processes with a time
limit."""
from __future__ import annotations

import time

import pytest

from course_lib import checks, judging

HONEST_CASE = {"value": {"shape": [2], "values": [0.95, 2.1]}, "theta_after": {"shape": [2], "values": [1.0, 2.0]}}


def test_a_huge_shape_is_refused_at_once():
    huge = {"shape": [2 ** 62] * 19_000, "values": [1.0]}  # its product is a 1.2-million-bit number
    start = time.monotonic()
    with pytest.raises(checks.MalformedRecord):
        checks._array_of(huge)
    with pytest.raises(checks.MalformedRecord):
        checks._array_of({"shape": [0, 2 ** 62, 2 ** 62], "values": []})
    assert time.monotonic() - start < 0.5


@pytest.mark.parametrize("record, why", [
    ({"cases": [0.0] * 30_000}, "more than 20000 values"),
    ({"cases": [[[[[[[[[[[[[[1]]]]]]]]]]]]]]}, "nested deeper"),
    ({"cases": ["x" * 100_000]}, "longer than"),
    ({"cases": [10 ** 30]}, "larger than 64 bits"),
    ({"cases": [{1, 2}]}, "holds a set"),
])
def test_records_beyond_their_checks_bounds_are_refused_before_judging(record, why):
    start = time.monotonic()
    verdict = judging.judge("check_gd_step", record, {"seed": 0}, checks.GRADED["check_gd_step"].max_items)
    assert verdict.startswith("the check's record was refused") and why in verdict
    assert time.monotonic() - start < 0.5  # no worker was even asked


def test_honest_records_stay_within_bounds():
    record = checks.as_record(checks.probe_gd_step(lambda t, g, lr: t - lr * g, seed=1729))
    assert judging.within_bounds(record, checks.GRADED["check_gd_step"].max_items) is None


def test_a_judge_past_its_time_limit_fails_and_the_next_one_still_runs(monkeypatch):
    record = checks.as_record(checks.probe_gd_step(lambda t, g, lr: t - lr * g))
    monkeypatch.setattr(judging, "_idle", [])  # no warm worker left by an earlier test: a fresh one starts a Python
    stalled = judging.judge("check_gd_step", record, {"seed": 0}, 1000, seconds=0.001)  # which takes far over 1 ms
    assert stalled == "judging this record took longer than 0.001 s"
    assert judging.judge("check_gd_step", record, {"seed": 0}, 1000) is None
    wrong = checks.as_record(checks.probe_gd_step(lambda t, g, lr: t + lr * g))
    assert "moved *up* the gradient" in judging.judge("check_gd_step", wrong, {"seed": 0}, 1000)
