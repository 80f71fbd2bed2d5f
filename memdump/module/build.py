"""Building memdump.ko against a kernel's headers: ``make -C kmod KVER=... [KDIR=...]``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Optional, Tuple

from memdump.errors import UsageError
from memdump.host import Host
from memdump.module.files import MODULE, ModuleError, built_for


def build(source_dir: Path, *, kver: Optional[str] = None, kdir: Optional[str] = None,
          build_dir: Optional[str] = None, make_vars: Tuple[str, ...] = (),
          echo: Optional[Callable[[str], None]] = None) -> Path:
    """``make -C <kmod> KVER=.. [KDIR=..] [VAR=VALUE...]``; returns the built memdump.ko.
    ``echo`` (when given) receives the make command line and then make's whole output."""
    release = kver or Host().kernel_release()
    tree = Path(kdir) if kdir else Path(f"/lib/modules/{release}/build")
    if not (tree / "Makefile").is_file():
        hint = "--kdir DIR" if kdir else f"apt-get install linux-headers-{release}, or --kdir DIR"
        raise ModuleError(f"no kernel headers for {release} at {tree} ({hint})")
    for var in make_vars:
        if "=" not in var or var.startswith("="):
            raise UsageError(f"{var}: make variables are NAME=VALUE")
    work = source_dir
    if build_dir:
        work = Path(build_dir)
        if work.exists() and any(work.iterdir()):
            raise UsageError(f"--build-dir {build_dir}: exists and is not empty")
        shutil.copytree(source_dir, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            "*.o", "*.ko", "*.mod", "*.mod.c", ".*.cmd", "Module.symvers", "modules.order", ".tmp*"))
    elif not os.access(work, os.W_OK):
        raise ModuleError(f"{work} is not writable: use --build-dir DIR (a copy is built there)")
    command = ["make", "-C", str(work), f"KVER={release}"] + ([f"KDIR={kdir}"] if kdir else [])
    command += list(make_vars)
    if echo is not None:
        echo(f"memdump: {' '.join(command)}\n")
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise ModuleError(f"make: {exc.strerror} (install make and gcc)") from None
    text = done.stdout.decode("utf-8", "replace")
    if echo is not None:
        echo(text)
    ko = work / f"{MODULE}.ko"
    if done.returncode or not ko.is_file():
        lines = text.strip().splitlines()
        first = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "")
        raise ModuleError(f"build failed (make exit {done.returncode}): {first.strip()}")
    got = built_for(ko)
    if got != release:
        raise ModuleError(f"{ko} was built for {got}, not {release} (check --kdir)")
    return ko
