"""Errors a user can cause or meet. Each one becomes a single line on stderr and a non-zero exit."""

from __future__ import annotations

import errno as errno_mod
import os


class MemdumpError(Exception):
    """A failure worth one clear line to the user (never a traceback).

    ``where`` is appended to the message once the dump knows where the output stopped
    (`` at output offset N (address 0x...)``)."""

    exit_code = 1
    where = ""

    def __str__(self) -> str:
        return super().__str__() + self.where


class UsageError(MemdumpError):
    """Bad flags or arguments."""

    exit_code = 2


class SourceUnavailable(MemdumpError):
    """A memory source cannot run here; ``reason`` says why."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class HoleError(MemdumpError):
    """A read failed at ``address``: that page is a hole. Carries the source and errno for context."""

    def __init__(self, source: str, address: int, err: int, detail: str = ""):
        self.source = source
        self.address = address
        self.errno = err
        name = errno_mod.errorcode.get(err, str(err))
        text = detail or os.strerror(err)
        super().__init__(f"{source}: read at {address:#x} failed: {name} ({text})")

    @property
    def reason(self) -> str:
        return errno_mod.errorcode.get(self.errno, str(self.errno))


class OutputError(MemdumpError):
    """Writing the image or the map failed (EPIPE, ENOSPC, ...)."""


class Terminated(MemdumpError):
    """A signal (SIGTERM, SIGHUP, SIGINT) ended the dump; the exit status is 128 + the signal."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        verb = "interrupted" if signum == signal.SIGINT else "terminated"
        super().__init__(f"{verb} by {self.name}")


class ImageError(MemdumpError):
    """A damaged or unrecognised image; ``offset`` says where."""

    def __init__(self, path: str, offset: int, message: str):
        super().__init__(f"{path}: at offset {offset:#x}: {message}")
        self.path = path
        self.offset = offset
