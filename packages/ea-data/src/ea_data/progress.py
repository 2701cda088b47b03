"""Progress bars that stay readable in logs: the one place `ea_data` (and `ea_captions`) make a tqdm bar.

On a terminal a bar redraws as usual. When its output is not a terminal (a log file, a pipe, a batch
job's stdout) every redraw is a new chunk of text, so the bar redraws at most every
`NON_TTY_INTERVAL` seconds (plus its first and last state).
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

NON_TTY_INTERVAL = 30.0


def is_terminal(file: Any) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)`, redrawn at most every `NON_TTY_INTERVAL` s when not writing to a terminal.

    Explicit `mininterval` / `maxinterval` arguments win. Use it like tqdm (also as a context manager).
    """
    notebook = tqdm.__module__.startswith("tqdm.notebook")  # a widget, not text: leave it alone
    if not notebook and not is_terminal(kwargs.get("file") or sys.stderr):
        kwargs.setdefault("mininterval", NON_TTY_INTERVAL)
        # tqdm's monitor thread forces a redraw after `maxinterval` s without one; not more often either.
        kwargs.setdefault("maxinterval", max(NON_TTY_INTERVAL, kwargs["mininterval"]))
    return tqdm(iterable, **kwargs)
