"""Graded exercises: release, sync, validation, and sample submissions graded to their expected scores."""
import csv
import re

import nbformat
import pytest

pytest.importorskip("nbgrader", reason="instructor tools not installed: python3 course.py install --instructor")
from course_lib import grading  # noqa: E402
from graded_cells import answer, lesson_only  # noqa: E402

SOURCE = grading.SOURCE_DIR / "01_gradient_descent.ipynb"
LESSON = SOURCE.stem


@pytest.fixture(scope="module")
def source_nb():
    return nbformat.read(SOURCE, as_version=4)


def test_learner_notebooks_are_in_sync_with_the_sources():
    assert grading.drift() == []


def test_release_has_no_solution_or_hidden_test_text(source_nb):
    learner = (grading.NOTEBOOKS_DIR / SOURCE.name).read_text()
    hidden_or_solution = []
    for cell in source_nb.cells:
        for block in re.findall(r"### BEGIN (?:SOLUTION|HIDDEN TESTS)\n(.*?)### END", cell.source, re.S):
            hidden_or_solution += [l.strip() for l in block.splitlines() if len(l.strip()) > 12]
    public = "\n".join(re.sub(r"### BEGIN (SOLUTION|HIDDEN TESTS)\n.*?### END (SOLUTION|HIDDEN TESTS)", "",
                               c.source, flags=re.S) for c in source_nb.cells)
    secret = [l for l in hidden_or_solution if l not in public]  # lines also shown elsewhere are no secret
    assert len(secret) >= 8
    for line in secret:
        assert line not in learner, f"leaked into the learner notebook: {line}"
    assert "BEGIN SOLUTION" not in learner and "HIDDEN TESTS" not in learner
    assert learner.count(grading.STUB.replace('"', '\\"')) == 4


def test_release_never_overwrites_a_learners_work(tmp_path):
    grading.release(out_dir=tmp_path)
    mine = tmp_path / SOURCE.name
    nb = nbformat.read(mine, as_version=4)
    for cell in nb.cells:
        if grading.is_answer(cell):
            cell.source = "my_lr = 0.07  # my own work"
    nbformat.write(nb, mine)
    grading.release(out_dir=tmp_path)
    backups = list(tmp_path.glob("01_gradient_descent.backup-*.ipynb"))
    assert len(backups) == 1 and "my own work" in backups[0].read_text()
    assert "my own work" not in mine.read_text()


def test_advisories_are_scope_aware_and_for_the_instructor_only():
    lesson = {"checks", "problem", "budget", "np", "model"}
    honest = ("import numpy as np\nimport torch.nn.functional as F\n\ndef gd_step(theta, grad, lr):\n"
              "    x, size, best = theta, len(theta), None\n    model = None\n    return x - lr * grad\n")
    assert grading.advisories(honest, lesson) == []  # locals and re-imports are the student's own business
    assert grading.advisories("def replace_head(model, k):\n    model.fc = None\n    return model", lesson) == []
    for code, expected in [("checks.check_gd_step = lambda f: None", "modifies checks.check_gd_step"),
                           ("budget = 10**6", "rebinds the lesson's budget"),
                           ("name = 'x'\nsetattr(checks, name, 1)", "calls setattr()"),
                           ("def f():\n    return f.__globals__", "uses __globals__"),
                           ("import importlib", "imports importlib"),
                           ("%env X=1\n!ls", "uses IPython magics or shell commands (% or !)")]:
        assert expected in grading.advisories(code, lesson), code


def test_an_answer_that_calls_the_librarys_twin_of_its_exercise_is_pointed_out():
    code = "def count_trainable(model):\n    return models.trainable_parameters(model)\n"
    assert "calls the library's trainable_parameters(), which does what this exercise asks" in \
        grading.advisories(code, set(), "count_trainable")
    assert grading.advisories(code, set(), "choose_depth") == []  # no twin of that exercise


def test_validate_lesson1_solutions_pass_and_stubs_fail():
    assert grading.validate(only=["01_gradient_descent"]) == []


def test_the_course_has_at_least_16_exercises_each_with_a_mutant_suite():
    total = 0
    for src in sorted(grading.SOURCE_DIR.glob("*.ipynb")):
        nb = nbformat.read(src, as_version=4)
        answers = [grading.grade_id(c) for c in nb.cells if grading.is_answer(c)]
        total += len(answers)
        cases = grading.load_cases(src)
        assert set(cases) == set(answers), src.name
        for gid in answers:
            assert len(cases[gid]["wrong"]) >= grading.MIN_WRONG and len(cases[gid]["right"]) >= grading.MIN_RIGHT
    assert total >= 16


CELL_TIMEOUT = 15  # seconds per cell: lesson 1's slowest cell takes a few, on a machine shared with a second worker


def test_sample_submissions_are_graded_to_their_expected_scores(source_nb, tmp_path):
    """Lesson 1 in the sandbox: the reference solution earns every point; wrong, looping, edited and broken
    submissions earn what their answers deserve, with notes that say why."""
    solved = grading.learner_solved(source_nb)
    stub_of = {grading.grade_id(c): c.source for c in grading.learner_version(source_nb).cells if grading.is_answer(c)}
    partial = answer(answer(solved, "gd_step", "def gd_step(theta, grad, lr):\n    return theta + lr * grad"),
                     "train_linear", stub_of["train_linear"])
    partial = answer(partial, "numerical_grad", "1 / 0\ndef numerical_grad(fn, theta, eps=1e-5):\n    return 0")
    tampered = answer(solved, "gd_step", "def gd_step(theta, grad, lr):\n    return theta")  # wrong, check deleted
    tampered.cells = [c for c in tampered.cells if grading.grade_id(c) != "gd_step_tests"]
    tampered = answer(tampered, "converging_lr", "problem = gd.quadratic_1d(1.0)\nbudget = 10**6\nmy_lr = 0.5")
    tampered.cells.insert(3, nbformat.v4.new_code_cell("checks.check_training_loop = print"))
    edited = answer(solved, "gd_step", "def gd_step(theta, grad, lr):\n    return theta")
    next(c for c in edited.cells if grading.grade_id(c) == "gd_step_tests").source = "pass"
    subs = {"correct": solved, "partial": partial, "tampered": tampered, "edited_check": edited,
            "looping": answer(solved, "numerical_grad", "def numerical_grad(fn, theta, eps=1e-5):\n    while True:\n        pass")}
    for student, nb in subs.items():
        (tmp_path / "submitted" / student).mkdir(parents=True)
        nbformat.write(nb, tmp_path / "submitted" / student / SOURCE.name)
    (tmp_path / "submitted" / "corrupt").mkdir()
    (tmp_path / "submitted" / "corrupt" / SOURCE.name).write_text('{"cells": [ this is not json')
    (tmp_path / "submitted" / "absent").mkdir()

    grading.grade_folder(tmp_path / "submitted", tmp_path / "grades", source_dir=lesson_only(tmp_path, SOURCE.name),
                         timeout=CELL_TIMEOUT, progress=False)

    rows = {r["student"]: r for r in csv.DictReader(open(tmp_path / "grades" / "grades.csv"))}
    full = {"gd_step_tests": 2, "numerical_grad_tests": 2, "converging_lr_tests": 2, "train_linear_tests": 2}
    expected = {
        "correct": full,
        "partial": {**full, "gd_step_tests": 0, "numerical_grad_tests": 0, "train_linear_tests": 0},
        "looping": {**full, "numerical_grad_tests": 0},
        "tampered": {**full, "gd_step_tests": 0, "converging_lr_tests": 0},  # 0.5 diverges on the lesson's problem
        "edited_check": {**full, "gd_step_tests": 0},
        "corrupt": dict.fromkeys(full, 0),
        "absent": dict.fromkeys(full, 0),
    }
    for student, scores in expected.items():
        got = {gid: float(rows[student][f"{LESSON}/{gid}"]) for gid in scores}
        assert got == {k: float(v) for k, v in scores.items()}, (tmp_path / "grades" / "feedback" / f"{student}.md").read_text()
        assert float(rows[student]["total"]) == sum(scores.values()) and float(rows[student]["max"]) == 8
    feedback = {s: (tmp_path / "grades" / "feedback" / f"{s}.md").read_text() for s in expected}
    assert "01_gradient_descent: 8 / 8" in feedback["correct"] and "Notes" not in feedback["correct"]
    assert f"ran longer than {CELL_TIMEOUT} s and was stopped" in feedback["looping"]
    assert "'gd\\_step\\_tests' was deleted; it was restored" in feedback["tampered"]
    assert "'gd\\_step\\_tests' was edited; the original was restored" in feedback["edited_check"]
    assert "1 code cell\\(s\\) you added were not run" in feedback["tampered"]
    assert "not a readable notebook" in feedback["corrupt"] and "no submission" in feedback["absent"]
    assert "moved \\*up\\* the gradient" in feedback["partial"]  # the check's hint reaches the student
    assert "answer cell 'numerical\\_grad' raised ZeroDivisionError" in feedback["partial"]
    assert (tmp_path / "grades" / "autograded" / "correct" / SOURCE.name).exists()


# ------------------------------------------------------------------ public and hidden parts, mutant suites
def tiny_lesson(hidden: str = "checks.check_gd_step(gd_step, seed=1729)"):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    meta = lambda **kw: {"nbgrader": {"schema_version": 3, "locked": False, "task": False, **kw}}
    nb.cells = [nbformat.v4.new_code_cell("import numpy as np\nfrom course_lib import checks", id="setup"),
                nbformat.v4.new_code_cell("def gd_step(theta, grad, lr):\n    ### BEGIN SOLUTION\n    return theta - lr * grad\n"
                                          "    ### END SOLUTION", id="answer",
                                          metadata=meta(grade=False, solution=True, grade_id="gd_step")),
                nbformat.v4.new_code_cell(f"checks.check_gd_step(gd_step)\n### BEGIN HIDDEN TESTS\n{hidden}\n### END HIDDEN TESTS",
                                          id="tests", metadata=meta(grade=True, solution=False, grade_id="gd_step_tests",
                                                                    points=2, locked=True)),
                nbformat.v4.new_code_cell("print(gd_step(np.ones(2), np.ones(2), 0.5))", id="after")]
    return nb


HARDCODED = ("import numpy as np\nPUBLIC = {(1.0, 2.0, 0.1): [0.95, 2.1], (3.0, 0.5): [0.0], (-1.0, 0.0, 4.0, 0.0): [-1.0, 0.0, 4.0]}\n"
             "def gd_step(theta, grad, lr):\n    return np.array(PUBLIC[(*theta.tolist(), lr)])\n")


def test_split_tests_and_which_cell_checks_which_answer():
    assert grading.split_tests("check(f)\n### BEGIN HIDDEN TESTS\nassert f(2) == 4\n### END HIDDEN TESTS\nprint(1)") == \
        ("check(f)\nprint(1)", "assert f(2) == 4")
    assert grading.split_tests("check(f)") == ("check(f)", "")
    assert grading.answer_test_cells(tiny_lesson()) == {"gd_step": 2}
    assert [(p.key, p.check) for p in grading.probes_of(tiny_lesson())] == \
        [("gd_step_tests.public.0", "check_gd_step"), ("gd_step_tests.hidden.0", "check_gd_step")]


def test_graded_cells_hold_only_graded_check_calls():
    with pytest.raises(ValueError, match="only calls of graded checks"):
        grading.probes_of(tiny_lesson("assert gd_step(np.ones(1), np.ones(1), 1.0) == 0"))


def test_an_exercise_needs_its_public_check_and_its_hidden_tests():
    nb = tiny_lesson()
    only_public = answer(grading.learner_solved(nb), "gd_step", HARDCODED)
    result, _ = grading.grade_notebook(nb, only_public, student="s", lesson="tiny", timeout=30)
    assert result.scores["gd_step_tests"] == 0
    assert result.messages["gd_step_tests"] == "public checks passed; hidden tests failed"  # names no hidden test
    result, _ = grading.grade_notebook(nb, grading.learner_solved(nb), student="s", lesson="tiny", timeout=30)
    assert result.scores["gd_step_tests"] == 2


def test_mutant_suite_finds_checks_that_disagree():
    nb = tiny_lesson()
    cases = {"gd_step": {"wrong": {"plus": "def gd_step(theta, grad, lr):\n    return theta + lr * grad",
                                   "hardcoded": HARDCODED, "undefined": "pass"},
                         "right": {"copy": "def gd_step(theta, grad, lr):\n    out = theta.copy()\n    out -= lr * grad\n    return out",
                                   "lambda": "gd_step = lambda t, g, lr: t - lr * g"}}}
    records = grading.run_cases(nb, cases, timeout=30)
    by_name = {r["name"]: r for r in records}
    assert by_name["plus"]["public"] is not None and by_name["plus"]["hidden"] is not None
    assert by_name["hardcoded"]["public"] is None and by_name["hardcoded"]["hidden"] is not None  # public check too weak
    assert by_name["undefined"]["public"].startswith("the check could not run: NameError")  # no lingering definition
    assert by_name["copy"]["public"] is None and by_name["lambda"]["hidden"] is None
    assert by_name["the solution"]["kind"] == "reference" and by_name["the solution"]["public"] is None
    stub = by_name["the unanswered stub"]  # every exercise's stub runs in the same pass, and must fail both parts
    assert stub["kind"] == "stub" and "NotImplementedError" in stub["public"] and stub["hidden"] is not None
    assert grading.case_problems([{**stub, "public": None, "hidden": None}], []) == [
        "gd_step, the unanswered stub: the public check let it pass",
        "gd_step, the unanswered stub: the hidden tests let it pass"]
    problems = grading.case_problems(records, ["gd_step"])
    assert "gd_step, wrong answer 'hardcoded': the public check let it pass" in problems
    assert not any("'undefined'" in p for p in problems)
    assert any("the mutant suite has 3 wrong and 2 right answers" in p for p in problems)
