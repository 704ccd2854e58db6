"""Where a submission runs: a bubblewrap sandbox per notebook, under an unprivileged uid, with limits.

Inside, a submission sees the read-only system (/usr), the read-only venv, a read-only *copy* of
course_lib, its own job folder (its assembled notebook, read-only), the CIFAR-10 copy (read-only), and
a private tmpfs for /tmp, its home and its data folder. It has no network, its own process, IPC and
hostname namespaces, a new session (no terminal to push keystrokes into), and resource limits; it does
not see the project checkout, source/ (solutions and hidden tests), other submissions or the grades.
Killing the sandbox's bwrap kills everything started inside (--die-with-parent, a PID namespace).
Its only way out is its stdout, which the grader reads line by line with a size cap, as plain data
(course_lib.graded_session); the grader answers on its stdin.

When the grader runs as root, an outer bwrap first exposes the paths an unprivileged user may not enter
(such as a Python under /root) at /run/grader, then setpriv drops to the job slot's own uid (no account, no
capabilities; one uid per slot, so each slot has its own process limit), and the inner bwrap runs as that
user with --unshare-all. The sandbox's root (a tmpfs of mount points) is remounted read-only.
"""
from __future__ import annotations

import ast
import contextlib
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

SANDBOX_USER = "nobody"
SLOT_UID_BASE = 2_000_000_000  # slot n runs as uid (and gid) SLOT_UID_BASE + n: no account has these, and the
# kernel counts processes per uid, so each slot has its own process limit
NO_SANDBOX_HELP = ("grading runs each submission in a bubblewrap sandbox, which needs Linux with bubblewrap "
                   "installed (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap). "
                   "On a machine without it, `grade --no-sandbox` grades anyway WITHOUT ANY ISOLATION: "
                   "only for one trusted learner's own notebooks, never for a class")
REPORT_LIMIT = 32 * 2 ** 20  # bytes of a sandbox's report the grader reads; more is an overflow
STDERR_LIMIT = 64 * 2 ** 10


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot run here."""


@dataclass
class Limits:
    """Per-submission resource limits (prlimit): CPU seconds, address space, processes, file size."""

    cpu_seconds: int = 3600
    memory_bytes: int = 8 * 2 ** 30
    processes: int = 512
    file_bytes: int = 1 * 2 ** 30
    open_files: int = 1024
    tmpfs_bytes: int = 2 * 2 ** 30

    def prlimit(self) -> list[str]:
        return ["prlimit", f"--cpu={self.cpu_seconds}", f"--as={self.memory_bytes}", f"--nproc={self.processes}",
                f"--fsize={self.file_bytes}", f"--nofile={self.open_files}", "--core=0", "--"]


@dataclass
class Outcome:
    """How one sandboxed run ended: whether its output overflowed, its stderr tail, its exit status."""

    overflow: bool
    stderr: str
    returncode: int | None
    timed_out: bool
    seconds: float


@dataclass
class Sandbox:
    """Runs `python -m course_lib.graded_run` on a job folder; isolated unless `isolated` is False."""

    lib_dir: Path  # a folder holding a copy of the course_lib package
    cifar10: Path | None = None
    shared_data: Path | None = None  # read-only prepared files (config.shared_data_dir)
    isolated: bool = True
    limits: Limits = field(default_factory=Limits)
    threads: int = 1  # torch threads per notebook: the cores shared out between the sandboxes running at once
    slots: int = 1  # sandboxes that may run at once, each under its own uid (when the grader is root)

    def __post_init__(self):
        self._free = queue.Queue()
        for slot in range(self.slots):
            self._free.put(slot)

    def environment(self, job: Path) -> dict:
        from . import config, data

        private = Path("/tmp") if self.isolated else job / "private"  # a tmpfs in the sandbox
        home = private / "home"
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(self._lib_path()),
               "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(home), "USER": SANDBOX_USER,
               "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(home / "matplotlib"), "IPYTHONDIR": str(home / "ipython"),
               "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTER_PLATFORM_DIRS": "1",
               "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               config.THREADS_ENV: str(self.threads),  # what a lesson's config.setup() gives torch
               config.FAST_ENV: "1", config.OFFLINE_ENV: "1", config.DATA_DIR_ENV: str(private / "data")}
        if self.cifar10 is not None:
            env[data.CIFAR10_ENV] = self._cifar_path()
        if self.shared_data is not None:
            env[config.SHARED_DATA_ENV] = "/course/shared-data" if self.isolated else str(self.shared_data)
        return env

    def _lib_path(self) -> Path:
        return Path("/course/lib") if self.isolated else self.lib_dir

    def _cifar_path(self) -> str:
        return f"/course/cifar10/{self.cifar10.name}" if self.isolated else str(self.cifar10)

    def command(self, job: Path, slot: int = 0) -> list[str]:
        python = Path(sys.prefix) / "bin" / "python"
        run = [str(python), "-m", "course_lib.graded_run", str(Path("/course/job") if self.isolated else job)]
        if not self.isolated:
            return run
        root = os.geteuid() == 0
        outside = {"base": Path(sys.base_prefix).resolve(), "venv": Path(sys.prefix), "lib": self.lib_dir, "job": job}
        if self.cifar10 is not None:
            outside["cifar10"] = self.cifar10
        if self.shared_data is not None:
            outside["shared-data"] = self.shared_data
        seen = {name: (Path("/run/grader") / name if root else path) for name, path in outside.items()}
        inner = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--hostname", "sandbox",
                 *_system(), "--ro-bind", str(seen["base"]), str(outside["base"]),
                  "--ro-bind", str(seen["venv"]), str(outside["venv"]),
                  "--ro-bind", str(seen["lib"]), "/course/lib",
                  "--ro-bind", str(seen["job"]), "/course/job",
                  "--ro-bind", str(seen["job"] / "passwd"), "/etc/passwd",
                  "--proc", "/proc", "--dev", "/dev",
                  "--size", str(self.limits.tmpfs_bytes), "--tmpfs", "/tmp",
                  "--size", str(self.limits.tmpfs_bytes), "--tmpfs", "/dev/shm",
                  "--dir", "/tmp/home", "--dir", "/tmp/data", "--chdir", "/tmp", "--clearenv"]
        if self.cifar10 is not None:
            inner += ["--ro-bind", str(seen["cifar10"]), self._cifar_path()]
        if self.shared_data is not None:
            inner += ["--ro-bind", str(seen["shared-data"]), "/course/shared-data"]
        inner += ["--remount-ro", "/"]  # the root tmpfs (mount points only) has no size limit: nothing written there
        for key, value in self.environment(job).items():
            inner += ["--setenv", key, value]
        inner += ["--", *run]
        if not root:
            return self.limits.prlimit() + inner
        outer = ["bwrap", "--dev-bind", "/", "/", "--tmpfs", "/run/grader"]
        for name, path in outside.items():
            outer += ["--ro-bind", str(path), str(seen[name])]
        drop = ["setpriv", f"--reuid={SLOT_UID_BASE + slot}", f"--regid={SLOT_UID_BASE + slot}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        return outer + ["--"] + drop + self.limits.prlimit() + inner

    def prepare_job(self, job: Path, slot: int = 0) -> None:
        """Make the job folder readable by the sandbox's user, with the passwd file it sees."""
        uid, gid = (SLOT_UID_BASE + slot,) * 2 if os.geteuid() == 0 else (os.geteuid(), os.getegid())
        (job / "passwd").write_text(f"{SANDBOX_USER}:x:{uid}:{gid}::/tmp/home:/usr/sbin/nologin\n")
        if not self.isolated:
            for sub in ("home", "data"):
                (job / "private" / sub).mkdir(parents=True, exist_ok=True)
        for path in [job, *job.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)

    def run(self, job: Path, wall_seconds: float, on_line: Callable[[bytes], bytes | None]) -> Outcome:
        """Run the job, passing each line it writes to `on_line` and writing back what that returns; kill the
        whole sandbox after wall_seconds or when its output passes REPORT_LIMIT. It runs in a free slot."""
        slot = self._free.get()
        try:
            return self._run(job, wall_seconds, on_line, slot)
        finally:
            self._free.put(slot)

    def _run(self, job: Path, wall_seconds: float, on_line: Callable[[bytes], bytes | None], slot: int) -> Outcome:
        self.prepare_job(job, slot)
        env = None if self.isolated else {**self.environment(job)}
        start = time.monotonic()
        proc = subprocess.Popen(self.command(job, slot), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, env=env, cwd="/")
        errors = bytearray()
        overflow = threading.Event()

        def converse():
            read = 0
            while line := proc.stdout.readline(REPORT_LIMIT - read + 1):
                read += len(line)
                if read > REPORT_LIMIT:
                    overflow.set()
                    _kill(proc)
                    break
                reply = on_line(line)
                if reply is not None:
                    try:
                        proc.stdin.write(reply + b"\n")
                        proc.stdin.flush()
                    except OSError:
                        pass
            while proc.stdout.read(65536):  # drain, so nothing blocks on a full pipe
                pass

        def drain_errors():
            while chunk := proc.stderr.read(65536):
                if len(errors) + len(chunk) <= STDERR_LIMIT:
                    errors.extend(chunk)

        readers = [threading.Thread(target=converse, daemon=True), threading.Thread(target=drain_errors, daemon=True)]
        for reader in readers:
            reader.start()
        timed_out = False
        try:
            proc.wait(timeout=wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(proc)
            proc.wait()
        for reader in readers:
            reader.join(timeout=10)
        with contextlib.suppress(OSError):
            proc.stdin.close()
        return Outcome(overflow.is_set(), errors.decode("utf-8", "replace")[-2000:], proc.returncode, timed_out,
                       time.monotonic() - start)


def _system() -> list[str]:
    """bwrap arguments for the read-only system: /usr, and /bin, /lib, /lib64, /sbin as this host has them."""
    out = ["--ro-bind", "/usr", "/usr"]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            out += ["--symlink", os.readlink(target), str(target)]
        elif target.exists():
            out += ["--ro-bind", str(target), str(target)]
    return out


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the sandbox's process group; with bwrap, its PID namespace takes every process inside along."""
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass


def copy_course_lib(into: Path) -> Path:
    """A read-only copy of the course_lib this grader runs (its .py files), so nothing a submission does
    to the checkout, and no edit in progress, changes what graded kernels import; its checks.py holds the
    probes only (probes_only)."""
    package = Path(__file__).resolve().parent
    target = into / "course_lib"
    target.mkdir(parents=True)
    for path in package.glob("*.py"):
        if path.name == "checks.py":
            (target / path.name).write_text(probes_only(path.read_text()))
        else:
            shutil.copy2(path, target / path.name)
    for path in [into, target, *target.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return into


def probes_only(source: str) -> str:
    """checks.py as a sandbox gets it: the probes and the inputs they make, no judge, no expected value, no
    reference implementation. Functions named judge_* or decorated @judge_only are left out and every name of
    one becomes None; each check_x only says that grading judges outside the kernel."""
    tree = ast.parse(source)

    def judge_side(node) -> bool:
        return isinstance(node, ast.FunctionDef) and (node.name.startswith("judge_") or any(
            isinstance(d, ast.Name) and d.id == "judge_only" for d in node.decorator_list))

    dropped = {node.name for node in tree.body if judge_side(node)}

    class Strip(ast.NodeTransformer):
        def visit_Name(self, node):
            return ast.copy_location(ast.Constant(None), node) if node.id in dropped else node

    tree.body = [node for node in tree.body if not judge_side(node)]
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("check_"):
            node.body = ast.parse("print('(checks are judged by the grader, outside this kernel)')").body
    return ast.unparse(ast.fix_missing_locations(Strip().visit(tree))) + "\n"


def bubblewrap_problem() -> str | None:
    """Why sandboxed grading cannot run here (None: it can): no Linux, no bwrap, or bwrap refused."""
    if not sys.platform.startswith("linux"):
        return f"this is {sys.platform}, not Linux"
    missing = [tool for tool in ("bwrap", "prlimit") + (("setpriv",) if os.geteuid() == 0 else ()) if not shutil.which(tool)]
    if missing:
        return f"{', '.join(missing)} not found"
    drop = (["setpriv", f"--reuid={SLOT_UID_BASE}", f"--regid={SLOT_UID_BASE}", "--clear-groups", "--"]
            if os.geteuid() == 0 else [])
    probe = subprocess.run([*drop, "bwrap", "--unshare-all", *_system(), "--", "/usr/bin/true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"bwrap cannot create a sandbox here: {probe.stderr.strip()[:300]}"
    return None
