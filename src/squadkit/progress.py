"""Progress for long work: a rich bar on a terminal, plain periodic lines elsewhere.

Off a terminal (a background job, a scheduler's log) a bar draws nothing until the end, so
the user sees no sign of life; plain lines every few seconds say how far the work is.
"""

from __future__ import annotations

import time


class ProgressLines:
    """Progress for long work: a rich bar on a terminal, else a plain line every ``every_s``
    seconds (and at the end), so a run in the background or under a scheduler shows life."""

    def __init__(self, label: str, total: int, stream=None, every_s: float = 5.0, tty: bool | None = None) -> None:
        import sys

        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.tty = self.stream.isatty() if tty is None else tty
        self.t0 = self.t_last = time.monotonic()
        self._bar = None
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                 transient=True, console=Console(file=self.stream))
            self._task = self._bar.add_task(label, total=total)
            self._bar.start()

    def __call__(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.advance(self._task, n)
            return
        now = time.monotonic()
        if now - self.t_last >= self.every_s and self.done < self.total:
            self.t_last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        print(f"{self.label}: {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%), "
              f"{rate:.1f}/s, ETA {eta:.0f} s", file=self.stream, flush=True)

    def set_done(self, done: int, total: int) -> None:
        """Move to ``done`` of ``total`` (a total learnt along the way, e.g. windows of a context)."""
        if total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.update(self._task, total=total)
        self(done - self.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.done and time.monotonic() - self.t0 >= self.every_s:
            self._line(time.monotonic())
