"""Building memdump.ko against a kernel's headers: ``make -C kmod KVER=... [KDIR=...]``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Optional, Tuple

from memdump.errors import UsageError
from memdump.host import Host
from memdump.module.files import DATA_PACKAGE, MODULE, ZIPAPP, ModuleError, built_for, in_zipapp, source_files


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
    zipped = in_zipapp(source_dir) is not None
    if (zipped or source_dir.name == DATA_PACKAGE) and not build_dir:
        # never build inside the zipapp's or the installed package's copy (nor silently elsewhere)
        where = f"inside {ZIPAPP}" if zipped else f"installed with memdump ({source_dir})"
        raise UsageError(f"the module's sources are {where}: pass --build-dir DIR (new or empty) "
                         "to copy them there and build")
    if not build_dir:
        if not os.access(source_dir, os.W_OK):
            raise ModuleError(f"{source_dir} is not writable: use --build-dir DIR (a copy is built there)")
        return _make(source_dir, release, kdir, make_vars, echo)
    work = Path(build_dir)
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise UsageError(f"--build-dir {build_dir}: exists and is not an empty directory")
    created = not work.exists()
    try:
        if zipped:
            copy_out(source_dir, work)
        else:
            shutil.copytree(source_dir, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*BUILT))
        return _make(work, release, kdir, make_vars, echo)
    except BaseException:
        # nothing half-built stays where the responder asked for the module
        if created:
            shutil.rmtree(work, ignore_errors=True)
        elif work.is_dir():
            for entry in work.iterdir():
                (shutil.rmtree if entry.is_dir() and not entry.is_symlink() else os.unlink)(entry)
        raise


# what a build leaves in kmod/: never copied into a build directory
BUILT = ("*.o", "*.ko", "*.mod", "*.mod.c", ".*.cmd", "Module.symvers", "modules.order", ".tmp*")


def copy_out(source_dir: Path, work: Path) -> None:
    """The sources from inside the zipapp into ``work`` (created, or empty), files 0644."""
    try:
        work.mkdir(mode=0o755, exist_ok=True)
        for name, data in sorted(source_files(source_dir).items()):
            fd = os.open(work / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
    except OSError as exc:
        raise ModuleError(f"--build-dir {work}: {exc.strerror}") from None


def _make(work: Path, release: str, kdir: Optional[str], make_vars: Tuple[str, ...],
          echo: Optional[Callable[[str], None]]) -> Path:
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
