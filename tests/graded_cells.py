"""Helpers for the lessons' case suites: a graded cell's public and hidden parts, and whether an answer
passes one of them in a namespace like the lesson's."""
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
