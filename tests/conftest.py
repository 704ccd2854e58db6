"""Tests never download: COURSE_OFFLINE=1, and each test gets its own empty data dir."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from course_lib import config, data, train

os.environ[config.OFFLINE_ENV] = "1"
# fp32 on the CPU unless a test asks for bf16: whether bf16 is faster is timed per process, and a loaded machine could
# answer differently in two processes whose numbers a test compares (bf16: tests/test_train.py)
os.environ.setdefault(train.CPU_BF16_ENV, "0")
torch.set_num_threads(config.torch_threads())  # course.py test shares the cores out between xdist workers

SHARED_CIFAR10 = config.PROJECT_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def real_cifar10_path() -> Path | None:
    """The real CIFAR-10 copy: COURSE_CIFAR10, else ../shared/data/cifar10-jpeg.tar.gz."""
    env = os.environ.get(data.CIFAR10_ENV)
    if env and Path(env).exists():
        return Path(env)
    return SHARED_CIFAR10 if SHARED_CIFAR10.exists() else None


REAL_CIFAR10 = real_cifar10_path()  # read before any test's environment is isolated
# the run's own data folder (course.py test makes a throwaway one, which nbval's kernels use): read before any
# test's environment is isolated, so the browser test shares the decoded CIFAR-10 and source model with nbval
RUN_DATA_DIR = os.environ.get(config.DATA_DIR_ENV)


# the files that take longest, slowest first: started first, so two workers end together
SLOWEST_FIRST = ("test_grading_lessons.py", "test_browser.py", "test_grading_attacks.py", "02_transfer_learning.ipynb",
                 "test_grading.py", "03_cifar10_resnet18.ipynb", "test_pipeline.py", "test_grading_slots.py",
                 "test_grading_forgery.py", "test_grading_shards.py")


def pytest_collection_modifyitems(config, items):
    """course.py test runs two pytest-xdist workers, each taking a whole file at a time (`--dist loadfile`: a
    notebook's cells share one kernel, a module's fixtures are built once) in this order. The browser test
    and nbval's lesson runs may overlap: both fill the test run's data folder, atomically."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv(config.DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.delenv(data.CIFAR10_ENV, raising=False)
    monkeypatch.delenv(config.DEVICE_ENV, raising=False)
    monkeypatch.delenv(config.SHARED_DATA_ENV, raising=False)
    return tmp_path / "data"


@pytest.fixture(scope="session")
def cifar10_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cifar10-data")


@pytest.fixture
def cifar10(cifar10_cache_dir, monkeypatch):
    """The real CIFAR-10 (decoded once per session into a shared cache), or a skip saying why."""
    path = REAL_CIFAR10
    if path is None:
        pytest.skip(f"real CIFAR-10 copy not found: set {data.CIFAR10_ENV} or place it at {SHARED_CIFAR10}")
    monkeypatch.setenv(config.DATA_DIR_ENV, str(cifar10_cache_dir))
    return data.load_cifar10(path, progress=False)
