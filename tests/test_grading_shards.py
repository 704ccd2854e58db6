"""Grading a class on several machines and asking whether grading can work here (issue #30, items 3 and 4).

Shards split the class by a stable hash of each student folder's name; two shards merged give grades.csv byte
for byte as one unsharded run; a student in two shard folders is refused, a shard not given is reported; the
shard index comes from a Slurm job array or a Kubernetes Indexed Job. The doctor gives one line per check and
a verdict, with a non-zero exit and no traceback when grading cannot work. Grading here runs the tiny lesson
of test_grading_attacks unsandboxed (trusted notebooks), so it needs neither root nor bubblewrap."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("nbgrader", reason="instructor tools not installed: python3 course.py install --instructor")
from course_lib import config, doctor, grading, sandbox, shards  # noqa: E402
from test_grading_attacks import FULL, STEP_ONLY, submission  # noqa: E402
from test_grading_slots import write_batch  # noqa: E402

ODD = os.fsdecode(b"caf\xe9")  # a folder name that is not UTF-8
SCHEDULER_ENV = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP", "SLURM_ARRAY_TASK_COUNT",
                 "JOB_COMPLETION_INDEX", shards.SHARD_COUNT_ENV)


def a_class(root):
    """ana and dan submit (one run each); -h's notebook is unreadable and two folders are empty (no run)."""
    write_batch(root, {"ana": submission(), "dan": submission(converging_lr="my_lr = 0.5\n")})
    (root / "submitted" / "-h").mkdir()
    (root / "submitted" / "-h" / "tiny.ipynb").write_text("not a notebook")
    for empty in (ODD, "kim"):
        (root / "submitted" / empty).mkdir()
    return ["-h", "ana", ODD, "dan", "kim"]


def grade(root, *options) -> int:
    return grading.main(["grade", "--no-sandbox", "--timeout", "60", "--source", str(root / "source"), *options,
                         str(root / "submitted")])


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class graded once whole and once as shards 0/2 and 1/2."""
    root = tmp_path_factory.mktemp("shards")
    students = a_class(root)
    assert shards.shard_of("ana", 2) != shards.shard_of("dan", 2)  # each shard runs a notebook
    assert grade(root, "--out", str(root / "whole")) == 0
    for k in (0, 1):
        assert grade(root, "--shard", f"{k}/2", "--out", str(root / "grades")) == 0
    return {"root": root, "students": students,
            "shards": [root / "grades" / shards.folder_name(k, 2) for k in (0, 1)]}


def files(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_students_shard_is_stable_and_the_shards_partition_the_class():
    assert shards.shard_of("ana", 1000) == 18 and shards.shard_of("dan", 1000) == 605  # SHA-256, not hash()
    assert shards.shard_of(ODD, 2) == 0  # bytes that are not UTF-8 are hashed as they are
    names = [f"student{i:03d}" for i in range(200)] + [ODD, "-h"]
    parts = [[s for s in names if shards.shard_of(s, 3) == k] for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(names) and all(parts)
    assert shards.parse_shard("1/4") == (1, 4)
    for wrong in ("4/4", "1", "-1/4", "0/0", "a/b"):
        with pytest.raises(shards.ShardError):
            shards.parse_shard(wrong)


def test_two_shards_merged_equal_one_unsharded_run(graded, capsys):
    root = graded["root"]
    manifests = [json.loads((folder / shards.MANIFEST).read_text()) for folder in graded["shards"]]
    assert [m["shard_index"] for m in manifests] == [0, 1] and manifests[0]["class"] == graded["students"]
    assert sorted(manifests[0]["students"] + manifests[1]["students"]) == sorted(graded["students"])
    assert all(shards.shard_of(s, 2) == m["shard_index"] for m in manifests for s in m["students"])
    assert grading.main(["merge", *map(str, graded["shards"]), "--out", str(root / "merged")]) == 0
    assert "merged 2 of 2 shard(s): 5 student(s)" in capsys.readouterr().out
    whole, merged = root / "whole", root / "merged"
    assert (merged / "grades.csv").read_bytes() == (whole / "grades.csv").read_bytes()
    rows = (whole / "grades.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["student", "'-h", "ana", "caf\\xe9", "dan", "kim"]
    for sub in ("feedback", "advisories"):
        assert files(merged / sub) == files(whole / sub)
    for sub in ("results", "autograded"):  # each run took its own time: the same files
        assert files(merged / sub).keys() == files(whole / sub).keys()
    ana = json.loads((merged / "results" / "ana" / "tiny.json").read_text())
    assert ana["scores"] == FULL and json.loads((merged / "results" / "dan" / "tiny.json").read_text())["scores"] == STEP_ONLY
    assert (merged / "results" / ODD / "tiny.json").exists()  # a lesson with nothing to run has its result too


def test_a_student_in_two_shard_folders_is_refused(graded, capsys):
    root = graded["root"]
    again = root / "again"
    shutil.copytree(graded["shards"][0], again)
    out = root / "overlap"
    assert grading.main(["merge", *map(str, graded["shards"]), str(again), "--out", str(out)]) == 2
    said = capsys.readouterr().err
    assert "merge refused:" in said and "more than one shard folder" in said and "ana" in said
    assert "shard 0/2 is given twice" in said and "Traceback" not in said
    assert not out.exists()  # nothing written


def test_a_shard_not_given_or_not_finished_is_reported(graded, capsys):
    root = graded["root"]
    one = next(f for f in graded["shards"] if "dan" in json.loads((f / shards.MANIFEST).read_text())["students"])
    assert grading.main(["merge", str(one), "--out", str(root / "half")]) == 1
    said = capsys.readouterr().err
    absent = [s for s in graded["students"] if shards.shard_of(s, 2) != shards.shard_of("dan", 2)]
    assert f"MISSING: shard(s) {shards.shard_of('ana', 2)} of 2 were not given, so {len(absent)} student(s)" in said
    assert "ana" in said and "dan" not in said.split("MISSING")[1]
    assert "ana" not in (root / "half" / "grades.csv").read_text()
    assert json.loads((root / "half" / shards.MERGED).read_text())["missing"] == absent
    stopped = root / "stopped"
    shutil.copytree(one, stopped)
    (stopped / "results" / "dan" / "tiny.json").unlink()  # as if the shard stopped before dan was graded
    assert shards.merge([graded["shards"][0] if one == graded["shards"][1] else graded["shards"][1], stopped],
                        root / "stopped-merged") == 1
    assert "INCOMPLETE: 1 student(s)" in capsys.readouterr().err
    assert "dan," not in (root / "stopped-merged" / "grades.csv").read_text()


def test_folders_from_another_run_are_refused(graded, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(graded["shards"][1], other)
    manifest = json.loads((other / shards.MANIFEST).read_text())
    manifest["source_digest"] = "0" * 64
    (other / shards.MANIFEST).write_text(json.dumps(manifest))
    assert grading.main(["merge", str(graded["shards"][0]), str(other), "--out", str(tmp_path / "m")]) == 2
    assert "different lesson sources" in capsys.readouterr().err
    assert grading.main(["merge", str(graded["root"] / "whole"), "--out", str(tmp_path / "m")]) == 2
    assert "is not a shard folder" in capsys.readouterr().err


def test_the_shard_comes_from_a_slurm_array_or_a_kubernetes_indexed_job(tmp_path, monkeypatch, capsys):
    slurm = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert shards.shard_from_env(slurm) == (2, 4)  # --array=1-4: counted from its first task
    assert shards.shard_from_env({"JOB_COMPLETION_INDEX": "0", shards.SHARD_COUNT_ENV: "3"}) == (0, 3)
    assert shards.shard_from_env({"JOB_COMPLETION_INDEX": "2"}, count=3) == (2, 3)
    for env in ({"JOB_COMPLETION_INDEX": "2"}, {"JOB_COMPLETION_INDEX": "3", shards.SHARD_COUNT_ENV: "3"}, {},
                {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}):
        with pytest.raises(shards.ShardError):
            shards.shard_from_env(env)
    write_batch(tmp_path, {})
    for name in ("ana", "ben", "dan"):  # no notebooks: nothing runs
        (tmp_path / "submitted" / name).mkdir(parents=True)
    for name in SCHEDULER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert grade(tmp_path, "--shard", "auto", "--out", str(tmp_path / "grades")) == 0
    assert json.loads((tmp_path / "grades" / "shard-1-of-2" / shards.MANIFEST).read_text())["students"] == ["dan"]
    for name in SCHEDULER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    assert grade(tmp_path, "--shard", "auto", "--out", str(tmp_path / "grades")) == 2
    assert "give --shard-count N" in capsys.readouterr().err
    assert grade(tmp_path, "--shard", "auto", "--shard-count", "2", "--out", str(tmp_path / "grades")) == 0
    assert json.loads((tmp_path / "grades" / "shard-0-of-2" / shards.MANIFEST).read_text())["students"] == ["ana", "ben"]
    assert shards.merge([tmp_path / "grades" / f"shard-{k}-of-2" for k in (0, 1)], tmp_path / "grades") == 0
    assert (tmp_path / "grades" / "grades.csv").read_text().splitlines()[1:] == \
        [f"{s},0,0,0,4" for s in ("ana", "ben", "dan")]


def test_the_doctor_says_what_to_fix_and_exits_non_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "bubblewrap_problem",
                        lambda: "bwrap cannot create a sandbox here: bwrap: No permissions to create new namespace")

    def broken(path):
        raise OSError("the disk went away")

    monkeypatch.setattr(doctor.shutil, "disk_usage", broken)
    assert grading.main(["doctor", "--out", str(tmp_path / "grades")]) == 1
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == len(doctor.all_checks(grading.SOURCE_DIR, tmp_path)) + 1  # one line per check, a verdict
    bubblewrap = next(line for line in lines if line.split()[1:2] == ["bubblewrap:"])
    assert bubblewrap.startswith("PROBLEM") and "No permissions" in bubblewrap and "Fix: grade on a Linux VM" in bubblewrap
    disk = next(line for line in lines if "free disk:" in line)
    assert disk.startswith("PROBLEM") and "the check itself failed (OSError: the disk went away)" in disk
    assert lines[-1].startswith("verdict: grading a class cannot work here") and "bubblewrap" in lines[-1]
    assert "Traceback" not in out.out + out.err


def test_the_doctor_in_a_sandbox_that_forbids_namespaces(tmp_path):
    """As the issue asks: under `bwrap --disable-userns`, a clear verdict, no traceback."""
    problem = sandbox.bubblewrap_problem()
    if problem and not os.environ.get("CI"):
        pytest.skip(f"bubblewrap cannot run here: {problem}")  # in CI, this fails loudly instead
    if "--disable-userns" not in subprocess.run(["bwrap", "--help"], capture_output=True, text=True).stdout:
        pytest.skip("bubblewrap before 0.8 has no --disable-userns")
    env = {**os.environ, "PYTHONPATH": str(config.PROJECT_ROOT)}
    done = subprocess.run(["bwrap", "--dev-bind", "/", "/", "--unshare-user", "--disable-userns", "--",
                           sys.executable, "-m", "course_lib.grading", "doctor", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=config.PROJECT_ROOT, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    namespaces = next(line for line in done.stdout.splitlines() if "user namespaces:" in line)
    assert namespaces.startswith("PROBLEM") and "Fix:" in namespaces
    assert done.stdout.splitlines()[-1].startswith("verdict: grading a class cannot work here")
