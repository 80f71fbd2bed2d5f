"""The commands under test, and what each one's output must be.

Every command is a producer whose output goes through a pipe into ``cat > /dev/null``. What the
output must be (``expect``) is checked before anything is timed (see verify.py):

* ``ram`` -- the emulator's sha256 of the RAM ranges (memdump's raw stream);
* ``file`` -- the dev/mem image file (the original, ``--scan``, ``cat``, ``dd``);
* ``padded`` -- the image up to the end of RAM; ``lime`` -- LiME records built from the image;
* ``elf`` -- one PT_LOAD per RAM range, whose data is the truth's RAM.
"""

from __future__ import annotations

import os
import shlex
import shutil
import statistics
import subprocess

from environment import BENCH, GB, PIN, PY, shell

ORIGINAL = "/usr/sbin/memdump"
# The original always opens /dev/mem: give it the image there, in a mount namespace of its own.
NAMESPACE = ('img=$1; shift; mount -t tmpfs -o size=64k,mode=755 memdump-bench /dev && : > /dev/mem '
             '&& mount --bind "$img" /dev/mem && exec "$@"')
READ_SIZES = ("4k", "64k", "256k", "1m", "4m", "16m")  # the read-size sweep
STRUCTURED_FORMATS = ("padded", "lime", "elf")


class Variant:
    """One command under test: its producer argv (the consumer is always ``cat > /dev/null``),
    what its output must be, and what was measured of it."""

    def __init__(self, key: str, label: str, argv: list[str], *, cpus: str = PIN, expect: str | None = None,
                 note: str = "", digest_in_stderr: bool = False):
        self.key = key
        self.label = label
        self.argv = argv
        self.cpus = cpus
        self.expect = expect  # see the module docstring; None: only the byte count is recorded
        self.note = note
        self.digest_in_stderr = digest_in_stderr  # the command reports the truth's sha256 on stderr
        self.size: int | None = None
        self.sha256: str | None = None
        self.verified: str = "not checked"
        self.seconds: list[float] = []
        self.rss_kib: dict[str, int] = {}  # machine ("small", "big") -> peak RSS
        self.retried = 0  # runs done again because another process took CPU during them
        self.disturbed = 0  # runs kept although disturbed (every retry was disturbed too)

    def command(self) -> str:
        return f"taskset -c {self.cpus} {shell(self.argv)} | taskset -c {PIN} cat > /dev/null"

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def gbps(self) -> float:
        return self.size / self.median / GB


def memdump_argv(root: str) -> list[str]:
    return [PY, "-m", "memdump", "--root", root]


def memdump_variants(root: str) -> list[Variant]:
    """memdump at its defaults, at the best read sizes (chosen later by the sweep), hashing on
    the fly, and writing each structured format."""
    md = memdump_argv(root)
    hashed = md + ["--hash", "sha256"]
    variants = [
        Variant("memdump", "memdump", md, expect="ram"),
        Variant("memdump-best", "memdump -b BEST", md, expect="ram"),
        Variant("memdump-scan", "memdump --scan", md + ["--scan"], expect="file",
                note="the original's walk from address 0 (read path, no zero-copy)"),
        Variant("memdump-scan-best", "memdump --scan -b BEST", md, expect="file"),
        Variant("memdump-sha256", "memdump --hash sha256 [cpu 0,1]", hashed, expect="ram", cpus="0,1",
                digest_in_stderr=True,
                note="memdump may run on CPUs 0 and 1 (its hashing thread takes the free one); cat stays on CPU 0"),
        Variant("memdump-sha256-1cpu", "memdump --hash sha256 [cpu 0]", hashed, expect="ram",
                digest_in_stderr=True, note="one CPU: memdump hashes inline"),
    ]
    for name in STRUCTURED_FORMATS:
        variants.append(Variant(f"memdump-{name}", f"memdump --format {name}", md + ["--format", name], expect=name))
    return variants


def original_variants(image: str) -> list[Variant]:
    wrap = ["unshare", "-m", "sh", "-c", NAMESPACE, "sh", image, ORIGINAL]
    return [Variant("original", "original memdump", wrap, expect="file",
                    note="/usr/sbin/memdump, -b = page size, in a private mount namespace"),
            Variant("original-1m", "original memdump -b 1m", wrap + ["-b", "1m"], expect="file")]


def machine_limit_variants(image: str) -> list[Variant]:
    """What the machine itself does with the same file: the limits memdump is measured against."""
    return [Variant("cat", "cat FILE", ["cat", image], expect="file"),
            Variant("dd", "dd bs=1M", ["dd", f"if={image}", "bs=1M", "status=none"], expect="file")]


def read_write_variants(root: str, image: str, ram: list[list[int]], shim: str) -> list[Variant]:
    """The path every real dump takes: memdump's module device and /proc/kcore cannot splice or
    sendfile, so memdump reads and writes. The shim refuses zero-copy calls the way such a device
    does, and dd does the same reads over the same bytes: one ``dd bs=1M`` per RAM range, at the
    range's offset in the image, in one shell. Both write exactly the RAM ranges (the truth's
    digest), from the same page-cache pages at the same offsets, so the two differ only in how
    each program moves them; a dd over the same byte count from offset 0 would read other pages
    (the image's holes are sparse) and write other bytes."""
    per_range = [f"dd if={shlex.quote(image)} bs=1M iflag=skip_bytes,count_bytes skip={start} "
                 f"count={end - start} status=none" for start, end in ram]
    return [Variant("memdump-rw", "memdump [no splice: read+write]", ["env", f"LD_PRELOAD={shim}"]
                    + memdump_argv(root), expect="ram",
                    note="sendfile/splice refused (LD_PRELOAD shim, bench/nosplice.c), as on memdump's "
                         "module device and /proc/kcore: the read()+write() path"),
            Variant("dd-ram", "dd bs=1M [RAM ranges]", ["sh", "-c", " && ".join(per_range)], expect="ram",
                    note="one dd bs=1M per RAM range (skip/count in bytes), the same bytes memdump reads")]


def build_nosplice(work: str) -> tuple[str | None, str]:
    """Compile bench/nosplice.c into the work directory: (the shared object, or None and why not)."""
    compiler = shutil.which("gcc")
    if not compiler:
        return None, "no gcc to build bench/nosplice.c: the read+write path is not measured"
    shim = os.path.join(work, "nosplice.so")
    built = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", shim, os.path.join(BENCH, "nosplice.c")],
                           capture_output=True, text=True)
    if built.returncode != 0:
        return None, f"bench/nosplice.c did not build ({built.stderr.strip()[-200:]}): read+write path not measured"
    return shim, ""


def under_test(root: str, image: str, ram: list[list[int]], work: str, notes: list[str]) -> list[Variant]:
    """Every command of the timed table, in the table's order; why any was left out goes to
    ``notes``."""
    variants = memdump_variants(root)
    why_not = original_usable(image)
    if why_not:
        notes.append(f"original memdump skipped: {why_not}")
    else:
        variants += original_variants(image)
    variants += machine_limit_variants(image)
    shim, why_not = build_nosplice(work)
    if shim:
        variants += read_write_variants(root, image, ram, shim)
    else:
        notes.append(why_not)
    return variants


def read_size_sweep(name: str, base_argv: list[str]) -> list[Variant]:
    """``base_argv -b SIZE`` for every size of the sweep (compared by time only)."""
    sweep = [Variant(f"b{size}", f"{name} -b {size}", base_argv + ["-b", size]) for size in READ_SIZES]
    for variant in sweep:
        variant.size = 1
    return sweep


def startup_variants(root: str) -> list[Variant]:
    """The bare interpreter and the smallest dump: what every run pays before its first byte."""
    startup = [Variant("python", "python3 -c pass", [PY, "-c", "pass"]),
               Variant("memdump-4k", "memdump -s 4k", memdump_argv(root) + ["-s", "4k"])]
    for variant in startup:
        variant.size = 0
    return startup


def original_usable(image: str) -> str | None:
    """Why the original cannot be measured here, or None when it can."""
    if not os.path.exists(ORIGINAL):
        return f"{ORIGINAL} not installed (Debian package memdump)"
    with open(ORIGINAL, "rb") as handle:
        if handle.read(4) != b"\x7fELF":
            return f"{ORIGINAL} is not the original C program"
    if os.geteuid() != 0:
        return "not root: the original needs /dev/mem, bound from the image in a private mount namespace"
    if not shutil.which("unshare"):
        return "no unshare(1)"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", NAMESPACE, "sh", image, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot bind the image at /dev/mem in a mount namespace: {probe.stderr.strip()}"
    return None
