"""Checking an image against its manifest: its size, its digests and, for a complete image, its
regions (read back through its own format's reader)."""

from __future__ import annotations

from typing import Dict, List, Sequence

from memdump import manifest as manifest_mod
from memdump.errors import MemdumpError
from memdump.formats.base import Placed
from memdump.image import UNKNOWN, Image, open_bytes, open_image
from memdump.iomem import Range


def file_digests(image: Image, algorithms: Sequence[str]) -> Dict[str, str]:
    """The digests of the whole file."""
    import hashlib

    hashers = {name: hashlib.new(name) for name in algorithms}
    for piece in image.chunks():
        for hasher in hashers.values():
            hasher.update(piece)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def verify(path: str, manifest_path: str) -> List[str]:
    """Check ``path`` against its manifest: size, digests, and (for a complete image) regions.
    Returns the lines to print; raises MemdumpError naming every mismatch."""
    record = manifest_mod.load(manifest_path)
    fmt = record.get("format")
    try:
        wanted = [Placed(int(r["start"]), int(r["end"]), int(r["offset"])) for r in record["regions"]]
        digests = {str(k).lower(): str(v).lower() for k, v in dict(record.get("digests") or {}).items()}
    except (KeyError, TypeError, ValueError):
        raise MemdumpError(f"--manifest {manifest_path}: malformed regions or digests") from None
    for name in digests:
        manifest_mod.check_hash(name)
    problems: List[str] = []
    lines: List[str] = []
    complete = bool(record.get("complete"))
    if complete and fmt in ("raw", "padded") and wanted:
        image = open_image(path, regions=[Range(p.start, p.end) for p in wanted], assume=fmt)
    elif complete and fmt in ("lime", "elf"):
        image = open_image(path)
    else:  # an incomplete (or empty) image has no structure to check: only its bytes
        image = open_bytes(path)
        image.format = fmt if complete and not wanted else UNKNOWN
    with image:
        if image.file_size != record.get("bytes_written"):
            problems.append(f"size {image.file_size} != {record.get('bytes_written')} bytes written per the manifest")
        if complete:
            got = [(p.start, p.end, p.offset) for p in image.regions]
            if image.format != fmt:
                problems.append(f"format {image.format} != {fmt} per the manifest")
            elif got != [(p.start, p.end, p.offset) for p in wanted]:
                problems.append(f"regions differ from the manifest ({len(got)} in the image, {len(wanted)} "
                                "in the manifest)")
            else:
                lines.append(f"regions: OK ({len(got)} regions, {sum(p.size for p in wanted)} bytes of memory)")
            if not digests:
                problems.append("the manifest records no digests")
        if digests:
            for name, value in file_digests(image, list(digests)).items():
                if value == digests[name]:
                    lines.append(f"{name}: OK {value}")
                else:
                    problems.append(f"{name} {value} != {digests[name]} per the manifest")
    if not complete:
        where = record.get("stopped_at") or {}
        if record.get("error"):
            problems.append(f"the manifest records an incomplete image ({record['error']}; "
                            f"it stops at output offset {where.get('output_offset')})")
        else:  # a checkpoint: the dump was killed, or is still running
            problems.append(f"the manifest records an incomplete image (the dump did not finish: its last "
                            f"checkpoint, {record.get('checkpoint') or record.get('started')}, records "
                            f"{record.get('bytes_written')} bytes written)")
    if problems:
        raise MemdumpError(f"{path}: verify failed: " + "; ".join(problems))
    lines.append(f"{path}: verified against {manifest_path}")
    return lines
