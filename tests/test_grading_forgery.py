"""Records that cannot be forged, hidden checks that stay hidden (issue #27, items 1 and 5), graded in one batch of
sandboxes: each submission must score only what its real answers earn, and no feedback may carry a hidden
seed or a hidden input. Uses the tiny lesson of test_grading_attacks (lesson 1's gd_step and converging rate)."""
from __future__ import annotations

import json
import os

import nbformat
import pytest

pytest.importorskip("nbgrader", reason="instructor tools not installed: python3 course.py install --instructor")
from course_lib import grading  # noqa: E402
from course_lib.sandbox import bubblewrap_problem  # noqa: E402
from test_grading_attacks import FULL, NOTHING, RATE_ONLY, RIGHT_STEP, STEP_ONLY, attack, submission, \
    tiny_lesson  # noqa: E402

STUB_STEP = "def gd_step(theta, grad, lr):\n    raise NotImplementedError\n"
HIDDEN_LRS = ("1.634", "0.331", "0.315")  # the hidden gd_step inputs (seed 1729): never in any feedback

# the probe replaced in the kernel by one that asks the library's judge which record to send
ASKS_THE_JUDGE = """
import json, numpy as np, course_lib.checks as c, course_lib.graded_run as g
from IPython.display import display

def forged(nonce, check, arguments):
    args, kwargs = arguments()
    judge = c.GRADED[check].judge
    for guess in ({'cases': []}, {'cases': 'all passed'}):
        try:
            judge(guess, **kwargs)
        except AssertionError:
            continue
        display({g.RECORD_MIME: json.dumps({'nonce': nonce, 'record': guess})}, raw=True)
        return

g.probe = forged
"""
# opens the runner's and bwrap's pipes through /proc, to ask for later probes (hidden ones) early
REOPENS_PIPES = ("import os\nopened = []\nfor pid in os.listdir('/proc'):\n"
                 "    if pid.isdigit() and int(pid) != os.getpid():\n        for fd in ('0', '1', '2'):\n"
                 "            try:\n                os.close(os.open(f'/proc/{pid}/fd/{fd}', os.O_RDWR | os.O_NONBLOCK))\n"
                 "                opened.append(f'{pid}/{fd}')\n            except OSError:\n                pass\n"
                 "raise RuntimeError(f'opened {opened}')\n")

# records made to stall the judge: a shape whose product is a 1.2-million-bit number, and deep nesting
STALLS = """
import json, course_lib.graded_run as g
from IPython.display import display
REAL = g.probe

def stalling(nonce, check, arguments):
    if check != 'check_gd_step':
        return REAL(nonce, check, arguments)
    huge = {'value': {'shape': [2 ** 62] * 19_000, 'values': [1.0]}, 'theta_after': {'shape': [1], 'values': [1.0]}}
    deep = [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]
    display({g.RECORD_MIME: json.dumps({'nonce': nonce, 'record': {'cases': [huge, huge, deep, huge]}})}, raw=True)

g.probe = stalling
"""

SUBMISSIONS = {
    # no record, however crafted, holds up the grader or a classmate judged meanwhile
    "stalls_the_judge": (attack(STALLS, STUB_STEP), RATE_ONLY),
    # the sandbox's library holds no judge to ask: no record is sent, for any check it replaced the probe of
    "asks_the_judge": (attack(ASKS_THE_JUDGE, STUB_STEP), NOTHING),
    # records displayed from an answer cell, with every nonce it can guess, and in the old records folder
    "displays_records_early": (attack(
        "import json, os\nfrom IPython.display import display\nimport course_lib.graded_run as g\n"
        "rec = {'cases': 'all passed'}\n"
        "for nonce in ('', '0' * 32, None):\n"
        "    display({g.RECORD_MIME: json.dumps({'nonce': nonce, 'record': rec})}, raw=True)\n"
        "folder = os.environ.get('COURSE_RECORDS_DIR', '/tmp/records')\nos.makedirs(folder, exist_ok=True)\n"
        "for part in ('public', 'hidden'):\n"
        "    open(os.path.join(folder, f'gd_step_tests.{part}.0.json'), 'w').write(json.dumps(rec))\n"
        "os.chmod(folder, 0o500)\n", STUB_STEP), RATE_ONLY),
    # two records for each nonce (the real probe's, twice): neither counts, for any of its checks
    "doubles_records": (attack(
        "import course_lib.graded_run as g\nREAL = g.probe\n"
        "def twice(nonce, check, arguments):\n    REAL(nonce, check, arguments)\n    REAL(nonce, check, arguments)\n"
        "g.probe = twice\n", RIGHT_STEP), NOTHING),
    # reads the assembled notebook and everything the kernel holds, looking for hidden seeds and inputs, and
    # puts what it found into its own feedback through a later answer cell's error
    "leaks_hidden_tests": (submission(
        "import numpy as np\nSEEN = []\ndef gd_step(theta, grad, lr):\n    SEEN.append(lr)\n"
        "    return theta - lr * grad\n",
        "import glob, sys\nfound = [open(p, errors='replace').read() for p in glob.glob('/course/job/*')]\n"
        "found.append(repr(sys.modules['course_lib.graded_run']._kept))\n"
        "raise RuntimeError(repr(SEEN) + ' '.join(found))\n"), STEP_ONLY),
    "reopens_pipes": (submission(converging_lr=REOPENS_PIPES), STEP_ONLY),
    "honest": (submission(), FULL),
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    problem = bubblewrap_problem()
    if problem and not os.environ.get("CI"):
        pytest.skip(f"bubblewrap cannot run here: {problem}")
    root = tmp_path_factory.mktemp("forgery")
    (root / "source").mkdir()
    nbformat.write(tiny_lesson(), root / "source" / "tiny.ipynb")
    for student, (nb, _) in SUBMISSIONS.items():
        (root / "submitted" / student).mkdir(parents=True)
        nbformat.write(nb, root / "submitted" / student / "tiny.ipynb")
    results = grading.grade_folder(root / "submitted", root / "grades", source_dir=root / "source", timeout=20,
                                   jobs=2, progress=False)
    return {r.student: r for r in results}, root / "grades"


def test_a_crafted_record_is_refused_before_any_work(batch):
    results, _ = batch
    assert results["stalls_the_judge"].messages["gd_step_tests"].startswith("the check's record was refused")


@pytest.mark.parametrize("student", list(SUBMISSIONS))
def test_forged_records_earn_nothing_their_answers_do_not(batch, student):
    results, _ = batch
    assert results[student].scores == SUBMISSIONS[student][1], results[student].messages


def test_hidden_seeds_and_inputs_never_reach_feedback(batch):
    results, out = batch
    leaked = (out / "feedback" / "leaks_hidden_tests.md").read_text()
    assert "answer cell 'converging\\_lr' raised RuntimeError" in leaked  # its text did come through...
    assert "0\\.1, 0\\.5, 0\\.0" in leaked  # ...with the public inputs it saw
    for student in SUBMISSIONS:
        text = (out / "feedback" / f"{student}.md").read_text() + json.dumps(results[student].to_dict())
        assert "1729" not in text and "seed" not in text and "hidden.0" not in text
        assert not any(lr.replace(".", "\\.") in text or lr in text for lr in HIDDEN_LRS), student


def test_no_process_in_the_sandbox_lends_its_pipes(batch):
    _, out = batch
    assert "raised RuntimeError: opened \\[\\]" in (out / "feedback" / "reopens_pipes.md").read_text()


def test_the_job_folder_holds_no_check_call():
    graded, _ = grading.assemble(tiny_lesson(), grading.submission_of(json.loads(nbformat.writes(submission()))),
                                 grading.probes_of(tiny_lesson()))
    text = nbformat.writes(graded)
    assert "check_gd_step" not in text and "1729" not in text and "seed" not in text


def test_the_sandboxs_library_holds_probes_and_inputs_only(tmp_path):
    """No judge, no expected value, no reference implementation in the course_lib a kernel imports; what a
    notebook calls (checks.check_x, the probes) still imports and runs."""
    import subprocess
    import sys

    from course_lib.sandbox import copy_course_lib

    lib = copy_course_lib(tmp_path / "lib")
    text = (lib / "course_lib" / "checks.py").read_text()
    for secret in ("def judge_", "def _photo_outputs", "def _reference_epoch", "def _best_depths", "def _fitting_size",
                   "def _deepest_within", "def _numerical_grad_exact", "grad_by_hand"):
        assert secret not in text
    shown = subprocess.run([sys.executable, "-c", (
        "from course_lib import checks as c\n"
        "assert all(g.judge is None for g in c.GRADED.values())\n"
        "assert all(len(case) == 3 for case in c._numerical_grad_cases(0))\n"
        "assert all(isinstance(rows, list) for rows in c._choose_depth_cases(0))\n"
        "assert all(len(case) == 3 for case in c._pick_resolution_cases(0))\n"
        "assert all(len(case) == 2 for case in c._freeze_cases(0))\n"
        "c.check_gd_step(lambda t, g, lr: t)\n"
        "print(len(c.probe_gd_step(lambda t, g, lr: t - lr * g, 1729)['cases']))")],
        env={**os.environ, "PYTHONPATH": str(lib)}, capture_output=True, text=True, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == ["(checks are judged by the grader, outside this kernel)", "4"]
