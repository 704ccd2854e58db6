"""Lesson 1's graded cells, run the way the lesson runs them: the public check (the graded cell before
`### BEGIN HIDDEN TESTS`) and the hidden tests must agree on every answer in source/cases/, failing each
wrong one and passing each right one; and on exercise 3, for every learning rate."""
import importlib.util
import re

import matplotlib
import nbformat
import numpy as np
import pytest

from course_lib import config

matplotlib.use("Agg")

SOURCE = config.PROJECT_ROOT / "source" / "01_gradient_descent.ipynb"
CASES_FILE = config.PROJECT_ROOT / "source" / "cases" / "01_gradient_descent.py"
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


def load_cases() -> dict:
    spec = importlib.util.spec_from_file_location("lesson1_cases", CASES_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES


CASES = load_cases()


def nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


@pytest.fixture(scope="module")
def lesson():
    """The namespace after every code cell except answers and graded checks, and each answer's check split
    into (public, hidden) code."""
    import matplotlib.pyplot as plt

    nb = nbformat.read(SOURCE, as_version=4)
    namespace, checks_of, answer = {}, {}, None
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        meta = nbgrader(cell)
        if meta.get("solution"):
            answer = meta["grade_id"]
        elif meta.get("grade"):
            hidden = HIDDEN.search(cell.source)
            checks_of[answer] = (cell.source[:hidden.start()], hidden.group(1))
        else:
            exec(cell.source, namespace)
            plt.close("all")
    return namespace, checks_of


def passes(code: str, namespace: dict, answer: str) -> bool:
    ns = dict(namespace)
    try:
        exec(answer, ns)
        exec(code, ns)
    except Exception:  # a failing assertion, or any error the answer causes: the cell fails
        return False
    return True


def test_every_exercise_has_enough_cases(lesson):
    _, checks_of = lesson
    assert set(CASES) == set(checks_of) == {"gd_step", "numerical_grad", "converging_lr", "train_linear"}
    for gid, kinds in CASES.items():
        assert len(kinds["wrong"]) >= 4 and len(kinds["right"]) >= 3, gid


@pytest.mark.parametrize("gid, kind, name", [(gid, kind, name) for gid, kinds in CASES.items()
                                             for kind in ("wrong", "right") for name in kinds[kind]])
def test_public_check_and_hidden_tests_agree_on_the_case(lesson, gid, kind, name):
    namespace, checks_of = lesson
    public, hidden = checks_of[gid]
    code = CASES[gid][kind][name]
    want = kind == "right"
    assert passes(public, namespace, code) is want, f"public check on {kind} answer '{name}'"
    assert passes(hidden, namespace, code) is want, f"hidden tests on {kind} answer '{name}'"


def test_converging_lr_public_and_hidden_agree_for_every_rate(lesson):
    namespace, checks_of = lesson
    public, hidden = checks_of["converging_lr"]
    rates = np.linspace(0.001, 0.2, 400)
    verdicts = [(passes(public, namespace, f"my_lr = {lr!r}"), passes(hidden, namespace, f"my_lr = {lr!r}"))
                for lr in rates]
    disagree = [lr for lr, (pub, hid) in zip(rates, verdicts) if pub != hid]
    assert disagree == []
    passed = rates[[pub for pub, _ in verdicts]]
    # by hand, from the start (-2, 3), i.e. (-1/√2, 5/√2) along the eigenvectors of curvature 1 and 20:
    # final loss 0.25·(1 − lr)^300 + 125·(1 − 20·lr)^300 < 1e-6 for lr in about (0.0406, 0.0970)
    assert passed.min() == pytest.approx(0.0406, abs=5e-4) and passed.max() == pytest.approx(0.0970, abs=5e-4)
    assert set(rates[(rates > 0.0415) & (rates < 0.096)]) <= set(passed)  # one window, no gaps
