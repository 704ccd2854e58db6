"""The header line every file in benchmarks/results/ starts with: how it was run, when, and on what, so a
figure quoted in the documentation (benchmarks/README.md) never loses the machine that produced it."""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command() -> str:
    """The command line that ran this script, as a user would type it from the repository root."""
    return " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def header(device: torch.device, threads: int) -> str:
    """'Measured by `<command>` on <date>: <CPU>, <threads>, <torch>, <device>' (no final full stop)."""
    name = f"cuda ({torch.cuda.get_device_name()})" if device.type == "cuda" else device.type
    return (f"Measured by `{command()}` on {time.strftime('%Y-%m-%d')}: {cpu_model()}, "
            f"{threads} torch thread(s), torch {torch.__version__}, device {name}")


def load_note(load_before: float) -> str:
    """The 1-minute load average before and after a run: other jobs on the same machine take cores away from the
    processes timed, and a reader of the results should see whether they did."""
    return (f"the machine's 1-minute load average was {load_before:.1f} before the run and {os.getloadavg()[0]:.1f} "
            f"after it (on {os.cpu_count()} logical CPUs: above that, other jobs were taking cores from the processes "
            "timed)")
