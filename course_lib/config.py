"""Course-wide settings, each read from the environment in exactly one place.

COURSE_FAST=1        fast mode: lessons shrink data and epochs but run the same code (CI uses it).
COURSE_DEVICE=cpu    force a device (cpu, cuda, cuda:1, mps); default: CUDA, then MPS, then CPU.
COURSE_DATA_DIR=...  where datasets, caches and checkpoints land; default: the project's data/.
COURSE_OFFLINE=1     never try to download (tests and CI set it).
COURSE_SHARED_DATA   a read-only folder of prepared files (a grader's decoded CIFAR-10 and fast-mode source model).
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

FAST_ENV = "COURSE_FAST"
DEVICE_ENV = "COURSE_DEVICE"
DATA_DIR_ENV = "COURSE_DATA_DIR"
OFFLINE_ENV = "COURSE_OFFLINE"
THREADS_ENV = "COURSE_THREADS"
SHARED_DATA_ENV = "COURSE_SHARED_DATA"

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def fast_mode() -> bool:
    """True when COURSE_FAST is set: smaller data, fewer epochs, same code paths."""
    return _flag(FAST_ENV)


def offline() -> bool:
    """True when downloads must not be attempted (COURSE_OFFLINE=1)."""
    return _flag(OFFLINE_ENV)


def pick(normal, fast):
    """The value for the current mode: `normal` in a full run, `fast` under COURSE_FAST."""
    return fast if fast_mode() else normal


def get_device(override: str | None = None) -> torch.device:
    """CUDA, then Apple MPS, then CPU; `override` or COURSE_DEVICE wins when given."""
    wanted = override or os.environ.get(DEVICE_ENV, "").strip()
    if wanted:
        device = torch.device(wanted)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"{DEVICE_ENV}={wanted!r} asks for CUDA, but torch sees no CUDA device. "
                f"Unset {DEVICE_ENV} to use the CPU, or install a CUDA build of torch."
            )
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"{DEVICE_ENV}={wanted!r} asks for MPS, which is not available here.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def data_dir() -> Path:
    """Datasets, caches and checkpoints: COURSE_DATA_DIR, else the project's data/ folder."""
    path = Path(os.environ.get(DATA_DIR_ENV) or PROJECT_ROOT / "data").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_data_dir() -> Path | None:
    """COURSE_SHARED_DATA, a read-only folder laid out like data_dir(): a grader prepares the decoded
    CIFAR-10 and the fast-mode source model there once, so that no sandbox repeats minutes of the same work."""
    given = os.environ.get(SHARED_DATA_ENV, "").strip()
    return Path(given) if given else None


def checkpoint_path(name: str) -> Path:
    """data_dir()/checkpoints/<name>.pt, or <name>-fast.pt in fast mode: a fast-mode run (tests, CI, a
    quick check) must never replace the checkpoint of a learner's normal-mode run."""
    suffix = "-fast" if fast_mode() else ""
    return data_dir() / "checkpoints" / f"{name}{suffix}.pt"


def torch_threads() -> int:
    """CPU threads for torch: COURSE_THREADS if set (e.g. 1, to see what a slower machine would take),
    else the physical cores, shared out between the processes torchrun started on this machine."""
    from .distributed import processes_per_machine

    given = os.environ.get(THREADS_ENV, "").strip()
    if given:
        if not given.isdigit() or int(given) < 1:
            raise ValueError(f"{THREADS_ENV}={given!r}: give a whole number of threads, 1 or more")
        return int(given)
    return max(1, physical_cores() // processes_per_machine())


def physical_cores() -> int:
    """Physical cores: hyper-threads slow CPU convolutions down rather than up."""
    cores, phys = set(), None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    cores.add((phys, line.split(":")[1].strip()))
    except OSError:
        pass
    return len(cores) or os.cpu_count() or 1


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed python, numpy and torch (and CUDA); returns a torch Generator for loaders."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def setup(seed: int = 0, device: str | None = None, quiet: bool = False) -> torch.device:
    """A lesson's setup cell: seed, pick the device, set CPU threads, print a summary."""
    seed_everything(seed)
    dev = get_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(torch_threads())
    if not quiet:
        print(summary(dev))
    return dev


def summary(device: torch.device | None = None) -> str:
    """One short block of facts a learner should see before a lesson starts."""
    import torchvision

    dev = device or get_device()
    name = dev.type
    if dev.type == "cuda":
        name = f"cuda ({torch.cuda.get_device_name(dev)})"
    lines = [
        f"torch {torch.__version__}, torchvision {torchvision.__version__}",
        f"device: {name}   CPU threads: {torch.get_num_threads()}",
        f"fast mode: {'ON (' + FAST_ENV + '=1)' if fast_mode() else 'off'}",
        f"data dir: {data_dir()}",
    ]
    if dev.type == "cpu":  # training and evaluation numbers differ slightly between the two: say which this run uses
        from .train import CPU_BF16_ENV, cpu_bf16_faster

        lines.append(f"autocast on this CPU: {'bf16 (a one-second trial found it faster)' if cpu_bf16_faster() else 'off, fp32'}"
                     f"; {CPU_BF16_ENV}=0 or 1 decides instead")
    return "\n".join(lines)
