import importlib.util
from pathlib import Path

import pytest

from course_lib import config, data


def load_course_script():
    spec = importlib.util.spec_from_file_location("course_script", config.PROJECT_ROOT / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


course = load_course_script()


def test_tests_get_a_throwaway_data_folder_but_the_learners_cifar10(tmp_path):
    learner = tmp_path / "learner-data"
    (learner / "cifar10").mkdir(parents=True)
    (learner / "cifar-10-python.tar.gz").write_bytes(b"")
    env = course.environment_for_tests({"COURSE_DATA_DIR": str(learner), "HOME": "/home/me"}, tmp_path / "throwaway")
    assert env["COURSE_DATA_DIR"] == str(tmp_path / "throwaway")
    assert env["COURSE_CIFAR10"] == str(learner / "cifar-10-python.tar.gz")  # the torchvision copy comes first
    assert (env["COURSE_FAST"], env["COURSE_OFFLINE"], env["MPLBACKEND"], env["HOME"]) == ("1", "1", "Agg", "/home/me")


def test_an_explicit_cifar10_is_kept_and_a_missing_one_stays_missing(tmp_path):
    (tmp_path / "cifar10").mkdir()
    env = course.environment_for_tests({"COURSE_DATA_DIR": str(tmp_path), "COURSE_CIFAR10": "/elsewhere/c.tar.gz"},
                                       tmp_path / "throwaway")
    assert env["COURSE_CIFAR10"] == "/elsewhere/c.tar.gz"
    env = course.environment_for_tests({"COURSE_DATA_DIR": str(tmp_path / "empty")}, tmp_path / "throwaway")
    assert "COURSE_CIFAR10" not in env


def test_without_course_data_dir_the_projects_data_folder_is_searched(tmp_path, monkeypatch):
    monkeypatch.setattr(course, "ROOT", tmp_path / "project")
    (tmp_path / "project" / "data").mkdir(parents=True)
    (tmp_path / "project" / "data" / "cifar10-jpeg.tar.gz").write_bytes(b"")
    env = course.environment_for_tests({}, tmp_path / "throwaway")
    assert env["COURSE_CIFAR10"] == str(tmp_path / "project" / "data" / "cifar10-jpeg.tar.gz")


def test_course_script_looks_for_the_same_cifar10_copies_as_the_library():
    assert course.LOCAL_CIFAR10_NAMES == data.LOCAL_CIFAR10_NAMES


def test_the_throwaway_data_folder_is_removed_after_the_run(monkeypatch):
    seen = {}

    def fake_run(cmd, cwd, env):
        folder = Path(env["COURSE_DATA_DIR"])
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "written-by-a-test.pt").write_bytes(b"")
        seen["folder"] = folder
        return 3

    monkeypatch.setattr(course, "install", lambda: None)
    monkeypatch.setattr(course.subprocess, "call", fake_run)
    assert course.test([]) == 3
    assert seen["folder"] != config.PROJECT_ROOT / "data" and not seen["folder"].exists()


def test_the_cores_are_shared_out_between_the_test_workers_unless_threads_are_set(tmp_path, monkeypatch):
    monkeypatch.setattr(course.os, "cpu_count", lambda: 8)
    assert course.environment_for_tests({}, tmp_path, workers=2)["COURSE_THREADS"] == "4"
    assert course.environment_for_tests({}, tmp_path)["COURSE_THREADS"] == "8"
    assert course.environment_for_tests({"COURSE_THREADS": "1"}, tmp_path, workers=2)["COURSE_THREADS"] == "1"
    monkeypatch.setattr(course.os, "cpu_count", lambda: 1)
    assert course.test_workers() == 1 and course.environment_for_tests({}, tmp_path, workers=1)["COURSE_THREADS"] == "1"


@pytest.mark.parametrize("args,expected", [([], ["tests", "source"]), (["-k", "data"], ["tests", "source"]),
                                           (["tests/test_data.py"], []), (["tests/test_data.py::test_x", "-x"], [])])
def test_paths_given_to_the_test_command_run_alone(monkeypatch, args, expected):
    seen = {}
    monkeypatch.setattr(course, "install", lambda: None)
    monkeypatch.setattr(course.subprocess, "call", lambda cmd, cwd, env: seen.setdefault("cmd", cmd) and 0)
    course.test(args)
    after_pytest = seen["cmd"][seen["cmd"].index("pytest") + 1:]
    assert after_pytest[:len(expected)] == expected and ("tests" in after_pytest) == bool(expected)
    assert all(a in after_pytest for a in args)
