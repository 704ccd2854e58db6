"""Where judges run: a record is checked against its check's bounds first, then judged in a worker process
with a time limit, so that no record, however crafted, stalls the grader or the classmates judged meanwhile.

A record is untrusted data. Before any judge sees it, `within_bounds` walks it once, without recursion, and
refuses one deeper, longer or larger than its check's honest records can be. The judge then runs in a
process of its own (one per grading thread, each with its own torch generator, so no lock is shared) and
is killed when it runs past JUDGE_SECONDS; a killed judge is a fail.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading

JUDGE_SECONDS = 120  # the slowest honest judgement (lesson 2's, building ResNets on one core) takes a few s
MAX_DEPTH = 12  # nesting of lists and dicts
MAX_STRING = 4000  # characters of one string
MAX_INT = 2 ** 63


def within_bounds(record, max_items: int) -> str | None:
    """Why `record` is out of bounds (None: it is within them): more than `max_items` values in all, nesting
    deeper than MAX_DEPTH, a string longer than MAX_STRING, an integer beyond 64 bits, or a non-JSON type."""
    stack, items = [(record, 0)], 0
    while stack:
        value, depth = stack.pop()
        items += 1
        if items > max_items:
            return f"it holds more than {max_items} values"
        if depth > MAX_DEPTH:
            return f"it is nested deeper than {MAX_DEPTH}"
        if isinstance(value, dict):
            if not all(type(k) is str and len(k) <= MAX_STRING for k in value):
                return "a key is not a short string"
            stack += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            stack += [(v, depth + 1) for v in value]
        elif type(value) is str:
            if len(value) > MAX_STRING:
                return f"a string is longer than {MAX_STRING} characters"
        elif type(value) is int:
            if abs(value) >= MAX_INT:
                return "an integer is larger than 64 bits"
        elif type(value) not in (float, bool) and value is not None:
            return f"it holds a {type(value).__name__}"
    return None


def judge_here(check: str, record, arguments: dict) -> str | None:
    """The judge's verdict, in this process: None when it passes, else the failure message."""
    from . import checks

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            checks.GRADED[check].judge(record, **arguments)
        except AssertionError as e:
            return str(e) or "the check failed"
        except Exception as e:
            return f"the check's record could not be judged ({type(e).__name__})"
    return None


def _serve(read_fd: int, write_fd: int) -> None:
    """A worker: judge what arrives, answer each with its verdict, until the pipe closes."""
    from multiprocessing.connection import Connection

    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    while True:
        try:
            check, record, arguments = inbox.recv()
        except EOFError:
            return
        outbox.send(judge_here(check, record, arguments))


class _Worker:
    """`python -m course_lib.judging` on a pair of pipes (a plain subprocess: nothing of the caller's __main__
    is run again, as multiprocessing's spawn would)."""

    def __init__(self):
        from multiprocessing.connection import Connection

        to_worker, from_worker = os.pipe(), os.pipe()
        self.process = subprocess.Popen([sys.executable, "-m", "course_lib.judging", str(to_worker[0]),
                                         str(from_worker[1])], pass_fds=(to_worker[0], from_worker[1]),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        os.close(to_worker[0])
        os.close(from_worker[1])
        self.outbox = Connection(to_worker[1], readable=False)
        self.inbox = Connection(from_worker[0], writable=False)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.outbox.close()
        self.inbox.close()


_idle: list[_Worker] = []
_idle_lock = threading.Lock()


def judge(check: str, record, arguments: dict, max_items: int, seconds: float = JUDGE_SECONDS) -> str | None:
    """The judge's verdict on an untrusted record, bounded in size and time: None when it passes, else why not."""
    problem = within_bounds(record, max_items)
    if problem is not None:
        return f"the check's record was refused: {problem}"
    with _idle_lock:
        worker = _idle.pop() if _idle else None
    worker = worker or _Worker()
    try:
        worker.outbox.send((check, record, arguments))
        if not worker.inbox.poll(seconds):
            worker.stop()
            return f"judging this record took longer than {seconds:g} s"
        verdict = worker.inbox.recv()
    except (OSError, EOFError) as e:
        worker.stop()
        return f"the check's record could not be judged ({type(e).__name__})"
    with _idle_lock:
        _idle.append(worker)
    return verdict


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
