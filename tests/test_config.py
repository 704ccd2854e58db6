import re
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import config

ROOT = config.PROJECT_ROOT


def test_device_override(monkeypatch):
    monkeypatch.setenv(config.DEVICE_ENV, "cpu")
    assert config.get_device() == torch.device("cpu")
    assert config.get_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="only meaningful without CUDA")
def test_cuda_override_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(config.DEVICE_ENV, "cuda")
    with pytest.raises(RuntimeError, match="Unset COURSE_DEVICE"):
        config.get_device()


def test_default_device_prefers_cuda():
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert config.get_device().type == expected


def test_seeding_reproduces_python_numpy_torch_and_loader_rng():
    def draw():
        g = config.seed_everything(123)
        import random
        return (random.random(), np.random.rand(), torch.rand(3).tolist(), torch.randperm(10, generator=g).tolist())

    assert draw() == draw()
    config.seed_everything(124)
    assert torch.rand(3).tolist() != (config.seed_everything(123), torch.rand(3).tolist())[1]


def test_fast_mode_and_pick(monkeypatch):
    monkeypatch.setenv(config.FAST_ENV, "1")
    assert config.fast_mode() and config.pick(100, 3) == 3
    monkeypatch.setenv(config.FAST_ENV, "0")
    assert not config.fast_mode() and config.pick(100, 3) == 100


def test_data_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv(config.DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    assert config.data_dir() == tmp_path / "elsewhere" and config.data_dir().is_dir()
    monkeypatch.delenv(config.DATA_DIR_ENV)
    assert config.data_dir() == ROOT / "data"


def test_fast_mode_checkpoints_never_replace_normal_ones(monkeypatch, tmp_path):
    monkeypatch.setenv(config.DATA_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(config.FAST_ENV, raising=False)
    assert config.checkpoint_path("lesson3") == tmp_path / "checkpoints" / "lesson3.pt"
    monkeypatch.setenv(config.FAST_ENV, "1")
    assert config.checkpoint_path("lesson3") == tmp_path / "checkpoints" / "lesson3-fast.pt"


def test_summary_names_the_essentials(monkeypatch):
    monkeypatch.setenv(config.FAST_ENV, "1")
    text = config.summary(torch.device("cpu"))
    for word in ("torch", "device: cpu", "fast mode: ON", "data dir"):
        assert word in text


def test_summary_says_whether_the_cpu_trains_in_bf16(monkeypatch):
    from course_lib import train

    for flag, said in (("1", "autocast on this CPU: bf16"), ("0", "autocast on this CPU: off, fp32")):
        monkeypatch.setenv(train.CPU_BF16_ENV, flag)
        train.cpu_bf16_faster.cache_clear()
        assert said in config.summary(torch.device("cpu"))
    train.cpu_bf16_faster.cache_clear()


def _names(lines):
    out = set()
    for line in lines:
        line = line.split("#")[0].strip().lstrip("- ").strip()
        m = re.match(r"[A-Za-z0-9_.\-]+", line)
        if m:
            out.add(m.group(0).lower())
    return out


def test_requirements_and_environment_name_the_same_packages():
    pip = _names((ROOT / "requirements.txt").read_text().splitlines())
    text = (ROOT / "environment.yml").read_text()
    deps = text.split("dependencies:")[1].splitlines()
    conda = _names(deps) - {"python", "pip"}
    conda = {"torch" if n == "pytorch" else n for n in conda}
    assert pip == conda, f"only in requirements.txt: {pip - conda}; only in environment.yml: {conda - pip}"


def test_requirements_admit_the_torch_on_this_disk():
    from packaging.requirements import Requirement
    reqs = {Requirement(l.split("#")[0]).name: Requirement(l.split("#")[0])
            for l in (ROOT / "requirements.txt").read_text().splitlines() if l.split("#")[0].strip()}
    assert reqs["torch"].specifier.contains("2.14.1")
    assert reqs["torchvision"].specifier.contains("0.29.1")


def test_course_threads_sets_torch_threads(monkeypatch):
    monkeypatch.setenv(config.THREADS_ENV, "1")
    assert config.torch_threads() == 1
    monkeypatch.delenv(config.THREADS_ENV)
    assert config.torch_threads() == config.physical_cores()
    monkeypatch.setenv(config.THREADS_ENV, "two")
    with pytest.raises(ValueError, match="whole number"):
        config.torch_threads()
