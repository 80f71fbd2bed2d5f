"""Where the image goes: a file descriptor (stdout or ``-o PATH``) written with as few copies as
the kernel allows, and the digests of everything written."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat

from memdump.errors import OutputError, UsageError

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20
# errors that belong to the output, not to the memory being read
OUTPUT_ERRNOS = {errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EBADF, errno.EROFS}
# errors that only mean "this pair of descriptors cannot do zero-copy"
NO_ZERO_COPY = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV}


def open_output(path: str) -> int:
    """Create ``path`` for an image: never overwrite, never follow a link, readable by root only."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise UsageError(f"-o {path}: file exists (memdump never overwrites an image)") from None
    except OSError as exc:
        raise UsageError(f"-o {path}: {exc.strerror}") from None


class Sink:
    """A byte stream out. Counts and optionally hashes what it writes; EPIPE/ENOSPC become
    OutputError so a caller can say where the image stops."""

    def __init__(self, fd: int, hashes: tuple[str, ...] = (), name: str = "stdout"):
        self.fd = fd
        self.name = name
        self.written = 0
        self.hashers = {alg: hashlib.new(alg) for alg in hashes}
        mode = os.fstat(fd).st_mode
        self.is_pipe = stat.S_ISFIFO(mode)
        self.is_file = stat.S_ISREG(mode)
        self.is_terminal = os.isatty(fd)
        # Zero-copy skips userspace, so only when nothing has to see the bytes.
        self.zero_copy = not self.hashers
        if self.is_pipe:
            try:
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # pipe-max-size may be lower; the default pipe still works

    def _fail(self, exc: OSError) -> OutputError:
        return OutputError(f"output write error on {self.name} after {self.written} bytes: {exc.strerror}")

    def write(self, data) -> None:
        view = memoryview(data)
        for hasher in self.hashers.values():
            hasher.update(view)
        total = len(view)
        done = 0
        while done < total:
            try:
                done += os.write(self.fd, view[done:])
            except InterruptedError:
                continue
            except OSError as exc:
                self.written += done
                raise self._fail(exc) from None
        self.written += total

    def write_zeros(self, count: int, zeros: memoryview) -> None:
        """``count`` zero bytes; ``zeros`` is a reusable zero-filled buffer."""
        while count:
            piece = min(count, len(zeros))
            self.write(zeros[:piece])
            count -= piece

    def skip(self, count: int, zeros: memoryview) -> None:
        """``count`` zero bytes of output: a seek on a regular file (which stays sparse), written
        zeros anywhere else. Hashed and counted as zeros either way; call ``end_sparse`` last."""
        if count <= 0:
            return
        if not self.sparse:
            self.write_zeros(count, zeros)
            return
        for hasher in self.hashers.values():
            left = count
            while left:
                piece = min(left, len(zeros))
                hasher.update(zeros[:piece])
                left -= piece
        try:
            os.lseek(self.fd, count, os.SEEK_CUR)
        except OSError as exc:
            raise self._fail(exc) from None
        self.written += count
        self._skipped = True

    @property
    def sparse(self) -> bool:
        """Whether ``skip`` may seek: a regular file not opened for appending."""
        if not hasattr(self, "_sparse"):
            try:
                appending = fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_APPEND
                self._sparse = self.is_file and not appending and os.lseek(self.fd, 0, os.SEEK_CUR) >= 0
            except OSError:
                self._sparse = False
        return self._sparse

    def end_sparse(self) -> None:
        """Give a file that ends in skipped bytes its full length (a seek alone writes nothing)."""
        if getattr(self, "_skipped", False):
            try:
                os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_CUR))
            except OSError as exc:
                raise self._fail(exc) from None

    def sendfile(self, src_fd: int, offset: int, count: int) -> int | None:
        """Copy from a file without passing through userspace. Returns the count moved (0 at the
        source's end) or None when this pair cannot zero-copy (the caller reads instead)."""
        try:
            moved = os.sendfile(self.fd, src_fd, offset, count)
        except InterruptedError:
            return self.sendfile(src_fd, offset, count)
        except OSError as exc:
            if exc.errno in OUTPUT_ERRNOS:
                raise self._fail(exc) from None
            if exc.errno in NO_ZERO_COPY:
                self.zero_copy = False
            return None
        self.written += moved
        return moved

    def digests(self) -> dict[str, str]:
        return {alg: hasher.hexdigest() for alg, hasher in self.hashers.items()}

    def close(self) -> None:
        if self.is_file:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                raise self._fail(exc) from None
