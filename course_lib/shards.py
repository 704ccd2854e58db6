"""Grading a class on several machines: `grade --shard K/N` grades a fixed 1/N of the students into a folder
of its own, and `merge` puts the shard folders together into what one unsharded `grade` would have written.

A student's shard is the SHA-256 of their folder name (its bytes: UTF-8, with any bytes that are not UTF-8
kept as they are) modulo N: the same on every machine, in every Python, whatever the order folders are listed
in. Shards count from 0. Each shard folder holds shard.json: K and N, the students it was given, the whole
class it was taken from, the grades.csv columns, and digests of the lesson sources and of the grader's code,
so that `merge` can refuse folders that do not belong together and name the students no shard has graded.

The index can come from the scheduler (`--shard auto`): a Slurm job array (SLURM_ARRAY_TASK_ID, counted from
SLURM_ARRAY_TASK_MIN, and SLURM_ARRAY_TASK_COUNT) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with
the count from `--shard-count` or COURSE_SHARD_COUNT, since Kubernetes does not tell a pod its Job's
completions).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path

from . import grading
from .storage import atomic_write, atomic_write_text

MANIFEST = "shard.json"
MERGED = "merged.json"
FORMAT = 1
SHARD_COUNT_ENV = "COURSE_SHARD_COUNT"
PER_STUDENT_FOLDERS = ("results", "autograded")  # <folder>/<student>/<lesson>.*
PER_STUDENT_FILES = ("feedback", "advisories")  # <folder>/<student>.md
NAMES_SHOWN = 20


class ShardError(ValueError):
    """A shard that cannot be: a malformed --shard, a scheduler index out of range, folders that do not merge."""


def shard_of(student: str, count: int) -> int:
    """The shard (0 .. count-1) a student folder belongs to: stable across machines, runs and Python versions."""
    digest = hashlib.sha256(student.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> tuple[int, int]:
    """(K, N) of "K/N", with 0 <= K < N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise ShardError(f"--shard {text!r}: give K/N, shard K (counting from 0) of N, e.g. 0/4, or `auto`")
    return checked(int(match[1]), int(match[2]), f"--shard {text}")


def checked(index: int, count: int, where: str) -> tuple[int, int]:
    if count < 1:
        raise ShardError(f"{where}: the number of shards must be 1 or more")
    if not 0 <= index < count:
        raise ShardError(f"{where}: shard {index} of {count} does not exist (shards count from 0 to {count - 1})")
    return index, count


def _number(env: dict, name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ShardError(f"{name}={value!r} is not a whole number")
    return int(value)


def shard_from_env(env: dict | None = None, count: int | None = None) -> tuple[int, int]:
    """(K, N) from a Slurm job array or a Kubernetes Indexed Job; `count` (from --shard-count) gives N where
    the scheduler does not."""
    env = os.environ if env is None else env
    count = count if count is not None else _number(env, SHARD_COUNT_ENV)
    task = _number(env, "SLURM_ARRAY_TASK_ID")
    if task is not None:
        first, step = _number(env, "SLURM_ARRAY_TASK_MIN") or 0, _number(env, "SLURM_ARRAY_TASK_STEP") or 1
        tasks = _number(env, "SLURM_ARRAY_TASK_COUNT")
        if count is None:
            count = tasks
        if count is None:
            raise ShardError("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: give --shard-count N")
        if tasks is not None and tasks != count:
            raise ShardError(f"the job array has {tasks} tasks but {count} shards were asked for")
        if (task - first) % step:
            raise ShardError(f"SLURM_ARRAY_TASK_ID={task} is not in an array of step {step} from {first}")
        return checked((task - first) // step, count,
                       f"SLURM_ARRAY_TASK_ID={task} (use a job array like --array=0-{count - 1})")
    index = _number(env, "JOB_COMPLETION_INDEX")
    if index is not None:
        if count is None:
            raise ShardError(f"JOB_COMPLETION_INDEX is set, but not the number of shards: give --shard-count N "
                             f"or set {SHARD_COUNT_ENV} to the Job's completions")
        return checked(index, count, f"JOB_COMPLETION_INDEX={index}")
    raise ShardError("--shard auto: neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor JOB_COMPLETION_INDEX (a "
                     "Kubernetes Indexed Job) is set; give --shard K/N")


def folder_name(index: int, count: int) -> str:
    return f"shard-{index}-of-{count}"


def _digest(paths) -> str:
    h = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        data = path.read_bytes()
        h.update(f"{path.name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def grader_digest() -> str:
    """SHA-256 of the grader's code (course_lib's .py files)."""
    return _digest(Path(grading.__file__).resolve().parent.glob("*.py"))


def write_manifest(out_dir: Path, shard: tuple[int, int], students: list[str], lessons) -> list[str]:
    """Write out_dir/shard.json for shard K of N of `students` (the whole class); returns the shard's students."""
    index, count = checked(*shard, "shard")
    mine = [s for s in students if shard_of(s, count) == index]
    manifest = {"format": FORMAT, "shard_index": index, "shard_count": count, "students": mine, "class": students,
                "lessons": [l.name for l in lessons], "columns": [list(c) for c in grading.grade_columns(lessons)],
                "source_digest": _digest([l.path for l in lessons]), "grader_digest": grader_digest(),
                "host": socket.gethostname()}
    atomic_write_text(Path(out_dir) / MANIFEST, json.dumps(manifest, indent=1) + "\n")  # ASCII: \udcxx kept exact
    return mine


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise ShardError(f"{folder}: no such folder")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardError(f"{folder} is not a shard folder (no {MANIFEST}): grade it with --shard K/N") from None
    except (OSError, ValueError) as e:
        raise ShardError(f"{path} cannot be read ({type(e).__name__}: {e})") from None
    kinds = {"shard_index": int, "shard_count": int, "students": list, "class": list, "lessons": list,
             "columns": list, "source_digest": str, "grader_digest": str}
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or any(
            not isinstance(manifest.get(k), kind) for k, kind in kinds.items()) or not all(
            _plain_name(s) for s in manifest["students"] + manifest["class"] + manifest["lessons"]) or not all(
            isinstance(c, list) and len(c) == 3 and isinstance(c[0], str) and isinstance(c[1], str)
            and isinstance(c[2], (int, float)) for c in manifest["columns"]):
        raise ShardError(f"{path} is not a shard manifest this grader wrote (format {FORMAT})")
    checked(manifest["shard_index"], manifest["shard_count"], str(path))
    manifest["folder"] = Path(folder)
    return manifest


def _plain_name(name) -> bool:
    """A folder name: a student's or a lesson's, never a path."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _names(students, limit: int = NAMES_SHOWN) -> str:
    students = list(students)
    shown = ", ".join(grading.shown_name(s) for s in students[:limit])
    return shown + (f" and {len(students) - limit} more" if len(students) > limit else "")


def _agree(manifests: list[dict]) -> None:
    """ShardError unless the shards come from one class, one source, one grader and one N, each given once,
    no student in two."""
    first = manifests[0]
    for key, what in (("shard_count", "a different number of shards"), ("source_digest", "different lesson sources"),
                      ("grader_digest", "a different version of the grader"), ("class", "a different submitted/ folder"),
                      ("lessons", "different lessons"), ("columns", "different exercises")):
        for m in manifests[1:]:
            if m[key] != first[key]:
                raise ShardError(f"{m['folder']} and {first['folder']} were graded with {what}: merge only the "
                                 "shards of one `grade --shard K/N` run (same checkout, source/ and submitted/)")
    seen, twice = {}, []
    for m in manifests:
        if m["shard_index"] in seen:
            twice.append(f"shard {m['shard_index']}/{m['shard_count']} is given twice ({seen[m['shard_index']]} and "
                         f"{m['folder']})")
        seen[m["shard_index"]] = m["folder"]
    owner, overlap = {}, []
    for m in manifests:
        for student in m["students"]:
            if student in owner:
                overlap.append(f"{grading.shown_name(student)} ({owner[student]} and {m['folder']})")
            owner[student] = m["folder"]
    if overlap:
        twice.insert(0, f"{len(overlap)} student(s) are in more than one shard folder: "
                        f"{', '.join(overlap[:NAMES_SHOWN])}{' ...' if len(overlap) > NAMES_SHOWN else ''}")
    if twice:
        raise ShardError(f"{'; '.join(twice)}. Nothing was merged: give each shard's folder once")


def _results(folder: Path, student: str, lessons: list[str]) -> tuple[list, list[str]]:
    """(the student's Results in a shard folder, one per lesson found, problems with any unreadable one)."""
    found, problems = [], []
    for lesson in lessons:
        path = folder / "results" / student / f"{lesson}.json"
        if not path.exists():
            continue
        try:
            result = grading.Result.from_dict(json.loads(path.read_text(encoding="utf-8")), student)
            if result.lesson != lesson:
                raise ValueError(f"it holds lesson {result.lesson!r}")
            found.append(result)
        except (OSError, ValueError) as e:
            problems.append(f"{path}: {e}")
    return found, problems


def _copy(source: Path, target: Path) -> None:
    if source.is_file():
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    elif target.is_file():  # from an earlier merge: the shard no longer has it
        target.unlink()


def _copy_student(folder: Path, student: str, out_dir: Path) -> None:
    """The student's files of one shard folder into out_dir, replacing what an earlier merge left there."""
    for sub in PER_STUDENT_FILES:
        _copy(folder / sub / f"{student}.md", out_dir / sub / f"{student}.md")
    for sub in PER_STUDENT_FOLDERS:
        names = {p.name for d in (folder / sub / student, out_dir / sub / student) if d.is_dir() for p in d.iterdir()}
        for name in sorted(names):
            _copy(folder / sub / student / name, out_dir / sub / student / name)


def merge(shard_dirs: list[Path], out_dir: Path) -> int:
    """Merge shard folders into out_dir: grades.csv (byte for byte what one unsharded `grade` writes, rebuilt
    from the shards' results), each student's results, feedback, advisories and executed notebooks, and
    merged.json. Refuses (ShardError, nothing written) folders that are no shards, or that do not belong
    together, or that share a student. Returns 0 when every student of the class is in, else 1 after saying
    who is missing (a shard not given, or a student whose shard has not finished)."""
    manifests = sorted((read_manifest(Path(d)) for d in shard_dirs), key=lambda m: m["shard_index"])
    if not manifests:
        raise ShardError("no shard folders given")
    _agree(manifests)
    out_dir = Path(out_dir)
    if (out_dir / MANIFEST).exists() or any(out_dir.resolve() == m["folder"].resolve() for m in manifests):
        raise ShardError(f"{out_dir} is a shard folder: merge into another one")
    first = manifests[0]
    lessons, count = first["lessons"], first["shard_count"]
    results, incomplete, not_graded = {}, [], []
    for m in manifests:
        for student in m["students"]:
            found, problems = _results(m["folder"], student, lessons)
            for problem in problems:
                print(f"unreadable result: {problem}", file=sys.stderr)
            results[student] = found
            if len(found) < len(lessons):
                absent = sorted(set(lessons) - {r.lesson for r in found})
                incomplete.append(f"{grading.shown_name(student)} ({m['folder']}: no result for {', '.join(absent)})")
            not_graded += [f"{grading.shown_name(student)}/{r.lesson}: {r.not_graded}" for r in found if r.not_graded]
            _copy_student(m["folder"], student, out_dir)
    ordered = dict(sorted(results.items()))  # the order `grade` lists student folders in
    columns = [tuple(c) for c in first["columns"]]
    atomic_write_text(out_dir / "grades.csv", grading.grades_table(ordered, columns, len(lessons)))
    absent_shards = sorted(set(range(count)) - {m["shard_index"] for m in manifests})
    missing = [s for s in first["class"] if s not in results]
    atomic_write_text(out_dir / MERGED, json.dumps({
        "format": FORMAT, "shard_count": count, "merged": [str(m["folder"]) for m in manifests],
        "absent_shards": absent_shards, "students": len(results), "missing": missing,
        "incomplete": incomplete}, indent=1) + "\n")
    print(f"merged {len(manifests)} of {count} shard(s): {len(results)} student(s) in {out_dir / 'grades.csv'}, "
          f"feedback in {out_dir / 'feedback'}")
    for line in not_graded:
        print(f"NOT GRADED: {line}; grade it again", file=sys.stderr)
    if missing:
        print(f"MISSING: shard(s) {', '.join(map(str, absent_shards))} of {count} were not given, so {len(missing)} "
              f"student(s) are not in grades.csv: {_names(missing)}. Grade them with `grade --shard K/{count}` "
              "and merge again", file=sys.stderr)
    if incomplete:
        print(f"INCOMPLETE: {len(incomplete)} student(s) have lessons without a result, so no grades.csv row (their "
              f"shard is still running, or stopped: grade it again): {'; '.join(incomplete[:NAMES_SHOWN])}"
              f"{' ...' if len(incomplete) > NAMES_SHOWN else ''}", file=sys.stderr)
    return 1 if missing or incomplete else 0
