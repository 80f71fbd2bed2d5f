"""Timed runs: one pipeline at a time, interleaved rounds, runs disturbed by other processes done
again, the read-size sweep, the sha256 ceiling, and peak resident memory through launch.py.

Every figure is a ratio of commands measured side by side in the same rounds: on a shared machine
absolute times drift with the load, but commands run in turn drift together.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import subprocess
import time

from environment import BENCH, GB, MIB, PIN, PY, reap, say, spawn
from variants import Variant

# A run during which other processes used more CPU than this share of its wall time, plus the
# slack (the clock tick's resolution), on the CPUs it was pinned to is run again, up to RETRIES
# times.
DISTURBED_SHARE = 0.2
DISTURBED_SLACK = 0.03
RETRIES = 2
SUSTAINED = 6  # more than this many of the last ten runs disturbed: stop retrying, flag instead


def timed(variant: Variant, stderr_path: str | None = None, argv: list[str] | None = None) -> float:
    """One run through ``producer | cat > /dev/null``: wall seconds, from the start of both to the
    end of the pipe."""
    err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
    read_end, write_end = os.pipe()
    try:
        start = time.perf_counter()
        consumer = subprocess.Popen(["taskset", "-c", PIN, "cat"], stdin=read_end,
                                    stdout=subprocess.DEVNULL, close_fds=True)
        producer = spawn(argv or variant.argv, variant.cpus, write_end, err)
        os.close(read_end)
        os.close(write_end)
        read_end = write_end = -1
        code, _ = reap(producer)
        consumer.wait()
        elapsed = time.perf_counter() - start
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
        if stderr_path:
            err.close()
    if code != 0 or consumer.returncode != 0:
        detail = open(stderr_path, errors="replace").read()[-400:] if stderr_path else ""
        raise RuntimeError(f"{variant.label}: exit {code} (cat {consumer.returncode}) {detail}")
    return elapsed


def busy_others(cpus: set[int] | None = None) -> float:
    """CPU seconds used so far on ``cpus`` (default: all) minus what this process tree used: how
    much the rest of the machine took. Exact when this tree ran only on ``cpus``, as the pinned
    pipelines do (the benchmark itself only waits meanwhile)."""
    busy = 0
    try:
        with open("/proc/stat") as handle:
            for line in handle:
                name, *fields = line.split()
                if not name.startswith("cpu"):
                    break
                if (name == "cpu") != (cpus is None) or (cpus is not None and int(name[3:]) not in cpus):
                    continue
                # user nice system [idle iowait] irq softirq steal
                busy += sum(int(x) for x in fields[:3]) + sum(int(x) for x in fields[5:8])
    except (OSError, ValueError):
        return 0.0
    mine = os.times()
    return busy / os.sysconf("SC_CLK_TCK") - (mine.user + mine.system + mine.children_user + mine.children_system)


def undisturbed_run(variant: Variant, work: str, recent: list[bool]) -> tuple[float, int, bool]:
    """(seconds, retries, kept although disturbed) of one run of ``variant``.

    Another process can take the CPU a pipeline is pinned to in the middle of a run: such a run
    is done again. Retries stop while the disturbance is sustained (``recent``: the last ten
    runs' verdicts, updated here): waiting is pointless then, and the run is flagged instead."""
    cpus = {int(c) for c in variant.cpus.split(",")} | {int(PIN)}
    attempt = 0
    while True:
        before = busy_others(cpus)
        seconds = timed(variant, os.path.join(work, "stderr.txt"))
        disturbed = busy_others(cpus) - before > DISTURBED_SHARE * seconds + DISTURBED_SLACK
        recent[:] = (recent + [disturbed])[-10:]
        if not disturbed:
            return seconds, attempt, False
        if attempt == RETRIES or sum(recent) > SUSTAINED:
            return seconds, attempt, True
        attempt += 1


def interleave(variants: list[Variant], rounds: int, work: str, label: str = "") -> None:
    """``rounds`` rounds, each running every variant once; the order rotates round by round, so
    no command always follows the same one. Each variant's retries and disturbed runs are
    recorded with its times."""
    recent: list[bool] = []
    for round_index in range(rounds):
        shift = round_index % len(variants)
        line = []
        for variant in variants[shift:] + variants[:shift]:
            seconds, retries, disturbed = undisturbed_run(variant, work, recent)
            variant.seconds.append(seconds)
            variant.retried += retries
            variant.disturbed += disturbed
            line.append(f"{seconds:.2f}" + "*" * retries + ("!" if disturbed else ""))
        say(f"  {label}round {round_index + 1}/{rounds}: " + " ".join(line))


def fastest_read_size(sweep: list[Variant], title: str, work: str) -> tuple[str, dict[str, float]]:
    """Three interleaved rounds of the sweep: (the fastest -b, median seconds per -b)."""
    say(f"read-size sweep, {title} -b {'/'.join(v.argv[-1] for v in sweep)}, 3 rounds:")
    interleave(sweep, 3, work)
    chosen = min(sweep, key=lambda v: v.median)
    return chosen.argv[-1], {v.argv[-1]: round(v.median, 4) for v in sweep}


def sha256_ceiling(total: int = 1 << 30) -> float:
    """GB/s of hashlib's sha256 over 1 MiB buffers already in memory: no dump can hash faster."""
    buffer = mmap.mmap(-1, MIB)  # page-aligned, like memdump's own buffers
    buffer.write(os.urandom(MIB))
    view = memoryview(buffer)
    best = 0.0
    for _ in range(3):
        digest = hashlib.sha256()
        start = time.perf_counter()
        for _ in range(total // MIB):
            digest.update(view)
        best = max(best, total / (time.perf_counter() - start) / GB)
    return best


def peak_rss(variant: Variant, argv: list[str], work: str) -> tuple[int, float]:
    """(peak RSS in KiB, wall seconds) of one run, spawned by the small launcher (see launch.py)."""
    out = os.path.join(work, "rss.txt")
    launcher = [PY, "-S", "-I", os.path.join(BENCH, "launch.py"), out]
    seconds = timed(variant, os.path.join(work, "stderr.txt"), launcher + argv)
    with open(out) as handle:
        return int(handle.read()), seconds


def launcher_floor(work: str) -> int:
    """Peak RSS (KiB) of the launcher running ``true``: nothing smaller can be seen through it."""
    floor, _ = peak_rss(Variant("floor", "launcher", ["true"]), ["true"], work)
    return floor


def peak_rss_on_machines(variants: list[Variant], machines: list[tuple[str, str, str]], root: str,
                         work: str) -> None:
    """One run of every memdump command on each machine (name, root, label), ``root`` in its
    argv replaced by the machine's; records ``rss_kib`` per machine."""
    for variant in variants:
        if not variant.key.startswith("memdump"):
            continue
        line = []
        for machine, where, label in machines:
            argv = [where if a == root else a for a in variant.argv]
            variant.rss_kib[machine], _ = peak_rss(variant, argv, work)
            line.append(f"{label}: {variant.rss_kib[machine] / 1024:5.1f} MiB")
        say(f"  {variant.label:<34} " + ", ".join(line))
