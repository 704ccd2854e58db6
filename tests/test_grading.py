"""Graded exercises: release, sync, validation, and sample submissions graded to their expected scores."""
import copy
import csv
import re

import nbformat
import pytest

pytest.importorskip("nbgrader", reason="instructor tools not installed: python3 course.py install --instructor")
from course_lib import grading  # noqa: E402

SOURCE = grading.SOURCE_DIR / "01_gradient_descent.ipynb"
LESSON = SOURCE.stem


@pytest.fixture(scope="module")
def source_nb():
    return nbformat.read(SOURCE, as_version=4)


def answer(nb, gid, code):
    nb = copy.deepcopy(nb)
    next(c for c in nb.cells if grading.grade_id(c) == gid).source = code
    return nb


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


def test_tampering_scan():
    protected = {"checks", "problem", "budget", "np"}
    assert grading.tampering("def gd_step(t, g, lr):\n    return t - lr * g", protected) == []
    assert grading.tampering("x = np.zeros(3)\nmodel.weight.data = x", protected) == []
    for code, expected in [("checks.check_gd_step = lambda f: None", "modifies checks.check_gd_step"),
                           ("budget = 10**6", "rebinds budget"),
                           ("import course_lib.checks as c\nc.check_gd_step = print", "modifies c.check_gd_step"),
                           ("np.allclose = lambda *a, **k: True", "modifies np.allclose"),
                           ("setattr(checks, 'x', 1)", "calls setattr()"),
                           ("def f():\n    f.__code__ = None", "uses __code__"),
                           ("import importlib", "imports importlib"),
                           ("from course_lib import checks", "rebinds checks")]:
        assert expected in grading.tampering(code, protected), code


def test_validate_lesson1_solutions_pass_and_stubs_fail():
    assert grading.validate(only=["01_gradient_descent"]) == []


@pytest.fixture
def real_data_env(cifar10, monkeypatch):
    """Let the grading kernels see the real CIFAR-10 (lessons 2 and 3 need it)."""
    from conftest import REAL_CIFAR10
    monkeypatch.setenv("COURSE_CIFAR10", str(REAL_CIFAR10))


@pytest.mark.cifar
def test_validate_lesson2(real_data_env):
    report = []
    assert grading.validate(only=["02_transfer_learning"], report=report) == []
    assert len(report) == 6 and all(line.endswith("graded as expected: yes") for line in report)


@pytest.mark.cifar
def test_validate_lesson3(real_data_env):
    report = []
    assert grading.validate(only=["03_cifar10_resnet18"], report=report) == []
    assert len(report) == 6 and all(line.endswith("graded as expected: yes") for line in report)


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


@pytest.mark.cifar
def test_lesson2_partial_and_tampered_submission(real_data_env, tmp_path):
    source = grading.SOURCE_DIR / "02_transfer_learning.ipynb"
    nb = grading.learner_solved(nbformat.read(source, as_version=4))
    nb = answer(nb, "count_trainable", "def count_trainable(model):\n    return sum(p.numel() for p in model.parameters())")
    nb = answer(nb, "choose_depth", "sweep = [{'depth': 0, 'val_acc': 1.0}]\ndef choose_depth(rows):\n    return 0")
    (tmp_path / "submitted" / "ana").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "submitted" / "ana" / source.name)
    results = grading.grade_folder(tmp_path / "submitted", tmp_path / "grades", timeout=120, progress=False)
    lesson2 = next(r for r in results if r.lesson == "02_transfer_learning")
    assert lesson2.scores == {**dict.fromkeys(lesson2.max_scores, 2), "count_trainable_tests": 0, "choose_depth_tests": 0}
    assert any("rebinds sweep" in n for n in lesson2.notes)
    assert "every parameter, frozen ones included" in lesson2.messages["count_trainable_tests"]


def test_sample_submissions_are_graded_to_their_expected_scores(source_nb, tmp_path):
    solved = grading.learner_solved(source_nb)
    stub_of = {grading.grade_id(c): c.source for c in grading.learner_version(source_nb).cells if grading.is_answer(c)}
    # each student's submission; several tamperings share one notebook to keep the kernels few
    partial = answer(answer(solved, "gd_step", "def gd_step(theta, grad, lr):\n    return theta + lr * grad"),
                     "train_linear", stub_of["train_linear"])
    partial = answer(partial, "numerical_grad", "1 / 0\ndef numerical_grad(fn, theta, eps=1e-5):\n    return 0")
    tampered = answer(solved, "gd_step", "def gd_step(theta, grad, lr):\n    return theta")  # wrong, check deleted
    tampered.cells = [c for c in tampered.cells if grading.grade_id(c) != "gd_step_tests"]
    tampered = answer(tampered, "numerical_grad", "import course_lib.checks as c\nc.check_numerical_grad = print\n"
                                                  "def numerical_grad(fn, theta, eps=1e-5):\n    return theta")
    tampered = answer(tampered, "converging_lr", "problem = gd.quadratic_1d(1.0)\nbudget = 10**6\nmy_lr = 0.5")
    tampered.cells.insert(3, nbformat.v4.new_code_cell("checks.check_training_loop = print"))
    tampered = answer(tampered, "train_linear", "def train_linear(x, y, lr=0.1, steps=150):\n    return torch.nn.Linear(1, 1)")
    edited = answer(solved, "gd_step", "def gd_step(theta, grad, lr):\n    return theta")
    next(c for c in edited.cells if grading.grade_id(c) == "gd_step_tests").source = "pass"
    subs = {
        "correct": solved,
        "partial": partial,
        "looping": answer(solved, "numerical_grad", "def numerical_grad(fn, theta, eps=1e-5):\n    while True:\n        pass"),
        "tampered": tampered,
        "edited_check": edited,
    }
    for student, nb in subs.items():
        (tmp_path / "submitted" / student).mkdir(parents=True)
        nbformat.write(nb, tmp_path / "submitted" / student / SOURCE.name)
    (tmp_path / "submitted" / "corrupt").mkdir()
    (tmp_path / "submitted" / "corrupt" / SOURCE.name).write_text('{"cells": [ this is not json')
    (tmp_path / "submitted" / "absent").mkdir()

    grading.grade_folder(tmp_path / "submitted", tmp_path / "grades", timeout=8, progress=False)

    rows = {r["student"]: r for r in csv.DictReader(open(tmp_path / "grades" / "grades.csv"))}
    all_points = sum(p for src in grading.SOURCE_DIR.glob("*.ipynb")
                     for _, p in grading.exercises(nbformat.read(src, as_version=4)))
    col = lambda gid: f"{LESSON}/{gid}"
    full = {"gd_step_tests": 2, "numerical_grad_tests": 2, "converging_lr_tests": 2, "train_linear_tests": 2}
    expected = {
        "correct": full,
        "partial": {**full, "gd_step_tests": 0, "numerical_grad_tests": 0, "train_linear_tests": 0},
        "looping": {**full, "numerical_grad_tests": 0},
        "tampered": dict.fromkeys(full, 0),
        "edited_check": {**full, "gd_step_tests": 0},
        "corrupt": dict.fromkeys(full, 0),
        "absent": dict.fromkeys(full, 0),
    }
    for student, scores in expected.items():
        got = {gid: float(rows[student][col(gid)]) for gid in scores}
        assert got == {k: float(v) for k, v in scores.items()}, student
        assert float(rows[student]["total"]) == sum(scores.values())  # other lessons: no submission, 0
        assert float(rows[student]["max"]) == all_points
    feedback = {s: (tmp_path / "grades" / "feedback" / f"{s}.md").read_text() for s in expected}
    lesson1_part = feedback["correct"].split("## 02_")[0]
    assert "01_gradient_descent: 8 / 8" in lesson1_part and "Notes" not in lesson1_part
    assert "stopped after 8 s" in feedback["looping"]
    t = feedback["tampered"]
    assert "'gd_step_tests' was deleted; it was restored" in t
    assert "'numerical_grad' was not run: it modifies c.check_numerical_grad" in t
    assert "rebinds budget" in t and "rebinds problem" in t
    assert "1 code cell(s) you added were not run" in t
    assert "'gd_step_tests' was edited; the original was restored" in feedback["edited_check"]
    assert "not a readable notebook" in feedback["corrupt"] and "no submission" in feedback["absent"]
    assert "moved *up* the gradient" in feedback["partial"]  # the check's hint reaches the student
    assert "answer cell 'numerical_grad' raised ZeroDivisionError" in feedback["partial"]
    assert (tmp_path / "grades" / "autograded" / "correct" / SOURCE.name).exists()


# ------------------------------------------------------------------ public and hidden parts, mutant suites
def tiny_lesson(check: str, hidden: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    meta = lambda **kw: {"nbgrader": {"schema_version": 3, "locked": False, "task": False, **kw}}
    nb.cells = [nbformat.v4.new_code_cell("base = 10", id="setup"),
                nbformat.v4.new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
                                          id="answer", metadata=meta(grade=False, solution=True, grade_id="double")),
                nbformat.v4.new_code_cell(f"{check}\n### BEGIN HIDDEN TESTS\n{hidden}\n### END HIDDEN TESTS",
                                          id="tests", metadata=meta(grade=True, solution=False, grade_id="double_tests",
                                                                    points=2, locked=True)),
                nbformat.v4.new_code_cell("print(double(base))", id="after")]
    return nb


def test_split_tests_and_which_cell_checks_which_answer():
    assert grading.split_tests("check(f)\n### BEGIN HIDDEN TESTS\nassert f(2) == 4\n### END HIDDEN TESTS\nprint(1)") == \
        ("check(f)\nprint(1)", "assert f(2) == 4")
    assert grading.split_tests("check(f)") == ("check(f)", "")
    nb = tiny_lesson("assert double(3) == 6", "assert double(-1) == -2")
    assert grading.answer_test_cells(nb) == {"double": 2}


def test_an_exercise_needs_its_public_check_and_its_hidden_tests():
    nb = tiny_lesson("assert double(3) == 6", "assert double(-1) == -2")
    only_public = answer(grading.learner_solved(nb), "double", "def double(x):\n    return 6 if x == 3 else 0")
    result, _ = grading.grade_notebook(nb, only_public, student="s", lesson="tiny", timeout=30)
    assert result.scores["double_tests"] == 0
    assert result.messages["double_tests"] == "public checks passed; hidden tests failed"  # names no hidden test
    result, _ = grading.grade_notebook(nb, grading.learner_solved(nb), student="s", lesson="tiny", timeout=30)
    assert result.scores["double_tests"] == 2


def test_mutant_suite_finds_checks_that_disagree():
    nb = tiny_lesson("assert double(3) == 6", "assert double(-1) == -2")
    cases = {"double": {"wrong": {"plus": "def double(x):\n    return x + 3", "abs": "def double(x):\n    return abs(2 * x)",
                                  "undefined": "pass"},
                        "right": {"shift": "def double(x):\n    return x << 1 if isinstance(x, int) else 2 * x",
                                  "sum": "double = lambda x: x + x"}}}
    records = grading.run_cases(nb, cases, timeout=30)
    by_name = {r["name"]: r for r in records}
    assert by_name["plus"]["public"] is None and by_name["plus"]["hidden"] is not None  # public check too weak
    assert by_name["abs"]["public"] is None and by_name["abs"]["hidden"] is not None
    assert by_name["undefined"]["public"].startswith("NameError")  # no lingering definition from another case
    assert by_name["shift"]["public"] is None and by_name["sum"]["hidden"] is None
    assert by_name["the solution"]["kind"] == "reference" and by_name["the solution"]["public"] is None
    problems = grading.case_problems(records, ["double"])
    assert "double, wrong answer 'plus': the public check let it pass" in problems
    assert not any("'undefined'" in p for p in problems)
    assert any("the mutant suite has 3 wrong and 2 right answers" in p for p in problems)
