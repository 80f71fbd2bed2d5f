"""Progress on stderr: bytes, rate and time left, redrawn a few times a second.

It stays off the hot path: a background thread samples a counter (the sink's byte count) on its
own clock, so the dump loop does no per-page (or per-read) work for it. On only when stderr is a
terminal and the user did not say ``--no-progress``.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, TextIO

from memdump.sizes import format_size

INTERVAL = 0.25  # seconds between redraws


def wanted(disabled: bool, stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    if disabled:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def render(done: int, total: int, elapsed: float) -> str:
    """One status line, e.g. ``12.0 MiB of 64.0 MiB (18%), 150.2 MiB/s, 0:00:01 left``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    line = f"{format_size(done)}"
    if total:
        line += f" of {format_size(total)} ({min(100, done * 100 // total)}%)"
    line += f", {format_size(int(rate))}/s"
    if total and rate > 0 and done < total:
        line += f", {_clock((total - done) / rate)} left"
    elif total and done >= total:
        line += f", {_clock(elapsed)} elapsed"
    return line


class Progress:
    """``with Progress(total, counter): ...`` redraws until the block ends, then one final line."""

    def __init__(self, total: int, counter: Callable[[], int], stream: TextIO | None = None,
                 prefix: str = "memdump: ", interval: float = INTERVAL):
        self.total = total
        self.counter = counter
        self.stream = stream or sys.stderr
        self.prefix = prefix
        self.interval = interval
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memdump-progress", daemon=True)
        self._width = 0

    def _draw(self, final: bool = False) -> None:
        line = self.prefix + render(self.counter(), self.total, time.monotonic() - self.started)
        pad = max(0, self._width - len(line))
        self._width = len(line)
        try:
            self.stream.write("\r" + line + " " * pad + ("\n" if final else ""))
            self.stream.flush()
        except (OSError, ValueError):
            self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._draw()

    def start(self) -> "Progress":
        self.started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self._draw(final=True)

    def __enter__(self) -> "Progress":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
