"""Progress reporting: a rich bar on a terminal (on stderr), periodic plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress

log = logging.getLogger("cotrain.progress")


class Progress:
    """Counts work done out of `total`; silent when disabled.

    Args:
        total: expected units of work (samples).
        label: what is being done.
        enabled: force on/off; None means on when stderr is a terminal.
    """

    def __init__(self, total: int, label: str, enabled: bool | None = None, log_every_s: float = 10.0) -> None:
        self.total, self.label, self.done = total, label, 0
        self._tty = sys.stderr.isatty() if enabled is None else enabled
        self._bar: RichProgress | None = None
        self._log_every_s = log_every_s
        self._last_log = time.monotonic()

    def __enter__(self) -> Progress:
        if self._tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            # On stderr: stdout carries the report, which `--json` promises is one JSON document.
            self._bar = RichProgress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), transient=True, console=Console(stderr=True))
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n)
        elif time.monotonic() - self._last_log >= self._log_every_s:
            self._last_log = time.monotonic()
            log.info("%s: %d/%d samples", self.label, self.done, self.total)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
