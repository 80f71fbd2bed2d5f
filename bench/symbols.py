"""Time building a Volatility 3 symbol table from this machine's kernel: BTF parsing, kallsyms
parsing, ISF building, JSON encoding and writing (plain and xz), with the peak RSS.

    python3 bench/symbols.py [--btf PATH] [--kallsyms PATH] [--version PATH] [--repeat N]

Defaults are the running kernel's /sys/kernel/btf/vmlinux, /proc/kallsyms and /proc/version.
When kallsyms lacks the symbols the builder requires (a kernel without CONFIG_KALLSYMS_ALL, or
addresses hidden by kptr_restrict), placeholder addresses stand in for them and the report says
so: the work measured is the same.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from memdump.symbols import btf as btf_mod  # noqa: E402
from memdump.symbols import encode_isf, write_isf  # noqa: E402
from memdump.symbols import isf as isf_mod  # noqa: E402
from memdump.symbols import kallsyms as kallsyms_mod  # noqa: E402
from memdump.symbols.errors import KallsymsRestricted  # noqa: E402

PLACEHOLDER_BASE = 0xFFFFFFFF82000000


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def usable_kallsyms(text: str) -> "tuple[str, list[str]]":
    """kallsyms text the builder accepts, and the names given placeholder addresses."""
    try:
        table = kallsyms_mod.parse(text)
        missing = kallsyms_mod.missing(table)
    except KallsymsRestricted:
        # hidden addresses: keep the names (the work), invent increasing addresses
        lines = []
        for n, line in enumerate(text.splitlines()):
            parts = line.split(None, 1)
            if len(parts) == 2:
                lines.append(f"{PLACEHOLDER_BASE + 16 * n:016x} {parts[1]}")
        text = "\n".join(lines) + "\n"
        table = kallsyms_mod.parse(text)
        missing = ["(all addresses)"] + kallsyms_mod.missing(table)
    extra = [
        f"{PLACEHOLDER_BASE - 4096 * (n + 1):016x} D {name}\n"
        for n, name in enumerate(kallsyms_mod.missing(table))
    ]
    return text + "".join(extra), missing


def run_once(btf_data: bytes, kallsyms_text: str, banner: bytes, workdir: str, n: int) -> "dict[str, float]":
    times = {}
    start = time.perf_counter()
    parsed = btf_mod.parse(btf_data)
    times["parse BTF"] = time.perf_counter() - start

    mark = time.perf_counter()
    table = kallsyms_mod.parse(kallsyms_text)
    times["parse kallsyms"] = time.perf_counter() - mark

    mark = time.perf_counter()
    isf = isf_mod.build(
        parsed, table, banner,
        btf_sha256=hashlib.sha256(btf_data).hexdigest(),
        kallsyms_sha256=hashlib.sha256(kallsyms_text.encode()).hexdigest(),
    )
    times["build ISF"] = time.perf_counter() - mark

    mark = time.perf_counter()
    encoded = encode_isf(isf)
    times["encode JSON"] = time.perf_counter() - mark
    times["json bytes"] = len(encoded)
    del encoded

    mark = time.perf_counter()
    plain = os.path.join(workdir, f"kernel-{n}.json")
    write_isf(isf, plain)
    times["write .json"] = time.perf_counter() - mark

    mark = time.perf_counter()
    packed = os.path.join(workdir, f"kernel-{n}.json.xz")
    write_isf(isf, packed)
    times["write .json.xz"] = time.perf_counter() - mark
    times["xz bytes"] = os.path.getsize(packed)

    times["total"] = time.perf_counter() - start
    times["types"] = len(parsed)
    times["user types"] = len(isf["user_types"])
    times["symbols"] = len(isf["symbols"])
    return times


def main(argv: "list[str]") -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--btf", default="/sys/kernel/btf/vmlinux")
    parser.add_argument("--kallsyms", default="/proc/kallsyms")
    parser.add_argument("--version", default="/proc/version")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)

    with open(args.btf, "rb") as handle:
        btf_data = handle.read()
    with open(args.kallsyms, "rb") as handle:
        kallsyms_text = handle.read().decode("latin-1")
    with open(args.version, "rb") as handle:
        banner = handle.read()
    kallsyms_text, placeholders = usable_kallsyms(kallsyms_text)

    print(f"python {sys.version.split()[0]}")
    print(f"BTF {args.btf}: {len(btf_data):,} bytes; kallsyms {args.kallsyms}: {kallsyms_text.count(chr(10)):,} lines")
    if placeholders:
        print(f"placeholder addresses for: {', '.join(placeholders)}")
    with tempfile.TemporaryDirectory(prefix="memdump-bench-symbols-") as workdir:
        for n in range(args.repeat):
            times = run_once(btf_data, kallsyms_text, banner, workdir, n)
            print(f"run {n + 1}:")
            for key, value in times.items():
                if isinstance(value, float):
                    print(f"  {key:<16} {value:8.3f} s")
                else:
                    print(f"  {key:<16} {value:>10,}")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
