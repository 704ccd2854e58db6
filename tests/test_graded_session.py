"""The grader's side of the run's protocol (issue #27, items 1 and 5): probes are handed out once, in order, hidden
ones only after the last placeholder; records count only for a nonce handed out, once."""
from __future__ import annotations

import json
import re

import nbformat
import pytest

pytest.importorskip("nbgrader", reason="instructor tools not installed: python3 course.py install --instructor")
from course_lib import grading  # noqa: E402
from course_lib.graded_session import Session  # noqa: E402
from test_grading_attacks import tiny_lesson  # noqa: E402


def ask(session: Session, want):
    reply = session.reply(json.dumps({"want": want}).encode())
    return json.loads(reply)["code"]


@pytest.fixture
def session(tmp_path):
    nbformat.write(tiny_lesson(), tmp_path / "tiny.ipynb")
    return Session(grading.Lesson.load(tmp_path / "tiny.ipynb").cells)


def nonces(code: str) -> list[str]:
    return re.findall(r"probe\('([0-9a-f]{32})'", code)


def test_placeholders_are_answered_once_in_order_and_hidden_checks_only_after_the_last(session):
    first, second = sorted(session.cells)
    assert ask(session, "end") is None  # no hidden check before the last placeholder
    code = ask(session, first)
    assert "check_gd_step" in code and "1729" not in code and "seed" not in code  # the hidden one is only kept
    assert len(nonces(code)) == 1 and ".keep(" in code
    assert ask(session, first) is None and ask(session, -1) is None  # once, in order
    assert ask(session, "end") is None
    assert ask(session, second) is not None
    hidden = [ask(session, "end"), ask(session, "end")]
    assert "'seed': 1729" in hidden[0] and ".kept(" in hidden[0] and "check_converging_lr" in hidden[1]
    assert ask(session, "end") is None


def test_records_count_only_for_a_nonce_handed_out_and_only_once(session):
    code = ask(session, min(session.cells))
    [nonce] = nonces(code)
    key = session.issued[nonce]
    for forged in ("0" * 32, None, 5, ["x"]):
        session.reply(json.dumps({"record": forged, "data": {"cases": []}}).encode())
    assert session.records == {} and session.errors == {}
    session.reply(json.dumps({"record": nonce, "data": {"cases": [1]}}).encode())
    assert session.records == {key: {"cases": [1]}}
    session.reply(json.dumps({"record": nonce, "data": {"cases": [2]}}).encode())
    assert session.records == {} and "two records" in session.errors[key]


def test_malformed_lines_are_ignored(session):
    for line in (b"not json", b"[" * 100_000, b"\xff\xfe", b"[1, 2]", json.dumps({"want": {"a": 1}}).encode()):
        reply = session.reply(line)
        assert reply is None or json.loads(reply)["code"] is None
    assert not session.started
    session.reply(b'{"started": true}')
    assert session.started
