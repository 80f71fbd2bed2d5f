"""Checking each command's bytes before it is timed, independently of memdump's code.

The expected digests come from the emulator's truth (the sha256 of the RAM ranges) and from the
dev/mem image file read here; an ELF core's program headers are parsed here too. A command whose
output is wrong is never timed: a fast wrong dump is not a result.
"""

from __future__ import annotations

import hashlib
import os
import struct

from environment import MIB, reap, say, spawn
from variants import Variant

CHUNK = 4 * MIB
LIME_MAGIC = 0x4C694D45
WHAT = {"ram": "truth (RAM)", "file": "dev/mem file", "padded": "dev/mem up to the end of RAM",
        "lime": "LiME records built from dev/mem"}


def expected_digests(image: str, ram: list[list[int]], sha256_ram: str) -> dict[str, str]:
    """The digest each ``expect`` kind must have: from the truth (``ram``) and from the dev/mem
    image alone: the whole file (the original and --scan), the padded image (the file up to the
    end of RAM: everything else in it is zeros) and the LiME image (per range a 32-byte header,
    then the range's bytes)."""
    whole, padded, lime = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
    ram_end = ram[-1][1]
    offset = 0
    with open(image, "rb", buffering=0) as handle:
        while True:
            block = handle.read(CHUNK)
            if not block:
                break
            whole.update(block)
            if offset < ram_end:
                padded.update(block[:ram_end - offset])
            for start, end in ram:
                lo, hi = max(start, offset), min(end, offset + len(block))
                if lo < hi:
                    if lo == start:
                        lime.update(struct.pack("<IIQQ8s", LIME_MAGIC, 1, start, end - 1, bytes(8)))
                    lime.update(block[lo - offset:hi - offset])
            offset += len(block)
    return {"ram": sha256_ram, "file": whole.hexdigest(), "padded": padded.hexdigest(), "lime": lime.hexdigest()}


def elf_loads(head: bytes) -> dict:
    """The PT_LOAD segments of an ELF64 core from its first bytes (read here independently)."""
    if head[:4] != b"\x7fELF":
        return {"error": "not ELF"}
    phoff, = struct.unpack_from("<Q", head, 32)
    phnum, = struct.unpack_from("<H", head, 56)
    loads = []
    for index in range(phnum):
        kind, _, offset, _, paddr, filesz, memsz, _ = struct.unpack_from("<IIQQQQQQ", head, phoff + 56 * index)
        if kind == 1:
            loads.append((paddr, paddr + filesz, offset, memsz))
    return {"loads": loads, "data_offset": loads[0][2] if loads else 0}


def stream_digest(variant: Variant, stderr_path: str) -> tuple[int, str, dict]:
    """Run once with the benchmark itself as the consumer: (bytes, sha256 of the stream, and for
    an ELF core its PT_LOAD segments and the sha256 of everything from the first one's data)."""
    read_end, write_end = os.pipe()
    with open(stderr_path, "wb") as err:
        producer = spawn(variant.argv, variant.cpus, write_end, err)
    os.close(write_end)
    digest = hashlib.sha256()
    payload = hashlib.sha256()
    elf: dict = {}
    size = 0
    with os.fdopen(read_end, "rb", buffering=0) as stream:
        while True:
            block = stream.read(CHUNK)
            if not block:
                break
            if variant.expect == "elf":
                if size == 0:
                    elf = elf_loads(block)
                start = max(0, elf.get("data_offset", 0) - size)
                payload.update(block[start:] if start < len(block) else b"")
            size += len(block)
            digest.update(block)
    code, _ = reap(producer)
    if code != 0:
        raise RuntimeError(f"{variant.label}: exit {code}: {open(stderr_path, errors='replace').read()[-400:]}")
    if elf:
        elf["payload_sha256"] = payload.hexdigest()
    return size, digest.hexdigest(), elf


def elf_verdict(elf: dict, truth: dict) -> tuple[bool, str]:
    regions = [[start, end] for start, end, _, _ in elf.get("loads", [])]
    ok = regions == truth["ram"] and elf.get("payload_sha256") == truth["sha256_ram"] and all(
        memsz == end - start for start, end, _, memsz in elf["loads"])
    return ok, ("PT_LOADs = RAM ranges, data sha256 = truth" if ok
                else f"MISMATCH: ELF segments or data differ from the truth ({elf})")


def verdict(variant: Variant, size: int, digest: str, elf: dict, truth: dict, expected: dict,
            stderr_path: str) -> tuple[bool, str]:
    """(right or not, what was checked) for one command's output."""
    if variant.expect == "elf":
        ok, text = elf_verdict(elf, truth)
    elif variant.expect:
        ok = digest == expected[variant.expect]
        text = f"sha256 = {WHAT[variant.expect]}" if ok else f"MISMATCH with {WHAT[variant.expect]}"
    else:
        ok, text = True, f"{size} bytes"
    if variant.digest_in_stderr:
        reported = truth["sha256_ram"] in open(stderr_path, errors="replace").read()
        text += "; reported sha256 right" if reported else "; reported sha256 NOT FOUND"
        ok = ok and reported
    return ok, text


def check_outputs(variants: list[Variant], truth: dict, expected: dict, work: str) -> None:
    """Run every command once and check its bytes; stop the benchmark at the first wrong one.
    Records each command's byte count (the numerator of its GB/s) and what was checked."""
    say("checking outputs:")
    errs = os.path.join(work, "stderr.txt")
    for variant in variants:
        variant.size, variant.sha256, elf = stream_digest(variant, errs)
        ok, variant.verified = verdict(variant, variant.size, variant.sha256, elf, truth, expected, errs)
        say(f"  {variant.label:<34} {variant.size:>12} bytes  {variant.verified}")
        if not ok:
            raise SystemExit(f"bench: {variant.label} produced the wrong bytes; not timing it")
