"""The acquisition manifest: a JSON record that accounts for every byte of an image.

What it holds: the tool and its version, the source, the kernel release and machine name, the
page size, start and end times (UTC, ISO 8601), the command's flags, the regions and where each
sits in the image, every span that could not be read and what became of it (raw: skipped;
structured formats: zero-filled), the bytes written, the digests of the output stream, and
whether the image is complete -- and if not, where it stops and why.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any, Iterable, Sequence, Tuple

from memdump import __version__
from memdump.errors import MemdumpError, OutputError, UsageError
from memdump.sink import open_output as create_file

DEFAULT_HASH = "sha256"
SCHEMA = 1


def utc_now() -> str:
    """``2024-05-01T12:00:00.123Z``."""
    import datetime

    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def check_hash(name: str) -> str:
    """A hashlib algorithm with a fixed-size digest, by its lower-case name; UsageError if not."""
    import hashlib  # here, not at import: a plain dump should not pay for it

    algorithm = name.strip().lower()
    try:
        hasher = hashlib.new(algorithm)
        hasher.hexdigest()
    except (ValueError, TypeError):
        usable = sorted(a for a in hashlib.algorithms_guaranteed if not a.startswith("shake_"))
        raise UsageError(f"--hash {name}: unknown or unsupported algorithm (choose from "
                         f"{', '.join(usable)})") from None
    return algorithm


def hash_names(requested: Iterable[str], manifest: bool) -> tuple[str, ...]:
    """The digests to compute: those asked for, plus sha256 whenever a manifest is written."""
    names: list[str] = [DEFAULT_HASH] if manifest else []
    for name in requested:
        algorithm = check_hash(name)
        if algorithm not in names:
            names.append(algorithm)
    return tuple(names)


def write_all(fd: int, data: bytes, what: str) -> None:
    view = memoryview(data)
    while view:
        try:
            count = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError as exc:
            raise OutputError(f"{what} write error: {exc.strerror}") from None
        view = view[count:]


def sidecar_text(digest: str, output: str) -> str:
    """``<hex>  <name>``: the line ``sha256sum`` writes, so ``sha256sum -c`` checks it."""
    return f"{digest}  {os.path.basename(output)}\n"


def spans(holes: Sequence[Any], page_size: int) -> list[dict]:
    """Unread spans (memdump.walk.Hole) merged where they touch with the same reason."""
    merged: list[list] = []
    for hole in holes:
        if merged and merged[-1][1] == hole.start and merged[-1][2] == hole.reason:
            merged[-1][1] = hole.end
        else:
            merged.append([hole.start, hole.end, hole.reason])
    result = []
    for start, end, reason in merged:
        first = start - start % page_size
        last = -(-end // page_size) * page_size
        result.append({"start": start, "end": end, "size": end - start,
                       "pages": (last - first) // page_size, "reason": reason})
    return result


class Manifest:
    """Filled in as the dump goes and rendered whenever it is written: when the dump starts, at
    every checkpoint (``complete`` false, ``checkpoint`` the time, ``bytes_written`` and
    ``address_reached`` how far the output got) and at the end (complete or not)."""

    def __init__(self, *, format: str, output: str | None, flags: dict, map_path: str | None = None):
        self.data: dict[str, Any] = {
            "manifest": SCHEMA,
            "tool": "memdump",
            "version": __version__,
            "format": format,
            "output": output or "stdout",
            "map": map_path,
            "source": None,
            "kernel_release": None,
            "machine": None,
            "page_size": None,
            "started": utc_now(),
            "finished": None,
            "checkpoint": None,
            "flags": flags,
            "complete": False,
            "stopped": None,
            "error": None,
            "stopped_at": None,
            "planned": [],
            "regions": [],
            "zero_filled": [],
            "skipped": [],
            "unserved": [],
            "bytes_written": 0,
            "address_reached": None,
            "digests": {},
        }

    def set(self, **fields: Any) -> None:
        self.data.update(fields)

    def describe_source(self, source, page_size: int) -> None:
        host = source.host
        self.set(source=source.name, kernel_release=host.kernel_release(),
                 machine=host.machine_name(), page_size=page_size)

    def set_regions(self, placed: Iterable[Any]) -> None:
        self.data["regions"] = [{"start": p.start, "end": p.end, "size": p.end - p.start,
                                 "offset": p.offset} for p in placed]

    def set_planned(self, ranges: Iterable[Any]) -> None:
        """The memory the dump means to cover, known before its first byte."""
        self.data["planned"] = [{"start": r.start, "end": r.end, "size": r.end - r.start} for r in ranges]

    def progress(self, *, bytes_written: int, address: int | None) -> None:
        """How far the dump has got, for a checkpoint."""
        self.set(checkpoint=utc_now(), bytes_written=bytes_written, address_reached=address)

    def set_unread(self, holes: Sequence[Any], zero_filled: bool) -> None:
        page_size = self.data.get("page_size") or 4096
        self.data["zero_filled" if zero_filled else "skipped"] = spans(holes, page_size)

    def set_unserved(self, holes: Sequence[Any]) -> None:
        """RAM the source cannot serve at all (outside every region): listed, never silent."""
        self.data["unserved"] = spans(holes, self.data.get("page_size") or 4096)

    def finish(self, *, bytes_written: int, digests: dict[str, str], stopped: str,
               error: str | None = None, address: int | None = None) -> None:
        now = utc_now()
        self.set(finished=now, checkpoint=now, bytes_written=bytes_written, digests=digests,
                 stopped=stopped, complete=error is None, error=error)
        if address is not None:
            self.data["address_reached"] = address
        if error is not None:
            self.data["stopped_at"] = {"output_offset": bytes_written, "address": address}

    def render(self) -> bytes:
        import json

        return (json.dumps(self.data, indent=1, sort_keys=False) + "\n").encode()


def load(path: str) -> dict:
    """A manifest written by memdump, or MemdumpError saying why it is not one."""
    import json

    try:
        fd = open_regular(path, "--manifest ")
    except UsageError as exc:
        raise MemdumpError(str(exc)) from None
    try:
        with open(fd, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except OSError as exc:
        raise MemdumpError(f"--manifest {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MemdumpError(f"--manifest {path}: not a JSON manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("tool") != "memdump" or not isinstance(data.get("regions"), list):
        raise MemdumpError(f"--manifest {path}: not a memdump manifest")
    return data


def open_regular(path: str, what: str) -> int:
    """A read-only descriptor on ``path``, or UsageError unless it is a regular file: opened
    with O_NONBLOCK (a FIFO, socket or device never blocks the open), then checked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"{what}{path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{what}{path}: not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_dir(directory: str) -> None:
    """Make a rename or link in ``directory`` durable (best effort where the file system says no)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary(path: str, data: bytes, what: str) -> Tuple[str, os.stat_result]:
    """``data`` in a new file beside ``path`` (created O_EXCL, mode 0600, fsynced): its name and
    identity. OutputError (UsageError before the dump, see ``error``) if it cannot be written."""
    directory, base = os.path.split(os.path.abspath(path))
    for attempt in range(100):
        temp = os.path.join(directory, f".{base}.{os.getpid()}.{attempt}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"{what} {path}: {exc.strerror}") from None
    else:
        raise OutputError(f"{what} {path}: no free temporary name beside it")
    try:
        try:
            write_all(fd, data, f"{what} {path}")
            os.fsync(fd)
            identity = os.fstat(fd)
        finally:
            os.close(fd)
    except BaseException:
        _unlink(temp)
        raise
    return temp, identity


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def create_atomic(path: str, data: bytes, what: str) -> os.stat_result:
    """Create ``path`` holding ``data``, complete from its first instant and never overwriting:
    a temporary file beside it, fsynced, then linked to ``path`` (which fails if ``path``
    exists) and the directory fsynced. Returns the new file's identity."""
    temp, identity = _temporary(path, data, what)
    try:
        try:
            os.link(temp, path)
        except FileExistsError:
            raise UsageError(f"{what} {path}: file exists (memdump never overwrites it)") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
                raise OutputError(f"{what} {path}: {exc.strerror}") from None
            # no hard links here (vfat, some network file systems): create it in place
            fd = create_file(path, what)
            try:
                write_all(fd, data, f"{what} {path}")
                os.fsync(fd)
                identity = os.fstat(fd)
            finally:
                os.close(fd)
    finally:
        _unlink(temp)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
    return identity


def replace_atomic(path: str, data: bytes, ours: os.stat_result, what: str) -> os.stat_result:
    """Replace ``path``, the file this run created (``ours``), with ``data`` in one step: a
    temporary file beside it, fsynced, renamed over it, the directory fsynced. A reader sees the
    old record or the new one, never a mix. OutputError if ``path`` is no longer our file."""
    try:
        current = os.lstat(path)
    except OSError as exc:
        raise OutputError(f"{what} {path}: {exc.strerror}") from None
    if not _same(current, ours):
        raise OutputError(f"{what} {path}: replaced by another file since memdump created it; not overwritten")
    temp, identity = _temporary(path, data, what)
    try:
        os.rename(temp, path)
    except OSError as exc:
        _unlink(temp)
        raise OutputError(f"{what} {path}: {exc.strerror}") from None
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
    return identity


class Records:
    """The files that accompany an image: the manifest and the ``<output>.<alg>`` sidecars.

    The manifest is created (never overwritten) before the first byte of the image, holding
    ``initial`` (valid JSON from its first instant), and replaced atomically by ``write_manifest``
    at every checkpoint and at the end. The sidecars are only checked up front (none may exist)
    and created at the end, atomically, for a complete image only. ``discard`` removes the
    manifest when the dump ends before any byte is out.
    """

    def __init__(self, manifest_path: str | None, output: str | None, sidecar_hashes: Sequence[str],
                 initial: bytes = b"{}\n"):
        self.manifest_path = manifest_path
        self.output = output
        self.paths: dict[str, str] = {}  # algorithm -> sidecar path
        self.identity: os.stat_result | None = None  # the manifest file this run created
        if output:
            for algorithm in sidecar_hashes:
                path = f"{output}.{algorithm}"
                if os.path.lexists(path):
                    raise UsageError(f"--hash {algorithm}: digest file {path}: file exists "
                                     "(memdump never overwrites it)")
                self.paths[algorithm] = path
        if manifest_path:
            try:
                self.identity = create_atomic(manifest_path, initial, "--manifest")
            except OutputError as exc:
                raise UsageError(str(exc)) from None

    def sidecars(self) -> dict[str, str]:
        """algorithm -> sidecar path."""
        return dict(self.paths)

    def discard(self, keep_manifest: bool = False) -> None:
        if keep_manifest or self.identity is None or not self.manifest_path:
            return
        try:
            if _same(os.lstat(self.manifest_path), self.identity):
                os.unlink(self.manifest_path)
        except OSError:
            pass
        self.identity = None

    def write_manifest(self, manifest: Manifest) -> None:
        """The manifest as it stands now, replacing the last one in one step."""
        if self.manifest_path and self.identity is not None:
            self.identity = replace_atomic(self.manifest_path, manifest.render(), self.identity, "manifest")

    def write_sidecars(self, digests: dict[str, str]) -> None:
        """Each sidecar, created complete (never overwriting): only ever for a complete image."""
        for algorithm, path in self.paths.items():
            text = sidecar_text(digests[algorithm], self.output or "-").encode()
            try:
                create_atomic(path, text, f"--hash {algorithm}: digest file")
            except UsageError as exc:  # created by someone else during the dump
                raise OutputError(str(exc)) from None
