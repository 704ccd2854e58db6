"""The untrusted half of grading: runs one assembled notebook and reports plain data, nothing else.

Started by course_lib.grading (inside the sandbox when there is one) as

    python -m course_lib.graded_run JOB_DIR

with JOB_DIR/notebook.ipynb (the lesson's cells and the student's answer cells; each graded cell is an empty
placeholder, metadata {"graded": n}) and JOB_DIR/settings.json ({"timeout": seconds per cell}). The run talks
with the grader in JSON lines, stdout out and stdin in (course_lib.graded_session):

- at placeholder n it sends {"want": n} and gets {"code": ...}: the cell's probe calls, each with a nonce and
  its seed, made up by the grader only now; after the last cell it sends {"want": "end"} for each hidden
  check in turn (code null: none left);
- each probe displays its record (RECORD_MIME, bound to its nonce) as an output of the cell that asked for
  it, and the run passes on {"record": nonce, "data": ...} for outputs of those cells only;
- the first line is {"started": true}, before any student code runs (a sandbox that never says it could not
  start, which the grader retries); the last is {"notebook": the executed notebook, "events": [...]}.

Nothing here decides a score, and nothing here knows a seed before the grader sends it. The process is
made non-dumpable, so the kernel (same user) cannot reopen its pipes through /proc.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

RECORD_MIME = "application/x-course-record"
RECOVERY_SECONDS = 30  # how long an interrupted kernel has to answer again before the run stops
WARM_UP = "import numpy, torch, course_lib.checks"  # imported before the clock of the first cell starts
WARM_UP_SECONDS = 300
_kept: dict = {}


def probe(nonce: str, check_name: str, arguments) -> None:
    """Run `check_name`'s probe on the answers (in the kernel) and display its plain-data record with `nonce`;
    `arguments()` gives (args, kwargs): evaluated here, so that an answer that is not defined is this check's
    error, not the cell's."""
    from IPython.display import display

    from course_lib import checks

    try:
        args, kwargs = arguments()
        shown = {"nonce": nonce, "record": checks.as_record(checks.GRADED[check_name].probe(*args, **kwargs))}
    except Exception as e:
        shown = {"nonce": nonce, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    display({RECORD_MIME: json.dumps(shown)}, raw=True)


def keep(slot: str, arguments) -> None:
    """Keep a hidden check's arguments as they are at the exercise's place; it runs after the last cell."""
    try:
        _kept[slot] = arguments()
    except Exception as e:
        _kept[slot] = e


def kept(slot: str) -> dict:
    """A hidden check's kept arguments; what keeping them raised is raised here, as its probe's error."""
    value = _kept[slot]
    if isinstance(value, Exception):
        raise value
    return value


def _client_class():
    from nbclient import NotebookClient

    class InterruptingClient(NotebookClient):
        """nbclient with interrupt_on_timeout leaves the timed-out cell's output reader running, and it
        then swallows later cells' outputs; this one cancels it, so every later cell keeps its outputs."""

        timed_out = False

        async def _async_handle_timeout(self, timeout, cell=None):
            self.timed_out = True
            return await super()._async_handle_timeout(timeout, cell)

        async def _async_poll_for_reply(self, msg_id, cell, timeout, task_poll_output_msg, task_poll_kernel_alive):
            reply = await super()._async_poll_for_reply(msg_id, cell, timeout, task_poll_output_msg,
                                                        task_poll_kernel_alive)
            if self.timed_out and not task_poll_output_msg.done():
                task_poll_output_msg.cancel()
            return reply

    return InterruptingClient


class Grader:
    """The JSON-lines conversation with the grader, on pipes nothing started from here inherits."""

    def __init__(self, inbox, outbox):
        self.inbox, self.outbox = inbox, outbox

    def send(self, message: dict) -> None:
        self.outbox.write(json.dumps(message) + "\n")
        self.outbox.flush()

    def code_for(self, want) -> str | None:
        self.send({"want": want})
        reply = json.loads(self.inbox.readline() or "{}")
        return reply.get("code") if isinstance(reply, dict) else None


def run(notebook, timeout: int, grader: Grader, workdir: Path) -> list[str]:
    """Execute every code cell (a timeout interrupts the cell and the run goes on), then the hidden checks;
    returns the events."""
    import nbformat
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    client = _client_class()(notebook, timeout=timeout, kernel_name="python3", allow_errors=True,
                             interrupt_on_timeout=True, resources={"metadata": {"path": str(workdir)}},
                             error_on_timeout={"ename": "Timeout", "traceback": [],
                                               "evalue": f"cell ran longer than {timeout} s and was stopped"})
    events = []

    def execute(index: int, cell) -> bool:
        """Run one cell; False when the run cannot go on."""
        client.timed_out = False
        try:
            client.execute_cell(cell, index)
        except DeadKernelError:
            events.append(f"the kernel died in cell {index}; later cells were not run")
            return False
        if "graded" in cell.metadata:
            _pass_on_records(cell, grader)
        if client.timed_out:
            events.append(f"cell {index} ran longer than {timeout} s and was stopped")
            client.timed_out = False
            try:
                _run_aside(client, "pass", RECOVERY_SECONDS)
            except (CellTimeoutError, DeadKernelError):
                client.timed_out = True
            if client.timed_out:
                events.append("the kernel did not recover after the timeout; later cells were not run")
                return False
        return True

    with open(os.devnull, "w") as devnull, client.setup_kernel(stdout=devnull, stderr=devnull):
        _run_aside(client, WARM_UP, WARM_UP_SECONDS)  # a loaded machine imports torch slowly: not the student's time
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            if "graded" in cell.metadata:
                cell.source = grader.code_for(cell.metadata["graded"]) or ""
            if not execute(index, cell):
                return events
        while (code := grader.code_for("end")) is not None:  # the hidden checks, on the answers kept earlier
            notebook.cells.append(nbformat.v4.new_code_cell(code, metadata={"graded": "hidden"}))
            if not execute(len(notebook.cells) - 1, notebook.cells[-1]):
                return events
    return events


def _pass_on_records(cell, grader: Grader) -> None:
    """Send the records a probe cell displayed, and take them off the cell (the notebook stays small)."""
    kept = []
    for output in cell.get("outputs", []):
        text = output.get("data", {}).get(RECORD_MIME) if output.get("output_type") == "display_data" else None
        if text is None:
            kept.append(output)
            continue
        try:
            shown = json.loads(text if isinstance(text, str) else "")
            grader.send({"record": shown["nonce"], **({"error": shown["error"]} if "error" in shown else
                                                      {"data": shown["record"]})})
        except (ValueError, KeyError, TypeError, RecursionError):
            pass
    cell.outputs = kept


def _run_aside(client, code: str, timeout: int) -> None:
    """Run `code` in the kernel as a cell of its own, outside the notebook (nbclient stores an executed cell
    at its index, so it goes at the end and is taken off again)."""
    import nbformat

    saved, client.timeout = client.timeout, timeout
    client.nb.cells.append(nbformat.v4.new_code_cell(code))
    try:
        client.execute_cell(client.nb.cells[-1], len(client.nb.cells) - 1)
    finally:
        client.nb.cells.pop()
        client.timeout = saved


def _private(fd: int, mode: str):
    """A non-inheritable copy of `fd` as a file, with /dev/null put in its place for whatever starts later."""
    private = os.fdopen(os.dup(fd), mode)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, fd)
    os.close(devnull)
    return private


def _not_dumpable() -> None:
    """Make this process non-dumpable: its /proc entries (fds, memory) are then closed to its own user."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0


def main(job_dir: str) -> int:
    import nbformat

    _not_dumpable()
    job = Path(job_dir)
    settings = json.loads((job / "settings.json").read_text())
    notebook = nbformat.read(job / "notebook.ipynb", as_version=4)
    grader = Grader(_private(0, "r"), _private(1, "w"))
    grader.send({"started": True})  # before any student code: the sandbox could start
    with tempfile.TemporaryDirectory(prefix="work-") as work:
        try:
            events = run(notebook, int(settings["timeout"]), grader, Path(work))
        except Exception as e:  # the kernel would not start, or nbclient failed: the records say what ran
            events = [f"the notebook could not be run: {type(e).__name__}: {str(e)[:300]}"]
    grader.send({"notebook": nbformat.writes(notebook), "events": events})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
