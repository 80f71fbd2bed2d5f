"""The module's files: the sources (``kmod/``), a built or installed ``memdump.ko``, and what a
``.ko`` says about itself (its ``.modinfo``: the kernel release it was built for).

The sources are looked for relative to the package, unless a directory is given: ``kmod/`` beside
it (a checkout or an editable install), the data package ``memdump_kmod/`` beside it (a wheel
installs it next to ``memdump`` in site-packages; a zipapp holds it next to ``memdump`` inside the
zip, from where ``memdump module build --build-dir DIR`` copies it out), then
``<prefix>/share/memdump/kmod`` and the DKMS location ``/usr/src/memdump-<version>``.
"""

from __future__ import annotations

import glob
import os
import struct
import sys
import zipfile
import zipimport
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from memdump.errors import MemdumpError, UsageError
from memdump.host import Host
from memdump.module.names import DEVICE, MODULE, SYSFS, installed_module  # noqa: F401

KMOD_FILES = ("Kbuild", "Makefile", "memdump_main.c")
COMPRESSED = (".xz", ".gz", ".zst")
# the checkout (or editable install) this package sits in; site-packages for a wheel; the zip
# file itself for a zipapp
PACKAGE_PARENT = Path(os.path.abspath(__file__)).parent.parent.parent
# the name of kmod/ where it ships as data: in the wheel and in the zipapp
DATA_PACKAGE = "memdump_kmod"
# the zip file memdump runs from (a zipapp), else None
_LOADER = globals().get("__loader__")
ZIPAPP = os.path.abspath(_LOADER.archive) if isinstance(_LOADER, zipimport.zipimporter) else None


class ModuleError(MemdumpError):
    """The module could not be built, found, loaded or unloaded; the message says why."""


def modinfo(path: str | os.PathLike) -> dict[str, str]:
    """The ``.modinfo`` section of an (uncompressed) module: ``vermagic``, ``version``, ...

    Read from the ELF section headers, so no modinfo tool (or matching kernel) is needed.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ModuleError(f"{name}: {exc.strerror}") from None
    if name.endswith(".xz") or name.endswith(".gz"):
        import gzip
        import lzma
        try:
            data = lzma.decompress(data) if name.endswith(".xz") else gzip.decompress(data)
        except (lzma.LZMAError, OSError, EOFError):
            raise ModuleError(f"{name}: cannot decompress it") from None
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ModuleError(f"{name}: not a 64-bit little-endian ELF module")
    try:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        sections = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
        names = sections[shstrndx]
        for sh_name, _type, _flags, _addr, offset, size in sections:
            start = names[4] + sh_name
            if data[start:data.index(b"\0", start)] == b".modinfo":
                fields = {}
                for item in data[offset:offset + size].split(b"\0"):
                    key, sep, value = item.decode("utf-8", "replace").partition("=")
                    if sep and key not in fields:
                        fields[key] = value
                return fields
    except (struct.error, IndexError, ValueError):
        raise ModuleError(f"{name}: damaged ELF section headers") from None
    raise ModuleError(f"{name}: no .modinfo section (not a kernel module)")


def built_for(path: str | os.PathLike) -> str:
    """The kernel release a module was built for (the first word of its vermagic)."""
    vermagic = modinfo(path).get("vermagic", "")
    return vermagic.split()[0] if vermagic.split() else "?"


def candidate_source_dirs() -> list[Path]:
    """Where the kmod/ sources may be when no --source-dir is given, most specific first."""
    found = [PACKAGE_PARENT / "kmod", PACKAGE_PARENT / DATA_PACKAGE,
             Path(sys.prefix) / "share" / MODULE / "kmod"]
    found += [Path(p) for p in sorted(glob.glob(f"/usr/src/{MODULE}-*"), reverse=True)]
    return found


def in_zipapp(path: Path) -> Optional[Tuple[str, str]]:
    """(the zip file, the member prefix) when ``path`` lies inside the zipapp memdump runs from."""
    if ZIPAPP is None:
        return None
    archive = Path(ZIPAPP)
    if path != archive and archive not in path.parents:
        return None
    inner = path.relative_to(archive).as_posix()
    return ZIPAPP, "" if inner == "." else inner + "/"


def source_files(path: Path) -> Dict[str, bytes]:
    """The module's sources inside the zipapp under ``path``: file name -> contents."""
    where = in_zipapp(path)
    if where is None:
        raise ModuleError(f"{path}: not inside this zipapp")
    archive, prefix = where
    try:
        with zipfile.ZipFile(archive) as zipped:
            return {info.filename[len(prefix):]: zipped.read(info) for info in zipped.infolist()
                    if info.filename.startswith(prefix) and not info.is_dir()
                    and "/" not in info.filename[len(prefix):]}
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModuleError(f"{archive}: cannot read the module's sources ({exc})") from None


def is_source_dir(path: Path) -> bool:
    if in_zipapp(path) is not None:
        try:
            names = source_files(path)
        except ModuleError:
            return False
        return all(name in names for name in KMOD_FILES)
    return all((path / name).is_file() for name in KMOD_FILES)


def find_source_dir(explicit: str | None = None) -> Path:
    if explicit:
        path = Path(explicit)
        if not path.is_dir():
            raise UsageError(f"--source-dir {explicit}: no such directory")
        if not is_source_dir(path):
            raise UsageError(f"--source-dir {explicit}: not memdump's kmod/ directory "
                             f"(no {' / '.join(KMOD_FILES)})")
        return path
    for path in candidate_source_dirs():
        if is_source_dir(path):
            return path
    raise ModuleError("cannot find the module's sources (kmod/, or memdump_kmod/ beside the "
                      "installed package): pass --source-dir DIR, the kmod/ directory of a "
                      "memdump checkout or release")


def module_for_running_kernel(host: Host, source_dir: str | None = None) -> str:
    """The memdump.ko to load when no PATH is given: installed, else built in the sources."""
    release = host.kernel_release()
    installed = installed_module(host, release)
    if installed:
        return host.path(installed)
    try:
        sources = find_source_dir(source_dir)
    except MemdumpError:
        sources = None
    if sources is not None and (sources / f"{MODULE}.ko").is_file():
        built = sources / f"{MODULE}.ko"
        if built_for(built) == release:
            return str(built)
    raise ModuleError(f"no {MODULE}.ko for this kernel ({release}): run 'memdump module build' "
                      "(needs its headers) or give the module's PATH")
