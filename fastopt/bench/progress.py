"""A text progress bar on stderr, without dependencies.

On a terminal it redraws one line in place: a bar, the share done, the current case and the elapsed
time; lines printed through Progress.print go above it. When stderr is not a terminal (a log file,
CI) nothing is drawn until the final summary line.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Optional, TextIO


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Progress:
    def __init__(self, total: int, stream: Optional[TextIO] = None, enabled: Optional[bool] = None,
                 width: int = 24, min_interval: float = 0.1):
        self.total = max(1, total)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream) if enabled is None else enabled
        self.width = width
        self.min_interval = min_interval
        self.done = 0
        self.status = ""
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = False

    def set_status(self, text: str) -> None:
        """What is running now (the case and its stage)."""
        self.status = text
        self._draw(force=True)

    def advance(self, units: int = 1) -> None:
        self.done = min(self.total, self.done + units)
        self._draw()

    def print(self, text: str = "", file: Optional[TextIO] = None) -> None:
        """Print a line (to stdout by default) without tearing the bar."""
        self.clear()
        print(text, file=file if file is not None else sys.stdout, flush=True)
        self._draw(force=True)

    def clear(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False

    def finish(self, summary: str) -> None:
        """Remove the bar and write the final line (also when stderr is not a terminal)."""
        self.clear()
        self.stream.write(f"{summary} ({_clock(time.perf_counter() - self.start)})\n")
        self.stream.flush()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {100 * self.done / self.total:3.0f}% {_clock(now - self.start):>6s}  {self.status}"
        columns = shutil.get_terminal_size((100, 20)).columns
        self.stream.write("\r" + line[:columns - 1] + "\033[K")
        self.stream.flush()
        self._drawn = True


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
