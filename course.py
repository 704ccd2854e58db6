#!/usr/bin/env python3
"""The course's commands, in plain Python so they work the same on Linux, macOS and Windows.

    python3 course.py start       install everything into .venv (first time only) and open JupyterLab
    python3 course.py test        run the library's tests and every lesson notebook (fast mode, offline);
                                  given paths (e.g. tests/test_data.py), only those
    python3 course.py install     install only (what CI does); --instructor adds the grading tools
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".course-installed"
REQUIREMENT_FILES = ["requirements.txt"]
INSTRUCTOR_FILES = ["requirements-instructor.txt"]
# course_lib.data.LOCAL_CIFAR10_NAMES, repeated: this file runs before the venv (and torch) exist
LOCAL_CIFAR10_NAMES = ("cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar10", "cifar10-jpeg.tar.gz")


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _wanted(instructor: bool) -> str:
    files = REQUIREMENT_FILES + (INSTRUCTOR_FILES if instructor else []) + ["pyproject.toml"]
    digest = hashlib.sha256()
    for name in files:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def install(instructor: bool = False) -> None:
    """Create .venv and install the requirements and course_lib (editable), unless already done."""
    if sys.version_info < (3, 11):
        sys.exit(f"The course needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    wanted = _wanted(instructor)
    if STAMP.exists() and STAMP.read_text() in (wanted, _wanted(True)):
        return  # already installed (an instructor install also covers the learner's)
    if not venv_python().exists():
        print(f"Creating {VENV} ...", flush=True)
        venv.create(VENV, with_pip=True)
    py = str(venv_python())
    reqs = [arg for name in REQUIREMENT_FILES + (INSTRUCTOR_FILES if instructor else []) for arg in ("-r", name)]
    print("Installing the course's packages (a few minutes the first time) ...", flush=True)
    subprocess.run([py, "-m", "pip", "install", "--disable-pip-version-check", *reqs], cwd=ROOT, check=True)
    subprocess.run([py, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "-e", "."],
                   cwd=ROOT, check=True)
    STAMP.write_text(wanted)


def start(lab_args: list[str]) -> None:
    install()
    os.chdir(ROOT)
    cmd = [str(venv_python()), "-m", "jupyter", "lab", "notebooks", *lab_args]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in lab_args:
        cmd.append("--allow-root")  # containers often run as root; JupyterLab refuses without this flag
    if os.name == "nt":
        sys.exit(subprocess.call(cmd))
    os.execv(cmd[0], cmd)


def test_workers() -> int:
    """pytest-xdist workers: two where there are two cores. Much of the suite waits on kernels, sandboxes and
    the browser, and a second worker fills that time (CI: 2 cores)."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def environment_for_tests(base_env: dict, data_dir: Path, workers: int = 1) -> dict:
    """Fast, offline and headless, with `data_dir` as the data folder so the tests never write over a
    learner's caches or checkpoints; the learner's own CIFAR-10 copy is still used (as COURSE_CIFAR10).
    The cores are shared out between the `workers` (COURSE_THREADS, unless already set), which the
    notebooks' kernels and the grading sandboxes they start inherit."""
    env = dict(base_env, COURSE_FAST="1", COURSE_OFFLINE="1", MPLBACKEND="Agg", COURSE_DATA_DIR=str(data_dir))
    env.setdefault("COURSE_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    if not base_env.get("COURSE_CIFAR10"):
        learners = Path(base_env.get("COURSE_DATA_DIR") or ROOT / "data").expanduser()
        found = [learners / name for name in LOCAL_CIFAR10_NAMES if (learners / name).exists()]
        if found:
            env["COURSE_CIFAR10"] = str(found[0])
    return env


def test(pytest_args: list[str]) -> int:
    """pytest on tests/ and nbval on the lesson sources (solutions in), fast mode, offline, in a throwaway
    data folder, on test_workers() pytest-xdist workers, a file at a time (tests/conftest.py orders the files);
    CI runs exactly this."""
    install()
    workers = test_workers()
    # paths of tests given (a file or folder in tests/ or source/, file::test) run alone, as pytest users expect;
    # none given: everything
    given = [a for a in pytest_args if a.split("/")[0] in ("tests", "source") and (ROOT / a.split("::")[0]).exists()]
    cmd = [str(venv_python()), "-m", "pytest", *([] if given else ["tests", "source"]),
           "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=600", "-p", "no:cacheprovider",
           "-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder", *pytest_args]
    with tempfile.TemporaryDirectory(prefix="course-test-data-", ignore_cleanup_errors=True) as data_dir:
        return subprocess.call(cmd, cwd=ROOT, env=environment_for_tests(dict(os.environ), Path(data_dir), workers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="install if needed, then open JupyterLab (extra args go to jupyter lab)")
    sub.add_parser("test", help="run all tests (extra args go to pytest)")
    inst = sub.add_parser("install", help="install only")
    inst.add_argument("--instructor", action="store_true", help="also install the grading tools (nbgrader)")
    args, extra = parser.parse_known_args()
    if args.command == "start":
        start(extra)
    elif args.command == "test":
        sys.exit(test(extra))
    else:
        install(instructor=args.instructor)


if __name__ == "__main__":
    main()
