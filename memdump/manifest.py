"""The acquisition manifest: a JSON record that accounts for every byte of an image.

What it holds: the tool and its version, the source, the kernel release and machine name, the
page size, start and end times (UTC, ISO 8601), the command's flags, the regions and where each
sits in the image, every span that could not be read and what became of it (raw: skipped;
structured formats: zero-filled), the bytes written, the digests of the output stream, and
whether the image is complete -- and if not, where it stops and why.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

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
    """Filled in as the dump goes; ``write`` renders it once at the end (complete or not)."""

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
            "flags": flags,
            "complete": False,
            "stopped": None,
            "error": None,
            "stopped_at": None,
            "regions": [],
            "zero_filled": [],
            "skipped": [],
            "unserved": [],
            "bytes_written": 0,
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

    def set_unread(self, holes: Sequence[Any], zero_filled: bool) -> None:
        page_size = self.data.get("page_size") or 4096
        self.data["zero_filled" if zero_filled else "skipped"] = spans(holes, page_size)

    def set_unserved(self, holes: Sequence[Any]) -> None:
        """RAM the source cannot serve at all (outside every region): listed, never silent."""
        self.data["unserved"] = spans(holes, self.data.get("page_size") or 4096)

    def finish(self, *, bytes_written: int, digests: dict[str, str], stopped: str,
               error: str | None = None, address: int | None = None) -> None:
        self.set(finished=utc_now(), bytes_written=bytes_written, digests=digests,
                 stopped=stopped, complete=error is None, error=error)
        if error is not None:
            self.data["stopped_at"] = {"output_offset": bytes_written, "address": address}

    def render(self) -> bytes:
        import json

        return (json.dumps(self.data, indent=1, sort_keys=False) + "\n").encode()


def load(path: str) -> dict:
    """A manifest written by memdump, or MemdumpError saying why it is not one."""
    import json

    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except OSError as exc:
        raise MemdumpError(f"--manifest {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MemdumpError(f"--manifest {path}: not a JSON manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("tool") != "memdump" or not isinstance(data.get("regions"), list):
        raise MemdumpError(f"--manifest {path}: not a memdump manifest")
    return data


class Records:
    """The files that accompany an image: the manifest and the ``<output>.<alg>`` sidecars.

    All are created (never overwritten) before the first byte of the image, so a bad path costs
    nothing; ``discard`` removes the ones this run created when it ends before any byte is out.
    """

    def __init__(self, manifest_path: str | None, output: str | None, sidecar_hashes: Sequence[str]):
        self.manifest_path = manifest_path
        self.output = output
        self.fds: dict[str, int] = {}
        try:
            if manifest_path:
                self.fds[manifest_path] = create_file(manifest_path, "--manifest")
            if output:
                for algorithm in sidecar_hashes:
                    path = f"{output}.{algorithm}"
                    self.fds[path] = create_file(path, f"--hash {algorithm}: digest file")
        except BaseException:
            self.discard()
            raise

    def sidecars(self) -> dict[str, str]:
        """algorithm -> sidecar path."""
        prefix = f"{self.output}."
        return {path[len(prefix):]: path for path in self.fds if path != self.manifest_path}

    def _close(self, path: str, remove: bool) -> None:
        fd = self.fds.pop(path, None)
        if fd is not None:
            os.close(fd)
            if remove:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def discard(self, keep_manifest: bool = False) -> None:
        for path in list(self.fds):
            if keep_manifest and path == self.manifest_path:
                continue
            self._close(path, remove=True)

    def write_manifest(self, manifest: Manifest) -> None:
        if self.manifest_path in self.fds:
            try:
                write_all(self.fds[self.manifest_path], manifest.render(), f"manifest {self.manifest_path}")
            finally:
                self._close(self.manifest_path, remove=False)

    def write_sidecars(self, digests: dict[str, str]) -> None:
        for algorithm, path in self.sidecars().items():
            try:
                write_all(self.fds[path], sidecar_text(digests[algorithm], self.output or "-").encode(),
                          f"digest file {path}")
            finally:
                self._close(path, remove=False)
