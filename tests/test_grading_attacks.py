"""Submissions that try to fool the grader, read what they must not, or harm other students, graded in one
batch of sandboxes next to honest ones. Each must score what its real answers deserve, no other student's
score may change, and the batch must finish. Most attacks use a tiny lesson built from lesson 1's checks
(gd_step and the converging rate), so each sandbox starts in seconds."""
from __future__ import annotations

import csv
import hashlib
import os
import time
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbgrader", reason="instructor tools not installed: python3 course.py install --instructor")
from course_lib import checks, config, grading  # noqa: E402
from course_lib.sandbox import Sandbox, bubblewrap_problem, copy_course_lib  # noqa: E402

SOLUTION_MARK = "SOLUTION-ONLY-TEXT-7f3a"  # in the tiny lesson's solution: must never reach a kernel or feedback
CLASSMATE_MARK = "CLASSMATE-ANSWER-91c2"  # in an honest student's answer: no other student may see it
RIGHT_STEP = f"def gd_step(theta, grad, lr):\n    '{CLASSMATE_MARK}'\n    return theta - lr * grad\n"
WRONG_STEP = "def gd_step(theta, grad, lr):\n    return theta + lr * grad\n"
RIGHT_LR = "my_lr = 0.07\n"
TIMEOUT = 10


def tiny_lesson() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}

    def meta(**kw):
        return {"nbgrader": {"schema_version": 3, "locked": False, "task": False, "solution": False, "grade": False, **kw}}

    nb.cells = [
        nbformat.v4.new_code_cell("import numpy as np\nfrom course_lib import checks, gd\n"
                                  "problem = gd.quadratic_2d(curvatures=(1.0, 20.0), angle_deg=45)\n"
                                  "start = (-2.0, 3.0)\nbudget = 150", id="setup"),
        nbformat.v4.new_code_cell(f"def gd_step(theta, grad, lr):\n    ### BEGIN SOLUTION\n    # {SOLUTION_MARK}\n"
                                  "    return theta - lr * grad\n    ### END SOLUTION", id="a1",
                                  metadata=meta(solution=True, grade_id="gd_step")),
        nbformat.v4.new_code_cell("checks.check_gd_step(gd_step)\n### BEGIN HIDDEN TESTS\n"
                                  "checks.check_gd_step(gd_step, seed=1729)\n### END HIDDEN TESTS", id="t1",
                                  metadata=meta(grade=True, grade_id="gd_step_tests", points=2, locked=True)),
        nbformat.v4.new_code_cell(f"### BEGIN SOLUTION\n# {SOLUTION_MARK}\nmy_lr = 0.07\n### END SOLUTION", id="a2",
                                  metadata=meta(solution=True, grade_id="converging_lr")),
        nbformat.v4.new_code_cell("checks.check_converging_lr(my_lr, problem, start, steps=budget)\n"
                                  "### BEGIN HIDDEN TESTS\nchecks.check_converging_lr(my_lr, problem, start, steps=budget)\n"
                                  "### END HIDDEN TESTS", id="t2",
                                  metadata=meta(grade=True, grade_id="converging_lr_tests", points=2, locked=True)),
    ]
    return nb


def submission(gd_step: str | None = RIGHT_STEP, converging_lr: str | None = RIGHT_LR):
    nb = grading.learner_version(tiny_lesson())
    for cell in nb.cells:
        if grading.grade_id(cell) == "gd_step" and gd_step is not None:
            cell.source = gd_step
        if grading.grade_id(cell) == "converging_lr" and converging_lr is not None:
            cell.source = converging_lr
    return nb


def attack(code: str, then: str = WRONG_STEP):
    """A submission whose gd_step answer cell runs `code` and then defines `then`; the rate is right."""
    return submission(gd_step=code + "\n" + then)


FULL = {"gd_step_tests": 2.0, "converging_lr_tests": 2.0}
STEP_ONLY = {"gd_step_tests": 2.0, "converging_lr_tests": 0.0}
RATE_ONLY = {"gd_step_tests": 0.0, "converging_lr_tests": 2.0}
NOTHING = {"gd_step_tests": 0.0, "converging_lr_tests": 0.0}

# student -> (submission, the scores its real answers deserve)
SUBMISSIONS = {
    # honest ones, in different styles
    "honest_reference": (grading.learner_solved(tiny_lesson()), FULL),
    "honest_classmate": (submission(), FULL),
    "honest_style": (submission(
        "import numpy as np\nimport torch.nn.functional as F\n\ndef gd_step(theta, grad, lr):\n"
        "    x = np.array(theta, dtype=float)\n    size = len(x)\n    best = x - lr * np.asarray(grad)\n"
        "    assert best.shape == (size,)\n    return best\n",
        "lr = 0.07\nx = lr\nbest = x\nmy_lr = best\n"), FULL),
    "-h": (submission(), FULL),  # a folder name that looks like an option
    "unanswered": (grading.learner_version(tiny_lesson()), NOTHING),
    # fooling the checks
    "bdb_quit": (attack("import bdb", "def gd_step(theta, grad, lr):\n    raise bdb.BdbQuit\n"), RATE_ONLY),
    "float_subclass": (submission(converging_lr=(
        "class Always(float):\n    def __eq__(self, other): return True\n    def __lt__(self, other): return True\n"
        "    def __le__(self, other): return True\n    def __gt__(self, other): return False\n"
        "    def __float__(self): return 0.07 if False else 5.0\nmy_lr = Always(5.0)\n")), STEP_ONLY),
    "torch_function": (attack(
        "import torch\nclass Agree(torch.Tensor):\n    @classmethod\n"
        "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n        return True\n",
        "def gd_step(theta, grad, lr):\n    return torch.zeros(len(theta)).as_subclass(Agree)\n"), RATE_ONLY),
    "patched_checks": (attack(
        "import course_lib.checks as c, builtins, functools, operator, os\n"
        "name = 'judge' + '_gd_step'\nsetattr(c, name, lambda *a, **k: None)\n"
        "c.GRADED['check_gd_step'] = c.GRADED['check_converging_lr']\n"
        "getattr(c, 'check_gd_step').__globals__['_passed'] = print\n"
        "vars(__builtins__)['AssertionError'] = KeyError if not isinstance(__builtins__, dict) else KeyError\n"
        "builtins.AssertionError = type('Never', (Exception,), {})\n"
        "os.sys.modules['course_lib.checks'].as_record = lambda d: {'cases': []}\n"
        "operator.setitem(c.__dict__, 'probe_gd_step', functools.partial(lambda *a, **k: {'cases': []}))\n"),
        NOTHING),  # its patches break its own later probes too: no record, no points
    "ipython_hooks": (attack(
        "ip = get_ipython()\nip.set_custom_exc((BaseException,), lambda *a, **k: None)\n"
        "ip.showtraceback = lambda *a, **k: None\n"
        "ip.events.register('pre_run_cell', lambda *a: None)\n"
        "ip.input_transformers_post.append(lambda lines: [l.replace('record(', 'print(') for l in lines])\n"
        "import ast\nclass Blank(ast.NodeTransformer):\n    def visit_Call(self, node): return node\n"
        "ip.ast_transformers.append(Blank())\n"
        "ip.run_cell('x = 1')\n%config InlineBackend.figure_format = 'png'\n!echo shell\n"), RATE_ONLY),  # its hooks
    # change no record: the rate it set is right
    "decorators_and_del": (attack(
        "import threading, time\nclass Meta(type):\n    def __new__(m, n, b, d): return super().__new__(m, n, b, d)\n"
        "class Sneaky(metaclass=Meta):\n    def __del__(self):\n        import course_lib.checks as c\n"
        "        c.judge_gd_step = lambda *a, **k: None\nkeep = Sneaky()\ndel keep\n"
        "def loud(f):\n    return f\n"
        "threading.Thread(target=lambda: [time.sleep(0.01) for _ in range(10**6)], daemon=True).start()\n",
        "@loud\ndef gd_step(theta, grad, lr):\n    return theta + lr * grad\n"), RATE_ONLY),
    "forged_records": (attack(
        "import os, json\nfolder = os.environ.get('COURSE_RECORDS_DIR', '/tmp')\n"
        "for part in ('public', 'hidden'):\n"
        "    open(os.path.join(folder, f'gd_step_tests.{part}.0.json'), 'w').write(json.dumps({'cases': 'all passed'}))\n"
        "os.write(1, b'{\"records\": {}, \"notebook\": \"\", \"events\": []}')\n"), RATE_ONLY),
    # reading what it must not
    "reads_solutions": (attack(
        "import os, sys\nfound = []\n"
        "for root, dirs, files in os.walk('/'):\n"
        "    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/proc', '/sys', '/usr', '/dev', sys.prefix, sys.base_prefix)]\n"
        "    for name in files:\n        try:\n"
        "            text = open(os.path.join(root, name), errors='ignore').read(2_000_000)\n"
        "        except Exception:\n            continue\n"
        f"        if any(m in text for m in ('{SOLUTION_MARK[:8]}' + '{SOLUTION_MARK[8:]}', '{CLASSMATE_MARK[:8]}' + "
        f"'{CLASSMATE_MARK[8:]}')):\n"
        "            found.append(os.path.join(root, name) + ': ' + text[:400])\n"
        "for pid in os.listdir('/proc'):\n    if pid.isdigit():\n        try:\n"
        "            found.append(open(f'/proc/{pid}/cmdline').read().replace(chr(0), ' ')[:64])\n"
        "        except Exception:\n            pass\n",
        "def gd_step(theta, grad, lr):\n    raise RuntimeError(' || '.join(found))\n"), RATE_ONLY),
    # harming others
    "outlives_and_writes": (attack(  # stopping its own runner leaves it no record: fail closed
        "import subprocess, os, signal\nGRADES = os.environ.get('GRADES_PATH', '{grades}')\n"
        "subprocess.Popen(['/bin/sh', '-c', f'sleep 2; echo student,0 > {GRADES}; sleep 300 # sandbox-escape-marker'],"
        " start_new_session=True, stdout=1, stderr=2)\n"
        "for target in (os.getppid(), 1, {grader_pid}):\n    try:\n        os.kill(target, signal.SIGSTOP)\n"
        "    except Exception:\n        pass\n"), NOTHING),
    "kills_its_grader": (attack("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n", RIGHT_STEP), NOTHING),
    "poisons_shared_files": (attack(
        "import os, pathlib, course_lib\n"
        "for path in (pathlib.Path(course_lib.__file__).parent / 'checks.py', pathlib.Path('{checkout}') / 'checks.py'):\n"
        "    try:\n        open(path, 'a').write('\\ncheck_gd_step = lambda *a, **k: None\\n')\n    except Exception:\n        pass\n"
        "data = pathlib.Path(os.environ['COURSE_DATA_DIR']) / 'checkpoints'\ndata.mkdir(parents=True, exist_ok=True)\n"
        "(data / 'source-model.pt').write_text('poisoned')\n"), RATE_ONLY),
    # timeouts
    "loops": (attack("while True:\n    pass\n"), RATE_ONLY),
    "ignores_interrupts": (attack("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                  "while True:\n    time.sleep(0.1)\n"), NOTHING),
    # feedback
    "only_public": (submission(
        "import numpy as np\nPUBLIC = {(1.0, 2.0, 0.1): [0.95, 2.1], (3.0, 0.5): [0.0], (-1.0, 0.0, 4.0, 0.0): [-1.0, 0.0, 4.0]}\n"
        "def gd_step(theta, grad, lr):\n    return np.array(PUBLIC[(*theta.tolist(), lr)])\n"), RATE_ONLY),
    "markdown_injection": (attack("", "def gd_step(theta, grad, lr):\n"
                                      "    raise ValueError('| 2 / 2 | passed |\\n# <script>alert(1)</script> [x](http://evil)')\n"), RATE_ONLY),
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One batch: every submission above, the symlinks and odd files, graded with 2 sandboxes at a time."""
    problem = bubblewrap_problem()
    if problem and not os.environ.get("CI"):
        pytest.skip(f"bubblewrap cannot run here: {problem}")  # in CI, grading below fails loudly instead
    root = tmp_path_factory.mktemp("attacks")
    (root / "source").mkdir()
    nbformat.write(tiny_lesson(), root / "source" / "tiny.ipynb")
    submitted, out = root / "submitted", root / "grades"
    lesson_file = "tiny.ipynb"
    checkout = Path(checks.__file__).parent
    for student, (nb, _) in SUBMISSIONS.items():
        (submitted / student).mkdir(parents=True)
        text = nbformat.writes(nb).replace("{grades}", str(out / "grades.csv")).replace(
            "{grader_pid}", str(os.getpid())).replace("{checkout}", str(checkout))
        (submitted / student / lesson_file).write_text(text)
    for student, target in {"link_classmate": submitted / "honest_classmate" / lesson_file,
                            "link_source": root / "source" / "tiny.ipynb", "link_passwd": Path("/etc/passwd")}.items():
        (submitted / student).mkdir()
        (submitted / student / lesson_file).symlink_to(target)
    (submitted / "fifo").mkdir()
    os.mkfifo(submitted / "fifo" / lesson_file)
    (submitted / "huge").mkdir()
    (submitted / "huge" / lesson_file).write_text(" " * (grading.MAX_SUBMISSION_BYTES + 1))
    malformed = submission()
    next(c for c in malformed.cells if grading.grade_id(c) == "gd_step").metadata["nbgrader"]["grade_id"] = ["gd_step"]
    (submitted / "malformed_cell").mkdir()
    nbformat.write(malformed, submitted / "malformed_cell" / lesson_file)
    (submitted / "linked_folder").symlink_to(submitted / "honest_classmate")
    checks_before = hashlib.sha256((checkout / "checks.py").read_bytes()).hexdigest()
    data_dir = config.data_dir()
    data_before = sorted(p.name for p in data_dir.rglob("*"))
    start = time.monotonic()
    results = grading.grade_folder(submitted, out, source_dir=root / "source", timeout=TIMEOUT, jobs=2, progress=False)
    seconds = time.monotonic() - start
    time.sleep(3)  # anything left behind would now rewrite grades.csv
    return {"results": {r.student: r for r in results}, "out": out, "seconds": seconds, "root": root,
            "checks_before": checks_before, "checkout": checkout, "data_dir": data_dir, "data_before": data_before}


def rows(batch) -> dict:
    with open(batch["out"] / "grades.csv", newline="") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def feedback(batch, student: str) -> str:
    return (batch["out"] / "feedback" / f"{student}.md").read_text()


@pytest.mark.parametrize("student", list(SUBMISSIONS))
def test_each_submission_scores_what_its_answers_deserve(batch, student):
    expected = SUBMISSIONS[student][1]
    shown = "'-h" if student == "-h" else student  # the CSV keeps a leading '-' from reading as a formula
    row = rows(batch)[shown]
    assert {gid: float(row[f"tiny/{gid}"]) for gid in expected} == expected
    assert batch["results"][student].scores == expected


def test_the_batch_completes_with_every_student_and_nothing_left_running(batch):
    graded = set(rows(batch))
    assert {"'-h" if s == "-h" else s for s in SUBMISSIONS} | {"link_classmate", "link_source", "link_passwd", "fifo",
                                                                "huge", "malformed_cell"} == graded
    assert "linked_folder" not in graded  # a linked folder is no student
    assert batch["seconds"] < 600  # each sandbox is bounded; a stopped one waits out its wall limit
    left = []
    for proc in Path("/proc").iterdir():
        try:
            if b"sandbox-escape-marker" in (proc / "cmdline").read_bytes():
                left.append(proc.name)
        except OSError:
            continue
    assert left == []
    assert "student,0" not in (batch["out"] / "grades.csv").read_text()


def test_links_special_files_and_huge_files_are_not_read(batch):
    for student in ("link_classmate", "link_source", "link_passwd", "fifo", "huge"):
        assert batch["results"][student].scores == NOTHING
        text = feedback(batch, student)
        assert CLASSMATE_MARK not in text and SOLUTION_MARK not in text and "root:" not in text
    assert "symbolic link, which grading does not follow" in feedback(batch, "link_passwd")
    assert "not a regular file" in feedback(batch, "fifo")
    assert "larger than 20 MB" in feedback(batch, "huge")


def test_a_malformed_cell_costs_that_cell_only(batch):
    assert batch["results"]["malformed_cell"].scores == RATE_ONLY
    assert "nbgrader metadata is malformed" in feedback(batch, "malformed_cell")


def test_nothing_secret_or_from_classmates_reaches_a_sandbox_or_feedback(batch):
    reader = batch["results"]["reads_solutions"].messages["gd_step_tests"]
    assert reader.startswith("gd_step raised RuntimeError: bwrap")  # found no file, and saw only its own sandbox's
    assert "course_lib.graded_r" in reader and "pytest" not in reader  # processes: bwrap, the runner, the kernel
    assert SOLUTION_MARK not in feedback(batch, "reads_solutions")
    for student in SUBMISSIONS:
        if student not in ("honest_classmate", "-h"):
            text = feedback(batch, student)
            assert CLASSMATE_MARK not in text and SOLUTION_MARK not in text and "seed=1729" not in text


def test_files_outside_the_sandbox_are_untouched(batch):
    assert hashlib.sha256((batch["checkout"] / "checks.py").read_bytes()).hexdigest() == batch["checks_before"]
    assert sorted(p.name for p in batch["data_dir"].rglob("*")) == batch["data_before"]
    assert batch["results"]["unanswered"].scores == NOTHING  # graded after the poisoner, still nothing


def test_timeouts_interrupt_and_later_checks_keep_their_own_verdicts(batch):
    loops = batch["results"]["loops"]
    assert any(f"ran longer than {TIMEOUT} s and was stopped" in n for n in loops.notes)
    assert "the check could not run: NameError" in loops.messages["gd_step_tests"]
    stuck = batch["results"]["ignores_interrupts"]
    assert any("did not recover" in n for n in stuck.notes)
    assert stuck.messages["converging_lr_tests"] == "the check did not run (the notebook stopped before it)"


def test_feedback_names_no_hidden_test_and_escapes_markup(batch):
    assert batch["results"]["only_public"].messages["gd_step_tests"] == grading.HIDDEN_FAILED
    text = feedback(batch, "markdown_injection")
    row = next(line for line in text.splitlines() if line.startswith("| gd_step_tests |"))
    assert row.replace("\\|", "").count("|") == 4  # the message's own pipes are escaped: still three cells
    assert "<script>" not in text and "&lt;script&gt;" in row and "\\[x\\]\\(http" in row
    assert text.count("\n## ") == 1 and text.count("\n# ") == 0


def test_advisories_are_for_the_instructor_only(batch):
    advice = batch["results"]["patched_checks"].advisories
    assert "gd_step: calls setattr()" in advice and "gd_step: uses __builtins__" in advice
    assert "calls setattr\\(\\)" in (batch["out"] / "advisories" / "patched_checks.md").read_text()
    assert "setattr" not in feedback(batch, "patched_checks")
    assert not (batch["out"] / "advisories" / "honest_style.md").exists()  # locals x, lr, best, size; imports


def test_results_and_executed_notebooks_are_written_per_student(batch):
    for student in SUBMISSIONS:
        assert (batch["out"] / "results" / student / "tiny.json").exists()
    assert (batch["out"] / "autograded" / "honest_reference" / "tiny.ipynb").exists()
    assert not (batch["out"] / "autograded" / "link_passwd").exists()


def test_grading_refuses_without_a_sandbox_and_says_how(tmp_path, monkeypatch):
    monkeypatch.setattr(grading, "bubblewrap_problem", lambda: "bwrap not found")
    (tmp_path / "submitted" / "ana").mkdir(parents=True)
    with pytest.raises(SystemExit) as refused:
        grading.grade_folder(tmp_path / "submitted", tmp_path / "grades", progress=False)
    assert "bwrap not found" in str(refused.value) and "--no-sandbox" in str(refused.value)
    assert "apt-get install bubblewrap" in str(refused.value)



def test_no_sandbox_grades_one_trusted_learner_in_a_plain_subprocess(tmp_path):
    (tmp_path / "source").mkdir()
    nbformat.write(tiny_lesson(), tmp_path / "source" / "tiny.ipynb")
    (tmp_path / "submitted" / "me").mkdir(parents=True)
    nbformat.write(submission(converging_lr="my_lr = 0.5\n"), tmp_path / "submitted" / "me" / "tiny.ipynb")
    results = grading.grade_folder(tmp_path / "submitted", tmp_path / "grades", source_dir=tmp_path / "source",
                                   timeout=60, isolated=False, progress=False)
    assert [r.scores for r in results] == [STEP_ONLY]
    assert "diverged" in results[0].messages["converging_lr_tests"]


def test_the_shared_data_folder_is_lent_read_only(tmp_path):
    """The grader's prepared data (grading.shared_data) is readable in every sandbox and writable by none,
    even where its files' own permissions would let anyone write."""
    problem = bubblewrap_problem()
    if problem and not os.environ.get("CI"):
        pytest.skip(f"bubblewrap cannot run here: {problem}")
    shared = tmp_path / "shared"
    (shared / "cache").mkdir(parents=True)
    (shared / "cache" / "decoded.pt").write_text("prepared by the grader")
    for path in [shared, *shared.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, pathlib\n"
        "lent = pathlib.Path(os.environ['COURSE_SHARED_DATA']) / 'cache'\n"
        "print('read:', (lent / 'decoded.pt').read_text())\n"
        "for attempt in (lambda: (lent / 'decoded.pt').write_text('tampered'), lambda: (lent / 'new.pt').write_text('x')):\n"
        "    try:\n"
        "        attempt()\n"
        "        print('written')\n"
        "    except OSError as e:\n"
        "        print('refused:', type(e).__name__)")])
    nb.metadata = tiny_lesson().metadata
    sandbox = Sandbox(copy_course_lib(tmp_path / "lib"), shared_data=shared)
    _, _, executed, events = grading.execute(nb, sandbox, 60, 120, {})
    said = "".join(o.get("text", "") for o in executed.cells[0].outputs)
    assert said.splitlines() == ["read: prepared by the grader", "refused: OSError", "refused: OSError"], (said, events)
    assert (shared / "cache" / "decoded.pt").read_text() == "prepared by the grader"
    assert sorted(p.name for p in shared.rglob("*")) == ["cache", "decoded.pt"]
