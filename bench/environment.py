"""Where the benchmark runs memdump from and how it starts the commands it measures.

memdump runs from this checkout (``python3 -m memdump`` with the checkout on PYTHONPATH); its
bytecode is cached outside the tree, as an installed package's would be: under
PYTHONDONTWRITEBYTECODE every run would compile every module again.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
PY = sys.executable
# Both ends of every pipeline run on this CPU: on small VMs a pipe whose ends run on different
# vCPUs is several times slower and flips between the two from run to run.
PIN = "0"
GB = 1e9
MIB = 1 << 20

CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
CHILD_ENV["PYTHONPATH"] = REPO + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")


def cache_bytecode_in(work: str) -> None:
    """Compiled modules go to the work directory, not into the checkout."""
    CHILD_ENV["PYTHONPYCACHEPREFIX"] = os.path.join(work, "pycache")


def say(text: str = "") -> None:
    print(text, flush=True)


def shell(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def spawn(argv: list[str], cpus: str, stdout, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    """Start ``argv`` pinned to ``cpus`` with memdump's environment."""
    return subprocess.Popen(["taskset", "-c", cpus, *argv], stdout=stdout, stderr=stderr, cwd=REPO,
                            env=CHILD_ENV, close_fds=True)


def reap(process: subprocess.Popen) -> tuple[int, int]:
    """(exit code, ru_maxrss in KiB) of one child. Its ru_maxrss counts the memory of the process
    it was forked from (this one) too: peak RSS goes through a small launcher for that."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss
