"""The real lessons 2-4 graded: each mutant suite graded as expected, and lesson 2 in the sandbox. A file of its own,
started first, so that a second test worker can run everything else beside it (tests/conftest.py)."""
import nbformat
import pytest

pytest.importorskip("nbgrader", reason="instructor tools not installed: python3 course.py install --instructor")
from course_lib import grading  # noqa: E402
from graded_cells import answer, lesson_only  # noqa: E402


@pytest.fixture
def real_data_env(cifar10, monkeypatch):
    """Let the grading kernels see the real CIFAR-10 (lessons 2 and 3 need it)."""
    from conftest import REAL_CIFAR10
    monkeypatch.setenv("COURSE_CIFAR10", str(REAL_CIFAR10))


@pytest.mark.cifar
@pytest.mark.parametrize("lesson, exercises", [("02_transfer_learning", 6), ("03_cifar10_resnet18", 6),
                                               ("04_your_own_images", 3)])
def test_validate_lesson(real_data_env, lesson, exercises):
    report = []
    assert grading.validate(only=[lesson], report=report) == []
    assert len(report) == exercises and all(line.endswith("graded as expected: yes") for line in report)


@pytest.mark.cifar
def test_lesson2_partial_and_patched_submission_in_the_sandbox(real_data_env, tmp_path):
    """A real lesson in the sandbox (read-only shared data, private data folder): the four right answers earn
    their points, the two wrong ones none. The reference solution's full marks are test_validate_lesson's."""
    source = grading.SOURCE_DIR / "02_transfer_learning.ipynb"
    solved = grading.learner_solved(nbformat.read(source, as_version=4))
    partial = answer(solved, "count_trainable", "def count_trainable(model):\n    return sum(p.numel() for p in model.parameters())")
    partial = answer(partial, "choose_depth", "sweep = [{'depth': 0, 'val_acc': 1.0}]\ndef choose_depth(rows):\n    return 0")
    (tmp_path / "submitted" / "ana").mkdir(parents=True)
    nbformat.write(partial, tmp_path / "submitted" / "ana" / source.name)
    [ana] = grading.grade_folder(tmp_path / "submitted", tmp_path / "grades", timeout=120,
                                 source_dir=lesson_only(tmp_path, source.name), progress=False)
    assert len(ana.scores) == 6, (ana.notes, ana.messages)
    assert ana.scores == {**dict.fromkeys(ana.max_scores, 2), "count_trainable_tests": 0, "choose_depth_tests": 0}, \
        (ana.notes, ana.messages)
    assert any("rebinds the lesson's sweep" in a for a in ana.advisories) and not any("sweep" in n for n in ana.notes)
    assert "every parameter, frozen ones included" in ana.messages["count_trainable_tests"]
