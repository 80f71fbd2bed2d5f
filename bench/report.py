"""Render bench/run's JSON as the Markdown tables of docs/performance.md.

    python3 bench/report.py [bench/results.json]
"""

from __future__ import annotations

import json
import os
import sys


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


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                               "results.json")
    with open(path) as handle:
        sys.stdout.write(render(json.load(handle)))
