"""Graded exercises from one source: learner notebooks, validation, and batch grading that can't be fooled.

Exercises are written once, in source/<lesson>.ipynb, in nbgrader's format: answer cells hold
`### BEGIN SOLUTION` / `### END SOLUTION`, test cells may hold `### BEGIN HIDDEN TESTS` / `### END HIDDEN
TESTS`, and both carry nbgrader cell metadata (grade_id, points, locked). nbgrader's own preprocessors
turn a source into the learner notebook (notebooks/<lesson>.ipynb).

Grading is ours. A graded cell's public part and hidden part are calls of graded checks
(`checks.check_x(answer, seed=...)`), and each check is a probe plus a judge (course_lib.checks). A
submission's notebook is rebuilt from the learner version of the source, with only the student's answer
cells taken from the submission and each graded cell an empty placeholder. That notebook runs in a sandbox
(course_lib.sandbox), which is handed each probe only when it gets there (course_lib.graded_session) and
returns plain data only; the judges run outside it (course_lib.judging), on that data, with their other
arguments taken from the source, never from the kernel. An exercise scores when every public and hidden check of it has an explicit record that its
judge accepts: no record (a timeout, a crash, a dead kernel, a malformed report) is a fail.

    python -m course_lib.grading release [--out notebooks]     learner notebooks from source/
    python -m course_lib.grading validate                       solutions pass, stubs and mutants fail
    python -m course_lib.grading grade [--jobs N] [--out grades/] submitted/
    python -m course_lib.grading grade --shard K/N|auto [--out grades/] submitted/   1/N of the class (course_lib.shards)
    python -m course_lib.grading merge grades/shard-*-of-N --out grades/            the shards as one grade
    python -m course_lib.grading doctor                         will grading a class work here? (course_lib.doctor)
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import csv
import html
import inspect
import io
import json
import os
import re
import runpy
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import checks, config, judging
from .graded_session import Session
from .sandbox import NO_SANDBOX_HELP, Limits, Sandbox, bubblewrap_problem, copy_course_lib
from .storage import atomic_write, atomic_write_text

SOURCE_DIR = config.PROJECT_ROOT / "source"
NOTEBOOKS_DIR = config.PROJECT_ROOT / "notebooks"
STUB = 'raise NotImplementedError("Write your answer here, then run the check cell below it.")'
MAX_SUBMISSION_BYTES = 20 * 2 ** 20  # a lesson notebook with its plots is a few MB
MAX_ANSWER_CHARS = 100_000
MAX_MESSAGE_CHARS = 600
GRADE_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")
HIDDEN_FAILED = "public checks passed; hidden tests failed"


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


# ------------------------------------------------------------------------------------ submissions
@dataclass
class Submission:
    """What grading takes from a submitted notebook: its answer cells' code, and notes on the rest."""

    answers: dict[str, str]
    notes: list[str] = field(default_factory=list)
    tests: dict[str, str] = field(default_factory=dict)  # graded cells as submitted (never run)
    plain_code_ids: list = field(default_factory=list)  # ids of code cells without nbgrader metadata


def read_submission(path: Path) -> Submission | str:
    """The submission at `path`, or why it was not read: a missing file, a link (never followed), a special
    file, one too large, or one that is not a notebook."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "no submission"
    except OSError as e:
        return f"the submission could not be read ({type(e).__name__})"
    if stat.S_ISLNK(info.st_mode):
        return f"{path.name} is a symbolic link, which grading does not follow: submit the notebook file itself"
    if not stat.S_ISREG(info.st_mode):
        return f"{path.name} is not a regular file: submit the notebook file itself"
    if info.st_size > MAX_SUBMISSION_BYTES:
        return f"{path.name} is larger than {MAX_SUBMISSION_BYTES // 2 ** 20} MB: clear the outputs and submit again"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return f"{path.name} is not a regular file: submit the notebook file itself"
            raw = f.read(MAX_SUBMISSION_BYTES + 1)
        if len(raw) > MAX_SUBMISSION_BYTES:
            return f"{path.name} is larger than {MAX_SUBMISSION_BYTES // 2 ** 20} MB: clear the outputs and submit again"
        notebook = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        return f"not a readable notebook ({type(e).__name__}: {str(e)[:200]})"
    return submission_of(notebook)


def submission_of(notebook) -> Submission | str:
    """Answer cells of a notebook given as parsed JSON, each cell checked on its own: a malformed cell is
    left out (costing that cell), the rest is read."""
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        return "not a readable notebook (no list of cells)"
    if notebook.get("nbformat") != 4:
        return f"not a version-4 notebook (nbformat {notebook.get('nbformat')!r}): save it with JupyterLab"
    found = Submission({})
    for number, cell in enumerate(notebook["cells"], 1):
        problem, gid, source = _answer_cell(cell)
        if problem:
            found.notes.append(f"cell {number} was ignored: {problem}")
        elif gid in found.answers:
            found.notes.append(f"two cells claim to be '{gid}'; the first one was graded")
        elif gid is not None:
            found.answers[gid] = source
        elif cell.get("cell_type") == "code":
            meta = cell.get("metadata", {}).get("nbgrader") if isinstance(cell.get("metadata"), dict) else None
            if isinstance(meta, dict):
                found.tests.setdefault(str(meta.get("grade_id")), "".join(cell.get("source", "")))
            else:
                found.plain_code_ids.append(cell.get("id"))
    return found


def _answer_cell(cell) -> tuple[str | None, str | None, str | None]:
    """(problem, grade_id, source) of one submitted cell; grade_id is None for cells that are no answer."""
    if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
        return "it is not a notebook cell", None, None
    source = cell.get("source", "")
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        source = "".join(source)
    if not isinstance(source, str):
        return "its source is not text", None, None
    metadata = cell.get("metadata", {})
    meta = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    if meta is None:
        return None, None, None
    if not isinstance(meta, dict):
        return "its nbgrader metadata is malformed", None, None
    gid = meta.get("grade_id")
    if not isinstance(gid, str) or not GRADE_ID.fullmatch(gid) or not isinstance(meta.get("solution", False), bool):
        return "its nbgrader metadata is malformed", None, None
    if not meta.get("solution") or cell["cell_type"] != "code":
        return None, None, None
    if len(source) > MAX_ANSWER_CHARS:
        return f"answer cell '{gid}' is longer than {MAX_ANSWER_CHARS} characters", None, None
    return None, gid, valid_unicode(source)


def valid_unicode(text: str) -> str:
    """`text` with lone surrogates (which JSON can hold but UTF-8 cannot) replaced by U+FFFD, so no file,
    parser or report downstream fails on it."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def shown_name(student: str) -> str:
    """A student folder's name as text: bytes that are not UTF-8 (kept by os as surrogates) shown as \\xNN."""
    return os.fsencode(student).decode("utf-8", "backslashreplace")


# ------------------------------------------------------------------------- advisory scan (instructor)
_RISKY_CALLS = {"exec", "eval", "compile", "__import__", "setattr", "delattr", "globals", "vars", "breakpoint",
                "get_ipython"}
_RISKY_MODULES = {"os", "sys", "subprocess", "ctypes", "importlib", "builtins", "gc", "inspect", "signal",
                  "threading", "multiprocessing", "socket", "shutil", "pathlib", "IPython", "bdb", "pdb"}


# course_lib functions that do what an exercise asks: the lessons use them, so the library keeps them, and an
# answer that calls one is pointed out to the instructor (docs/instructors.md, "Library twins")
LIBRARY_TWINS = {"numerical_grad": {"finite_difference_grad"}, "train_linear": {"linreg_torch", "linreg_by_hand"},
                 "count_trainable": {"trainable_parameters", "parameter_counts"}, "head_groups": {"param_groups"},
                 "discriminative_groups": {"param_groups"}, "freeze_by_hand": {"freeze"},
                 "evaluate_accuracy": {"evaluate"}, "train_one_epoch": {"fit"}, "predict_file": {"predict"},
                 "split_by_class": {"stratified_split"}}


def advisories(source: str, lesson_names: set[str], exercise: str | None = None) -> list[str]:
    """What in an answer cell reaches beyond the answer, for the instructor to read: rebinding the lesson's
    names or patching them at the top level, magics, introspection, system modules, a call of the library's
    twin of the exercise. Never a score change: grading does not depend on any of it. Names local to a
    function are the student's own."""
    found = []
    if any(line.lstrip().startswith(("%", "!")) for line in source.splitlines()):
        found.append("uses IPython magics or shell commands (% or !)")
    try:
        tree = ast.parse(source)
        twins = LIBRARY_TWINS.get(exercise, set())
        found += [f"calls the library's {name}(), which does what this exercise asks" for name in sorted(
            {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(tree)
             if isinstance(n, ast.Attribute) and n.attr in twins or isinstance(n, ast.Name) and n.id in twins})]
        return sorted(set(found + _scan(tree, lesson_names)))
    except SyntaxError:
        return found
    except (RecursionError, MemoryError, ValueError, UnicodeError) as e:  # a deep expression, a lone surrogate
        return found + [f"could not be scanned ({type(e).__name__})"]


def _scan(tree, lesson_names: set[str]) -> list[str]:
    found = []
    for statement in tree.body:
        bound = set()
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(statement.name)
            targets = []
        elif isinstance(statement, (ast.Import, ast.ImportFrom)):
            targets = []  # importing a module the lesson imported too is harmless
        else:
            targets = [n for node in ast.walk(statement) if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete))
                       for n in (node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target])]
        for target in targets:
            for node in ast.walk(target):
                if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                    bound.add(node.id)
                elif isinstance(node, (ast.Attribute, ast.Subscript)) and _root_name(node) in lesson_names:
                    found.append(f"modifies {ast.unparse(node)}")
        found += [f"rebinds the lesson's {name}" for name in sorted(bound & lesson_names)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _RISKY_CALLS:
            found.append(f"calls {node.func.id}()")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [f"imports {m}" for m in modules if m.split(".")[0] in _RISKY_MODULES]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__") and node.attr != "__init__":
            found.append(f"uses {node.attr}")
        elif isinstance(node, ast.Name) and node.id.startswith("__") and node.id.endswith("__") and node.id != "__name__":
            found.append(f"uses {node.id}")
    return found


def _root_name(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _lesson_names(source_nb) -> set[str]:
    """Top-level names the lesson's own (non-answer) cells define."""
    names = set()
    for cell in source_nb.cells:
        if cell.cell_type == "code" and not is_answer(cell) and not is_graded(cell):
            with contextlib.suppress(SyntaxError):
                names |= _top_level_names(cell.source, imports=True)
    return names


def _top_level_names(source: str, imports: bool = False) -> set[str]:
    """Names a cell defines at the top level (functions, classes, assignments; imports only if asked)."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif imports and isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


# ----------------------------------------------------------------------------- checks and probes
@dataclass
class Probe:
    """One graded check call: its probe runs in the kernel when the run asks for it (course_lib.graded_session),
    its judge runs here; its record is filed under `key`."""

    key: str
    exercise: str
    part: str  # "public" or "hidden"
    check: str
    call: ast.Call
    code: str  # the part's code, for the call's argument text
    cell_index: int


def check_calls(code: str) -> list[ast.Call]:
    """The check calls a graded cell's part consists of; anything else is an authoring error."""
    calls = []
    for statement in ast.parse(code).body:
        call = statement.value if isinstance(statement, ast.Expr) else None
        func = call.func if isinstance(call, ast.Call) else None
        if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "checks"
                and func.attr in checks.GRADED and not any(isinstance(a, ast.Starred) for a in call.args)
                and all(k.arg for k in call.keywords)):
            raise ValueError(f"a graded cell may hold only calls of graded checks ({', '.join(sorted(checks.GRADED))}), "
                             f"as checks.check_x(...); found: {ast.unparse(statement)[:120]}")
        calls.append(call)
    return calls


def probes_of(source_nb) -> list[Probe]:
    """Every check call of every graded cell, public part first."""
    probes = []
    for index, cell in enumerate(source_nb.cells):
        if not is_graded(cell):
            continue
        gid = grade_id(cell)
        for part, code in zip(("public", "hidden"), split_tests(cell.source)):
            for n, call in enumerate(check_calls(code) if code else []):
                probes.append(Probe(f"{gid}.{part}.{n}", gid, part, call.func.attr, call, code, index))
    return probes


def judge_arguments(source_nb, probe: Probe, context: dict) -> dict:
    """The judge's keyword arguments: the check's arguments that are not answers, each a literal or a
    name the lesson defines, evaluated here from the source, never taken from the student's kernel."""
    parameters = list(inspect.signature(getattr(checks, probe.check)).parameters)
    given = dict(zip(parameters, probe.call.args)) | {k.arg: k.value for k in probe.call.keywords}
    out = {}
    for name, node in given.items():
        if name in checks.GRADED[probe.check].answers:
            continue
        try:
            out[name] = ast.literal_eval(node)
        except ValueError:
            if not isinstance(node, ast.Name) or node.id not in context:
                raise ValueError(f"{probe.exercise}: the argument {name}={ast.unparse(node)} of {probe.check} must be "
                                 "a literal or a name the lesson's own cells assign") from None
            out[name] = context[node.id]
    return out


def lesson_context(source_nb, names: set[str]) -> dict:
    """The values of `names` as the lesson's source assigns them: its imports and the (last) top-level
    assignment of each name, run here. Instructor code only: no answer cell is involved."""
    statements, wanted = {}, set(names)
    imports = []
    for cell in source_nb.cells:
        if cell.cell_type != "code" or is_answer(cell) or is_graded(cell):
            continue
        for node in ast.parse(cell.source).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imports.append(node)
            elif isinstance(node, ast.Assign):
                for name in {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)} & wanted:
                    statements[name] = node
    namespace = {}
    exec(compile(ast.Module(body=imports + list({id(s): s for s in statements.values()}.values()), type_ignores=[]),
                 "<lesson context>", "exec"), namespace)
    return {name: namespace[name] for name in names if name in namespace}


def _context_names(probes: list[Probe]) -> set[str]:
    return {a.id for p in probes for a in [*p.call.args, *(k.value for k in p.call.keywords)] if isinstance(a, ast.Name)}


def verdict(probe: Probe, record, arguments: dict, cell_error: str | None = None) -> str | None:
    """The judge's verdict on a record: None when it passes, else the failure message. Fails closed: a
    missing, malformed or out-of-bounds record, a judge past its time limit, or any error judging it, is a
    fail. Judges run in worker processes (course_lib.judging), not under a lock other students wait on."""
    if record is None:
        return (f"the check could not run: {cell_error}" if cell_error else
                "the check did not run (the notebook stopped before it)")
    return judging.judge(probe.check, record, arguments, checks.GRADED[probe.check].max_items)


# ------------------------------------------------------------------------------------ assembling
def assemble(source_nb, submission: Submission, probes: list[Probe]) -> tuple[nbformat.NotebookNode, list[str]]:
    """The notebook a submission's kernel runs: the learner version of the lesson (no solutions, no hidden
    tests), the student's answer cells in their places, and an empty placeholder (metadata {"graded": index
    of the graded cell}) where each graded cell was: no check call, no seed. Returns (notebook, notes for the
    student)."""
    learner = learner_version(source_nb)
    notes = list(submission.notes)
    graded = copy.deepcopy(learner)
    graded.cells = []
    probe_cells = {}
    for probe in probes:
        probe_cells.setdefault(probe.cell_index, []).append(probe)
    for index, cell in enumerate(learner.cells):
        if is_answer(cell):
            cell = copy.deepcopy(cell)
            gid = grade_id(cell)
            if gid in submission.answers:
                cell.source = submission.answers[gid]
            else:
                notes.append(f"answer cell '{gid}' is missing from the submission (deleted, or its metadata removed)")
            graded.cells.append(cell)
        elif is_graded(cell):
            if index in probe_cells:  # a placeholder: its code comes from the grader when the run reaches it
                graded.cells.append(nbformat.v4.new_code_cell("", metadata={"graded": index}))
        elif cell.cell_type == "code":
            graded.cells.append(copy.deepcopy(cell))
    for cell in graded.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    unknown = set(submission.answers) - {grade_id(c) for c in learner.cells if is_answer(c)}
    if unknown:
        notes.append(f"unknown answer cells ignored: {sorted(unknown)}")
    for cell in (c for c in learner.cells if is_graded(c)):
        gid = grade_id(cell)
        if gid not in submission.tests:
            notes.append(f"cell '{gid}' was deleted; it was restored from the lesson's source")
        elif submission.tests[gid].strip() != cell.source.strip():
            notes.append(f"cell '{gid}' was edited; the original was restored")
    lesson_ids = {c.get("id") for c in learner.cells}
    added = sum(1 for i in submission.plain_code_ids if i is None or i not in lesson_ids)
    if added:
        notes.append(f"{added} code cell(s) you added were not run: grading uses only the answer cells")
    return graded, notes


def placeholder_errors(executed, cells: dict[int, list[Probe]]) -> dict[str, str]:
    """The error each placeholder cell of an executed notebook raised (a timeout, an interrupt), by the key of
    each probe of that cell."""
    out = {}
    for cell in executed.cells if executed is not None else []:
        n = cell.get("metadata", {}).get("graded")
        if type(n) is int and n in cells and (error := _cell_error(cell)):
            out.update({p.key: error for p in cells[n]})
    return out


def _cell_error(cell) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"[:300]
    return None


# -------------------------------------------------------------------------------------- grading
@dataclass
class Result:
    """One student's grade for one lesson; `advisories` are for the instructor only."""

    student: str
    lesson: str
    scores: dict[str, float] = field(default_factory=dict)
    max_scores: dict[str, float] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    advisories: list[str] = field(default_factory=list)
    seconds: float = 0.0
    not_graded: str | None = None  # why the grader could not grade it (its own failure): no score at all

    @property
    def total(self) -> float:
        return sum(self.scores.values())

    def to_dict(self) -> dict:
        return {"student": shown_name(self.student), "lesson": self.lesson, "scores": self.scores, "max_scores": self.max_scores,
                "messages": self.messages, "notes": self.notes, "advisories": self.advisories,
                "seconds": round(self.seconds, 1), "not_graded": self.not_graded}

    @classmethod
    def from_dict(cls, data: dict, student: str) -> "Result":
        """The Result to_dict wrote; `student` is its folder name (to_dict keeps only the name as shown). A
        malformed one is a ValueError."""
        try:
            scores, max_scores = ({str(k): float(v) for k, v in data[key].items()} for key in ("scores", "max_scores"))
            not_graded = data["not_graded"]
            if not isinstance(data["lesson"], str) or not (not_graded is None or isinstance(not_graded, str)):
                raise TypeError("lesson or not_graded")
            return cls(student, data["lesson"], scores, max_scores, dict(data["messages"]), list(data["notes"]),
                       list(data["advisories"]), float(data["seconds"]), not_graded)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"not a result the grader wrote ({type(e).__name__}: {e})") from None


def _zero(source_nb, student: str, lesson: str, note: str) -> Result:
    result = Result(student, lesson, notes=[note])
    for gid, points in exercises(source_nb):
        result.scores[gid], result.max_scores[gid], result.messages[gid] = 0.0, points, note
    return result


@dataclass
class Lesson:
    """A graded lesson, prepared once per batch: its source, its check calls and their judges' arguments."""

    path: Path
    notebook: nbformat.NotebookNode
    probes: list[Probe]
    arguments: dict[str, dict]
    lesson_names: set[str]

    @classmethod
    def load(cls, path: Path) -> "Lesson":
        nb = nbformat.read(path, as_version=4)
        probes = probes_of(nb)
        context = lesson_context(nb, _context_names(probes))
        return cls(Path(path), nb, probes, {p.key: judge_arguments(nb, p, context) for p in probes}, _lesson_names(nb))

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def cells(self) -> dict[int, list[Probe]]:
        """Graded cell index -> its probes: what each placeholder of an assembled notebook runs."""
        out = {}
        for probe in self.probes:
            out.setdefault(probe.cell_index, []).append(probe)
        return out

    def wall_seconds(self, timeout: int) -> int:
        """A whole run's limit: starting the kernel, every cell a little slow, a few running into their timeout."""
        code_cells = sum(c.cell_type == "code" for c in self.notebook.cells) + len(self.probes)
        return 60 + 3 * timeout + 2 * code_cells


SANDBOX_ATTEMPTS = 3


class SandboxFailed(RuntimeError):
    """A sandbox could not start (before any student code ran): the grader's failure, never the student's."""


def execute(notebook, sandbox: Sandbox, timeout: int, wall_seconds: float, cells: dict[int, list[Probe]]
            ) -> tuple[dict, dict, nbformat.NotebookNode | None, list[str]]:
    """Run a notebook through course_lib.graded_run in `sandbox`, handing out the probes of `cells` (placeholder
    number -> probes) as it reaches them: (records, errors, executed notebook, events), each by probe key.
    What comes back is read as untrusted data: size-capped, parsed strictly, anything odd dropped. A sandbox
    that does not start is tried again, then SandboxFailed is raised."""
    for attempt in range(SANDBOX_ATTEMPTS):
        session = Session(cells)
        with tempfile.TemporaryDirectory(prefix="grading-job-") as tmp:
            job = Path(tmp) / "job"
            job.mkdir()
            (job / "notebook.ipynb").write_text(nbformat.writes(notebook))
            (job / "settings.json").write_text(json.dumps({"timeout": timeout}))
            outcome = sandbox.run(job, wall_seconds, session.reply)
        if session.started or outcome.timed_out:
            break
        if attempt + 1 < SANDBOX_ATTEMPTS:
            time.sleep(5 * (attempt + 1))  # e.g. a classmate's sandbox briefly holding what a new one needs
    else:
        raise SandboxFailed(f"the sandbox could not start, {SANDBOX_ATTEMPTS} times: {outcome.stderr.strip()[-300:]}")
    events = list(session.events)
    if outcome.timed_out:
        events.append(f"grading stopped after {wall_seconds:.0f} s (the notebook did not finish)")
    if outcome.overflow:
        events.append("the notebook's report was larger than the grader reads")
    executed = None
    try:
        executed = nbformat.reads(session.notebook, as_version=4) if session.notebook else None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        pass
    if executed is None and not outcome.timed_out and not outcome.overflow:
        events.append(f"the notebook run ended without a readable report ({outcome.stderr.strip()[-300:]})")
    errors = {**placeholder_errors(executed, cells), **session.errors}
    return session.records, errors, executed, events


def grade_notebook(source_nb, submission, *, student: str, lesson: str, timeout: int = 120,
                   sandbox: Sandbox | None = None, prepared: Lesson | None = None
                   ) -> tuple[Result, nbformat.NotebookNode | None]:
    """Grade one submission (a Submission, or a notebook): run it, then judge every check's record.
    Without a sandbox the notebook runs unisolated: for trusted notebooks only (tests, validation)."""
    if prepared is None:
        with tempfile.NamedTemporaryFile("w", suffix=".ipynb", delete=False) as f:
            f.write(nbformat.writes(source_nb))
        try:
            prepared = Lesson.load(Path(f.name))
        finally:
            os.unlink(f.name)
    if not isinstance(submission, Submission):
        submission = submission_of(json.loads(nbformat.writes(submission)))
        if isinstance(submission, str):
            return _zero(source_nb, student, lesson, submission), None
    start = time.monotonic()
    result = Result(student, lesson)
    for gid, points in exercises(source_nb):
        result.scores[gid], result.max_scores[gid] = 0.0, points
    graded, notes = assemble(source_nb, submission, prepared.probes)
    result.notes += notes
    for gid, code in submission.answers.items():
        result.advisories += [f"{gid}: {a}" for a in advisories(code, prepared.lesson_names, gid)]
    with contextlib.ExitStack() as stack:
        if sandbox is None:
            lib = stack.enter_context(tempfile.TemporaryDirectory(prefix="course-lib-"))
            lib, cifar10 = copy_course_lib(Path(lib)), _cifar10()
            sandbox = Sandbox(lib, cifar10=cifar10, isolated=False, threads=config.torch_threads(),
                              shared_data=shared_data(lib, cifar10, [source_nb], progress=False))
        try:
            records, errors, executed, events = execute(graded, sandbox, timeout, prepared.wall_seconds(timeout),
                                                        prepared.cells)
        except SandboxFailed as e:
            result.not_graded = str(e)
            return result, None
    result.notes += events
    if executed is not None:
        for cell in executed.cells:
            if is_answer(cell) and (error := _cell_error(cell)):
                result.notes.append(f"answer cell '{grade_id(cell)}' raised {error}")
    for gid in result.scores:
        failures = {}
        for probe in (p for p in prepared.probes if p.exercise == gid):
            message = verdict(probe, records.get(probe.key), prepared.arguments[probe.key], errors.get(probe.key))
            if message is not None:
                failures.setdefault(probe.part, message)
        if not failures and any(p.exercise == gid for p in prepared.probes):
            result.scores[gid] = result.max_scores[gid]
        else:
            result.messages[gid] = failures.get("public") or (HIDDEN_FAILED if failures else "no check ran")
    result.seconds = time.monotonic() - start
    return result, executed


def _cifar10() -> Path | None:
    """The CIFAR-10 copy graded notebooks may read: COURSE_CIFAR10, else one in the data folder."""
    from . import data

    given = os.environ.get(data.CIFAR10_ENV)
    found = Path(given) if given else data.find_local_cifar10(config.data_dir())
    return found.resolve() if found is not None and found.exists() else None


SHARED_DATA_FOLDER = "grading-shared"  # under config.data_dir()
_PREPARE_SHARED_DATA = ("from course_lib import data, pretrained\n"
                        "pretrained.pretrain_source_model(data.load_cifar10(progress=False), progress=False)")


SHARED_DATA_USERS = ("load_cifar10", "course_weights", "pretrain_source_model")  # what the shared folder serves


def uses_cifar10(source_nb) -> bool:
    """Whether the lesson reads CIFAR-10 or the source model pretrained on it (lesson 4 does only the latter)."""
    return any(c.cell_type == "code" and any(name in c.source for name in SHARED_DATA_USERS) for c in source_nb.cells)


def shared_data(lib: Path, cifar10: Path | None, source_nbs, *, progress: bool = True) -> Path | None:
    """data_dir()/grading-shared, prepared once by the grader's own trusted code in fast mode: CIFAR-10 decoded
    and the fast-mode source model. Every sandbox reads it (read-only) instead of spending minutes redoing
    both from an empty data folder. None when no lesson here loads CIFAR-10, or there is no copy to load."""
    from . import data

    if cifar10 is None or not any(uses_cifar10(nb) for nb in source_nbs):
        return None
    folder = config.data_dir() / SHARED_DATA_FOLDER
    if progress:
        print(f"preparing {folder} (decoded CIFAR-10 and the fast-mode source model; once, then reused) ...",
              file=sys.stderr, flush=True)
    own_decode = data.decoded_cache_file(cifar10, 32)
    lent_decode = folder / "cache" / own_decode.name
    if own_decode.exists() and not lent_decode.exists():  # the grader's own decode of this copy: no second one
        atomic_write(lent_decode, lambda tmp: shutil.copyfile(own_decode, tmp))
    env = {**os.environ, "PYTHONPATH": str(lib), config.FAST_ENV: "1", config.OFFLINE_ENV: "1",
           config.DATA_DIR_ENV: str(folder), data.CIFAR10_ENV: str(cifar10), "MPLBACKEND": "Agg"}
    env.pop(config.SHARED_DATA_ENV, None)
    done = subprocess.run([sys.executable, "-c", _PREPARE_SHARED_DATA], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"preparing {folder} for the sandboxes failed:\n{done.stderr[-3000:]}")
    for path in [folder, *folder.rglob("*")]:  # the sandbox's unprivileged user reads it
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


# ------------------------------------------------------------------------------------------ batch
def graded_lessons(source_dir: Path) -> list[Lesson]:
    return [Lesson.load(p) for p in sorted(Path(source_dir).glob("*.ipynb"))
            if exercises(nbformat.read(p, as_version=4))]


def student_folders(submitted: Path) -> tuple[list[str], list[str]]:
    """(students, warnings): one student per real folder in `submitted`; links and files are skipped."""
    students, warnings = [], []
    for entry in sorted(os.scandir(submitted), key=lambda e: e.name):
        if entry.is_symlink():
            warnings.append(f"skipped {shown_name(entry.name)!r}: a symbolic link, not a student folder")
        elif entry.is_dir(follow_symlinks=False):
            students.append(entry.name)
        else:
            warnings.append(f"skipped {shown_name(entry.name)!r}: not a folder")
    return students, warnings


def grade_folder(submitted: Path, out_dir: Path, source_dir: Path = SOURCE_DIR, timeout: int = 300,
                 jobs: int | None = None, isolated: bool = True, progress: bool = True,
                 shard: tuple[int, int] | None = None) -> list[Result]:
    """Grade submitted/<student>/<lesson>.ipynb for every student and graded lesson, `jobs` sandboxes at
    a time. Each student's results/<student>/<lesson>.json, feedback/<student>.md and the grades.csv row
    are written (atomically) as soon as that student is done; autograded/<student>/ keeps the executed
    notebooks. A lesson a student did not submit costs no run. `shard` (K, N): only the students of shard K
    of N (course_lib.shards), with out_dir/shard.json saying which, for `merge`."""
    from tqdm.auto import tqdm

    submitted, out_dir = Path(submitted), Path(out_dir)
    if isolated and os.geteuid() != 0:
        raise SystemExit(f"grading a class needs root: each job slot's sandbox then runs as a uid of its own "
                         f"(its own process limit; no pipe or process of another sandbox or of the grader shares "
                         f"its user). Run `grade` as root.\n{NO_SANDBOX_HELP}.")
    if isolated and (problem := bubblewrap_problem()):
        raise SystemExit(f"cannot grade in a sandbox: {problem}.\n{NO_SANDBOX_HELP}.")
    students, warnings = student_folders(submitted)
    for warning in warnings:
        print(warning, file=sys.stderr)
    if not students:
        raise SystemExit(f"no student folders in {submitted}: expected {submitted}/<student>/<lesson>.ipynb")
    lessons = graded_lessons(source_dir)
    if shard is not None:
        from . import shards

        students = shards.write_manifest(out_dir, shard, students, lessons)
    results: dict[str, list[Result]] = {s: [] for s in students}
    work = []
    for student in students:
        for lesson in lessons:
            found = read_submission(submitted / student / lesson.path.name)
            if isinstance(found, str):
                results[student].append(_zero(lesson.notebook, student, lesson.name, found))
            else:
                work.append((student, lesson, found))
    jobs = max(1, min(jobs or config.torch_threads(), len(work)))  # fewer notebooks than cores: more threads each
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="grading-lib-") as lib:
        lib, cifar10 = copy_course_lib(Path(lib)), _cifar10()
        sandbox = Sandbox(lib, cifar10=cifar10, isolated=isolated, slots=jobs,
                          shared_data=shared_data(lib, cifar10, [lesson.notebook for _, lesson, _ in work],
                                                  progress=progress),
                          threads=max(1, config.torch_threads() // jobs),
                          limits=Limits(cpu_seconds=2 * max(l.wall_seconds(timeout) for l in lessons)) if lessons else Limits())

        def finished(result: Result, executed) -> None:
            with lock:
                results[result.student].append(result)
                _isolated(write_result, result, executed, out_dir)
                if len(results[result.student]) == len(lessons):
                    _isolated(write_feedback, result.student, results[result.student], out_dir)
                _isolated(write_grades, results, lessons, out_dir)

        for student in students:  # lessons with nothing to run are done already, and so are students with no run
            for result in results[student]:
                _isolated(write_result, result, None, out_dir)
            if len(results[student]) == len(lessons):
                _isolated(write_feedback, student, results[student], out_dir)
        _isolated(write_grades, results, lessons, out_dir)
        with ThreadPoolExecutor(max_workers=jobs) as pool, \
                tqdm(total=len(work), desc="grading", unit="notebook", disable=not progress) as bar:
            running = [pool.submit(_grade_or_note, lesson, found, student=student, timeout=timeout, sandbox=sandbox)
                       for student, lesson, found in work]
            for future in as_completed(running):
                finished(*future.result())
                bar.update()
    for r in (r for s in students for r in results[s] if r.not_graded):
        print(f"NOT GRADED: {shown_name(r.student)}/{r.lesson}: {r.not_graded}; grade it again", file=sys.stderr)
    return [r for s in students for r in sorted(results[s], key=lambda r: r.lesson)]


def _grade_or_note(lesson: Lesson, found: Submission, *, student: str, timeout: int, sandbox: Sandbox):
    """grade_notebook, except that anything going wrong costs this student's lesson (a 0 with a note), never
    the batch."""
    try:
        return grade_notebook(lesson.notebook, found, student=student, lesson=lesson.name, timeout=timeout,
                              sandbox=sandbox, prepared=lesson)
    except Exception as e:
        print(f"grading {shown_name(student)}/{lesson.name} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return _zero(lesson.notebook, student, lesson.name,
                     f"this notebook could not be graded ({type(e).__name__}); the instructor was told"), None


def _isolated(write, *args) -> None:
    """Run one student's write; a failure is reported and skipped, so classmates' outputs are still written."""
    try:
        write(*args)
    except Exception as e:
        print(f"{write.__name__} failed: {type(e).__name__}: {e}", file=sys.stderr)


def write_result(result: Result, executed, out_dir: Path) -> None:
    atomic_write_text(out_dir / "results" / result.student / f"{result.lesson}.json", json.dumps(result.to_dict(), indent=1))
    if executed is not None:
        atomic_write_text(out_dir / "autograded" / result.student / f"{result.lesson}.ipynb", nbformat.writes(executed))


def _spreadsheet_safe(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading =, +, -, @ would make it a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


NOT_GRADED = "not graded"


def grade_columns(lessons: list[Lesson]) -> list[tuple[str, str, float]]:
    """(lesson, grade_id, points) of every column of grades.csv, in order."""
    return [(l.name, gid, points) for l in lessons for gid, points in exercises(l.notebook)]


def write_grades(results: dict[str, list[Result]], lessons: list[Lesson], out_dir: Path) -> None:
    """grades.csv: a row per student whose lessons are all graded, a column per exercise, a total, the maximum."""
    atomic_write_text(out_dir / "grades.csv", grades_table(results, grade_columns(lessons), len(lessons)))


def grades_table(results: dict[str, list[Result]], columns: list[tuple[str, str, float]], lesson_count: int) -> str:
    """grades.csv's text: a row per student (in the order of `results`) with `lesson_count` results."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["student", *[f"{lesson}/{gid}" for lesson, gid, _ in columns], "total", "max"])
    for student, done in results.items():
        if len(done) < lesson_count:
            continue
        score = {(r.lesson, gid): v for r in done for gid, v in r.scores.items()}
        ungraded = {r.lesson for r in done if r.not_graded}
        row = [score.get((lesson, gid), 0.0) for lesson, gid, _ in columns]
        cells = [NOT_GRADED if lesson in ungraded else f"{v:g}" for (lesson, _, _), v in zip(columns, row)]
        writer.writerow([_spreadsheet_safe(shown_name(student)), *cells, NOT_GRADED if ungraded else f"{sum(row):g}",
                         f"{sum(p for _, _, p in columns):g}"])
    return buf.getvalue()


def markdown_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Untrusted text as literal Markdown on one line: capped, control characters dropped, markup and HTML
    escaped."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(text))
    if len(text) > limit:
        text = text[:limit] + "…"
    return html.escape(re.sub(r"([\\`*_{}\[\]()#+\-.!|~])", r"\\\1", text), quote=False)


def write_feedback(student: str, results: list[Result], out_dir: Path) -> None:
    lines = [f"# Feedback for {markdown_text(shown_name(student), 100)}", ""]
    for r in sorted(results, key=lambda r: r.lesson):
        if r.not_graded:
            lines += [f"## {r.lesson}: {NOT_GRADED}", "", "The grader could not run this notebook (its failure, not "
                      "yours); the instructor will grade it again.", ""]
            continue
        lines += [f"## {r.lesson}: {r.total:g} / {sum(r.max_scores.values()):g}", "",
                  "| exercise | points | result |", "| --- | --- | --- |"]
        for gid, maxp in r.max_scores.items():
            verdict_text = "passed" if r.scores[gid] == maxp else markdown_text(r.messages.get(gid, "failed"))
            lines.append(f"| {gid} | {r.scores[gid]:g} / {maxp:g} | {verdict_text} |")
        if r.notes:
            lines += ["", "Notes:"] + [f"- {markdown_text(n)}" for n in r.notes[:30]]
        lines.append("")
    atomic_write_text(out_dir / "feedback" / f"{student}.md", "\n".join(lines))
    advice = [f"- {r.lesson} {markdown_text(a)}" for r in results for a in r.advisories]
    if advice:
        atomic_write_text(out_dir / "advisories" / f"{student}.md",
                          "\n".join([f"# Advisory notes on {markdown_text(shown_name(student), 100)} (no effect on the grade)", "", *advice, ""]))


# ------------------------------------------------------------------------------------- validate
MIN_WRONG, MIN_RIGHT = 4, 3  # answers per exercise in a lesson's mutant suite


def load_cases(source_path: Path) -> dict:
    """The lesson's mutant suite, source/cases/<lesson>.py: {answer grade_id: {"wrong": {name: answer cell},
    "right": {...}}}. Instructor material, like the sources: never released."""
    path = Path(source_path).parent / "cases" / f"{Path(source_path).stem}.py"
    return runpy.run_path(str(path))["CASES"] if path.exists() else {}


def run_cases(source_nb, cases: dict, *, timeout: int = 300) -> list[dict]:
    """Run the lesson once with the reference solutions; at each exercise, first run the learner's unanswered
    stub and every case's answer in place of the solution, each followed by the exercise's probes (the hidden
    ones, as in grading, run at the end on the answers kept there); judge every record here. One run for the whole suite: a lesson's cells before an exercise run once, not once per case.

    Returns one record per case, per stub and per reference solution: exercise, kind ("wrong", "right", "stub"
    or "reference"), name, and the public and hidden errors (None: passed).
    """
    with tempfile.TemporaryDirectory(prefix="validate-") as tmp:
        path = Path(tmp) / "lesson.ipynb"
        nbformat.write(source_nb, path)
        lesson = Lesson.load(path)
        lib = copy_course_lib(Path(tmp) / "lib")
        solved = submission_of(json.loads(nbformat.writes(learner_solved(source_nb))))
        graded, _ = assemble(source_nb, solved, lesson.probes)
        tests_of = answer_test_cells(source_nb)
        stubs = {grade_id(c): c.source for c in learner_version(source_nb).cells if is_answer(c)}
        runs, cells, placeholders = [], [], {}

        def placeholder(probes: list[Probe]):
            placeholders[len(placeholders)] = probes
            return nbformat.v4.new_code_cell("", metadata={"graded": len(placeholders) - 1})

        for cell in graded.cells:
            gid = grade_id(cell)
            if is_answer(cell) and gid in tests_of:
                forget = "".join(f"globals().pop({n!r}, None)\n" for n in sorted(_top_level_names(cell.source)))
                suite = {"stub": {"the unanswered stub": stubs[gid]}, **cases.get(gid, {})}
                for kind in ("stub", "wrong", "right"):
                    for name, answer in suite.get(kind, {}).items():
                        tag = f"case{len(runs)}"
                        runs.append((gid, kind, name, tag))
                        cells += [nbformat.v4.new_code_cell(forget), nbformat.v4.new_code_cell(answer),
                                  placeholder([_tagged(p, tag) for p in lesson.cells[tests_of[gid]]])]
                cells.append(nbformat.v4.new_code_cell(forget))
            cells.append(placeholder(lesson.cells[cell.metadata["graded"]]) if "graded" in cell.metadata else cell)
        graded.cells = cells
        for gid in tests_of:
            runs.append((gid, "reference", "the solution", None))
        cifar10 = _cifar10()
        sandbox = Sandbox(lib, cifar10=cifar10, isolated=False, threads=config.torch_threads(),
                          shared_data=shared_data(lib, cifar10, [source_nb], progress=False))
        records, errors, _, _ = execute(graded, sandbox, timeout, lesson.wall_seconds(timeout) * (1 + len(runs) // 4),
                                        placeholders)
    out = []
    for gid, kind, name, tag in runs:
        verdicts = {"public": None, "hidden": None}
        for probe in (p for p in lesson.probes if p.cell_index == tests_of.get(gid)):
            key = _tagged(probe, tag).key if tag else probe.key
            message = verdict(probe, records.get(key), lesson.arguments[probe.key], errors.get(key))
            if verdicts[probe.part] is None:
                verdicts[probe.part] = message
        out.append({"exercise": gid, "kind": kind, "name": name, **verdicts})
    return out


def _tagged(probe: Probe, tag: str) -> Probe:
    return Probe(f"{tag}.{probe.key}", probe.exercise, probe.part, probe.check, probe.call, probe.code, probe.cell_index)


def case_problems(records: list[dict], answer_ids: list[str]) -> list[str]:
    """What the mutant suite found: a wrong answer that passes a part, a right one that fails one, a
    missing or too small suite."""
    problems = []
    for r in records:
        what = f"{r['exercise']}, " + (r["name"] if r["kind"] == "stub" else f"{r['kind']} answer '{r['name']}'")
        for part in ("public", "hidden"):
            failed = r[part] is not None
            if r["kind"] in ("wrong", "stub") and not failed:
                problems.append(f"{what}: the {part} {'check' if part == 'public' else 'tests'} let it pass")
            if r["kind"] in ("right", "reference") and failed:
                problems.append(f"{what}: the {part} {'check' if part == 'public' else 'tests'} failed it ({r[part][:200]})")
    for gid in answer_ids:
        wrong = sum(1 for r in records if r["exercise"] == gid and r["kind"] == "wrong")
        right = sum(1 for r in records if r["exercise"] == gid and r["kind"] == "right")
        if wrong < MIN_WRONG or right < MIN_RIGHT:
            problems.append(f"{gid}: the mutant suite has {wrong} wrong and {right} right answers "
                            f"(at least {MIN_WRONG} and {MIN_RIGHT} needed)")
    return problems


def validate(source_dir: Path = SOURCE_DIR, timeout: int = 300, only: list[str] | None = None,
             report: list | None = None) -> list[str]:
    """Problems found: a graded cell that is not made of graded check calls, a reference solution that loses
    points, an unanswered stub that earns any, or a mutant-suite answer graded the wrong way by the public
    check or the hidden tests. Empty means valid. `only`: lesson names (file stems) to validate; default
    all. `report` collects one line per exercise."""
    problems = []
    for src in sorted(Path(source_dir).glob("*.ipynb")):
        if only is not None and src.stem not in only:
            continue
        nb = nbformat.read(src, as_version=4)
        if not exercises(nb):
            continue
        try:
            Lesson.load(src)  # its graded cells must hold only graded check calls
        except (ValueError, SyntaxError, NameError) as e:
            problems.append(f"{src.name}: {e}")
            continue
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
    val = sub.add_parser("validate", help="solutions must pass, stubs and mutant-suite wrong answers must fail")
    val.add_argument("--source", type=Path, default=SOURCE_DIR)
    grd = sub.add_parser("grade", help="grade submitted/<student>/<lesson>.ipynb into a CSV and feedback")
    grd.add_argument("submitted", type=Path)
    grd.add_argument("--out", type=Path, default=Path("grades"))
    grd.add_argument("--source", type=Path, default=SOURCE_DIR)
    grd.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    grd.add_argument("--jobs", type=int, default=None, help="submissions graded at once (default: the CPU cores)")
    grd.add_argument("--no-sandbox", action="store_true",
                     help="grade WITHOUT isolation where bubblewrap cannot run: one trusted learner's own notebooks only")
    grd.add_argument("--shard", metavar="K/N|auto",
                     help="grade only shard K (from 0) of N of the students, into OUT/shard-K-of-N; `auto`: K and N "
                          "from a Slurm job array or a Kubernetes Indexed Job")
    grd.add_argument("--shard-count", type=int, metavar="N",
                     help="with --shard auto in a Kubernetes Indexed Job: N, the Job's completions (or set "
                          "COURSE_SHARD_COUNT)")
    mrg = sub.add_parser("merge", help="merge `grade --shard` folders into one grades.csv, feedback and results")
    mrg.add_argument("shard_dirs", type=Path, nargs="+", metavar="SHARD_DIR")
    mrg.add_argument("--out", type=Path, required=True)
    doc = sub.add_parser("doctor", help="check that grading a class can work on this machine, and say what to fix")
    doc.add_argument("--source", type=Path, default=SOURCE_DIR)
    doc.add_argument("--out", type=Path, default=Path("grades"), help="where grades will go (its free disk)")
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
    elif args.command == "doctor":
        from .doctor import doctor

        return doctor(args.source, args.out)
    elif args.command == "merge":
        from . import shards

        try:
            return shards.merge(args.shard_dirs, args.out)
        except shards.ShardError as e:
            print(f"merge refused: {e}", file=sys.stderr)
            return 2
    else:
        return _grade_command(args)
    return 0


def _grade_command(args) -> int:
    out, shard = args.out, None
    if args.shard is not None or args.shard_count is not None:
        from . import shards

        try:
            shard = (shards.shard_from_env(count=args.shard_count) if (args.shard or "auto") == "auto"
                     else shards.parse_shard(args.shard))
            if args.shard_count not in (None, shard[1]):
                raise shards.ShardError(f"--shard {args.shard} and --shard-count {args.shard_count} disagree")
        except shards.ShardError as e:
            print(f"grade: {e}", file=sys.stderr)
            return 2
        out = args.out / shards.folder_name(*shard)
    results = grade_folder(args.submitted, out, args.source, args.timeout, jobs=args.jobs,
                           isolated=not args.no_sandbox, shard=shard)
    print(f"graded {len({r.student for r in results})} student(s): {out / 'grades.csv'}, "
          f"feedback in {out / 'feedback'}")
    if shard is not None:
        print(f"shard {shard[0]}/{shard[1]} is done; when all {shard[1]} are, put them together with\n"
              f"  python -m course_lib.grading merge {args.out}/shard-*-of-{shard[1]} --out {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
