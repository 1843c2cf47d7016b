"""Progress lines from inside a notebook to the terminal of the book runner.

The runner (``python -m crossgap_lib.book``) sets ``$CROSSGAP_PROGRESS_FILE`` for each notebook's kernel and prints
every line appended to that file as it appears. Library code calls :func:`report_progress` at natural milestones
(one model trained, one dataset encoded); outside the runner the call does nothing.
"""

from __future__ import annotations

import os
import time

PROGRESS_ENV = "CROSSGAP_PROGRESS_FILE"


def report_progress(message: str) -> None:
    """Append one line to ``$CROSSGAP_PROGRESS_FILE`` when it is set (no-op otherwise, never raises)."""
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(" ".join(str(message).split()) + "\n")
    except OSError:
        pass  # progress is a courtesy: an unwritable file must not stop a computation


def time_left(started: float, done: int, total: int) -> str:
    """``"~M min left"`` from a ``time.perf_counter()`` start and ``done`` of ``total`` units finished."""
    if done <= 0 or total <= done:
        return "done" if total <= done else "estimating time left"
    seconds = (time.perf_counter() - started) / done * (total - done)
    return f"~{seconds / 60:.1f} min left" if seconds >= 60 else f"~{seconds:.0f} s left"
