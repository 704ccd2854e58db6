"""Will grading work here? `python -m course_lib.grading doctor` checks what `grade` needs to grade a class in
sandboxes: Linux, root (a uid per job slot), setpriv and prlimit, user namespaces, bubblewrap making a sandbox,
the instructor tools, the CIFAR-10 copy the lessons read, and free disk. One line per check, `ok`, `warning` or
`PROBLEM` with what to fix; the exit status is 1 when grading a class cannot work here. A check that itself
fails is a problem line too, never a traceback."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import config, sandbox

MIN_FREE_BYTES = 2 * 10 ** 9  # the shared data folder (decoded CIFAR-10, the source model), executed notebooks
ELSEWHERE = ("grade on a Linux VM or machine you control (a container or JupyterHub pod that forbids namespaces "
             "cannot run the sandbox); `grade --no-sandbox` grades WITHOUT isolation, for one trusted learner's "
             "own notebooks only")


@dataclass
class Check:
    name: str
    status: str  # "ok", "warning" or "PROBLEM"
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:8} {self.name}: {self.detail}" + (f". Fix: {self.fix}" if self.fix else "")


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def problem(name: str, detail: str, fix: str) -> Check:
    return Check(name, "PROBLEM", detail, fix)


def check_linux() -> Check:
    if sys.platform.startswith("linux"):
        return ok("Linux", os.uname().release)
    return problem("Linux", f"this is {sys.platform}", "the sandbox (bubblewrap) runs on Linux only: " + ELSEWHERE)


def check_root() -> Check:
    if os.geteuid() == 0:
        return ok("root", "running as root, as a uid per job slot needs")
    return problem("root", f"running as uid {os.geteuid()}; grading a class needs root (each job slot's sandbox "
                   "runs as a uid of its own, with its own process limit)", "run `grade` (and this check) as root, "
                   "e.g. with sudo, or in a container or job that runs as root")


def check_tool(tool: str) -> Check:
    found = shutil.which(tool)
    if found:
        return ok(tool, found)
    return problem(tool, "not found", "install util-linux (Debian/Ubuntu: apt-get install util-linux; Fedora: dnf "
                   "install util-linux)")


def _as_slot(command: list[str]) -> list[str]:
    """`command` as a job slot's uid runs it (when root), the way the grader runs a sandbox."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return command
    uid = sandbox.SLOT_UID_BASE
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *command]


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def check_user_namespaces(bubblewrap_works: bool) -> Check:
    name = "user namespaces"
    why = []
    if _sysctl("user/max_user_namespaces") == "0":
        why.append("user.max_user_namespaces is 0")
    if _sysctl("kernel/unprivileged_userns_clone") == "0":
        why.append("kernel.unprivileged_userns_clone is 0")
    if _sysctl("kernel/apparmor_restrict_unprivileged_userns") == "1":
        why.append("AppArmor restricts them (kernel.apparmor_restrict_unprivileged_userns=1)")
    unshare = shutil.which("unshare")
    if unshare:
        try:
            probe = subprocess.run(_as_slot([unshare, "--user", "true"]), capture_output=True, text=True, timeout=30,
                                   cwd="/")
            if "setresuid" in probe.stderr:
                why.append("root here cannot become a job slot's uid: it is the root of a user namespace that maps no "
                           "other uid (a rootless container)")
            elif probe.returncode != 0:
                why.append(f"unshare --user failed: {probe.stderr.strip()[:200] or f'exit status {probe.returncode}'}")
        except subprocess.TimeoutExpired:
            why.append("unshare --user did not return within 30 s")
    if not why:
        return ok(name, "an unprivileged user can create one" + ("" if unshare else " (sysctls; unshare not found)"))
    detail = "; ".join(why)
    if bubblewrap_works:
        return Check(name, "warning", f"{detail}; bubblewrap makes its sandbox anyway (installed setuid, or allowed "
                     "by a profile)")
    return problem(name, detail, "allow them (as root: sysctl -w user.max_user_namespaces=15000 "
                   "kernel.unprivileged_userns_clone=1; on Ubuntu 23.10+ an AppArmor profile for bwrap, or sysctl -w "
                   "kernel.apparmor_restrict_unprivileged_userns=0), or " + ELSEWHERE)


def check_bubblewrap() -> Check:
    found = sandbox.bubblewrap_problem()
    if found is None:
        version = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        return ok("bubblewrap", f"{version or 'bwrap'} makes a sandbox" +
                  (" as a job slot's uid" if os.geteuid() == 0 else ""))
    if "not found" in found or "not Linux" in found:
        return problem("bubblewrap", found, "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: "
                       "dnf install bubblewrap) and util-linux")
    return problem("bubblewrap", found, ELSEWHERE)


def check_instructor_tools() -> Check:
    if importlib.util.find_spec("nbgrader") is not None:
        return ok("instructor tools", "nbgrader is installed")
    return problem("instructor tools", "nbgrader is not installed", "python3 course.py install --instructor")


def check_cifar10(source_dir: Path) -> Check:
    from . import data, grading

    name = "CIFAR-10"
    sources = sorted(Path(source_dir).glob("*.ipynb"))
    if not sources:
        return problem(name, f"no lesson sources in {source_dir}", "run from the course checkout, or give --source")
    import nbformat

    lessons = [(p.stem, nbformat.read(p, as_version=4)) for p in sources]
    needing = [stem for stem, nb in lessons if grading.exercises(nb) and grading.uses_cifar10(nb)]
    found, given = grading._cifar10(), os.environ.get(data.CIFAR10_ENV)
    if given and found is None:
        return problem(name, f"{data.CIFAR10_ENV}={given} does not exist", f"point {data.CIFAR10_ENV} at the copy, or "
                       "unset it to use the one in the data folder")
    if found is not None:
        return ok(name, f"{found} (lent read-only to every sandbox)")
    if not needing:
        return ok(name, "not found, and no graded lesson in source/ needs it")
    return problem(name, f"no copy found, and {', '.join(needing)} read it (a sandbox has no network)",
                   f"put cifar-10-python.tar.gz or cifar10-jpeg.tar.gz in {config.data_dir()}, or set "
                   f"{data.CIFAR10_ENV}=/path/to/it (docs/data-and-weights.md)")


def _existing(path: Path) -> Path:
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(out_dir: Path) -> Check:
    places = {"the data folder": config.data_dir(), "the grades folder": Path(out_dir),
              "the temporary folder": Path(tempfile.gettempdir())}
    disks = {}
    for what, path in places.items():
        where = _existing(path)
        disks.setdefault(where.stat().st_dev, (where, []))[1].append(f"{what} ({path})")
    short, seen = [], []
    for where, whats in disks.values():
        free = shutil.disk_usage(where).free
        seen.append(f"{free / 1e9:.1f} GB free for {', '.join(whats)}")
        if free < MIN_FREE_BYTES:
            short.append(f"{free / 1e9:.1f} GB free for {', '.join(whats)}")
    if short:
        return problem("free disk", f"{'; '.join(short)}: at least {MIN_FREE_BYTES / 1e9:.0f} GB are needed",
                       f"free space there, or set {config.DATA_DIR_ENV} and `grade --out` to a disk with room")
    return ok("free disk", "; ".join(seen))


def all_checks(source_dir: Path, out_dir: Path) -> list[Check]:
    """Every check, in order; a check that raises is a problem line saying so."""

    def run(name: str, check, *args) -> Check:
        try:
            return check(*args)
        except Exception as e:  # the doctor must say what it found, never stop with a traceback
            return problem(name, f"the check itself failed ({type(e).__name__}: {str(e)[:200]})",
                           "fix what this says, then run the doctor again")

    found = [run("Linux", check_linux), run("root", check_root), run("setpriv", check_tool, "setpriv"),
             run("prlimit", check_tool, "prlimit")]
    bubblewrap = run("bubblewrap", check_bubblewrap)
    found += [run("user namespaces", check_user_namespaces, bubblewrap.status == "ok"), bubblewrap,
              run("instructor tools", check_instructor_tools), run("CIFAR-10", check_cifar10, source_dir),
              run("free disk", check_disk, out_dir)]
    return found


def doctor(source_dir: Path, out_dir: Path) -> int:
    """Print one line per check and a verdict; 1 when grading a class cannot work here."""
    found = all_checks(source_dir, out_dir)
    for check in found:
        print(check.line(), flush=True)
    problems = [c.name for c in found if c.status == "PROBLEM"]
    if problems:
        print(f"verdict: grading a class cannot work here ({len(problems)} problem(s): {', '.join(problems)})")
        return 1
    print("verdict: grading a class can work here")
    return 0
