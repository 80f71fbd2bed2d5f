"""Where the image goes: a file descriptor (stdout or ``-o PATH``) written with as few copies as
the kernel allows, and the digests of everything written.

Hashing runs beside the I/O when the process may use more than one CPU: ``write`` copies the
bytes into one of a few page-aligned slots and a worker thread hashes full slots in order
(hashlib releases the GIL on large buffers), so reading, writing and hashing overlap. On one CPU
the hashes are updated inline: a thread there would only add copies and context switches.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat

from memdump.errors import OutputError, UsageError

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20
# errors that belong to the output, not to the memory being read
OUTPUT_ERRNOS = {errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EBADF, errno.EROFS}
# errors that only mean "this pair of descriptors cannot do zero-copy"
NO_ZERO_COPY = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV}

HASH_SLOT = 1 << 20  # bytes handed to the hashing thread at a time (well above hashlib's GIL cut-off)
HASH_SLOTS = 4  # slots in flight: the writer runs up to three slots ahead of the hasher
# Zero runs (a padded image's holes, zero-filled pages) are hashed from one anonymous mapping:
# it is backed by the kernel's single zero page, so it costs no memory however large, and a
# run of gigabytes becomes a few large updates with no copy and no hand-off per megabyte.
ZERO_STEP = 16 << 20
_zero_view: memoryview | None = None


def zero_view() -> memoryview:
    """A read-only view of ``ZERO_STEP`` zero bytes, made once per process."""
    global _zero_view
    if _zero_view is None:
        _zero_view = memoryview(mmap.mmap(-1, ZERO_STEP, prot=mmap.PROT_READ))
    return _zero_view


def hash_zeros(hashers, count: int) -> None:
    """Feed ``count`` zero bytes to every hasher in ``ZERO_STEP`` pieces."""
    zeros = zero_view()
    while count > 0:
        piece = zeros[:min(count, ZERO_STEP)]
        for hasher in hashers:
            hasher.update(piece)
        count -= len(piece)


def open_output(path: str, what: str = "-o") -> int:
    """Create ``path`` as evidence files are created: never overwrite, never follow a link, 0600.
    ``what`` names the option in the one-line error."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise UsageError(f"{what} {path}: file exists (memdump never overwrites it)") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from None


def _seekable_not_appending(fd: int) -> bool:
    """Whether a padded image's holes may be seeks on ``fd`` (not O_APPEND, and seekable)."""
    try:
        appending = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND
        return not appending and os.lseek(fd, 0, os.SEEK_CUR) >= 0
    except OSError:
        return False


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class HashThread:
    """Feeds a byte stream to hashers on a worker thread, in order.

    ``feed`` copies into the current slot (so the caller may reuse its buffer at once) and hands
    full slots to the worker; ``sync`` waits until everything fed so far is hashed.
    """

    def __init__(self, hashers: list, slot_size: int = HASH_SLOT, slots: int = HASH_SLOTS):
        import queue
        import threading

        self.hashers = hashers
        self.slot_size = slot_size
        self.todo: queue.SimpleQueue = queue.SimpleQueue()
        self.free: queue.SimpleQueue = queue.SimpleQueue()
        self.buffers = [mmap.mmap(-1, slot_size) for _ in range(slots)]
        for buffer in self.buffers[1:]:
            self.free.put(memoryview(buffer))
        self.slot = memoryview(self.buffers[0])
        self.fill = 0
        self.error: BaseException | None = None
        self.worker = threading.Thread(target=self._work, name="memdump-hash", daemon=True)
        self.worker.start()

    def _work(self) -> None:
        todo, free, hashers = self.todo, self.free, self.hashers
        while True:
            item = todo.get()
            if item is None:
                return
            slot, count = item
            if count < 0:  # a sync marker: ``slot`` is the event to set
                slot.set()
                continue
            try:
                if self.error is None:
                    if slot is None:  # a run of ``count`` zeros
                        hash_zeros(hashers, count)
                    else:
                        piece = slot[:count]
                        for hasher in hashers:
                            hasher.update(piece)
            except BaseException as exc:  # surfaced by sync(); the stream goes on unhashed
                self.error = exc
            if slot is not None:
                free.put(slot)

    def feed(self, view: memoryview) -> None:
        total = len(view)
        done = 0
        size = self.slot_size
        while done < total:
            room = size - self.fill
            piece = min(room, total - done)
            self.slot[self.fill:self.fill + piece] = view[done:done + piece]
            self.fill += piece
            done += piece
            if self.fill == size:
                self._dispatch()

    def feed_zeros(self, count: int) -> None:
        """``count`` zero bytes, in order after everything fed so far: one queue item."""
        if count <= 0:
            return
        if self.fill:
            self._dispatch()
        self.todo.put((None, count))

    def _dispatch(self) -> None:
        self.todo.put((self.slot, self.fill))
        self.slot = self.free.get()
        self.fill = 0

    def sync(self) -> None:
        import threading

        if self.fill:
            self._dispatch()
        done = threading.Event()
        self.todo.put((done, -1))
        done.wait()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self.worker.is_alive():
            self.todo.put(None)
            self.worker.join()


class Sink:
    """A byte stream out. Counts and optionally hashes what it writes; EPIPE/ENOSPC become
    OutputError so a caller can say where the image stops.

    ``hash_thread``: hash on a worker thread (True), inline (False), or decide by the CPUs this
    process may run on (None, the default). The digests are the same either way.
    """

    def __init__(self, fd: int, hashes: tuple[str, ...] = (), name: str = "stdout",
                 hash_thread: bool | None = None):
        self.fd = fd
        self.name = name
        self.written = 0
        if hashes:
            import hashlib  # only on the hashing path: it costs start-up time

            self.hashers = {alg: hashlib.new(alg) for alg in hashes}
        else:
            self.hashers = {}
        mode = os.fstat(fd).st_mode
        self.is_pipe = stat.S_ISFIFO(mode)
        self.is_file = stat.S_ISREG(mode)
        self.is_terminal = os.isatty(fd)
        self.sparse = self.is_file and _seekable_not_appending(fd)
        self._skipped = False  # a skip has moved the offset past the last byte written
        # A signal that arrives while a write is under way is not raised inside it (the count of
        # a write cut short would be lost): ``interrupt`` records it and makes a pipe's writes
        # non-blocking, and the write raises it as soon as the count is kept.
        self.writing = False
        self.stop: BaseException | None = None
        self._unblocked = False
        # Zero-copy skips userspace, so only when nothing has to see the bytes.
        self.zero_copy = not self.hashers
        if self.is_pipe:
            try:
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # pipe-max-size may be lower; the default pipe still works
        if hash_thread is None:
            hash_thread = usable_cpus() > 1
        self._hash_thread = HashThread(list(self.hashers.values())) if self.hashers and hash_thread else None

    @property
    def threaded_hashing(self) -> bool:
        return self._hash_thread is not None

    def _fail(self, exc: OSError) -> OutputError:
        why = exc.strerror
        if exc.errno == errno.EPIPE:
            why += " (the reader of the output went away)"
        return OutputError(f"output write error on {self.name} after {self.written} bytes: {why}")

    def interrupt(self, exc: BaseException) -> bool:
        """Called from a signal handler: True when ``exc`` will be raised by the write under way
        (which no longer blocks), False when the caller should raise it itself."""
        if not self.writing:
            return False
        self.stop = exc
        if not self.is_file:
            try:
                if os.get_blocking(self.fd):
                    os.set_blocking(self.fd, False)
                    self._unblocked = True
            except OSError:
                pass
        return True

    def _stopped(self) -> None:
        exc, self.stop = self.stop, None
        self.writing = False
        if self._unblocked:
            self._unblocked = False
            try:
                os.set_blocking(self.fd, True)
            except OSError:
                pass
        raise exc

    def _write_fd(self, view: memoryview) -> None:
        """All of ``view`` out, counted write by write (see ``interrupt``)."""
        total = len(view)
        done = 0
        self.writing = True
        try:
            while done < total:
                if self.stop is not None:
                    self._stopped()
                try:
                    count = os.write(self.fd, view[done:])
                except InterruptedError:
                    continue
                except BlockingIOError as exc:
                    if self.stop is not None:
                        self._stopped()
                    raise self._fail(exc) from None
                except OSError as exc:
                    raise self._fail(exc) from None
                self.written += count
                done += count
            if self.stop is not None:
                self._stopped()
        finally:
            self.writing = False

    def offset(self) -> int:
        """Where the output stands: for a regular file its position (exact whatever interrupted
        the last write), else the bytes counted."""
        if self.is_file:
            try:
                return os.lseek(self.fd, 0, os.SEEK_CUR)
            except OSError:
                pass
        return self.written

    def write(self, data) -> None:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if self._hash_thread is not None:
            self._hash_thread.feed(view)
        else:
            for hasher in self.hashers.values():
                hasher.update(view)
        self._write_fd(view)

    def _hash_zeros(self, count: int) -> None:
        if self._hash_thread is not None:
            self._hash_thread.feed_zeros(count)
        elif self.hashers:
            hash_zeros(self.hashers.values(), count)

    def write_zeros(self, count: int) -> None:
        """``count`` zero bytes, written from the shared zero mapping and hashed as one run."""
        if count <= 0:
            return
        self._hash_zeros(count)
        zeros = zero_view()
        left = count
        while left:
            view = zeros[:min(left, ZERO_STEP)]
            self._write_fd(view)
            left -= len(view)

    def skip(self, count: int) -> None:
        """``count`` zero bytes of output (padded images' holes): a seek on a regular file, which
        stays sparse, written zeros anywhere else. Hashed and counted as zeros either way; a
        caller that skips calls ``end_sparse`` last."""
        if count <= 0:
            return
        if not self.sparse:
            self.write_zeros(count)
            return
        self._hash_zeros(count)
        try:
            os.lseek(self.fd, count, os.SEEK_CUR)
        except OSError as exc:
            raise self._fail(exc) from None
        self.written += count
        self._skipped = True

    def end_sparse(self) -> None:
        """Give a file that ends in skipped bytes its full length (a seek alone writes nothing)."""
        if self._skipped:
            try:
                os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_CUR))
            except OSError as exc:
                raise self._fail(exc) from None

    def sendfile(self, src_fd: int, offset: int, count: int) -> int | None:
        """Copy from a file without passing through userspace. Returns the count moved (0 at the
        source's end) or None when this pair cannot zero-copy (the caller reads instead)."""
        self.writing = True
        while True:
            if self.stop is not None:
                self._stopped()
            try:
                moved = os.sendfile(self.fd, src_fd, offset, count)
                break
            except InterruptedError:
                continue
            except BlockingIOError as exc:
                self.writing = False
                if self.stop is not None:
                    self._stopped()
                raise self._fail(exc) from None
            except OSError as exc:
                if exc.errno in OUTPUT_ERRNOS:
                    self.writing = False
                    raise self._fail(exc) from None
                if exc.errno in NO_ZERO_COPY:
                    self.zero_copy = False
                self.writing = False
                return None
        self.written += moved
        self.writing = False
        if self.stop is not None:
            self._stopped()
        return moved

    def digests(self) -> dict[str, str]:
        self._finish_hashing()
        return {alg: hasher.hexdigest() for alg, hasher in self.hashers.items()}

    def _finish_hashing(self) -> None:
        """Wait for the hashing thread to catch up and retire it; later writes hash inline."""
        thread = self._hash_thread
        if thread is not None:
            self._hash_thread = None
            try:
                thread.sync()
            finally:
                thread.stop()

    def close(self) -> None:
        if self.stop is not None:
            self._stopped()
        self._finish_hashing()
        if self.is_file:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                raise self._fail(exc) from None
