"""Signals during a dump: SIGTERM (timeout(1), systemd, a fleet agent), SIGHUP (the SSH session
dropped) and SIGINT become a ``Terminated`` exception, so they unwind through the dump's failure
accounting like any other error and the manifest says what stopped it and where.

The handlers are installed only for the duration of one dump, only from the main thread (the
only one Python delivers signals to), and never for a signal that is ignored (``nohup`` keeps
working); the previous handlers are put back afterwards, so a library caller's own handler is
theirs again.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

from memdump.errors import Terminated

CAUGHT = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class SignalGuard:
    """``with SignalGuard() as guard``: a caught signal raises Terminated while armed. ``hold()``
    (while the final records are written) defers it instead: after the handlers are restored a
    deferred signal is raised again, to the handler the caller had, unless the dump failed anyway."""

    def __init__(self) -> None:
        self.previous: Dict[int, Any] = {}
        self.armed = False
        self.pending: Optional[int] = None
        # the dump's output (a memdump.sink.Sink): a signal during one of its writes is raised
        # by the write itself, once the bytes it moved are counted
        self.sink: Any = None

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in CAUGHT:
            current = signal.getsignal(signum)
            if current == signal.SIG_IGN:
                continue
            self.previous[signum] = current
            signal.signal(signum, self._handle)
        self.armed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.armed:
            self.armed = False  # one signal unwinds the dump; another one is not raised into that
            stop = Terminated(signum)
            if self.sink is not None and self.sink.interrupt(stop):
                return
            raise stop
        if self.pending is None:
            self.pending = signum

    def hold(self) -> None:
        self.armed = False

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A step that must not be cut in two (a checkpoint's rename): a signal during it is
        raised when it is done."""
        if not self.armed:
            yield
            return
        self.armed = False
        try:
            yield
        except BaseException:
            self.armed = True
            raise
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise Terminated(signum)
        self.armed = True

    def __exit__(self, exc_type, exc, tb) -> None:
        self.armed = False
        for signum, handler in self.previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self.previous.clear()
        if self.pending is not None and exc_type is None:
            signum, self.pending = self.pending, None
            signal.raise_signal(signum)
