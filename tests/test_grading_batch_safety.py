"""No submission crashes the batch (issue #27, item 2): what is done per student fails for that student only,
with a note, and names or text that are not valid UTF-8 are escaped in what the grader writes. These run the
batch with a stand-in for the sandboxed run, so they need no bubblewrap and take seconds."""
from __future__ import annotations

import csv
import json
import os

import nbformat
import pytest

pytest.importorskip("nbgrader", reason="instructor tools not installed: python3 course.py install --instructor")
from course_lib import grading  # noqa: E402
from test_grading_attacks import FULL, submission, tiny_lesson  # noqa: E402

DEEP = "x = " + "-" * 200_000 + "1\n"  # ast.parse runs out of memory (MemoryError)
LONG = "x = 1" + " + 1" * 100_000 + "\n"  # ast.parse recurses too deep (RecursionError)
SURROGATE = "# a lone surrogate: \ud800\n"  # JSON holds it, UTF-8 cannot


def test_advisories_never_raise_on_what_a_parser_chokes_on():
    for code in (DEEP, LONG, SURROGATE + "x = 1\n", "def f(:\n"):
        found = grading.advisories(code, {"checks"})  # would raise MemoryError / RecursionError / UnicodeEncodeError
        assert isinstance(found, list)
    assert any("could not be scanned (RecursionError)" in a for a in grading.advisories(LONG, set()))


def test_a_lone_surrogate_in_an_answer_is_replaced_not_fatal():
    nb = submission(gd_step=SURROGATE + "def gd_step(theta, grad, lr):\n    return theta - lr * grad\n")
    found = grading.submission_of(nbformat.from_dict(nb))
    found.answers["gd_step"].encode("utf-8")  # writable as the job's notebook
    assert "\ufffd" in found.answers["gd_step"]


@pytest.fixture
def batch(tmp_path, monkeypatch):
    """A batch whose sandboxed runs are replaced: `crash` makes grading raise, the others get full marks."""
    (tmp_path / "source").mkdir()
    nbformat.write(tiny_lesson(), tmp_path / "source" / "tiny.ipynb")
    submitted = tmp_path / "submitted"
    names = [b"ana", b"crash", b"\xff\xfe-not-utf8", b"zoe", b"surrogate"]
    for name in names:
        folder = os.path.join(os.fsencode(submitted), name)
        os.makedirs(folder)
        nb = submission(gd_step=SURROGATE + "def gd_step(t, g, lr):\n    return t - lr * g\n") \
            if name == b"surrogate" else submission()
        with open(os.path.join(folder, b"tiny.ipynb"), "w", encoding="utf-8") as f:
            json.dump(nb, f)  # ASCII, the surrogate as the escape \ud800

    def fake(source_nb, found, *, student, lesson, timeout, sandbox, prepared):
        if student == "crash":
            raise RecursionError("maximum recursion depth exceeded")
        result = grading.Result(student, lesson, scores=dict(FULL), max_scores=dict(FULL))
        result.advisories = grading.advisories(found.answers["gd_step"] + DEEP, prepared.lesson_names)
        return result, None

    monkeypatch.setattr(grading, "grade_notebook", fake)
    monkeypatch.setattr(grading, "bubblewrap_problem", lambda: None)
    results = grading.grade_folder(submitted, tmp_path / "grades", source_dir=tmp_path / "source", jobs=2,
                                   progress=False)
    return tmp_path / "grades", results


def test_one_students_failure_costs_that_student_only(batch):
    out, results = batch
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"ana", "crash", "\\xff\\xfe-not-utf8", "zoe", "surrogate"}
    for student in ("ana", "\\xff\\xfe-not-utf8", "zoe", "surrogate"):
        assert float(rows[student]["total"]) == 4
    assert float(rows["crash"]["total"]) == 0
    assert "could not be graded \\(RecursionError\\)" in (out / "feedback" / "crash.md").read_text()
    assert len(results) == 5


def test_names_that_are_not_utf8_are_escaped_in_every_output(batch):
    out, _ = batch
    name = os.fsdecode(b"\xff\xfe-not-utf8")
    feedback = (out / "feedback" / f"{name}.md").read_text(encoding="utf-8")
    assert "\\\\xff\\\\xfe\\-not\\-utf8" in feedback  # shown escaped, then Markdown-escaped
    assert '"student": "\\\\xff\\\\xfe-not-utf8"' in (out / "results" / name / "tiny.json").read_text()
