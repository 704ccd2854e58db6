"""The process limit is per job slot, and a sandbox that cannot start is the grader's failure (issue #27, item 4):
retried, then reported "not graded", never 0. Also: nothing can be written to a sandbox's root (item 6)."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbgrader", reason="instructor tools not installed: python3 course.py install --instructor")
from course_lib import grading, sandbox  # noqa: E402
from course_lib.sandbox import Sandbox, bubblewrap_problem, copy_course_lib  # noqa: E402
from test_grading_attacks import FULL, attack, submission, tiny_lesson  # noqa: E402

# starts as many processes as its limit allows and holds them for two cells' time (the second cell finds its own
# limit already reached: that is the submission's own business, so it carries on)
FORKS = ("import subprocess, time\n"
         "try:\n"
         "    subprocess.Popen(['/bin/sh', '-c', 'for i in $(seq 600); do sleep 60 & done; wait'],\n"
         "                     stderr=subprocess.DEVNULL)\n"
         "except OSError:\n"
         "    pass\n"
         "time.sleep(14)\n")


def needs_bubblewrap():
    problem = bubblewrap_problem()
    if problem and not os.environ.get("CI"):
        pytest.skip(f"bubblewrap cannot run here: {problem}")


def write_batch(root, submissions: dict):
    (root / "source").mkdir()
    nbformat.write(tiny_lesson(), root / "source" / "tiny.ipynb")
    for student, nb in submissions.items():
        (root / "submitted" / student).mkdir(parents=True)
        nbformat.write(nb, root / "submitted" / student / "tiny.ipynb")


@pytest.mark.skipif(os.geteuid() != 0, reason="a uid per slot needs a grader running as root")
def test_one_submissions_processes_do_not_keep_a_classmates_sandbox_from_starting(tmp_path):
    needs_bubblewrap()
    honest = {f"b_honest{i}": submission() for i in range(3)}
    write_batch(tmp_path, {"a_forks": submission(converging_lr=FORKS + "my_lr = 0.07\n",
                                                 gd_step=FORKS + "def gd_step(t, g, lr):\n    return t - lr * g\n"),
                           **honest})
    results = grading.grade_folder(tmp_path / "submitted", tmp_path / "grades", source_dir=tmp_path / "source",
                                   timeout=20, jobs=2, progress=False)
    for r in results:
        assert r.not_graded is None and r.scores == FULL, (r.student, r.messages, r.notes)


def test_a_sandbox_that_cannot_start_is_retried_then_not_graded(tmp_path, monkeypatch):
    write_batch(tmp_path, {"ana": submission(), "ben": attack("", "")})
    starts = []

    def refused(self, job, slot=0):
        starts.append(slot)
        return ["/bin/sh", "-c", "echo 'bwrap: Creating new namespace failed: Resource temporarily unavailable' >&2; "
                "exit 1"]

    monkeypatch.setattr(grading, "bubblewrap_problem", lambda: None)
    monkeypatch.setattr(Sandbox, "command", refused)
    monkeypatch.setattr(grading.time, "sleep", lambda seconds: None)
    results = grading.grade_folder(tmp_path / "submitted", tmp_path / "grades", source_dir=tmp_path / "source",
                                   timeout=20, jobs=2, progress=False)
    assert len(starts) == 2 * grading.SANDBOX_ATTEMPTS
    assert all("Resource temporarily unavailable" in r.not_graded for r in results)
    with open(tmp_path / "grades" / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["tiny/gd_step_tests"], r["total"]) for r in rows] == [("not graded", "not graded")] * 2
    feedback = (tmp_path / "grades" / "feedback" / "ana.md").read_text()
    assert "tiny: not graded" in feedback and "0 /" not in feedback


@pytest.mark.skipif(os.geteuid() != 0, reason="a uid per slot needs a grader running as root")
def test_slots_run_under_their_own_uids():
    box = Sandbox(Path("/lib"), slots=2)
    commands = [" ".join(box.command(Path("/job"), slot)) for slot in (0, 1)]
    assert f"--reuid={sandbox.SLOT_UID_BASE}" in commands[0] and f"--reuid={sandbox.SLOT_UID_BASE + 1}" in commands[1]


def test_nothing_can_be_written_to_the_sandboxs_root(tmp_path):
    needs_bubblewrap()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os\n"
        "for path in ('/course/big', '/big', '/tmp/small'):\n"
        "    try:\n"
        "        open(path, 'wb').write(b'x' * 1000)\n"
        "        print(path, 'written')\n"
        "    except OSError as e:\n"
        "        print(path, 'refused')")])
    nb.metadata = tiny_lesson().metadata
    box = Sandbox(copy_course_lib(tmp_path / "lib"))
    _, _, executed, events = grading.execute(nb, box, 60, 120, {})
    said = "".join(o.get("text", "") for o in executed.cells[0].outputs)
    assert said.splitlines() == ["/course/big refused", "/big refused", "/tmp/small written"], (said, events)


def test_a_batch_of_lesson_4_alone_is_lent_the_shared_data():
    """Lesson 4 loads no CIFAR-10 but the source model pretrained on it: the shared folder serves it too."""
    lesson4 = nbformat.read(grading.SOURCE_DIR / "04_your_own_images.ipynb", as_version=4)
    assert grading.uses_cifar10(lesson4)
    assert not grading.uses_cifar10(tiny_lesson())


def test_grading_a_class_is_refused_without_root_and_says_what_to_do(tmp_path, monkeypatch):
    write_batch(tmp_path, {"ana": submission()})
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as refused:
        grading.grade_folder(tmp_path / "submitted", tmp_path / "grades", source_dir=tmp_path / "source",
                             progress=False)
    assert "grading a class needs root" in str(refused.value) and "--no-sandbox" in str(refused.value)
