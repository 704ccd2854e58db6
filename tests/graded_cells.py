"""Helpers for the lessons' case suites and graded submissions: a graded cell's public and hidden parts, whether
an answer passes one of them in a namespace like the lesson's, a notebook with one answer changed."""
import copy

import nbformat
import torch

from course_lib import checks, grading, models


def graded_parts_of(source, gid: str) -> tuple[str, str]:
    """(public check, hidden tests) of the graded cell that belongs to answer cell `gid` of lesson `source`."""
    nb = nbformat.read(source, as_version=4)
    cell = next(c for c in nb.cells if grading.grade_id(c) == f"{gid}_tests")
    public, rest = cell.source.split("### BEGIN HIDDEN TESTS")
    return public, rest.split("### END HIDDEN TESTS")[0]


def passes_with(answer: str, test: str, names: dict | None = None) -> bool:
    """Run `answer`, then `test`; True when the test raises nothing. `names`: the lesson's names it may use."""
    torch.manual_seed(0)
    namespace = {"torch": torch, "models": models, "checks": checks, **(names or {})}
    exec(compile(answer, "<answer>", "exec"), namespace)
    try:
        exec(compile(test, "<test>", "exec"), namespace)
    except Exception:
        return False
    return True


def answer(nb, gid, code):
    nb = copy.deepcopy(nb)
    next(c for c in nb.cells if grading.grade_id(c) == gid).source = code
    return nb


def lesson_only(tmp_path, name: str):
    """A source folder holding one lesson, so a batch grades only that one."""
    (tmp_path / "source").mkdir(exist_ok=True)
    nbformat.write(nbformat.read(grading.SOURCE_DIR / name, as_version=4), tmp_path / "source" / name)
    return tmp_path / "source"
