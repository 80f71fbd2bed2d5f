"""The benchmark's results: the table and targets it prints, the JSON record it writes, and the
Markdown tables of docs/performance.md rendered from that JSON.

    python3 bench/report.py [bench/results.json]
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

from environment import say

TARGETS = [
    # (description, numerator key, denominator key, minimum ratio of GB/s)
    ("memdump default >= 3x the original at its default", "memdump", "original", 3.0),
    ("memdump default >= 1.5x cat", "memdump", "cat", 1.5),
    ("raw with sha256 >= 0.5x raw", "memdump-sha256", "memdump", 0.5),
    ("padded >= 0.8x raw", "memdump-padded", "memdump", 0.8),
    ("lime >= 0.8x raw", "memdump-lime", "memdump", 0.8),
    ("elf >= 0.8x raw", "memdump-elf", "memdump", 0.8),
    ("memdump read+write (no splice) >= 1.0x dd bs=1M over the same RAM ranges", "memdump-rw", "dd-ram", 1.0),
]
RSS_LIMIT_MIB = 64
RSS_SAME_MIB = 2  # "the same at 2 and 8 GiB": within this much


def fmt(value, pattern: str = "{:.2f}") -> str:
    return "–" if value is None else pattern.format(value)


def size(count: int) -> str:
    return f"{count / (1 << 30):.0f} GiB" if count >= 1 << 30 else f"{count >> 20} MiB"


def render(record: dict) -> str:
    m = record["machine"]
    out = [
        f"Measured {record['date']} on {m['cpu']} ({m['cpus']} vCPUs), Linux {m['kernel']}, "
        f"Python {m['python']}, memdump {m['memdump_revision']}; command `{record['command']}`; "
        f"{record['method']['rounds']} interleaved rounds, medians; load average before/after "
        f"{m['load_average_before']} / {m['load_average_after']}, CPU seconds used by other processes "
        f"during the run: {m['other_cpu_seconds']}.",
        "",
        f"Emulated machine: {len(record['emulated_machine']['ranges'])} RAM ranges, "
        f"{record['emulated_machine']['ram_bytes']:,} bytes of RAM; its dev/mem image is "
        f"{record['emulated_machine']['devmem_bytes']:,} bytes (what the original, `--scan`, `cat` and `dd` read).",
        "",
        f"| command | median s | GB/s | × original | × cat | × memdump | peak RSS {size(record['emulated_machine']['ram_bytes'])} "
        f"| peak RSS {size(record['emulated_machine']['big_ram_bytes'])} | output checked |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in record["results"]:
        out.append(
            f"| `{row['label']}` | {row['median_s']:.3f} | {row['gb_per_s']:.2f} | {fmt(row['vs_original'])} | "
            f"{row['vs_cat']:.2f} | {row['vs_memdump']:.2f} | {fmt(row['peak_rss_mib'], '{:.1f} MiB')} | "
            f"{fmt(row['peak_rss_mib_big'], '{:.1f} MiB')} | {row['verified']} |")
    ceiling = record.get("sha256_in_memory_gb_per_s")
    if ceiling:
        base = next(r for r in record["results"] if r["key"] == "memdump")
        cat = next(r for r in record["results"] if r["key"] == "cat")
        out.append(f"| sha256 of data already in memory (hashlib, one core) | | {ceiling:.2f} | | "
                   f"{ceiling / cat['gb_per_s']:.2f} | {ceiling / base['gb_per_s']:.2f} | | | the ceiling of any "
                   "dump that hashes sha256 |")
    out += ["", "| target | measured | met |", "|---|---:|---|"]
    for check in record["targets"]:
        value = (f"{check['ratio']:.2f}×" if check.get("ratio") is not None
                 else f"{check['value_mib']} MiB" if check.get("value_mib") is not None else "not measured")
        met = "–" if check["met"] is None else "yes" if check["met"] else "**no**"
        out.append(f"| {check['target']} | {value} | {met} |")
    read_write = record.get("read_write_vs_dd")
    if read_write:
        out += ["", f"Read+write path (zero-copy refused, as on memdump's module device and /proc/kcore): "
                f"memdump {read_write['memdump_gb_per_s']:.2f} GB/s, `dd bs=1M` over the same RAM ranges "
                f"{read_write['dd_gb_per_s']:.2f} GB/s: {read_write['ratio']:.2f}×."]
    startup = record["startup_ms"]
    out += ["", f"Start-up: `python3 -c pass` {startup['python']:.0f} ms, `memdump -s 4k` "
            f"{startup['memdump_s_4k']:.0f} ms. Peak RSS floor of the measuring launcher: "
            f"{record['rss_floor_mib']} MiB."]
    sweeps = record["method"].get("read_size_sweeps_median_s", {})
    for name, values in sweeps.items():
        out.append(f"Read-size sweep ({'memdump' if name == 'default' else 'memdump --scan'}, median s of 3): "
                   + ", ".join(f"-b {size}: {seconds:.3f}" for size, seconds in values.items()) + ".")
    for note in record.get("notes", []):
        out.append(f"Note: {note}.")
    return "\n".join(out) + "\n"



# -- describing the machine and the run -------------------------------------------------------------

def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> list[float]:
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return []


def git_revision(repo: str) -> str:
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + ("+uncommitted changes" if dirty else "") if head else "unknown"
    except OSError:
        return "unknown"


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} MiB"


# -- the printed table and the targets -------------------------------------------------------------

def result_row(v, original, cat, base) -> dict:
    """One command's figures as the JSON record keeps them; ratios are ratios of GB/s."""
    return {
        "key": v.key, "label": v.label, "command": v.command(), "bytes": v.size, "verified": v.verified,
        "seconds": [round(s, 4) for s in v.seconds], "median_s": round(v.median, 4),
        "gb_per_s": round(v.gbps, 3),
        "vs_original": round(v.gbps / original.gbps, 2) if original else None,
        "vs_cat": round(v.gbps / cat.gbps, 2), "vs_memdump": round(v.gbps / base.gbps, 2),
        "peak_rss_mib": round(v.rss_kib["small"] / 1024, 1) if v.rss_kib else None,
        "peak_rss_mib_big": round(v.rss_kib["big"] / 1024, 1) if v.rss_kib else None,
        "runs_retried": v.retried, "runs_disturbed": v.disturbed,
        "note": v.note,
    }


def print_table(variants: list, ram_bytes: int, big_ram: int, ceiling: float, startup: list) -> list[dict]:
    """Print the timed table (and the sha256 ceiling and start-up lines); returns its rows."""
    by_key = {v.key: v for v in variants}
    base, original, cat = by_key["memdump"], by_key.get("original"), by_key["cat"]
    say()
    say(f"{'command':<34} {'median s':>9} {'GB/s':>7} {'/original':>10} {'/cat':>6} {'/memdump':>9} "
        f"{'RSS ' + size(ram_bytes):>10} {'RSS ' + size(big_ram):>10}")
    rows = []
    for v in variants:
        row = result_row(v, original, cat, base)
        rows.append(row)
        say(f"{v.label:<34} {row['median_s']:9.3f} {row['gb_per_s']:7.2f} "
            f"{(format(row['vs_original'], '10.2f') if original else '         -')} {row['vs_cat']:6.2f} "
            f"{row['vs_memdump']:9.2f} {mib(row['peak_rss_mib']):>10} {mib(row['peak_rss_mib_big']):>10}")
    say(f"{'sha256 in memory (hashlib)':<34} {'':>9} {ceiling:7.2f} {'':>10} {ceiling / cat.gbps:6.2f} "
        f"{ceiling / base.gbps:9.2f}   (the ceiling for any dump that hashes sha256)")
    start_py, start_md = startup_ms(startup)
    say(f"start-up: python3 -c pass {start_py:.0f} ms; memdump -s 4k {start_md:.0f} ms "
        f"(memdump's own fixed cost {start_md - start_py:.0f} ms per run)")
    return rows


def startup_ms(startup: list) -> tuple[float, float]:
    """Median milliseconds of the bare interpreter and of the smallest dump."""
    return tuple(statistics.median(v.seconds) * 1000 for v in startup)


def check_targets(variants: list, ram_bytes: int, big_ram: int) -> list[dict]:
    by_key = {v.key: v for v in variants}
    checks = []
    for text, top, bottom, minimum in TARGETS:
        if top not in by_key or bottom not in by_key:
            checks.append({"target": text, "ratio": None, "met": None, "why": "not measured"})
            continue
        ratio = by_key[top].gbps / by_key[bottom].gbps
        checks.append({"target": text, "ratio": round(ratio, 2), "met": ratio >= minimum})
    measured = [v for v in variants if v.rss_kib]
    worst = max(max(v.rss_kib.values()) for v in measured) / 1024
    spread = max(abs(v.rss_kib["big"] - v.rss_kib["small"]) for v in measured) / 1024
    checks.append({"target": f"peak RSS <= {RSS_LIMIT_MIB} MiB (every memdump command, both machines)",
                   "ratio": None, "value_mib": round(worst, 1), "met": worst <= RSS_LIMIT_MIB})
    checks.append({"target": f"peak RSS the same at {size(ram_bytes)} and {size(big_ram)} (within {RSS_SAME_MIB} MiB)",
                   "ratio": None, "value_mib": round(spread, 1), "met": spread <= RSS_SAME_MIB})
    return checks


def print_targets(checks: list[dict]) -> None:
    say()
    for c in checks:
        state = "n/a " if c["met"] is None else "MET " if c["met"] else "MISS"
        value = f"{c['ratio']:.2f}x" if c.get("ratio") is not None else (
            f"{c['value_mib']} MiB" if c.get("value_mib") is not None else c.get("why", ""))
        say(f"  [{state}] {c['target']}: {value}")


def read_write_vs_dd(variants: list) -> dict | None:
    """The read()+write() path real devices take: memdump with zero-copy refused against dd bs=1M
    over the same RAM ranges, measured side by side in the same rounds. Printed and returned for
    the record (None when it was not measured)."""
    by_key = {v.key: v for v in variants}
    if "memdump-rw" not in by_key or "dd-ram" not in by_key:
        return None
    memdump, dd = by_key["memdump-rw"], by_key["dd-ram"]
    ratio = memdump.gbps / dd.gbps
    # Both write the same bytes, so a round's ratio is dd's seconds over memdump's. The two run
    # one after the other in every round: the median of these per-round ratios is less moved by
    # a machine whose speed drifts from round to round than the ratio of the two medians.
    per_round = [d / m for m, d in zip(memdump.seconds, dd.seconds)]
    say(f"read+write path: memdump {memdump.gbps:.2f} GB/s, dd bs=1M {dd.gbps:.2f} GB/s over the same RAM ranges: "
        f"{ratio:.2f}x (per round: {' '.join(f'{r:.2f}' for r in per_round)}; "
        f"median {statistics.median(per_round):.2f}x)")
    return {"ratio": round(ratio, 2), "memdump_gb_per_s": round(memdump.gbps, 3), "dd_gb_per_s": round(dd.gbps, 3),
            "memdump_median_s": round(memdump.median, 4), "dd_median_s": round(dd.median, 4),
            "per_round_ratios": [round(r, 3) for r in per_round],
            "median_per_round_ratio": round(statistics.median(per_round), 3)}


def print_disturbance(variants: list, others: float, elapsed: float, notes: list[str]) -> None:
    """Say how many timed runs other processes disturbed, and the notes gathered on the way."""
    retried = sum(v.retried for v in variants)
    kept = sum(v.disturbed for v in variants)
    if retried:
        say(f"note: {retried} timed runs were done again because other processes took CPU during them"
            + (f"; {kept} kept although disturbed" if kept else ""))
    if kept:
        say(f"warning: {kept} timed runs were disturbed by other processes on their CPU and kept; "
            f"the figures may be noisy (other processes used {others:.0f} CPU seconds machine-wide)")
    elif others > 0.1 * elapsed:
        say(f"note: other processes used {others:.0f} CPU seconds machine-wide during the run (not on the "
            "pinned CPU during the timed runs)")
    for note in notes:
        say(f"note: {note}")


# -- the JSON record -------------------------------------------------------------------------------

def method(rounds: int, sweeps: dict, pin: str, share: float, slack: float, retries: int) -> dict:
    return {"rounds": rounds, "pinning": f"producer and `cat > /dev/null` on CPU {pin} (taskset); "
            "the sha256 run lets memdump use CPUs 0,1 for its hashing thread",
            "gb": "10^9 bytes per second of wall time, start-up included",
            "bytecode": "cached (PYTHONPYCACHEPREFIX in the work directory), as for an installed package",
            "interleaved": True, "read_size_sweeps_median_s": sweeps,
            "disturbed_runs": f"a run during which other processes used more than {share:.0%} of its "
                              f"wall time (+{slack} s) on the CPUs it was pinned to is done "
                              f"again, up to {retries} times (not while the disturbance is sustained)"}


def machine(repo: str, python: str, load_before: list, load_after: list, others: float) -> dict:
    return {"cpu": cpu_name(), "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "python_executable": python,
            "memdump_revision": git_revision(repo), "load_average_before": load_before,
            "load_average_after": load_after, "other_cpu_seconds": round(others, 1)}


def write_record(path: str, record: dict) -> None:
    record = dict(record, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    order = ["date", "command", "machine", "method", "emulated_machine", "results", "rss_floor_mib",
             "sha256_in_memory_gb_per_s", "startup_ms", "targets", "notes", "elapsed_s"]
    ordered = {key: record[key] for key in order if key in record}
    ordered.update((key, value) for key, value in record.items() if key not in ordered)
    with open(path, "w") as handle:
        json.dump(ordered, handle, indent=1)
        handle.write("\n")


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                               "results.json")
    with open(path) as handle:
        sys.stdout.write(render(json.load(handle)))
