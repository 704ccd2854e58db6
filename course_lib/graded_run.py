"""The untrusted half of grading: runs one assembled notebook and reports plain data, nothing else.

Started by course_lib.grading (inside the sandbox when there is one) as

    python -m course_lib.graded_run JOB_DIR

with JOB_DIR/notebook.ipynb (the lesson's cells, the student's answer cells, and one probe cell per
check) and JOB_DIR/settings.json ({"timeout": seconds per cell}). Each probe cell calls `record`, which
runs the check's probe in the kernel and keeps its plain-data result. At the end one JSON document goes
to stdout: {"records": {key: data}, "notebook": the executed notebook, "events": [what went wrong]}.
Nothing here decides a score: the grader judges the records outside, and a record that is missing (a
timeout, a crash, a dead kernel) fails its check.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

RECORDS_ENV = "COURSE_RECORDS_DIR"
RECOVERY_SECONDS = 30  # how long an interrupted kernel has to answer again before the run stops
WARM_UP = "import numpy, torch, course_lib.checks"  # imported before the clock of the first cell starts
WARM_UP_SECONDS = 300


def record(key: str, check_name: str, *args, **kwargs) -> None:
    """Run `check_name`'s probe on the answers (in the kernel) and keep its plain-data result under `key`."""
    from course_lib import checks

    data = checks.as_record(checks.GRADED[check_name].probe(*args, **kwargs))
    folder = Path(os.environ[RECORDS_ENV])
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".record-")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, folder / f"{key}.json")


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


def run(notebook, timeout: int, records_dir: Path, workdir: Path) -> list[str]:
    """Execute every code cell (a timeout interrupts the cell and the run goes on); returns the events."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    os.environ[RECORDS_ENV] = str(records_dir)
    client = _client_class()(notebook, timeout=timeout, kernel_name="python3", allow_errors=True,
                             interrupt_on_timeout=True, resources={"metadata": {"path": str(workdir)}},
                             error_on_timeout={"ename": "Timeout", "traceback": [],
                                               "evalue": f"cell ran longer than {timeout} s and was stopped"})
    events = []
    with open(os.devnull, "w") as devnull, client.setup_kernel(stdout=devnull, stderr=devnull):
        _run_aside(client, WARM_UP, WARM_UP_SECONDS)  # a loaded machine imports torch slowly: not the student's time
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            client.timed_out = False
            try:
                client.execute_cell(cell, index)
            except DeadKernelError:
                events.append(f"the kernel died in cell {index}; later cells were not run")
                break
            if client.timed_out:
                events.append(f"cell {index} ran longer than {timeout} s and was stopped")
                client.timed_out = False
                try:
                    _run_aside(client, "pass", RECOVERY_SECONDS)
                except (CellTimeoutError, DeadKernelError):
                    client.timed_out = True
                if client.timed_out:
                    events.append("the kernel did not recover after the timeout; later cells were not run")
                    break
    return events


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


def main(job_dir: str) -> int:
    import nbformat

    job = Path(job_dir)
    settings = json.loads((job / "settings.json").read_text())
    notebook = nbformat.read(job / "notebook.ipynb", as_version=4)
    out = os.fdopen(os.dup(1), "w")  # the report's channel; nothing started from here inherits it
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    with tempfile.TemporaryDirectory(prefix="records-") as records, tempfile.TemporaryDirectory(prefix="work-") as work:
        try:
            events = run(notebook, int(settings["timeout"]), Path(records), Path(work))
        except Exception as e:  # the kernel would not start, or nbclient failed: the records say what ran
            events = [f"the notebook could not be run: {type(e).__name__}: {str(e)[:300]}"]
        found = {}
        for path in Path(records).glob("*.json"):
            try:
                found[path.stem] = json.loads(path.read_text())
            except ValueError:
                events.append(f"record {path.stem} is not JSON")
    json.dump({"records": found, "notebook": nbformat.writes(notebook), "events": events}, out)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
