"""Dump through the library with on-the-fly hashing (the Sink hashing path), for the benchmark
until the command line has a hashing option.

    python3 bench/sinkhash.py ROOT [ALG] [--inline|--thread]   (raw image on stdout, digest on stderr)
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from memdump.host import Host  # noqa: E402
from memdump.sink import Sink  # noqa: E402
from memdump.sources import open_source  # noqa: E402
from memdump.walk import DEFAULT_READ_SIZE, RamWalk  # noqa: E402


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    root = args[0]
    alg = args[1] if len(args) > 1 else "sha256"
    thread = True if "--thread" in argv else False if "--inline" in argv else None
    host = Host.at(root)
    sink = Sink(1, hashes=(alg,), hash_thread=thread)
    source = open_source("devmem", host)
    try:
        result = RamWalk(source, sink, page_size=host.page_size(), read_size=DEFAULT_READ_SIZE).run()
    finally:
        source.close()
    digest = sink.digests()[alg]
    sink.close()
    sys.stderr.write(f"{alg} {digest} {result.bytes_written} threaded={thread}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
