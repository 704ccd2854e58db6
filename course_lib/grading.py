"""Graded exercises from one source: learner notebooks, validation, and batch grading that can't be fooled.

Exercises are written once, in source/<lesson>.ipynb, in nbgrader's format: answer cells hold
`### BEGIN SOLUTION` / `### END SOLUTION`, test cells may hold `### BEGIN HIDDEN TESTS` / `### END HIDDEN
TESTS`, and both carry nbgrader cell metadata (grade_id, points, locked). nbgrader's own preprocessors
turn a source into the learner notebook (notebooks/<lesson>.ipynb). Grading is ours, built on nbclient,
because nbgrader's autograde runs the student's notebook as submitted: here a graded notebook is rebuilt
from the source, with only the student's answer cells taken from the submission, so deleted or edited
check cells, added cells and rebound names cannot change a score. Each submission runs in its own kernel
with a per-cell timeout, so a crash, a loop or a dead kernel costs that student points, never the batch.

    python -m course_lib.grading release [--out notebooks]     learner notebooks from source/
    python -m course_lib.grading validate                       solutions pass, stubs fail
    python -m course_lib.grading grade submitted/ [--out grades/]
"""
from __future__ import annotations

import argparse
import ast
import copy
import csv
import io
import json
import os
import runpy
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import config
from .storage import atomic_write_text

SOURCE_DIR = config.PROJECT_ROOT / "source"
NOTEBOOKS_DIR = config.PROJECT_ROOT / "notebooks"
STUB = 'raise NotImplementedError("Write your answer here, then run the check cell below it.")'
# attribute names whose use in an answer cell can reach into other code's internals
_DUNDER_ALLOWED = {"__init__", "__name__", "__doc__", "__len__", "__call__", "__repr__", "__str__",
                   "__getitem__", "__iter__", "__next__", "__eq__", "__hash__", "__class__"}
_FORBIDDEN_CALLS = {"setattr", "delattr", "exec", "eval", "compile", "__import__", "globals", "vars", "locals"}
_FORBIDDEN_MODULES = {"importlib", "builtins", "sys", "gc", "inspect", "ctypes", "unittest", "types"}


# ----------------------------------------------------------------------------------- cell metadata
def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_answer(cell) -> bool:
    return bool(nbgrader_meta(cell).get("solution"))


def is_graded(cell) -> bool:
    return bool(nbgrader_meta(cell).get("grade"))


def grade_id(cell) -> str | None:
    return nbgrader_meta(cell).get("grade_id")


def exercises(nb) -> list[tuple[str, float]]:
    """(grade_id, points) of every graded cell, in order."""
    return [(grade_id(c), float(nbgrader_meta(c).get("points", 0))) for c in nb.cells if is_graded(c)]


HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def split_tests(source: str) -> tuple[str, str]:
    """(public check, hidden tests) of a graded cell's source; the hidden part is "" when there is none."""
    public, hidden, inside = [], [], False
    for line in source.splitlines():
        if line.strip() == HIDDEN_BEGIN:
            inside = True
        elif line.strip() == HIDDEN_END:
            inside = False
        else:
            (hidden if inside else public).append(line)
    return "\n".join(public).strip(), "\n".join(hidden).strip()


def answer_test_cells(nb) -> dict[str, int]:
    """Answer cell grade_id -> index of the graded cell that checks it (the first one after it)."""
    out, pending = {}, []
    for i, cell in enumerate(nb.cells):
        if is_answer(cell):
            pending.append(grade_id(cell))
        elif is_graded(cell):
            out.update({gid: i for gid in pending})
            pending = []
    return out


# -------------------------------------------------------------------------------------- release
def learner_version(source_nb) -> nbformat.NotebookNode:
    """The learner notebook: solutions replaced by a stub, hidden tests removed, outputs cleared, checks locked."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearOutput, ClearSolutions, LockCells
    from traitlets.config import Config

    cfg = Config()
    cfg.ClearSolutions.code_stub = {"python": STUB}
    nb = copy.deepcopy(source_nb)
    resources = {}
    for pre in (ClearSolutions(config=cfg), ClearHiddenTests(config=cfg), ClearOutput(config=cfg), LockCells(config=cfg)):
        nb, resources = pre.preprocess(nb, resources)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = None
            cell.outputs = []
    return nb


def _comparable(nb) -> list:
    return [(c.cell_type, c.source, json.dumps(c.get("metadata", {}), sort_keys=True)) for c in nb.cells]


def release(source_dir: Path = SOURCE_DIR, out_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Write the learner version of every source notebook into out_dir.

    A learner's work is never overwritten: a notebook there with outputs or answers is first kept as
    <name>.backup-<time>.ipynb.
    """
    written = []
    for src in sorted(Path(source_dir).glob("*.ipynb")):
        nb = learner_version(nbformat.read(src, as_version=4))
        target = Path(out_dir) / src.name
        if target.exists() and _has_learner_work(target):
            backup = target.with_name(f"{target.stem}.backup-{time.strftime('%Y%m%d-%H%M%S')}.ipynb")
            target.replace(backup)
            print(f"kept the edited copy of {target.name} as {backup.name}")
        atomic_write_text(target, nbformat.writes(nb))
        written.append(target)
    return written


def _has_learner_work(path: Path) -> bool:
    """True when a learner notebook holds outputs or an answer, i.e. anything a fresh release would lose."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:
        return True  # unreadable: keep it rather than guess
    return any(c.get("outputs") for c in nb.cells) or any(is_answer(c) and STUB not in c.source for c in nb.cells)


def drift(source_dir: Path = SOURCE_DIR, notebooks_dir: Path = NOTEBOOKS_DIR) -> list[str]:
    """Learner notebooks that are missing, extra, or differ from what release() would write."""
    problems = []
    sources = {p.name for p in Path(source_dir).glob("*.ipynb")}
    learners = {p.name for p in Path(notebooks_dir).glob("*.ipynb") if ".backup-" not in p.name}
    problems += [f"{n}: in source/ but not in notebooks/" for n in sorted(sources - learners)]
    problems += [f"{n}: in notebooks/ but not in source/ (notebooks/ is generated)" for n in sorted(learners - sources)]
    for name in sorted(sources & learners):
        want = _comparable(learner_version(nbformat.read(Path(source_dir) / name, as_version=4)))
        have = _comparable(nbformat.read(Path(notebooks_dir) / name, as_version=4))
        if want != have:
            problems.append(f"{name}: notebooks/ differs from source/; run `python -m course_lib.grading release`")
    return problems


# -------------------------------------------------------------------------------- tamper checks
def _bound_names(tree: ast.AST) -> set[str]:
    """Top-level names a cell binds (assignments, defs, classes, imports)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _root_name(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def tampering(source: str, protected: set[str]) -> list[str]:
    """What in an answer cell reaches beyond the answer: rebinding the lesson's names, patching modules
    or objects, introspection. Empty when the cell is clean (or does not parse: then it simply fails)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    imported = {(a.asname or a.name).split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
    guarded = protected | imported  # patching the lesson's objects or any module is off limits
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, (ast.Attribute, ast.Subscript)) and _root_name(sub) in guarded:
                    found.append(f"modifies {ast.unparse(sub)}")
                elif isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)) and sub.id in protected:
                    found.append(f"rebinds {sub.id}")
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in protected:
            found.append(f"redefines {node.name}")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                module = (node.module if isinstance(node, ast.ImportFrom) else a.name) or ""
                if module.split(".")[0] in _FORBIDDEN_MODULES:
                    found.append(f"imports {module}")
                if (a.asname or a.name).split(".")[0] in protected:
                    found.append(f"rebinds {(a.asname or a.name)}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FORBIDDEN_CALLS:
            found.append(f"calls {node.func.id}()")
        if isinstance(node, ast.Attribute) and node.attr.startswith("__") and node.attr not in _DUNDER_ALLOWED:
            found.append(f"uses {node.attr}")
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            found.append(f"declares {type(node).__name__.lower()} {', '.join(node.names)}")
    return sorted(set(found))


# ------------------------------------------------------------------------------- assemble, grade
@dataclass
class Result:
    """One student's grade for one lesson."""

    student: str
    lesson: str
    scores: dict[str, float] = field(default_factory=dict)
    max_scores: dict[str, float] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.scores.values())

    def to_dict(self) -> dict:
        return {"student": self.student, "lesson": self.lesson, "scores": self.scores,
                "max_scores": self.max_scores, "messages": self.messages, "notes": self.notes}


def assemble(source_nb, submission_nb) -> tuple[nbformat.NotebookNode, list[str], dict[str, list[str]]]:
    """The notebook to grade: the source's cells, with the student's answer cells in their places.

    Returns (notebook, notes, tampering per answer grade_id). Answer cells that tamper are replaced by
    the stub, so they run nothing.
    """
    notes = []
    student_cells = {}
    for cell in submission_nb.cells:
        gid = grade_id(cell)
        if gid is not None:
            if gid in student_cells:
                notes.append(f"two cells claim to be '{gid}'; the first one was graded")
                continue
            student_cells[gid] = cell
    source_ids = {grade_id(c) for c in source_nb.cells if grade_id(c)}
    added = [c for c in submission_nb.cells if grade_id(c) is None and c.cell_type == "code"
             and c.get("id") not in {s.get("id") for s in source_nb.cells}]
    if added:
        notes.append(f"{len(added)} code cell(s) you added were not run: grading uses only the answer cells")
    protected = set()
    answer_names = set()
    for cell in source_nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            names = _bound_names(ast.parse(cell.source))
        except SyntaxError:
            continue
        (answer_names if is_answer(cell) else protected).update(names)
    protected = (protected - answer_names) | {"checks"}
    learner = learner_version(source_nb)
    stubs = {grade_id(c): c for c in learner.cells if grade_id(c)}
    graded = copy.deepcopy(source_nb)
    tampered = {}
    for i, cell in enumerate(graded.cells):
        gid = grade_id(cell)
        if gid is None:
            continue
        theirs = student_cells.get(gid)
        if is_answer(cell):
            if theirs is None:
                notes.append(f"answer cell '{gid}' is missing from the submission (deleted, or its metadata removed)")
                graded.cells[i] = copy.deepcopy(stubs[gid])
                continue
            problems = tampering(theirs.source, protected)
            if problems:
                tampered[gid] = problems
                notes.append(f"answer cell '{gid}' was not run: it {'; '.join(problems)} "
                             "(an answer may only define its own names)")
                graded.cells[i] = copy.deepcopy(stubs[gid])
            else:
                graded.cells[i].source = theirs.source
        elif theirs is None:
            notes.append(f"cell '{gid}' was deleted; it was restored from the lesson's source")
        elif theirs.source.strip() != stubs[gid].source.strip():
            notes.append(f"cell '{gid}' was edited; the original was restored")
    missing_from_source = set(student_cells) - source_ids
    if missing_from_source:
        notes.append(f"unknown graded cells ignored: {sorted(missing_from_source)}")
    for cell in graded.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return graded, notes, tampered


def _error_message(cell) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            value = out.get("evalue", "")
            return f"{out.get('ename', 'Error')}: {value}"[:500]
    return None


class _KernelLost(Exception):
    """The kernel died or did not recover from a timeout: later cells cannot run."""


def _private_environment(tmp: Path) -> dict:
    """Fast mode, offline, and a throwaway data folder (nothing a graded notebook writes outlives it),
    still pointed at the CIFAR-10 copy the instructor has."""
    from . import data

    env = {config.FAST_ENV: "1", config.OFFLINE_ENV: "1", "MPLBACKEND": "Agg", config.DATA_DIR_ENV: str(tmp)}
    if not os.environ.get(data.CIFAR10_ENV):
        local = data.find_local_cifar10(config.data_dir())
        if local is not None:
            env[data.CIFAR10_ENV] = str(local)
    return env


class _Runner:
    """Runs cells one by one in one kernel; a timeout interrupts the cell and grading goes on."""

    def __init__(self, client, timeout: int, notes: list[str]):
        self.client, self.timeout, self.notes = client, timeout, notes

    def run(self, cell, index: int) -> str | None:
        """Execute `cell`; returns its error ("Name: message") or None. Raises _KernelLost."""
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        try:
            self.client.execute_cell(cell, index)
        except CellTimeoutError:
            cell.outputs.append(nbformat.v4.new_output("error", ename="Timeout",
                                evalue=f"cell ran longer than {self.timeout} s and was stopped", traceback=[]))
            self.notes.append(f"cell {index} ran longer than {self.timeout} s and was stopped")
            if not _recover(self.client):
                raise _KernelLost("the kernel did not recover after the timeout; later cells were not run")
            return f"stopped after {self.timeout} s (an endless loop?)"
        except DeadKernelError:
            raise _KernelLost(f"the kernel died in cell {index}; later cells were not run")
        return _error_message(cell)

    def run_tests(self, cell, index: int) -> tuple[str | None, str | None]:
        """Run a graded cell's public check and hidden tests separately; (public error, hidden error)."""
        errors = []
        cell.outputs = []
        for part in split_tests(cell.source):
            if not part:
                errors.append(None)
                continue
            piece = nbformat.v4.new_code_cell(part)
            errors.append(self.run(piece, index))
            cell.outputs += piece.outputs
        return errors[0], errors[1]


def grade_notebook(source_nb, submission_nb, *, student: str, lesson: str, timeout: int = 120,
                   workdir: Path | None = None) -> tuple[Result, nbformat.NotebookNode]:
    """Run the assembled notebook in a fresh kernel (fast mode, offline, private data folder, per-cell
    timeout) and score it: an exercise earns its points when its public check and its hidden tests both pass."""
    from nbclient import NotebookClient

    result = Result(student, lesson)
    for gid, points in exercises(source_nb):
        result.scores[gid], result.max_scores[gid] = 0.0, points
    graded, notes, _ = assemble(source_nb, submission_nb)
    result.notes += notes
    env_before = dict(os.environ)
    try:
        with tempfile.TemporaryDirectory(prefix="grading-") as tmp:
            os.environ.update(_private_environment(Path(tmp)))
            client = NotebookClient(graded, timeout=timeout, kernel_name="python3", allow_errors=True,
                                    interrupt_on_timeout=False, resources={"metadata": {"path": str(workdir or tmp)}})
            runner = _Runner(client, timeout, result.notes)
            with client.setup_kernel():
                try:
                    for index, cell in enumerate(graded.cells):
                        if cell.cell_type != "code":
                            continue
                        if is_graded(cell):
                            gid = grade_id(cell)
                            public, hidden = runner.run_tests(cell, index)
                            if public is None and hidden is None:
                                result.scores[gid] = result.max_scores[gid]
                            else:
                                result.messages[gid] = public or "public checks passed; hidden tests failed"
                            continue
                        error = runner.run(cell, index)
                        if is_answer(cell) and error:
                            result.notes.append(f"answer cell '{grade_id(cell)}' raised {error}")
                except _KernelLost as lost:
                    result.notes.append(str(lost))
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    for gid in result.scores:
        if result.scores[gid] == 0 and gid not in result.messages:
            result.messages[gid] = "not run"
    return result, graded


def _recover(client) -> bool:
    """Interrupt a runaway cell; True when the kernel answers again within a few seconds."""
    from nbclient.exceptions import CellTimeoutError

    import inspect

    from jupyter_core.utils import run_sync

    try:
        interrupt = client.km.interrupt_kernel  # asynchronous in nbclient's kernel manager
        run_sync(interrupt)() if inspect.iscoroutinefunction(interrupt) else interrupt()
        probe = nbformat.v4.new_code_cell("pass")
        saved = client.timeout
        client.timeout = 10
        try:
            client.execute_cell(probe, 0)
        finally:
            client.timeout = saved
        return True
    except (CellTimeoutError, Exception):
        return False


def grade_file(source_path: Path, submission_path: Path, student: str, timeout: int = 120
               ) -> tuple[Result, nbformat.NotebookNode | None]:
    """Grade one submitted file; an unreadable one scores 0 with a note saying why."""
    source_nb = nbformat.read(source_path, as_version=4)
    lesson = source_path.stem
    try:
        submission = nbformat.read(submission_path, as_version=4)
        if not isinstance(submission.get("cells"), list):
            raise ValueError("no cells")
    except FileNotFoundError:
        return _zero(source_nb, student, lesson, "no submission"), None
    except Exception as e:  # JSON errors, wrong format...
        return _zero(source_nb, student, lesson, f"not a readable notebook ({type(e).__name__}: {str(e)[:200]})"), None
    return grade_notebook(source_nb, submission, student=student, lesson=lesson, timeout=timeout)


def _zero(source_nb, student: str, lesson: str, note: str) -> Result:
    result = Result(student, lesson, notes=[note])
    for gid, points in exercises(source_nb):
        result.scores[gid], result.max_scores[gid], result.messages[gid] = 0.0, points, note
    return result


def _grade_in_child(source_path: Path, submission_path: Path, student: str, timeout: int, limit: int,
                    autograded: Path | None) -> Result:
    """grade_file in a separate process with a wall-clock limit: nothing a submission does reaches the batch."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="grade-one-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "course_lib.grading", "_one", str(source_path), str(submission_path),
               student, str(timeout), str(out), str(autograded or "")]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, start_new_session=True)
        except subprocess.TimeoutExpired:
            return _zero(nbformat.read(source_path, as_version=4), student, source_path.stem,
                         f"grading stopped after {limit} s (the notebook did not finish)")
        if out.exists():
            d = json.loads(out.read_text())
            return Result(d["student"], d["lesson"], d["scores"], d["max_scores"], d["messages"], d["notes"])
        return _zero(nbformat.read(source_path, as_version=4), student, source_path.stem,
                     f"the grader failed on this submission: {proc.stderr.strip()[-300:]}")


def grade_folder(submitted: Path, out_dir: Path, source_dir: Path = SOURCE_DIR, timeout: int = 120,
                 progress: bool = True) -> list[Result]:
    """Grade submitted/<student>/<lesson>.ipynb for every student and graded lesson.

    Writes out_dir/grades.csv (a row per student, a column per exercise, a total), out_dir/feedback/
    <student>.md, and the executed notebooks under out_dir/autograded/<student>/.
    """
    from tqdm.auto import tqdm

    submitted, out_dir = Path(submitted), Path(out_dir)
    lessons = [p for p in sorted(Path(source_dir).glob("*.ipynb")) if exercises(nbformat.read(p, as_version=4))]
    students = sorted(p.name for p in submitted.iterdir() if p.is_dir())
    if not students:
        raise SystemExit(f"no student folders in {submitted}: expected {submitted}/<student>/<lesson>.ipynb")
    results = []
    for student in tqdm(students, desc="grading", unit="student", disable=not progress):
        for lesson in lessons:
            n_cells = len(nbformat.read(lesson, as_version=4).cells)
            limit = 60 + n_cells * 20 + 4 * timeout
            results.append(_grade_in_child(lesson, submitted / student / lesson.name, student, timeout, limit,
                                           out_dir / "autograded" / student))
    write_reports(results, out_dir)
    return results


def write_reports(results: list[Result], out_dir: Path) -> None:
    columns = []
    for r in results:
        columns += [f"{r.lesson}/{gid}" for gid in r.max_scores if f"{r.lesson}/{gid}" not in columns]
    students = sorted({r.student for r in results})
    buf = io.StringIO()
    writer = csv.writer(buf)
    max_total = sum(r.max_scores[gid] for r in results if r.student == students[0] for gid in r.max_scores)
    writer.writerow(["student", *columns, "total", "max"])
    for s in students:
        mine = {f"{r.lesson}/{gid}": v for r in results if r.student == s for gid, v in r.scores.items()}
        writer.writerow([s, *[f"{mine.get(c, 0):g}" for c in columns], f"{sum(mine.values()):g}", f"{max_total:g}"])
    atomic_write_text(Path(out_dir) / "grades.csv", buf.getvalue())
    for s in students:
        lines = [f"# Feedback for {s}", ""]
        for r in (r for r in results if r.student == s):
            lines += [f"## {r.lesson}: {r.total:g} / {sum(r.max_scores.values()):g}", "",
                      "| exercise | points | result |", "| --- | --- | --- |"]
            for gid, maxp in r.max_scores.items():
                verdict = "passed" if r.scores[gid] == maxp else r.messages.get(gid, "failed").replace("|", "\\|").replace("\n", " ")
                lines.append(f"| {gid} | {r.scores[gid]:g} / {maxp:g} | {verdict} |")
            if r.notes:
                lines += ["", "Notes:"] + [f"- {n}" for n in r.notes]
            lines.append("")
        atomic_write_text(Path(out_dir) / "feedback" / f"{s}.md", "\n".join(lines))


# ------------------------------------------------------------------------------------- validate
MIN_WRONG, MIN_RIGHT = 4, 3  # answers per exercise in a lesson's mutant suite


def load_cases(source_path: Path) -> dict:
    """The lesson's mutant suite, source/cases/<lesson>.py: {answer grade_id: {"wrong": {name: answer cell},
    "right": {...}}}. Instructor material, like the sources: never released."""
    path = Path(source_path).parent / "cases" / f"{Path(source_path).stem}.py"
    return runpy.run_path(str(path))["CASES"] if path.exists() else {}


def run_cases(source_nb, cases: dict, *, timeout: int = 300) -> list[dict]:
    """Run the lesson once with the reference solutions; at each exercise, first run every case's answer
    in place of the solution, each followed by the exercise's public check and hidden tests.

    Returns one record per case and per reference solution: exercise, kind ("wrong", "right" or
    "reference"), name, and the public and hidden errors (None: passed).
    """
    from nbclient import NotebookClient

    graded, _, _ = assemble(source_nb, learner_solved(source_nb))
    tests_of = answer_test_cells(graded)
    records, notes = [], []
    env_before = dict(os.environ)
    try:
        with tempfile.TemporaryDirectory(prefix="validate-") as tmp:
            os.environ.update(_private_environment(Path(tmp)))
            client = NotebookClient(graded, timeout=timeout, kernel_name="python3", allow_errors=True,
                                    interrupt_on_timeout=False, resources={"metadata": {"path": tmp}})
            runner = _Runner(client, timeout, notes)
            with client.setup_kernel():
                checked_by = {index: gid for gid, index in tests_of.items()}
                for index, cell in enumerate(graded.cells):
                    if cell.cell_type != "code":
                        continue
                    gid = grade_id(cell)
                    if is_answer(cell) and gid in cases:
                        forget = nbformat.v4.new_code_cell(
                            "".join(f"globals().pop({n!r}, None)\n" for n in sorted(_top_level_names(cell.source))))
                        for kind in ("wrong", "right"):
                            for name, answer in cases[gid].get(kind, {}).items():
                                runner.run(forget, index)
                                runner.run(nbformat.v4.new_code_cell(answer), index)
                                public, hidden = runner.run_tests(copy.deepcopy(graded.cells[tests_of[gid]]), index)
                                records.append({"exercise": gid, "kind": kind, "name": name, "public": public,
                                                "hidden": hidden})
                        runner.run(forget, index)
                    if is_graded(cell) and index in checked_by:
                        public, hidden = runner.run_tests(cell, index)
                        records.append({"exercise": checked_by[index], "kind": "reference", "name": "the solution",
                                        "public": public, "hidden": hidden})
                    else:
                        runner.run(cell, index)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    return records


def case_problems(records: list[dict], answer_ids: list[str]) -> list[str]:
    """What the mutant suite found: a wrong answer that passes a part, a right one that fails one, a
    missing or too small suite."""
    problems = []
    for r in records:
        what = f"{r['exercise']}, {r['kind']} answer '{r['name']}'"
        for part in ("public", "hidden"):
            failed = r[part] is not None
            if r["kind"] == "wrong" and not failed:
                problems.append(f"{what}: the {part} {'check' if part == 'public' else 'tests'} let it pass")
            if r["kind"] != "wrong" and failed:
                problems.append(f"{what}: the {part} {'check' if part == 'public' else 'tests'} failed it ({r[part][:200]})")
    for gid in answer_ids:
        wrong = sum(1 for r in records if r["exercise"] == gid and r["kind"] == "wrong")
        right = sum(1 for r in records if r["exercise"] == gid and r["kind"] == "right")
        if wrong < MIN_WRONG or right < MIN_RIGHT:
            problems.append(f"{gid}: the mutant suite has {wrong} wrong and {right} right answers "
                            f"(at least {MIN_WRONG} and {MIN_RIGHT} needed)")
    return problems


def _top_level_names(source: str) -> set[str]:
    """Names a cell defines at the top level (functions, classes, assignments; imported modules are kept)."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def validate(source_dir: Path = SOURCE_DIR, timeout: int = 300, only: list[str] | None = None,
             report: list | None = None) -> list[str]:
    """Problems found: a reference solution that loses points, an unanswered stub that earns any, or a
    mutant-suite answer graded the wrong way by the public check or the hidden tests. Empty means valid.
    `only`: lesson names (file stems) to validate; default all. `report` collects one line per exercise."""
    problems = []
    for src in sorted(Path(source_dir).glob("*.ipynb")):
        if only is not None and src.stem not in only:
            continue
        nb = nbformat.read(src, as_version=4)
        if not exercises(nb):
            continue
        stubs, _ = grade_notebook(nb, learner_version(nb), student="stubs", lesson=src.stem, timeout=timeout)
        for gid in stubs.max_scores:
            if stubs.scores[gid] != 0:
                problems.append(f"{src.name} {gid}: the unanswered stub earns {stubs.scores[gid]:g} points")
        answer_ids = [grade_id(c) for c in nb.cells if is_answer(c)]
        records = run_cases(nb, load_cases(src), timeout=timeout)
        problems += [f"{src.name} {p}" for p in case_problems(records, answer_ids)]
        for gid in answer_ids:
            mine = [r for r in records if r["exercise"] == gid]
            if not any(r["kind"] == "reference" for r in mine):
                problems.append(f"{src.name} {gid}: the reference solution's check did not run")
            if report is not None:
                report.append(f"{src.stem}/{gid}: {sum(r['kind'] == 'wrong' for r in mine)} wrong and "
                              f"{sum(r['kind'] == 'right' for r in mine)} right answers, graded as expected: "
                              f"{'no' if any(gid in p for p in problems) else 'yes'}")
    return problems


def learner_solved(source_nb) -> nbformat.NotebookNode:
    """A learner notebook with the reference solutions in its answer cells (what a perfect student submits)."""
    nb = learner_version(source_nb)
    answers = {grade_id(c): c.source for c in source_nb.cells if is_answer(c)}
    for cell in nb.cells:
        if is_answer(cell):
            cell.source = "\n".join(l for l in answers[grade_id(cell)].splitlines() if "### BEGIN SOLUTION" not in l
                                    and "### END SOLUTION" not in l)
    return nb


# ------------------------------------------------------------------------------------------ CLI
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.grading", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("release", help="write the learner notebooks (no solutions, no hidden tests)")
    rel.add_argument("--source", type=Path, default=SOURCE_DIR)
    rel.add_argument("--out", type=Path, default=NOTEBOOKS_DIR)
    sub.add_parser("check-sync", help="fail if notebooks/ differs from a fresh release of source/")
    val = sub.add_parser("validate", help="solutions must pass, stubs must fail")
    val.add_argument("--source", type=Path, default=SOURCE_DIR)
    grd = sub.add_parser("grade", help="grade submitted/<student>/<lesson>.ipynb into a CSV and feedback")
    grd.add_argument("submitted", type=Path)
    grd.add_argument("--out", type=Path, default=Path("grades"))
    grd.add_argument("--source", type=Path, default=SOURCE_DIR)
    grd.add_argument("--timeout", type=int, default=120, help="seconds per cell")
    one = sub.add_parser("_one")  # internal: one submission, in a child process
    for name in ("source", "submission", "student", "timeout", "out", "autograded"):
        one.add_argument(name)
    args = parser.parse_args(argv)
    if args.command == "release":
        written = release(args.source, args.out)
        print(f"wrote {len(written)} learner notebook(s) to {args.out}" + "".join(f"\n  {p.name}" for p in written))
    elif args.command == "check-sync":
        problems = drift()
        print("\n".join(problems) or "notebooks/ is in sync with source/")
        return 1 if problems else 0
    elif args.command == "validate":
        report = []
        problems = validate(args.source, report=report)
        print("\n".join(report))
        print("\n".join(problems) or "valid: every solution passes, every stub fails, every mutant-suite answer "
              "is graded as expected by the public check and the hidden tests")
        return 1 if problems else 0
    elif args.command == "grade":
        results = grade_folder(args.submitted, args.out, args.source, args.timeout)
        print(f"graded {len({r.student for r in results})} student(s): {args.out / 'grades.csv'}, feedback in {args.out / 'feedback'}")
    else:
        result, graded = grade_file(Path(args.source), Path(args.submission), args.student, int(args.timeout))
        if graded is not None and args.autograded:
            atomic_write_text(Path(args.autograded) / Path(args.source).name, nbformat.writes(graded))
        atomic_write_text(args.out, json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
