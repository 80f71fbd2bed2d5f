#!/usr/bin/env python3
"""The real-kernel tier: memdump.ko and the dumpers on Debian's kernel under QEMU.

Run as root (``.ci/run`` calls it after the unit tests)::

    python3 tests/vm/run_tier.py               # the whole tier (two boots, about 7 minutes)
    python3 tests/vm/run_tier.py --keep -v     # keep the work directory, print progress
    python3 tests/vm/run_tier.py --jobs cli-kmod-lime,lime-peer --no-second-boot   # quicker

Boot 1 ("main", CPU model ``max``: ERMS, so the module copies with copy_mc_to_kernel), 1 GiB of
guest RAM in a host file plus a virtio-mem device (nested "System RAM (virtio_mem)" with unplugged,
PageOffline sub-blocks the module must refuse):

a. kmod/ is built against Debian's headers with W=1 (zero warnings required) through
   ``memdump module build``, insmod'ed in the guest; the node must be 0400 root; write opens, a
   root without CAP_SYS_RAWIO and uid 65534 must be refused; no mmap/ioctl/write;
d. strict /dev/mem behaves as kernel-lab.md says (first-MiB RAM zeros, RAM above EPERM, beyond
   RAM EFAULT, no /dev/kmem); ``memdump sources`` calls devmem *limited* by CONFIG_STRICT_DEVMEM
   and ``memdump --source devmem --scan -s 1m`` returns what ``dd if=/dev/mem`` (and the original
   memdump, when installed) returns for the first MiB;
c. each dump job of ``JOBS`` (a command line run inside ``chroot /host``) writes its output to the
   results share; the host pauses the guest (QMP) right after and compares it with guest RAM
   through an independent reader of its format (compare.py): kernel text and an mlock'ed pattern
   page 100 % identical, all pages >= 99 %, every byte inside System RAM, all RAM covered.
   --source kmod and kcore, each as raw + map, padded, LiME and ELF core.  Offline/poisoned pages
   (/proc/kpageflags): the module refuses them (raw: left out; structured: zero-filled and listed
   in the manifest, and only they); kcore pads them with zeros.  The module jobs check
   ``memdump module status|load|unload`` and ``--load-module``: memdump unloads the module only
   when it loaded it, and ``auto`` never loads it;
e. LiME (Debian's lime-forensics-dkms source, built against the same headers) dumps the same
   guest to the same share (``format=lime timeout=0``): its time against ``memdump --source kmod
   --format lime``'s is reported (no threshold), its output compared like ours but not judged;
b. the fuzzer (mdtool.c) makes >= 100,000 reads at random offsets and lengths (plus seeks, a second
   thread on the same fd, a second process, a fatal signal), checks every return value against
   /proc/iomem + /proc/kpageflags and every byte read in kernel text or its pattern page against
   the truth; module load/unload cycles; dmesg must show no Oops/BUG/WARNING/Call Trace.

Boot 2 ("nofault", CPU model ``qemu64``: no ERMS, so the module copies with
copy_from_kernel_nofault): module load, a shorter fuzz, dmesg.

Exit status 0 only if every check passed; the last line is a one-line summary.
Standard library only.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import compare  # noqa: E402
from guest import Guest, GuestConfig, GuestStalled, build_initramfs  # noqa: E402

def installed_kver() -> str:
    """The newest Debian kernel installed with its headers (what linux-image-amd64 and
    linux-headers-amd64 brought): never ``uname -r``, which is the host's own kernel."""
    found = []
    for image in Path("/boot").glob("vmlinuz-*"):
        release = image.name[len("vmlinuz-"):]
        if Path(f"/lib/modules/{release}/build").exists():
            found.append(release)
    if not found:
        return "6.1.0-56-amd64"  # what kernel-lab.md measured; the tier then says what is missing
    return max(found, key=lambda r: [int(x) if x.isdigit() else 0 for x in re.split(r"[.-]", r)])


DEFAULT_KVER = installed_kver()
BAD_DMESG = re.compile(r"Oops|\bBUG\b|WARNING|Call Trace|general protection fault|Kernel panic"
                       r"|usercopy:|RIP: 00")
# -s 64m dumps hold the first MiBs only, where the kernel's own allocations churn most: measured
# 98.5-98.8 % identical there (whole-RAM dumps: 99.2-99.8 %)
PARTIAL_MIN_PERCENT = 97.0
# Debian's lime-forensics-dkms puts LiME's source here (the tier builds a copy; never committed);
# $MEMDUMP_VM_LIME_SRC names another directory holding it (main.c, Makefile, ...)
LIME_SOURCES = "/usr/src/lime-forensics-*"


# ---------------------------------------------------------------------------------------------
# Dump jobs: one command line each, run as root inside `chroot /host` (the host's own files, the
# guest's kernel) with the checkout on PYTHONPATH, in this order (the module jobs change whether
# the module is loaded).  Placeholders: {python} {repo} {dir} (the results share) {map} {out}
# {manifest} {ko} (memdump.ko) {name}, as seen where the command runs.  stdout goes to <job>.out
# unless stdout=False (jobs that take -o {out} themselves).  ``fmt`` names the reader in
# compare.READERS that turns the output back into (address, bytes) regions; "text" jobs are
# judged by their ``check`` alone.  After each job the guest records whether the module is loaded
# (<job>.state).  To add a format: a reader in compare.READERS and a line here.


class Files:
    """A job's files on the results share: <name>.out, .err, .state, ..."""

    def __init__(self, directory: Path, name: str):
        self.directory, self.name = directory, name

    def path(self, ext: str) -> Path:
        return self.directory / f"{self.name}.{ext}"

    def text(self, ext: str) -> str:
        return read(self.path(ext))


Check = Callable[[Files], List[str]]


def has_cli(ctx: "Context") -> str | None:
    """Reason to skip the memdump CLI jobs, or None when the CLI can run (asked once)."""
    if ctx.cli_reason is None:
        ctx.cli_reason = cli_problem(ctx) or ""
    return ctx.cli_reason or None


def cli_problem(ctx: "Context") -> str | None:
    probe = subprocess.run([ctx.python, "-c", "import memdump.cli, memdump.sources.kmod"],
                           env={**os.environ, "PYTHONPATH": ctx.pythonpath}, capture_output=True)
    if probe.returncode:
        last = (probe.stderr.decode().strip().splitlines() or ["?"])[-1]
        return f"memdump CLI not importable with {ctx.python}: {last}"
    return None


def has_lime(ctx: "Context") -> str | None:
    """Reason to skip the LiME peer, or None once lime.ko is built (into ctx.work)."""
    if ctx.lime is None:
        ctx.lime = build_lime(ctx)
    return None if isinstance(ctx.lime, Path) else ctx.lime


def all_of(*checks: Check) -> Check:
    return lambda files: [failure for check in checks for failure in check(files)]


def says(ext: str, *words: str) -> Check:
    """<job>.<ext> (out, err) holds every one of ``words``."""
    def check(files: Files) -> list[str]:
        text = files.text(ext)
        return [f"{ext} lacks {word!r}: {' | '.join(text.strip().splitlines()[-3:])!r}"
                for word in words if word not in text]
    return check


def module_state(want: str) -> Check:
    """After the job the module is ``loaded`` or ``absent`` (and so is its node)."""
    def check(files: Files) -> list[str]:
        state = files.text("state")
        got = "loaded" if "module=loaded" in state else "absent"
        node = "node=present" in state
        if got != want or node != (want == "loaded"):
            return [f"module {got}, node {'present' if node else 'absent'} afterwards; "
                    f"expected {want}"]
        return []
    return check


def check_sources(files: Files) -> list[str]:
    """`memdump sources` in the guest: kmod and kcore usable; devmem limited by STRICT_DEVMEM."""
    failures = []
    lines = {line.split()[0]: line for line in files.text("out").splitlines() if line.strip()}
    for name in ("kmod", "kcore"):
        if lines.get(name, "").split()[1:2] != ["usable"]:
            failures.append(f"{name} not usable: {lines.get(name, 'missing')!r}")
    devmem = lines.get("devmem", "")
    if devmem.split()[1:2] != ["limited"] or "CONFIG_STRICT_DEVMEM" not in devmem:
        failures.append(f"devmem is not 'limited' by CONFIG_STRICT_DEVMEM: {devmem!r}")
    return failures


def check_devmem_scan(files: Files) -> list[str]:
    """--source devmem --scan -s 1m == dd if=/dev/mem bs=4096 count=256 (== original memdump)."""
    failures = []
    got, dd = files.path("out").read_bytes(), files.path("dd").read_bytes()
    if len(got) != 1 << 20 or got != dd:
        diff = next((i for i in range(min(len(got), len(dd))) if got[i] != dd[i]), None)
        failures.append(f"{len(got)} bytes, dd read {len(dd)}; first difference at "
                        f"{diff if diff is None else hex(diff)}")
    if files.text("map") != "0x0 0x100000\n":
        failures.append(f"map {files.text('map')!r}, expected '0x0 0x100000'")
    original = files.path("orig")
    if original.exists() and original.read_bytes() != got:
        failures.append("differs from the original memdump -s 1m")
    return failures + says("err", "source devmem", "CONFIG_STRICT_DEVMEM")(files)


def status_says(module: str, device: str) -> Check:
    """`memdump module status` lines: module: <module...>, device: <...device...>."""
    def check(files: Files) -> list[str]:
        rows = dict(line.split(":", 1) for line in files.text("out").splitlines() if ":" in line)
        failures = []
        if not rows.get("module", "").strip().startswith(module):
            failures.append(f"module: {rows.get('module', '').strip()!r}, expected {module!r}")
        if device not in rows.get("device", ""):
            failures.append(f"device: {rows.get('device', '').strip()!r}, expected {device!r}")
        if "installed" not in rows or "kernel" not in rows:
            failures.append("no 'kernel:' / 'installed:' line")
        return failures
    return check


@dataclass
class Job:
    name: str
    command: str
    fmt: str = "raw"
    source: str | None = None   # kmod: refuses offline pages; kcore: reads them as zeros
    needs: Callable[["Context"], str | None] | None = None
    stdout: bool = True
    check: Check | None = None
    manifest: bool = False      # wrote {manifest}
    partial: bool = False       # -s: compared where it dumped, not for coverage
    chroot: bool = True         # False: run by the guest's busybox shell
    pre: str = ""               # guest shell before the (timed) command
    post: str = ""              # guest shell after it
    peer: bool = False          # another tool (LiME): reported, not judged, not in the totals

    @property
    def limit_name(self) -> str:
        """The guest shell variable holding this job's time limit."""
        return "LIMIT_" + re.sub(r"\W", "_", self.name)

    def work_bytes(self, ram_bytes: int, span_bytes: int) -> int:
        """Bytes this job moves through the dump path (read, written or hashed), the measure its
        time limit scales with: a padded image with a manifest hashes every address up to the
        end of RAM, holes included."""
        if self.fmt == "text":
            return 1 << 20
        if self.partial:
            return 64 << 20
        return span_bytes if self.fmt == "padded" else ram_bytes


CLI = "{python} -m memdump"


# The guest's processes as /proc lists them ("<pid> <comm>" lines): taken before and after a
# dump, the processes that lived through it are what an analysis of the image must list.
PROCESSES = ('for d in /proc/[0-9]*; do read c < $d/comm 2>/dev/null && echo "${{d#/proc/}} $c"; '
             'done > $R/{name}.ps-{when}')


def structured(source: str, fmt: str) -> Job:
    analysed = source == "kmod" and fmt in ("lime", "elf")
    return Job(f"cli-{source}-{fmt}", f"{CLI} --source {source} --format {fmt} -o {{out}} "
               "--manifest {manifest}", fmt=fmt, source=source, stdout=False, manifest=True,
               needs=has_cli,
               pre=PROCESSES.replace("{when}", "before") if analysed else "",
               post=PROCESSES.replace("{when}", "after") if analysed else "")


def check_symbols(files: Files) -> list[str]:
    """`memdump symbols` in the guest wrote an ISF of this kernel with a typed init_task."""
    import json

    path = files.directory / "symbols" / "linux" / "guest.json"
    try:
        isf = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return [f"{path.name}: {exc}"]
    init_task = isf.get("symbols", {}).get("init_task", {})
    if init_task.get("type", {}).get("name") != "task_struct" or not init_task.get("address"):
        return [f"init_task is {init_task!r}, not a task_struct with an address"]
    if "task_struct" not in isf.get("user_types", {}):
        return ["no struct task_struct"]
    return []


JOBS: list[Job] = [
    Job("raw-device", "{python} {repo}/tests/vm/rawdump.py --device /dev/memdump -m {map}",
        source="kmod"),
    Job("cli-sources", f"{CLI} sources", fmt="text", needs=has_cli, check=check_sources),
    Job("cli-devmem-scan", f"{CLI} -v --source devmem --scan -s 1m -m {{map}}", fmt="text",
        needs=has_cli, check=check_devmem_scan,
        pre="dd if=/dev/mem of=$R/{name}.dd bs=4096 count=256 2>/dev/null\n"
            "if [ -x /host/usr/sbin/memdump ]; then timeout 60 chroot /host /usr/sbin/memdump "
            "-s 1m > $R/{name}.orig 2>/dev/null; fi"),
    Job("cli-kmod", f"{CLI} -v --source kmod -m {{map}}", source="kmod", needs=has_cli,
        check=says("err", "source kmod")),
    Job("cli-symbols", f"{CLI} symbols -o {{dir}}/symbols/linux/guest.json", fmt="text",
        needs=has_cli, check=check_symbols, pre="mkdir -p $R/symbols/linux"),
    structured("kmod", "padded"),
    structured("kmod", "lime"),
    Job("lime-peer", "insmod {dir}/lime.ko path={out} format=lime timeout=0", fmt="lime",
        stdout=False, chroot=False, peer=True, needs=has_lime, post="rmmod lime"),
    structured("kmod", "elf"),
    # the module from the command line; `auto` with and without it
    Job("module-status", f"{CLI} module status", fmt="text", needs=has_cli,
        check=status_says("loaded", "mode 0400, owner 0:0 (ok)")),
    Job("load-module-kept", f"{CLI} --load-module {{ko}} -v -s 64m -m {{map}}", source="kmod",
        partial=True, needs=has_cli,
        check=all_of(says("err", "already loaded", "source kmod"), module_state("loaded"))),
    Job("module-unload", f"{CLI} module unload", fmt="text", needs=has_cli,
        check=all_of(says("out", "unloaded memdump"), module_state("absent"))),
    Job("auto-without-module", f"{CLI} -v -s 64m -m {{map}}", source="kcore", partial=True,
        needs=has_cli, check=all_of(says("err", "source kcore"), module_state("absent"))),
    Job("module-status-absent", f"{CLI} module status", fmt="text", needs=has_cli,
        check=status_says("not loaded", "/dev/memdump missing")),
    Job("load-module-temp", f"{CLI} --load-module {{ko}} -v -s 64m -m {{map}}", source="kmod",
        partial=True, needs=has_cli,
        check=all_of(says("err", "memdump: loaded /", "source kmod", "unloaded memdump"),
                     module_state("absent"))),
    Job("module-load", f"{CLI} module load {{ko}}", fmt="text", needs=has_cli,
        check=all_of(says("out", "loaded /"), module_state("loaded"))),
    Job("cli-kcore", f"{CLI} -v --source kcore -m {{map}}", source="kcore", needs=has_cli,
        check=says("err", "source kcore")),
    structured("kcore", "padded"),
    structured("kcore", "lime"),
    structured("kcore", "elf"),
]


# the 5-level boot's jobs: the ELF facts (direct, and recovered from LiME) and a raw dump
LA57_JOBS = ("cli-kmod", "cli-kmod-lime", "cli-kmod-elf")


# ---------------------------------------------------------------------------------------------
# Time limits.  Nothing here may fail because the machine is slow: each boot first times two
# small dumps through the very path the jobs take (--source kmod --format lime with a manifest,
# so reading, writing to the share and sha256), and every job's limit is derived from that: the
# start-up cost plus the per-byte cost times the job's bytes, times a margin.  Steps that do not
# scale with RAM (the boot, the fuzz, which stops itself) get limits generous enough for a
# machine at a quarter of this one's speed.  A job that still runs out is reported with how long
# it ran, its limit and the last thing it said.

CALIBRATION_SIZES = (16, 144)  # MiB: two points give the start-up cost and the per-byte cost
LIMIT_MARGIN = 4.0             # a job may take this many times its predicted time
LIMIT_FLOOR = 300.0            # seconds, whatever the prediction (whole-RAM jobs under load
                               # measured 2-3.5x the per-byte cost of the small dumps)
UNCALIBRATED_LIMIT = 1800.0    # per job when the calibration itself failed
BOOT_LIMIT = 900.0             # boot to the first sentinel after it (calibration included)
STEP_SLACK = 300.0             # host-side allowance beyond a guest-side limit (pre/post steps)
BACKSTOP = 5400.0              # QEMU's own timeout(1): only for a harness that died


@dataclass(frozen=True)
class Calibration:
    startup: float      # seconds a dump costs before its first byte
    per_mib: float      # seconds per MiB through the dump path

    @classmethod
    def from_times(cls, small: float, large: float) -> "Calibration":
        """The start-up cost from the difference of the two dumps; the per-MiB cost never below
        the larger dump's average (start-up included): on a busy machine the two can come out
        in any order, and a whole-RAM dump costs more per byte than a small one anyway."""
        lo, hi = CALIBRATION_SIZES
        slope = (large - small) / (hi - lo)
        startup = max(small - max(slope, 0.0) * lo, 0.0)
        return cls(startup=startup, per_mib=max(slope, large / hi))

    def limit(self, work_bytes: int) -> float:
        predicted = self.startup + self.per_mib * work_bytes / (1 << 20)
        return max(LIMIT_FLOOR, LIMIT_MARGIN * predicted)

    def describe(self) -> str:
        return f"start-up {self.startup:.1f}s, {1 / self.per_mib:.1f} MiB/s"


def limits_script(jobs: list["Job"], calibration: "Calibration | None", iomem: str) -> str:
    """The shell the guest sources after its calibration: one LIMIT_<job>=<seconds> per job."""
    ram = compare.iomem_ranges(iomem)
    ram_bytes = sum(e - s for s, e in ram)
    span_bytes = max((e for _, e in ram), default=0)
    lines = []
    for job in jobs:
        seconds = (calibration.limit(job.work_bytes(ram_bytes, span_bytes))
                   if calibration else UNCALIBRATED_LIMIT)
        lines.append(f"{job.limit_name}={int(seconds + 0.999)}")
    return "\n".join(lines) + "\n"


def job_limits(text: str) -> dict[str, float]:
    """LIMIT_<job> -> seconds, as limits_script wrote them."""
    found = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            found[name] = float(value)
    return found


# ---------------------------------------------------------------------------------------------


@dataclass
class Context:
    kver: str
    work: Path
    python: str
    pythonpath: str
    verbose: bool
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lime: Path | str | None = None   # lime.ko once built, or why it is not
    cli_reason: str | None = None    # why the CLI cannot run ("" when it can), once asked
    started: float = field(default_factory=time.monotonic)

    def log(self, text: str) -> None:
        if self.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def fail(self, text: str) -> None:
        self.failures.append(text)
        self.log("FAIL " + text)


@dataclass
class Boot:
    """One QEMU boot: its own results share (a directory of the work directory) and steps."""

    name: str
    dir: Path
    cpu: str
    copy_method: str           # what the module's load message must name
    fuzz_reads: int
    cycles: int
    full: bool                 # open checks, /dev/mem, dump jobs
    jobs: list[Job] = field(default_factory=list)
    results: dict = field(default_factory=lambda: {"timings": {}})
    insmod_args: str = ""                              # module parameters for every insmod
    peers: dict = field(default_factory=dict)          # job -> Comparison of another tool's dump
    guest_times: dict = field(default_factory=dict)    # job -> seconds, measured in the guest
    calibration: Calibration | None = None
    limits: dict = field(default_factory=dict)         # LIMIT_<job> -> seconds
    append: str = ""                                   # kernel command line additions
    analyse: bool = False      # Volatility 3 and drgn on its dumps (a 4-level guest)


# Python packages the memdump CLI needs beyond the standard library.
CLI_DEPENDENCIES = ("click",)


def choose_python(work: Path) -> tuple[str, str]:
    """The guest's interpreter and PYTHONPATH (as seen in the chroot, the host's own files).

    Debian's /usr/bin/python3 by default: measured in the guest, the pyenv interpreter changes
    about 3.5 MiB more guest RAM while it dumps (0.3 % of pages at 1 GiB).  Dependencies it
    lacks (click) are copied from an interpreter that has them into <work>/pylib.
    $MEMDUMP_VM_PYTHON overrides the choice.
    """
    interpreter = os.environ.get("MEMDUMP_VM_PYTHON") or (
        "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK)
        else os.path.realpath(sys.executable))
    pylib = work / "pylib"
    for module in CLI_DEPENDENCIES:
        if subprocess.run([interpreter, "-c", f"import {module}"],
                          capture_output=True).returncode == 0:
            continue
        for donor in (os.path.realpath(sys.executable), shutil.which("python3") or ""):
            if not donor:
                continue
            found = subprocess.run([donor, "-c", f"import {module}; print({module}.__file__)"],
                                   capture_output=True, text=True)
            if found.returncode == 0:
                source = Path(found.stdout.strip())
                pylib.mkdir(exist_ok=True)
                if source.name == "__init__.py":
                    shutil.copytree(source.parent, pylib / module,
                                    ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(source, pylib / source.name)
                break
    path = f"{REPO}:{pylib}" if pylib.exists() else str(REPO)
    return interpreter, path


# ---------------------------------------------------------------------------------------------
# host-side builds


def build_module(ctx: Context) -> Path:
    """kmod/ built against Debian's headers with W=1 in a copy (<work>/kmod-build, so the checkout
    stays clean and cannot race someone else's build): through ``memdump module build`` when the
    CLI runs here, else with make itself.  The log must hold no warning."""
    build = ctx.work / "kmod-build"
    log = ctx.work / "kbuild.log"
    t = time.monotonic()
    via_cli = has_cli(ctx) is None
    if via_cli:
        proc = subprocess.run([ctx.python, "-m", "memdump", "module", "build", "-v", "--source-dir",
                               str(REPO / "kmod"), "--build-dir", str(build), "--kver", ctx.kver,
                               "W=1"], env={**os.environ, "PYTHONPATH": ctx.pythonpath},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        output = proc.stderr
        printed = proc.stdout.decode(errors="replace").strip()
        if not proc.returncode and printed != str(build / "memdump.ko"):
            ctx.fail(f"memdump module build printed {printed!r}, not {build / 'memdump.ko'}")
    else:
        shutil.copytree(REPO / "kmod", build, ignore=shutil.ignore_patterns(
            "*.o", "*.ko", "*.mod", "*.mod.c", ".*.cmd", "Module.symvers", "modules.order", ".tmp*"))
        proc = subprocess.run(["make", "-C", str(build), f"KVER={ctx.kver}", "W=1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = proc.stdout
    log.write_bytes(output)
    text = output.decode(errors="replace")
    warnings = [line for line in text.splitlines() if re.search(r"\bwarning\b", line, re.I)
                and "Skipping BTF generation" not in line]
    ko = build / "memdump.ko"
    if proc.returncode or not ko.exists():
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise TierAbort(f"module build failed: {tail}")
    if warnings:
        ctx.fail(f"module build: {len(warnings)} warnings, first: {warnings[0]}")
    ctx.notes.append(f"module build (W=1{', memdump module build' if via_cli else ', make'}) "
                     f"{'clean: 0 warnings' if not warnings else 'WARNINGS'} "
                     f"in {time.monotonic() - t:.0f}s")
    return ko


def build_lime(ctx: Context) -> Path | str:
    """LiME's lime.ko from Debian's lime-forensics-dkms source, built in a copy against the same
    headers (kbuild directly: LiME's own Makefile renames and strips the module); or the reason
    it cannot be."""
    found = [os.environ["MEMDUMP_VM_LIME_SRC"]] if os.environ.get("MEMDUMP_VM_LIME_SRC") else \
        sorted(glob.glob(LIME_SOURCES))
    if not found or not Path(found[-1], "main.c").exists():
        return (f"no LiME source ({os.environ.get('MEMDUMP_VM_LIME_SRC') or LIME_SOURCES}: "
                "apt-get install lime-forensics-dkms)")
    source = Path(found[-1])
    build = ctx.work / "lime-build"
    shutil.copytree(source, build, ignore=shutil.ignore_patterns("*.o", "*.ko", ".*.cmd"))
    t = time.monotonic()
    proc = subprocess.run(["make", "-C", f"/lib/modules/{ctx.kver}/build", f"M={build}",
                           "modules"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    (ctx.work / "lime-build.log").write_bytes(proc.stdout)
    if proc.returncode or not (build / "lime.ko").exists():
        tail = proc.stdout.decode(errors="replace").strip().splitlines()[-1:]
        return f"LiME build failed: {tail}"
    ctx.notes.append(f"LiME {source.name} built in {time.monotonic() - t:.0f}s")
    return build / "lime.ko"


def build_mdtool(ctx: Context) -> Path:
    out = ctx.work / "mdtool"
    proc = subprocess.run(["gcc", "-static", "-O2", "-pthread", "-Wall", "-Wextra", "-o",
                           str(out), str(HERE / "mdtool.c")], capture_output=True, text=True)
    if proc.returncode:
        raise TierAbort(f"mdtool build failed: {proc.stderr.strip()[:500]}")
    return out


class TierAbort(Exception):
    """Something the tier cannot go on without (a build)."""


# ---------------------------------------------------------------------------------------------
# the guest's step script


def guest_script(ctx: Context, boot: Boot, seed: int, fuzz_seconds: int) -> str:
    """The steps the guest's /init runs from the results share (/results in the guest)."""
    hw = str(boot.dir)  # the same directory as seen inside `chroot /host`
    env = (f"/usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "
           f"PYTHONPATH={ctx.pythonpath} PYTHONDONTWRITEBYTECODE=1")
    lines = [
        f"# generated by tests/vm/run_tier.py: boot {boot.name}",
        "R=/results",
        f"H={hw}",
        f"MODARGS='{boot.insmod_args}'",
        "say() { echo \"@@MD:$*@@\" > /dev/console; }",
        "wait_ack() { while [ ! -e $R/ack.$1 ]; do usleep 20000; done; }",
        "# the chroot: the host's / read-only, the guest's proc/sys/dev, the results share",
        "mount -t proc proc /host/proc && mount -t sysfs sysfs /host/sys "
        "&& mount -t devtmpfs devtmpfs /host/dev",
        "mount -o bind /results /host$H",
        "",
        "# virtio-mem plugs and onlines its memory after boot: wait for MemTotal to settle",
        "last=0; same=0; n=0",
        "while [ $same -lt 5 ] && [ $n -lt 150 ]; do",
        "  cur=$(grep MemTotal /proc/meminfo)",
        "  if [ \"$cur\" = \"$last\" ]; then same=$((same+1)); else same=0; last=$cur; fi",
        "  n=$((n+1)); usleep 200000",
        "done",
        "",
        "# a. the module",
        "insmod $R/memdump.ko $MODARGS; echo \"insmod=$?\" > $R/module.txt",
        "# Volatility 3's kmsg leaves out the newest record: let the module's load message not be it",
        "echo 'memdump tier: module loaded' > /dev/kmsg",
        "ls -ln /dev/memdump >> $R/module.txt 2>&1",
        "cat /proc/iomem > $R/iomem.txt",
        "cat /proc/kpageflags > $R/kpageflags.before",
    ]
    if boot.full:
        lines += [
            "$R/mdtool open-checks /dev/memdump > $R/open-checks.txt 2>&1",
            "$R/mdtool secret /dev/memdump > $R/secret.txt 2>&1",
            "",
            "# d. strict /dev/mem",
            "$R/mdtool devmem $R/devmem.txt",
            "",
            "# c. dump jobs, while a live process holds an mlock'ed pattern page",
            "$R/mdtool pattern $R/pattern.txt $R/pattern.stop &",
            "while [ ! -s $R/pattern.txt ]; do usleep 20000; done",
            "",
            "# the calibration: two small dumps through the jobs' path time this machine; the",
            "# host turns them into each job's limit (limits.sh)",
        ]
        if any(job.chroot for job in boot.jobs):
            for size in CALIBRATION_SIZES:
                name = f"calibrate-{size}"
                lines += [
                    "read t0 rest < /proc/uptime",
                    f"timeout {int(BOOT_LIMIT)} chroot /host {env} {ctx.python} -m memdump --source kmod "
                    f"--format lime -s {size}m -o {hw}/{name}.out --manifest {hw}/{name}.json "
                    f"2> $R/{name}.err; echo $? > $R/{name}.rc",
                    "read t1 rest < /proc/uptime",
                    f"echo \"$t0 $t1\" > $R/{name}.time; rm -f $R/{name}.out",
                ]
        lines += ["say CALIBRATED", "wait_ack calibrate", ". $R/limits.sh"]
        for job in boot.jobs:
            where = hw if job.chroot else "/results"
            fields = dict(python=ctx.python, repo=REPO, dir=where, name=job.name,
                          map=f"{where}/{job.name}.map", out=f"{where}/{job.name}.out",
                          manifest=f"{where}/{job.name}.json", ko=f"{where}/memdump.ko")
            cmd = job.command.format(**fields)
            if job.chroot:
                cmd = f"chroot /host {env} {cmd}"
            redirect = f"> $R/{job.name}.out " if job.stdout else ""
            lines += [
                f"say JOB:{job.name}",
                *([job.pre.format(**fields)] if job.pre else []),
                "read t0 rest < /proc/uptime",
                f"timeout ${job.limit_name} {cmd} {redirect}2> $R/{job.name}.err",
                f"echo $? > $R/{job.name}.rc",
                "read t1 rest < /proc/uptime",
                f"echo \"$t0 $t1\" > $R/{job.name}.time",
                # shell builtins only: nothing forks between the dump and the comparison
                "{ if [ -d /sys/module/memdump ]; then echo module=loaded; "
                "else echo module=absent; fi; if [ -e /dev/memdump ]; then echo node=present; "
                f"else echo node=absent; fi; }} > $R/{job.name}.state",
                f"say DUMPED:{job.name}",
                f"wait_ack {job.name}",
                *([job.post.format(**fields)] if job.post else []),
                # what the pages are now: explains the ones that changed (-v report)
                *([f"cat /proc/kpageflags > $R/{job.name}.kpageflags"]
                  if job.fmt != "text" and ctx.verbose else []),
            ]
        lines += ["# the fuzz needs the module, whatever the jobs left",
                  "[ -d /sys/module/memdump ] || insmod $R/memdump.ko $MODARGS"]
        lines += ["touch $R/pattern.stop; wait"]
    lines += [
        "",
        "# b. fuzz; the host checks its kernel-text reference against RAM, guest paused",
        "say FUZZ",
        f"timeout {fuzz_seconds + 120} $R/mdtool fuzz /dev/memdump {boot.fuzz_reads} {seed} $R "
        f"{fuzz_seconds}; echo $? > $R/fuzz.rc",
        "say FUZZED",
        "wait_ack fuzz",
        "",
        "# load/unload cycles; rmmod must fail while the device is open",
        f"for i in $(seq 1 {boot.cycles}); do",
        "  mkdir -p $R/cycle$i",
        "  exec 3</dev/memdump",
        "  if rmmod memdump 2>/dev/null; then echo \"FAIL $i rmmod with an open fd\"; "
        "else echo \"ok $i rmmod refused while open\"; fi",
        "  exec 3<&-",
        "  if rmmod memdump; then echo \"ok $i rmmod\"; else echo \"FAIL $i rmmod\"; fi",
        "  if [ -e /dev/memdump ]; then echo \"FAIL $i node left\"; "
        "else echo \"ok $i node gone\"; fi",
        "  if insmod $R/memdump.ko $MODARGS; then echo \"ok $i insmod\"; else echo \"FAIL $i insmod\"; fi",
        "  if $R/mdtool fuzz /dev/memdump 1000 $i $R/cycle$i 60 >/dev/null 2>&1; "
        "then echo \"ok $i fuzz\"; else echo \"FAIL $i fuzz\"; fi",
        "done > $R/cycles.txt 2>&1",
        "",
        "dmesg > $R/dmesg.txt",
        "say DONE",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# checks


def key_values(path: Path) -> dict[str, str]:
    values = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
    return values


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def guest_seconds(files: Files) -> float | None:
    """The job's duration as the guest measured it (/proc/uptime before and after)."""
    try:
        before, after = map(float, files.text("time").split())
    except ValueError:
        return None
    return after - before


def check_job(ctx: Context, boot: Boot, job: Job, ram: compare.GuestRam) -> None:
    """Called with the guest paused right after the job wrote its output."""
    w = boot.dir
    files = Files(w, job.name)
    # a peer's trouble is reported, not judged
    fail = (lambda text: ctx.notes.append(f"peer {text}")) if job.peer else ctx.fail
    seconds = guest_seconds(files)
    if seconds is not None:
        boot.guest_times[job.name] = seconds
    rc = files.text("rc").strip() or "?"
    if rc != "0":
        tail = " | ".join(files.text("err").strip().splitlines()[-3:])
        limit = boot.limits.get(job.limit_name)
        if rc in ("124", "143") and limit is not None:  # timeout(1): its own code, or SIGTERM's
            out = files.path("out")
            size = out.stat().st_size if out.exists() else 0
            fail(f"job {job.name}: timed out after {seconds or 0:.1f}s (limit {limit:.0f}s from "
                 f"the calibration, {boot.calibration.describe() if boot.calibration else 'none'}"
                 f"); it had written {size} bytes; last said: {tail or 'nothing'}")
        else:
            fail(f"job {job.name}: exit {rc}: {tail}")
        return
    failures = []
    if job.check:
        try:
            failures = job.check(files)
        except (OSError, ValueError) as exc:
            failures = [f"{exc}"]
    for failure in failures:
        fail(f"job {job.name}: {failure}")
    if job.fmt == "text":
        boot.results[job.name] = "ok" if not failures else "FAIL"
        return
    iomem = read(w / "iomem.txt")
    ram_ranges = compare.iomem_ranges(iomem)
    kcode = compare.iomem_entry(iomem, "Kernel code")
    unreadable = compare.unreadable_pages((w / "kpageflags.before").read_bytes(), ram_ranges)
    pattern = key_values(w / "pattern.txt")
    expected = {}
    if "phys" in pattern:
        expected["pattern page"] = (int(pattern["phys"], 16), compare.pattern_page())
    else:
        fail("no pattern page address from the guest")
    unserved_expected: list = []
    if job.source == "kcore":
        # /proc/kcore publishes whole pages only: a partial page at a range's end (the first
        # range's 0x9f000-0x9fc00) is out of its reach; the manifest must list exactly those bytes
        whole = compare.whole_pages(ram_ranges)
        unserved_expected = [(s, e) for s, e in
                             compare.subtract(ram_ranges, whole)] if not job.partial else []
        ram_ranges = whole
    structured = job.fmt != "raw"
    policy: dict = {"unreadable": unreadable, "full_coverage": not (job.partial or job.peer),
                    # kcore reads offline pages as zeros; a structured format zero-fills them
                    "unreadable_as_zeros": structured or job.source == "kcore"}
    if job.partial:
        # the first MiBs only: no kernel text, no pattern page, and the busiest RAM there is
        kcode, expected, policy["min_percent"] = None, {}, PARTIAL_MIN_PERCENT
    manifest = None
    t = time.monotonic()
    try:
        if job.manifest:
            manifest = compare.manifest_facts(files.path("json"))
            policy["zero_filled"] = manifest["zero_filled"]
            # the module refuses exactly the offline pages; kcore never refuses a RAM page
            policy["zero_filled_expected"] = unreadable if job.source == "kmod" else set()
        regions = compare.READERS[job.fmt](files.path("out"), files.path("map"), ram_ranges)
        verdict = compare.compare(regions, ram, ram_ranges,
                                  {"kernel code": kcode} if kcode else {}, expected, **policy)
    except (ValueError, OSError, KeyError) as exc:
        fail(f"job {job.name}: {exc!r}" if isinstance(exc, KeyError) else f"job {job.name}: {exc}")
        return
    if manifest is not None:
        verdict.checks["manifest"] = check_manifest(job, manifest, verdict, ram_ranges,
                                                    unserved_expected)
    if job.fmt == "elf":
        verdict.checks["ELF notes and p_vaddr"] = check_elf_facts(ctx, files.path("out"))
    if job.peer:
        total = sum(e - s for s, e in ram_ranges)
        ctx.notes.append(f"peer {job.name}: {verdict.bytes >> 20} of {total >> 20} MiB of System "
                         f"RAM dumped, in {len(verdict.regions)} of the guest's "
                         f"{len(ram_ranges)} RAM ranges")
    for failure in verdict.failed():
        fail(f"job {job.name}: {failure}")
    (boot.peers if job.peer else boot.results)[job.name] = verdict
    (w / f"{job.name}.differing").write_text("".join(f"0x{a:x}\n" for a in verdict.differing))
    ctx.log(f"job {job.name}: compared in {time.monotonic() - t:.1f}s; "
            + "; ".join(f"{k}: {v}" for k, v in verdict.checks.items()))


def check_manifest(job: Job, manifest: dict, verdict: compare.Comparison,
                   ram_ranges: list[tuple[int, int]], unserved_expected: list) -> str:
    """The manifest agrees with the file: complete, this source and format, the same regions
    (every System RAM range of the guest), and RAM the source cannot serve listed as such."""
    problems = []
    if manifest["complete"] is not True:
        problems.append(f"not complete ({manifest['error']})")
    if manifest["source"] != job.source or manifest["format"] != job.fmt:
        problems.append(f"source {manifest['source']} format {manifest['format']}")
    if manifest["regions"] != ram_ranges:
        problems.append(f"{len(manifest['regions'])} regions, not the guest's {len(ram_ranges)} "
                        "System RAM ranges")
    if job.fmt != "padded" and manifest["regions"] != verdict.regions:
        problems.append("its regions are not the file's")
    if manifest["skipped"]:
        problems.append(f"{len(manifest['skipped'])} skipped spans in a structured image")
    if job.source == "kcore" and not job.partial and manifest["unserved"] != unserved_expected:
        problems.append(f"unserved {manifest['unserved']} != partial pages {unserved_expected}")
    return ("FAIL " + "; ".join(problems)) if problems else (
        f"ok complete, {len(manifest['regions'])} regions = System RAM")


def check_elf_facts(ctx: Context, path: Path) -> str:
    """VMCOREINFO of this kernel in the note; p_vaddr = the direct map (one kernel-half offset)."""
    notes = compare.elf_notes(path)
    shifts = compare.elf_direct_map(path)
    info = notes.get("VMCOREINFO", b"")
    if f"OSRELEASE={ctx.kver}".encode() not in info:
        return f"FAIL no VMCOREINFO with OSRELEASE={ctx.kver} (notes: {sorted(notes)})"
    if len(shifts) != 1 or not min(shifts) >> 63:  # the kernel half (LA57 guests start lower)
        return f"FAIL p_vaddr - p_paddr: {sorted(hex(v) for v in shifts)}"
    return f"ok VMCOREINFO ({len(info)} bytes), direct map at {min(shifts):#x}"


KPF_NAMES = ("locked error referenced uptodate dirty lru active slab writeback reclaim buddy mmap "
             "anon swapcache swapbacked compound_head compound_tail huge unevictable hwpoison "
             "nopage ksm thp offline zero_page idle pgtable").split()


def explain_differences(boot: Boot, job: str) -> str:
    """What the pages that changed during a dump are now (the guest's /proc/kpageflags)."""
    flags_file, diff_file = boot.dir / f"{job}.kpageflags", boot.dir / f"{job}.differing"
    if not flags_file.exists() or not diff_file.exists():
        return "?"
    flags = flags_file.read_bytes()
    counts: dict[str, int] = {}
    for line in diff_file.read_text().split():
        pfn = int(line, 16) >> 12
        value = int.from_bytes(flags[pfn * 8:pfn * 8 + 8], "little")
        kinds = [n for i, n in enumerate(KPF_NAMES) if value >> i & 1 and n in
                 ("slab", "buddy", "lru", "anon", "pgtable", "compound_head", "compound_tail")]
        key = "+".join(kinds) or "no-flags (kernel page or free tail)"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:6])


def check_fuzz_reference(ctx: Context, boot: Boot, ram: compare.GuestRam) -> None:
    """kcode.bin is what the fuzzer read of the kernel text through the device: it must equal
    RAM (every fuzz read inside kernel text was compared with it in the guest)."""
    values = key_values(boot.dir / "fuzz.txt")
    ref = boot.dir / "kcode.bin"
    if not ref.exists() or "kcode_start" not in values:
        ctx.fail(f"{boot.name}: fuzz left no kernel text reference")
        return
    start, end = int(values["kcode_start"]), int(values["kcode_end"])
    if ref.read_bytes() != ram.read(start, end):
        ctx.fail(f"{boot.name}: kernel text read through the device differs from guest RAM")


def calibrate(ctx: Context, boot: Boot) -> None:
    """Turn the guest's two calibration dumps into limits.sh (the guest waits for it)."""
    times = []
    if not any(job.chroot for job in boot.jobs):
        ctx.notes.append(f"{boot.name}: no memdump job, no calibration: every job may take "
                         f"{UNCALIBRATED_LIMIT:.0f}s")
    for size in CALIBRATION_SIZES if any(job.chroot for job in boot.jobs) else ():
        files = Files(boot.dir, f"calibrate-{size}")
        rc = files.text("rc").strip() or "?"
        seconds = guest_seconds(files)
        if rc != "0" or seconds is None:
            tail = " | ".join(files.text("err").strip().splitlines()[-2:])
            ctx.fail(f"{boot.name}: calibration dump of {size} MiB: exit {rc}: {tail}")
            break
        times.append(seconds)
    if len(times) == len(CALIBRATION_SIZES):
        boot.calibration = Calibration.from_times(*times)
        ctx.notes.append(f"{boot.name}: calibration {boot.calibration.describe()} "
                         f"({', '.join(f'{s} MiB {t:.1f}s' for s, t in zip(CALIBRATION_SIZES, times))})")
    text = limits_script(boot.jobs, boot.calibration, read(boot.dir / "iomem.txt"))
    boot.limits = job_limits(text)
    (boot.dir / "limits.sh").write_text(text)
    ctx.log(f"{boot.name}: limits " + ", ".join(f"{k[6:]} {v:.0f}s" for k, v in boot.limits.items()))


def check_virtio_mem(ctx: Context, boot: Boot, guest: Guest, requested: int) -> None:
    """QEMU's view of the virtio-mem device: where it is and how much the guest plugged."""
    base, plugged = guest.virtio_mem_state()
    boot.results["virtio_mem"] = (base, plugged)
    if plugged != requested:
        ctx.fail(f"virtio-mem: guest plugged {plugged >> 20} of {requested >> 20} MiB requested")
    if "System RAM (virtio_mem)" not in read(boot.dir / "iomem.txt"):
        ctx.fail("virtio-mem: no 'System RAM (virtio_mem)' in the guest's /proc/iomem")


def run_guest(ctx: Context, args, boot: Boot) -> None:
    """Boot, follow the sentinels, pause and compare at each dump, make sure QEMU ends."""
    ram_file = Path(tempfile.mkstemp(prefix="memdump-vm-", suffix=".ram", dir="/dev/shm")[1])
    vmem_file = Path(tempfile.mkstemp(prefix="memdump-vm-", suffix=".vmem", dir="/dev/shm")[1])
    results = boot.results
    virtio_mem = (vmem_file, args.virtio_mem, args.virtio_mem_plug) if args.virtio_mem else None
    # the short boot gets a shorter leash: a hung guest must not eat the tier's budget twice
    cfg = GuestConfig(kver=ctx.kver, workdir=boot.dir, ram_file=ram_file,
                      memory_mib=args.memory, cpu_model=boot.cpu, timeout=args.timeout,
                      append=boot.append, virtio_mem=virtio_mem)
    guest = Guest(cfg, ctx.work / "initramfs.cpio.gz")
    by_name = {j.name: j for j in boot.jobs}
    started: dict[str, float] = {}
    ram: compare.GuestRam | None = None
    ended = False

    def guest_ram() -> compare.GuestRam:
        nonlocal ram
        if ram is None:
            windows = [(0, ram_file)]
            if "virtio_mem" in results:
                windows.append((results["virtio_mem"][0], vmem_file))
            ram = compare.GuestRam(windows)
        return ram

    def paused(check: Callable[[], None], ack: str) -> None:
        guest.pause()
        try:
            check()
        finally:
            guest.resume()
            (boot.dir / f"ack.{ack}").touch()

    t0 = time.monotonic()
    fuzz_limit = args.fuzz_seconds + 120 + STEP_SLACK  # the fuzz stops itself after fuzz_seconds
    step = "boot"

    def next_step(what: str, seconds: float) -> None:
        nonlocal step
        step = what
        guest.deadline = time.monotonic() + seconds

    try:
        guest.start()
        next_step("boot", BOOT_LIMIT)
        for name, arg in guest.events():
            now = time.monotonic() - t0
            ctx.log(f"{boot.name}: {name} {arg}".strip())
            if name == "BOOTED":
                results["timings"]["boot"] = now
            elif name == "CALIBRATED":
                calibrate(ctx, boot)
                next_step("the step after the calibration", STEP_SLACK)
                (boot.dir / "ack.calibrate").touch()
            elif name in ("JOB", "FUZZ"):
                started[arg or "fuzz"] = now
                if name == "JOB":
                    next_step(f"job {arg}", boot.limits.get(by_name[arg].limit_name,
                                                            UNCALIBRATED_LIMIT) + STEP_SLACK)
                else:
                    next_step("the fuzz", fuzz_limit)
                if virtio_mem and "virtio_mem" not in results:
                    check_virtio_mem(ctx, boot, guest, args.virtio_mem_plug << 20)
            elif name == "DUMPED":
                results["timings"][arg] = now - started.get(arg, now)
                paused(lambda: check_job(ctx, boot, by_name[arg], guest_ram()), arg)
                next_step(f"the steps after job {arg}", STEP_SLACK)
            elif name == "FUZZED":
                results["timings"]["fuzz"] = now - started.get("fuzz", now)
                paused(lambda: check_fuzz_reference(ctx, boot, guest_ram()), "fuzz")
                # load/unload cycles: each a 1000-read fuzz capped at 60 s, then dmesg
                next_step("the load/unload cycles", boot.cycles * 60 + STEP_SLACK)
            elif name in ("INSMOD-FAILED", "MOUNT-FAILED"):
                ctx.fail(f"{boot.name}: guest setup: {name} {arg}")
            elif name == "DONE":
                results["timings"]["total"] = now
            elif name == "END":
                ended = True
    except GuestStalled as stalled:
        ctx.fail(f"{boot.name}: {step} ran out of time: {stalled} (see {boot.dir.name}/console.log)")
        guest.finish(grace=0)
    except BaseException:
        guest.finish(grace=0)  # interrupted or broken: QEMU goes now, not after the guest's steps
        raise
    finally:
        guest.finish()
        if ram:
            ram.close()
        ram_file.unlink(missing_ok=True)
        vmem_file.unlink(missing_ok=True)
    if not ended and not any(f.startswith(f"{boot.name}: {step} ran out") for f in ctx.failures):
        ctx.fail(f"{boot.name}: the guest did not finish (no END sentinel; see console.log)")
    bad = [line for line in guest.lines if BAD_DMESG.search(line)]
    if bad:
        ctx.fail(f"{boot.name}: console shows kernel trouble: {bad[0].strip()}")


def check_recovered_facts(ctx: Context, boot: Boot) -> Path:
    """``memdump convert --to elf`` of the guest's LiME dump, on the host: the VMCOREINFO it finds
    in the image's RAM and the direct map it reads from the image's page tables must be what the
    ELF dump recorded from the live kernel (/proc/kcore's note and segments)."""
    lime, direct = boot.dir / "cli-kmod-lime.out", boot.dir / "cli-kmod-elf.out"
    converted = boot.dir / "converted-from-lime.elf"
    if not (lime.exists() and direct.exists()):
        return converted
    done = subprocess.run([ctx.python, "-m", "memdump", "convert", str(lime), str(converted),
                           "--to", "elf"], env={**os.environ, "PYTHONPATH": ctx.pythonpath},
                          capture_output=True, text=True)
    if done.returncode:
        verdict = f"FAIL convert exit {done.returncode}: {done.stderr.strip()[-200:]}"
    else:
        got, want = compare.elf_notes(converted), compare.elf_notes(direct)
        shifts, want_shifts = compare.elf_direct_map(converted), compare.elf_direct_map(direct)
        if got.get("VMCOREINFO") != want.get("VMCOREINFO"):
            verdict = (f"FAIL VMCOREINFO {len(got.get('VMCOREINFO', b''))} bytes found in RAM, "
                       f"{len(want.get('VMCOREINFO', b''))} from the live kernel")
        elif shifts != want_shifts or len(shifts) != 1:
            verdict = (f"FAIL direct map {sorted(hex(v) for v in shifts)} from the page tables, "
                       f"{sorted(hex(v) for v in want_shifts)} from /proc/kcore")
        else:
            verdict = f"ok VMCOREINFO and direct map {min(shifts):#x} as the live kernel's"
    boot.results["lime-to-elf facts"] = verdict.split()[0]
    ctx.notes.append(f"{boot.name}: lime converted to elf: {verdict}")
    if verdict.startswith("FAIL"):
        ctx.fail(f"{boot.name}: lime converted to elf: {verdict}")
    return converted


VOLATILITY_LIMIT = 1800  # seconds per plugin run: a generous bound, not a measure
VOLATILITY = ("import sys; from volatility3.cli import main; sys.argv[0] = 'vol'; main()")


def processes(path: Path) -> dict[int, str]:
    found = {}
    for line in read(path).splitlines():
        pid, _, comm = line.partition(" ")
        if pid.isdigit():
            found[int(pid)] = comm.strip()
    return found


def volatility(boot: Boot, image: Path, plugin: str) -> tuple[list[dict], str]:
    """(rows, problem): ``plugin`` run by Volatility 3 on ``image`` with the guest's own ISF only."""
    import json

    try:
        done = subprocess.run([sys.executable, "-c", VOLATILITY, "-q", "-r", "json", "-s",
                               str(boot.dir / "symbols"), "-f", str(image), plugin],
                              capture_output=True, text=True, timeout=VOLATILITY_LIMIT)
    except subprocess.TimeoutExpired:
        return [], f"{plugin} still running after {VOLATILITY_LIMIT}s"
    try:
        rows = json.loads(done.stdout or "[]")
    except ValueError:
        rows = []
    if done.returncode or not rows:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
        return [], f"{plugin} exit {done.returncode}, {len(rows)} rows: {tail}"
    return rows, ""


def flatten(rows: list[dict]) -> list[dict]:
    """Volatility's JSON nests child rows (pstree-style) under ``__children``."""
    out = []
    for row in rows:
        out.append(row)
        out += flatten(row.get("__children") or [])
    return out


def check_volatility(ctx: Context, boot: Boot) -> None:
    """Volatility 3, given only the ISF ``memdump symbols`` made in the guest, lists from the
    in-guest LiME and ELF dumps every process that lived through the dump (the guest's /proc
    before and after it), the memdump module, and the module's load message in the kernel log."""
    try:
        import volatility3  # noqa: F401
    except ImportError:
        ctx.fail(f"{boot.name}: Volatility 3 is not installed (pip install '.[test]')")
        return
    if not (boot.dir / "symbols" / "linux" / "guest.json").exists():
        ctx.fail(f"{boot.name}: no ISF from memdump symbols: Volatility not run")
        return
    for job in ("cli-kmod-lime", "cli-kmod-elf"):
        image = boot.dir / f"{job}.out"
        if not image.exists():
            continue
        t = time.monotonic()
        lived = {pid: comm for pid, comm in processes(boot.dir / f"{job}.ps-before").items()
                 if processes(boot.dir / f"{job}.ps-after").get(pid) == comm}
        problems = []
        rows, problem = volatility(boot, image, "linux.pslist.PsList")
        listed = {int(r["PID"]): str(r.get("COMM")) for r in flatten(rows) if "PID" in r}
        # the task's comm is at most 15 characters; /proc shows kernel threads' full names and
        # a kworker's current workqueue after it (kworker/0:1H-kblockd)
        missing = {pid: comm for pid, comm in lived.items()
                   if not listed.get(pid) or not comm.startswith(listed[pid])}
        if problem:
            problems.append(problem)
        elif not lived or missing:
            problems.append(f"pslist: {len(missing)} of {len(lived)} processes that lived through "
                            f"the dump missing or misnamed, e.g. {sorted(missing.items())[:3]}")
        rows, problem = volatility(boot, image, "linux.lsmod.Lsmod")
        names = {str(r.get("Module Name", r.get("Name"))) for r in flatten(rows)}
        if problem or "memdump" not in names:
            problems.append(problem or "lsmod does not list memdump")
        rows, problem = volatility(boot, image, "linux.kmsg.Kmsg")
        if problem or not any("/dev/memdump ready" in str(r.get("line")) for r in flatten(rows)):
            problems.append(problem or "kmsg lacks the module's load message")
        verdict = ("FAIL " + "; ".join(problems)) if problems else (
            f"ok pslist {len(listed)} tasks (all {len(lived)} that lived through the dump), "
            f"lsmod memdump, kmsg load message")
        boot.results[f"volatility {job}"] = verdict.split()[0]
        ctx.notes.append(f"{boot.name}: Volatility 3 on {job} ({time.monotonic() - t:.0f}s): {verdict}")
        if problems:
            ctx.fail(f"{boot.name}: Volatility 3 on {job}: {verdict}")


DRGN = """
import sys
import drgn

path, vaddr, size = sys.argv[1], int(sys.argv[2], 16), int(sys.argv[3])
prog = drgn.Program()
prog.set_core_dump(path)
if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
    sys.exit("not opened as a Linux kernel core")
sys.stdout.buffer.write(prog.read(vaddr, size))
"""


def check_drgn(ctx: Context, boot: Boot, cores: list[Path]) -> None:
    """drgn opens the direct ELF dump and the one converted from LiME as kernel cores and reads
    the kernel's text at its virtual address: the bytes the host saw in guest RAM (kcode.bin,
    checked against RAM while the guest was paused)."""
    try:
        import drgn  # noqa: F401
    except ImportError:
        ctx.fail(f"{boot.name}: drgn is not installed (pip install drgn)")
        return
    reference = boot.dir / "kcode.bin"
    if not (boot.dir / "cli-kmod-elf.out").exists():
        return
    info = compare.elf_notes(boot.dir / "cli-kmod-elf.out").get("VMCOREINFO", b"")
    offset = re.search(rb"^KERNELOFFSET=([0-9a-f]+)$", info, re.M)
    if not reference.exists() or not offset:
        ctx.fail(f"{boot.name}: drgn: no kernel text reference or no KERNELOFFSET")
        return
    text = reference.read_bytes()[:1 << 20]
    vaddr = 0xFFFFFFFF81000000 + int(offset.group(1), 16)  # __START_KERNEL, moved by KASLR
    for core in cores:
        if not core.exists():
            continue
        done = subprocess.run([sys.executable, "-c", DRGN, str(core), f"{vaddr:x}", str(len(text))],
                              capture_output=True)
        if done.returncode or done.stdout != text:
            verdict = (f"FAIL exit {done.returncode}: {done.stderr.decode(errors='replace').strip()[-200:]}"
                       if done.returncode else "FAIL kernel text read at its virtual address differs")
        else:
            verdict = f"ok kernel text at {vaddr:#x} ({len(text)} bytes) = guest RAM"
        boot.results[f"drgn {core.stem}"] = verdict.split()[0]
        ctx.notes.append(f"{boot.name}: drgn on {core.name}: {verdict}")
        if verdict.startswith("FAIL"):
            ctx.fail(f"{boot.name}: drgn on {core.name}: {verdict}")


def check_results(ctx: Context, args, boot: Boot) -> None:
    """Everything the guest wrote to its share, checked after QEMU ended."""
    w, results = boot.dir, boot.results
    module = read(w / "module.txt").splitlines()
    if "insmod=0" not in module[:1]:
        ctx.fail(f"{boot.name}: insmod failed in the guest: {module[:1]}")
    node = re.match(r"(\S+)\s+\d+\s+(\d+)\s+(\d+)", module[1] if len(module) > 1 else "")
    if not node or node.groups() != ("cr--------", "0", "0"):
        ctx.fail(f"{boot.name}: /dev/memdump node is not 0400 root: {module[1:2]}")

    dmesg = read(w / "dmesg.txt")
    loaded = [line for line in dmesg.splitlines() if "/dev/memdump ready" in line]
    if not loaded or boot.copy_method not in loaded[0]:
        ctx.fail(f"{boot.name}: module load message does not name {boot.copy_method}: "
                 f"{loaded[:1]}")
    bad = [line for line in dmesg.splitlines() if BAD_DMESG.search(line)]
    results["dmesg"] = "missing" if not dmesg else "clean" if not bad else f"{len(bad)} bad lines"
    if not dmesg or bad:
        ctx.fail(f"{boot.name}: guest dmesg {results['dmesg']}: {bad[:1]}")

    if boot.full:
        opens = read(w / "open-checks.txt")
        for line in opens.splitlines():
            if line.startswith("FAIL"):
                ctx.fail(f"open checks: {line}")
        if "failures=0" not in opens:
            ctx.fail("open checks did not complete")
        secret = key_values(w / "secret.txt")
        if not (secret.get("secret_start", "").startswith("ok")
                and secret.get("secret_run_into", "").startswith("ok")):
            ctx.fail(f"memfd_secret page (not in the direct map): {secret or 'no result'}")
        devmem = key_values(w / "devmem.txt")
        # kernel-lab.md: first-MiB RAM reads as zeros, RAM above 1 MiB is EPERM, addresses
        # beyond the end of RAM (high_memory) are EFAULT, no /dev/kmem.  The rest is recorded.
        want = {"ram_low": r"read-4096 nonzero=0 ", "ram_high": r"errno-EPERM",
                "beyond_ram": r"errno-EFAULT", "kmem": r"absent"}
        for key, pattern in want.items():
            if not re.match(pattern, devmem.get(key, "") + " "):
                ctx.fail(f"strict /dev/mem: {key}={devmem.get(key)!r}, expected {pattern.strip()}")
        ctx.notes.append("strict /dev/mem: " + "; ".join(f"{k} {v.split(' off=')[0]}"
                                                        for k, v in devmem.items()))
        if "virtio_mem" in results:
            base, plugged = results["virtio_mem"]
            # jobs that leave the unplugged (offline) pages out: all of RAM through the module, raw
            leave_out = {j.name for j in boot.jobs
                         if j.source == "kmod" and j.fmt == "raw" and not j.partial}
            for name, verdict in results.items():
                if isinstance(verdict, compare.Comparison) and name in leave_out:
                    got = sum(max(0, e - max(s, base)) for s, e in verdict.regions if e > base)
                    if got != plugged:
                        ctx.fail(f"job {name}: {got >> 20} MiB dumped from virtio-mem, "
                                 f"{plugged >> 20} MiB plugged")

    if boot.full:
        converted = check_recovered_facts(ctx, boot)
        if boot.analyse:
            try:
                check_volatility(ctx, boot)
                check_drgn(ctx, boot, [boot.dir / "cli-kmod-elf.out", converted])
            finally:
                converted.unlink(missing_ok=True)
        else:
            converted.unlink(missing_ok=True)

    fuzz = key_values(w / "fuzz.txt")
    results["fuzz"] = fuzz
    errors = read(w / "fuzz-errors.txt").splitlines()
    if not fuzz:
        ctx.fail(f"{boot.name}: fuzz left no summary (rc {read(w / 'fuzz.rc').strip()})")
    else:
        if int(fuzz.get("reads", 0)) < boot.fuzz_reads:
            ctx.fail(f"{boot.name}: fuzz made only {fuzz.get('reads')} of {boot.fuzz_reads} reads")
        if int(fuzz.get("errors", 1)) or int(fuzz.get("mismatches", 1)):
            ctx.fail(f"{boot.name}: fuzz found {fuzz.get('errors')} wrong answers, "
                     f"{fuzz.get('mismatches')} wrong bytes; first: {errors[:1]}")
        if not int(fuzz.get("kcode_reads", 0)) or not int(fuzz.get("pattern_reads", 0)):
            ctx.fail(f"{boot.name}: fuzz verified no bytes in kernel text or its pattern page")
        if args.virtio_mem and not (int(fuzz.get("eio", 0)) and int(fuzz.get("short_eio", 0))):
            ctx.fail(f"{boot.name}: fuzz never met an offline page (virtio-mem unplugged)")
    cycles = read(w / "cycles.txt")
    for line in cycles.splitlines():
        if not line.startswith("ok"):
            ctx.fail(f"{boot.name}: load/unload cycles: {line}")
    if cycles.count("ok ") < 5 * boot.cycles:
        ctx.fail(f"{boot.name}: load/unload cycles incomplete")


# ---------------------------------------------------------------------------------------------


def lime_comparison(boots: list[Boot]) -> tuple[str, str] | None:
    """(report line, summary fragment) for LiME against memdump --source kmod --format lime."""
    for boot in boots:
        ours, theirs = boot.guest_times.get("cli-kmod-lime"), boot.guest_times.get("lime-peer")
        if ours is None or theirs is None or "lime-peer" not in boot.peers:
            continue
        peer, mine = boot.peers["lime-peer"], boot.results.get("cli-kmod-lime")
        mine_mib = f"{mine.bytes >> 20} MiB" if isinstance(mine, compare.Comparison) else "?"
        line = (f"LiME vs memdump (format lime, to the 9p share, timed in the guest): LiME "
                f"{theirs:.1f}s for {peer.bytes >> 20} MiB in {len(peer.regions)} ranges, "
                f"{peer.percent:.2f} % identical; memdump --source kmod {ours:.1f}s for {mine_mib}; "
                f"memdump/LiME time {ours / theirs:.2f}, MiB/s {(peer.bytes >> 20) / theirs:.1f} vs "
                + (f"{(mine.bytes >> 20) / ours:.1f}" if isinstance(mine, compare.Comparison) else "?"))
        return line, f"LiME {theirs:.1f}s vs memdump {ours:.1f}s ({ours / theirs:.2f}x)"
    return None


def report(ctx: Context, boots: list[Boot]) -> int:
    for failure in ctx.failures:
        print(f"FAIL: {failure}")
    for note in ctx.notes:
        print(f"note: {note}")
    pages = identical = reads = 0
    fuzz_seconds = 0.0
    dmesg = []
    for boot in boots:
        results = boot.results
        for kind, table in (("dump", results), ("peer", boot.peers)):
            for name, v in table.items():
                if not isinstance(v, compare.Comparison):
                    continue
                if kind == "dump":
                    pages += v.pages
                    identical += v.identical
                seconds = boot.guest_times.get(name, results["timings"].get(name, 0))
                print(f"{kind} {name}: {v.identical}/{v.pages} pages identical ({v.percent:.2f} %), "
                      f"{v.bytes >> 20} MiB in {len(v.regions)} regions, {seconds:.1f}s")
                if ctx.verbose:
                    print(f"  changed pages, now: {explain_differences(boot, name)}")
        texts = [name for name, v in results.items() if v in ("ok", "FAIL")]
        if texts:
            print(f"checks {boot.name}: " + ", ".join(f"{n} {results[n]}" for n in texts))
        fuzz = results.get("fuzz", {})
        if fuzz:
            print(f"fuzz {boot.name} ({boot.cpu}): {fuzz.get('reads')} reads "
                  f"(+{fuzz.get('thread_reads')} thread, +{fuzz.get('process_reads')} process), "
                  f"{int(fuzz.get('bytes', 0)) >> 20} MiB returned, {fuzz.get('enxio', 0)} ENXIO, "
                  f"{fuzz.get('efault')} EFAULT, "
                  f"{fuzz.get('eio')} EIO, {fuzz.get('eof')} EOF, {fuzz.get('einval')} EINVAL, "
                  f"short {fuzz.get('short_hole')} hole/{fuzz.get('short_eio')} offline/"
                  f"{fuzz.get('short_cap')} cap; {fuzz.get('kcode_bytes')} kernel-text bytes "
                  f"verified; {fuzz.get('seconds')}s")
            reads += int(fuzz.get("reads", 0))
            fuzz_seconds += float(fuzz.get("seconds", 0))
        if results.get("timings"):
            print(f"timings {boot.name}: " + ", ".join(f"{k} {v:.1f}s"
                                                      for k, v in results["timings"].items()))
        dmesg.append(f"{boot.name} {results.get('dmesg', '?')}")
    lime = lime_comparison(boots)
    if lime:
        print(lime[0])
    print(f"vm tier: {'PASS' if not ctx.failures else 'FAIL'}; pages compared {pages}, identical "
          f"{100.0 * identical / pages if pages else 0:.2f} %; fuzz reads {reads} in "
          f"{fuzz_seconds:.0f}s; dmesg {', '.join(dmesg) or '?'}; "
          f"{lime[1] if lime else 'LiME not run'}; total {time.monotonic() - ctx.started:.0f}s")
    return 1 if ctx.failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="memdump real-kernel tier (QEMU, Debian kernel)")
    ap.add_argument("--kver", default=os.environ.get("MEMDUMP_VM_KVER", DEFAULT_KVER))
    ap.add_argument("--fuzz-reads", type=int, default=100_000)
    ap.add_argument("--fuzz-seconds", type=int, default=240,
                    help="stop a fuzz loop after this long (the read count is still checked)")
    ap.add_argument("--cycles", type=int, default=5, help="module load/unload cycles")
    ap.add_argument("--seed", type=int, default=0, help="fuzz seed (0: from the clock)")
    ap.add_argument("--memory", type=int, default=1024, help="guest boot RAM in MiB (< 2048)")
    ap.add_argument("--virtio-mem", type=int, default=512, metavar="MIB",
                    help="virtio-mem device region (0: none): nested System RAM (virtio_mem)")
    ap.add_argument("--virtio-mem-plug", type=int, default=200, metavar="MIB",
                    help="virtio-mem requested size; not a multiple of 128 MiB, so part of a "
                         "memory block stays unplugged (PageOffline pages the module refuses)")
    ap.add_argument("--no-second-boot", action="store_true",
                    help="skip the qemu64 boot (copy_from_kernel_nofault path)")
    ap.add_argument("--no-la57-boot", action="store_true",
                    help="skip the 5-level paging boot (the main boot runs 4-level: no5lvl)")
    ap.add_argument("--second-fuzz-reads", type=int, default=100_000)
    ap.add_argument("--timeout", type=float, default=BACKSTOP,
                    help="QEMU's own time limit, seconds: a backstop for a harness that died (each "
                         "step has a limit of its own, derived from a calibration)")
    ap.add_argument("--jobs", default="auto",
                    help="comma-separated job names, or 'auto' (every job whose needs are met)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGTERM (timeout(1), CI) unwinds like ^C: QEMU is stopped, RAM files and work dir removed
    signal.signal(signal.SIGTERM, interrupted)

    if os.geteuid() != 0:
        print("vm tier: needs root (QEMU's 9p export of /, the module build)", file=sys.stderr)
        return 2
    if not Path(f"/boot/vmlinuz-{args.kver}").exists():
        print(f"vm tier: no /boot/vmlinuz-{args.kver}", file=sys.stderr)
        return 2
    seed = args.seed or int(time.time()) & 0xFFFFFFFF
    work = Path(tempfile.mkdtemp(prefix="memdump-vm-"))
    ctx = Context(args.kver, work, *choose_python(work), args.verbose)
    ctx.notes.append(f"work directory {work}{'' if args.keep else ' (removed)'}; seed {seed}; "
                     f"guest python {ctx.python}")
    boots: list[Boot] = []
    try:
        ko = build_module(ctx)
        tool = build_mdtool(ctx)
        build_initramfs(args.kver, work / "initramfs.cpio.gz",
                        extra_modules=("virtio_mem",) if args.virtio_mem else ())
        jobs = []
        wanted = None if args.jobs == "auto" else set(args.jobs.split(","))
        for job in JOBS:
            if wanted is not None and job.name not in wanted:
                continue
            reason = job.needs(ctx) if job.needs else None
            if reason and wanted is None:
                ctx.notes.append(f"job {job.name} skipped: {reason}")
            elif reason:
                ctx.fail(f"job {job.name} cannot run: {reason}")
            else:
                jobs.append(job)
        boots.append(Boot("main", work / "main", "max", "copy_mc_to_kernel", args.fuzz_reads,
                          args.cycles, True, jobs, append="no5lvl", analyse=True))
        if not args.no_la57_boot:
            # -cpu max gives the guest LA57: the kernel runs 5-level page tables (Volatility 3
            # cannot walk them; memdump's ELF facts and the module must work all the same)
            la57_jobs = [j for j in jobs if j.name in LA57_JOBS]
            boots.append(Boot("la57", work / "la57", "max", "copy_mc_to_kernel",
                              args.second_fuzz_reads // 5, 1, True, la57_jobs))
        if not args.no_second_boot:
            # without ERMS there is no machine-check-safe copy: the module serves reads only when
            # told to (allow_unsafe_copy=1), where it has that parameter
            unsafe = "allow_unsafe_copy" in read(REPO / "kmod" / "memdump_main.c")
            boots.append(Boot("nofault", work / "nofault", "qemu64", "copy_from_kernel_nofault",
                              args.second_fuzz_reads, 1, False,
                              insmod_args="allow_unsafe_copy=1" if unsafe else ""))
        for boot in boots:
            boot.dir.mkdir()
            shutil.copy(ko, boot.dir / "memdump.ko")
            shutil.copy(tool, boot.dir / "mdtool")
            if isinstance(ctx.lime, Path) and any(j.name == "lime-peer" for j in boot.jobs):
                shutil.copy(ctx.lime, boot.dir / "lime.ko")
            # a different seed per boot: the layouts match, the fuzz should not
            (boot.dir / "guest.sh").write_text(
                guest_script(ctx, boot, seed + boots.index(boot), args.fuzz_seconds))
            run_guest(ctx, args, boot)
            check_results(ctx, args, boot)
    except TierAbort as exc:
        ctx.fail(str(exc))
    except KeyboardInterrupt as exc:
        ctx.fail(f"interrupted ({exc or 'SIGINT'})")
    except Exception as exc:  # the harness itself broke: say so in one line, keep the summary
        import traceback
        if args.verbose:
            traceback.print_exc()
        ctx.fail(f"harness error: {exc!r}")
    finally:
        code = report(ctx, boots)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
