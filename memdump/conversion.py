"""Converting an image into any format: the same regions, the same bytes.

Where nothing has to see the bytes (no digest asked for), they move file to file by sendfile.
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional, Sequence

from memdump import progress
from memdump.errors import ImageError, UsageError
from memdump.formats import writer_for
from memdump.formats.base import FormatWriter
from memdump.image import Image, open_image
from memdump.iomem import Range
from memdump.manifest import Records, create_file, hash_names, write_all
from memdump.maps import map_text
from memdump.recover import facts_from_image
from memdump.sink import Sink
from memdump.walk import aligned_buffer

CHUNK = 1 << 20


def copy_regions(image: Image, writer: FormatWriter) -> FormatWriter:
    """Drive ``writer`` (planned on ``image``'s regions) with the image's bytes."""
    sink = writer.sink
    buffer = aligned_buffer(CHUNK)
    view = memoryview(buffer)
    writer.begin()
    for index, placed in enumerate(image.regions):
        writer.begin_region(index)
        offset, left = placed.offset, placed.size
        while left:
            want = min(CHUNK, left)
            moved = sink.sendfile(image.fd, offset, want) if sink.zero_copy else None
            if moved is not None:
                if moved == 0:
                    raise ImageError(image.path, offset, "image ends early (changed while converting?)")
                writer.sent(moved)
            else:
                moved = os.preadv(image.fd, [view[:want]], offset)
                if moved == 0:
                    raise ImageError(image.path, offset, "image ends early (changed while converting?)")
                writer.data(view[:moved])
            offset += moved
            left -= moved
        writer.end_region(index)
    writer.finish()
    return writer


def convert(in_path: str, out_path: str, to: str, *, map_path: Optional[str] = None,
            out_map: Optional[str] = None, hashes: Sequence[str] = (), no_progress: bool = False,
            remark: Callable[[str], None] = lambda text: None) -> FormatWriter:
    """Write the image at ``in_path`` (raw + map, padded, lime or elf; detected) to ``out_path``
    ('-': stdout) in format ``to``: the same regions, the same bytes, and what an ELF records
    beyond them. ``out_path`` (and ``out_map``, and ``out_path.ALG`` per hash) are created, never
    overwritten; on any failure the files this call created are removed, since a half-converted
    image is worth nothing (the input is still there). Returns the finished writer."""
    algorithms = hash_names(hashes, False)
    to_stdout = out_path == "-"
    with open_image(in_path, map_path) as image:
        if image.format == "unknown":
            remark(f"{in_path}: no LiME or ELF header and no map: converted as padded "
                   f"(one region from address 0); give --map MAP for a raw image")
        created: List[str] = []
        records = Records(None, None if to_stdout else out_path, algorithms)
        fds: List[int] = []
        try:
            if to_stdout:
                out_fd = 1
            else:
                out_fd = create_file(out_path, "OUT")
                created.append(out_path)
                fds.append(out_fd)
            map_fd = None
            if out_map:
                map_fd = create_file(out_map, "--out-map")
                created.append(out_map)
                fds.append(map_fd)
            sink = Sink(out_fd, hashes=algorithms, name=out_path if not to_stdout else "stdout")
            if sink.is_terminal:
                raise UsageError("refusing to write an image to a terminal; redirect stdout or name OUT")
            facts = image.facts()
            if to == "elf" and (facts.vmcoreinfo is None or facts.direct_map_base is None):
                # an ELF core is for drgn and crash, which need both: look in the image's RAM
                facts, found = facts_from_image(image, facts)
                for text in found:
                    remark(text)
            writer = writer_for(to, sink, [Range(p.start, p.end) for p in image.regions], facts)
            ticker = None
            if progress.wanted(no_progress):
                ticker = progress.Progress(writer.total_size(), lambda: sink.written).start()
            try:
                copy_regions(image, writer)
                sink.close()
            finally:
                if ticker:
                    ticker.stop()
            if map_fd is not None:
                write_all(map_fd, map_text(writer.regions).encode(), f"--out-map {out_map}")
            digests = sink.digests()
            records.write_sidecars(digests)
            if to_stdout:
                for algorithm, digest in digests.items():
                    remark(f"{algorithm} {digest} (stdout)")
            return writer
        except BaseException:
            records.discard()
            for path in created:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            raise
        finally:
            for fd in fds:
                os.close(fd)
