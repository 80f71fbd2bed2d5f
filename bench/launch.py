"""Run a command and write its peak resident memory (KiB) to a file: ``launch.py OUT CMD...``.

A child's peak RSS (``ru_maxrss``) includes the memory of the process it was forked from, so the
benchmark, which holds an emulated machine, cannot spawn the measured command itself: this small
launcher (run as ``python3 -S -I``, a few MiB) does, and its own size is the measurement's floor.
"""

import os
import sys


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    _, status, usage = os.wait4(pid, 0)
    with open(out, "w") as handle:
        handle.write(f"{usage.ru_maxrss}\n")
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
