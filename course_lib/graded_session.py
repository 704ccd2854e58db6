"""The grader's side of one graded run (course_lib.graded_run is the other): what a probe runs on is made up
only when the run reaches it, and only records bound to what was handed out are accepted.

The job folder holds no check call: each graded cell is an empty placeholder. When the run reaches one, it
asks for its code, and gets, for each public check of the cell, a probe call with a fresh random nonce and
its arguments, and for each hidden check a `keep` of its answers (no seed, no nonce). Placeholders are
answered once each, in order. After the last one, and only then, the hidden checks are handed out one at a
time, each with its seed and nonce, run on the answers kept at their exercise's place: no hidden input
exists in the sandbox before the student's last cell has run, so no student text made later can carry one
into feedback. A record counts only for a nonce handed out, and only once: a second record for a nonce
voids it.
"""
from __future__ import annotations

import ast
import json
import secrets

RUN = "__import__('course_lib.graded_run', fromlist=['probe'])"
MAX_EVENTS = 20


class Session:
    """One run's conversation. `cells`: placeholder number -> the probes of that graded cell (objects with
    key, part, check, call and code, as course_lib.grading.Probe)."""

    def __init__(self, cells: dict[int, list]):
        self.cells = cells
        self.answered = -1  # the last placeholder answered
        self.hidden = [p for n in sorted(cells) for p in cells[n] if p.part == "hidden"]
        self.slots = {p.key: secrets.token_hex(8) for p in self.hidden}
        self.issued: dict[str, str] = {}  # nonce -> probe key
        self.records: dict[str, object] = {}
        self.errors: dict[str, str] = {}
        self.started = False  # the run said so before any student code: its sandbox could start
        self.notebook: str | None = None
        self.events: list[str] = []

    def reply(self, line: bytes) -> bytes | None:
        """Read one line of the run's output as untrusted data; the answer to send back, if any."""
        try:
            message = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            return None
        if not isinstance(message, dict):
            return None
        if message.get("started") is True:
            self.started = True
        elif "want" in message:
            return json.dumps({"code": self._code_for(message["want"])}).encode()
        elif "record" in message:
            self._take(message.get("record"), message)
        elif "notebook" in message and self.notebook is None:
            self.notebook = message["notebook"] if isinstance(message["notebook"], str) else ""
            events = message.get("events")
            self.events = [str(e)[:600] for e in events[:MAX_EVENTS]] if isinstance(events, list) else []
        return None

    def _code_for(self, want) -> str | None:
        if type(want) is int and want > self.answered and want in self.cells:
            self.answered = want
            lines = [self._probe_line(p) if p.part == "public" else self._keep_line(p) for p in self.cells[want]]
            return "\n".join(lines)
        if want == "end" and self.answered == max(self.cells, default=-1) and self.hidden:
            return self._probe_line(self.hidden.pop(0), kept=True)
        return None

    def _probe_line(self, probe, kept: bool = False) -> str:
        nonce = secrets.token_hex(16)
        self.issued[nonce] = probe.key
        args, kwargs = [], []
        for i, (name, node) in enumerate(_arguments(probe)):
            text = (f"_k['a{i}']" if kept and not _is_literal(node) else ast.get_source_segment(probe.code, node))
            (kwargs.append(f"{name!r}: {text}") if name else args.append(text + ","))
        thunk = f"(({' '.join(args)}), {{{', '.join(kwargs)}}})"
        if kept:
            thunk = f"(lambda _k: {thunk})({RUN}.kept({self.slots[probe.key]!r}))"
        return f"{RUN}.probe({nonce!r}, {probe.check!r}, lambda: {thunk})"

    def _keep_line(self, probe) -> str:
        values = [f"'a{i}': {ast.get_source_segment(probe.code, node)}"
                  for i, (_, node) in enumerate(_arguments(probe)) if not _is_literal(node)]
        return f"{RUN}.keep({self.slots[probe.key]!r}, lambda: {{{', '.join(values)}}})"

    def _take(self, nonce, message: dict) -> None:
        key = self.issued.get(nonce) if isinstance(nonce, str) else None
        if key is None:
            return
        if key in self.records or key in self.errors:
            self.records.pop(key, None)
            self.errors[key] = "two records arrived for this check: neither counts"
        elif "error" in message:
            self.errors[key] = str(message["error"])[:300]
        else:
            self.records[key] = message.get("data")


def _arguments(probe) -> list[tuple[str | None, ast.expr]]:
    """(keyword or None, expression) of each argument of the probe's check call, as the source writes it."""
    return [(None, a) for a in probe.call.args] + [(k.arg, k.value) for k in probe.call.keywords]


def _is_literal(node) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True
