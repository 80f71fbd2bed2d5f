"""Volatility 3 symbol tables (ISF) for the Linux kernel a memory image was taken from.

The running kernel carries all an analyst needs to open its image: BTF, every type it uses
(``/sys/kernel/btf/vmlinux``); ``/proc/kallsyms``, the address of every symbol (real addresses
only as root with ``kernel.kptr_restrict`` at 0 or 1); and its banner (``/proc/version``, the
``linux_banner`` string Volatility finds in the image to pick the matching table).

Entry points:

* :func:`build_isf` -- BTF bytes, kallsyms text and the banner to an ISF dict;
* :func:`from_host` -- the same, read from the running kernel (under a root directory);
* :func:`from_bundle` -- the same, read from a bundle directory saved next to an image;
* :func:`write_isf` -- write the dict as ``.json`` or ``.json.xz``, never over an existing file;
* :func:`banner_identifier` -- the bytes Volatility will look for in the image.

A bundle is a directory holding the kernel's files under plain names::

    btf          a copy of /sys/kernel/btf/vmlinux (raw BTF, binary)
    kallsyms     a copy of /proc/kallsyms, read as root with kptr_restrict <= 1
    version      a copy of /proc/version (the banner, with its trailing newline)
    vmcoreinfo   optional: the VMCOREINFO note's text (KEY=VALUE lines); its OSRELEASE names
                 the release and its SYMBOL(name)=hex lines fill symbols kallsyms lacks

Every error a user can cause is a :class:`SymbolsError` (a ``MemdumpError``) with a one-line
message.
"""

from __future__ import annotations

import errno
import hashlib
import json
import lzma
import os
import re
from typing import Any, Dict, Optional, Union

from memdump.symbols import btf as btf_mod
from memdump.symbols import isf as isf_mod
from memdump.symbols import kallsyms as kallsyms_mod
from memdump.symbols.errors import (
    BtfError,
    KallsymsError,
    KallsymsRestricted,
    MissingInput,
    OutputExists,
    SymbolsError,
)
from memdump.symbols.isf import FORMAT_VERSION, banner_identifier

HOST_BTF = "/sys/kernel/btf/vmlinux"
HOST_KALLSYMS = "/proc/kallsyms"
HOST_VERSION = "/proc/version"

BUNDLE_BTF = "btf"
BUNDLE_KALLSYMS = "kallsyms"
BUNDLE_VERSION = "version"
BUNDLE_VMCOREINFO = "vmcoreinfo"

# xz preset for .json.xz: the JSON is repetitive, so a low preset is nearly as small and
# several times faster than the default 6.
XZ_PRESET = 2


def build_isf(
    btf: bytes,
    kallsyms_text: str,
    banner: Union[str, bytes],
    *,
    release: Optional[str] = None,
    vmcoreinfo: Optional[str] = None,
    kaslr_offset: Optional[int] = None,
) -> Dict[str, Any]:
    """Build the ISF dict from raw BTF, kallsyms text and the kernel banner.

    ``release`` (e.g. ``6.1.0-18-amd64``) names the sources in the metadata; by default it
    comes from VMCOREINFO's OSRELEASE or the banner. ``vmcoreinfo`` text adds addresses of
    symbols kallsyms lacks (``SYMBOL(swapper_pg_dir)=...``) and gives the KASLR offset
    (``KERNELOFFSET``). Symbol addresses are written as the kernel was linked, before KASLR
    moved it -- what Volatility expects, as it adds the shift it finds in the image; the offset
    is ``kaslr_offset`` when given, else VMCOREINFO's, else derived from ``_text``."""
    banner_bytes = banner.encode("utf-8") if isinstance(banner, str) else bytes(banner)
    parsed_btf = btf_mod.parse(btf)
    table = kallsyms_mod.parse(kallsyms_text)
    extra: Dict[str, int] = {}
    if vmcoreinfo:
        info = parse_vmcoreinfo(vmcoreinfo)
        release = release or info.get("OSRELEASE")
        if kaslr_offset is None and "KERNELOFFSET" in info:
            try:
                kaslr_offset = int(info["KERNELOFFSET"], 16)
            except ValueError:
                raise SymbolsError(f"vmcoreinfo: KERNELOFFSET={info['KERNELOFFSET'][:40]!r} is not hex") from None
        for key, value in info.items():
            match = re.match(r"^SYMBOL\((\w+)\)$", key)
            if match:
                try:
                    extra[match.group(1)] = int(value, 16)
                except ValueError:
                    raise SymbolsError(f"vmcoreinfo: {key}={value[:40]!r} is not a hex address") from None
    return isf_mod.build(
        parsed_btf,
        table,
        banner_bytes,
        release=release,
        btf_sha256=hashlib.sha256(btf).hexdigest(),
        kallsyms_sha256=hashlib.sha256(kallsyms_text.encode("utf-8", "surrogateescape")).hexdigest(),
        extra_symbols=extra,
        kaslr_offset=kaslr_offset,
    )


def parse_vmcoreinfo(text: str) -> Dict[str, str]:
    """VMCOREINFO's ``KEY=VALUE`` lines as a dict (the first value of a repeated key wins)."""
    info: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key:
            info.setdefault(key, value)
    return info


def _read(path: str, what: str, missing_reason: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise MissingInput(f"{path}: {missing_reason}") from None
    except PermissionError:
        raise SymbolsError(f"{path}: permission denied reading {what} (run as root)") from None
    except IsADirectoryError:
        raise MissingInput(f"{path}: is a directory, not {what}") from None
    except OSError as exc:
        raise SymbolsError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def _under(root: str, absolute: str) -> str:
    if root in ("", "/"):
        return absolute
    return os.path.join(root, absolute.lstrip("/"))


def from_host(root: str = "/") -> Dict[str, Any]:
    """The ISF of the running kernel: ``/sys/kernel/btf/vmlinux``, ``/proc/kallsyms`` and
    ``/proc/version`` read under ``root``."""
    btf = _read(_under(root, HOST_BTF), "the kernel's BTF", "no BTF: kernel built without CONFIG_DEBUG_INFO_BTF")
    kallsyms = _read(_under(root, HOST_KALLSYMS), "kallsyms", "no kallsyms: kernel built without CONFIG_KALLSYMS")
    version = _read(_under(root, HOST_VERSION), "the kernel banner", "no /proc/version (is /proc mounted?)")
    return build_isf(btf, _text(kallsyms), version)


def from_bundle(directory: str) -> Dict[str, Any]:
    """The ISF from a bundle directory (files ``btf``, ``kallsyms``, ``version`` and optionally
    ``vmcoreinfo``; see the module documentation)."""
    if not os.path.isdir(directory):
        raise MissingInput(f"{directory}: no such bundle directory")
    btf = _read(os.path.join(directory, BUNDLE_BTF), "BTF", "missing from the bundle (a copy of /sys/kernel/btf/vmlinux)")
    kallsyms = _read(os.path.join(directory, BUNDLE_KALLSYMS), "kallsyms", "missing from the bundle (a copy of /proc/kallsyms)")
    version = _read(os.path.join(directory, BUNDLE_VERSION), "the banner", "missing from the bundle (a copy of /proc/version)")
    vmcoreinfo_path = os.path.join(directory, BUNDLE_VMCOREINFO)
    vmcoreinfo = None
    if os.path.exists(vmcoreinfo_path):
        vmcoreinfo = _text(_read(vmcoreinfo_path, "vmcoreinfo", "missing from the bundle"))
    return build_isf(btf, _text(kallsyms), version, vmcoreinfo=vmcoreinfo)


def _text(data: bytes) -> str:
    # Kernel text files are ASCII; latin-1 maps any stray byte to one character, losslessly.
    return data.decode("latin-1")


def encode_isf(isf: Dict[str, Any]) -> bytes:
    """The ISF as compact JSON bytes."""
    # json.dumps in one shot runs the C encoder; json.dump streams through the Python one.
    return json.dumps(isf, separators=(",", ":")).encode("ascii")


def write_isf(isf: Dict[str, Any], path: str) -> None:
    """Write the ISF to ``path`` -- xz-compressed when it ends in ``.xz`` -- creating it (mode
    0644). An existing file, or a symlink in its place, is never overwritten."""
    data = encode_isf(isf)
    if path.endswith(".xz"):
        data = lzma.compress(data, format=lzma.FORMAT_XZ, preset=XZ_PRESET)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        raise OutputExists(f"{path}: already exists; symbol files are never overwritten") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputExists(f"{path}: is a symlink; symbol files are never written through one") from None
        raise SymbolsError(f"{path}: cannot create: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        try:
            os.unlink(path)  # we created it: leave no truncated symbol file behind
        except OSError:
            pass
        raise SymbolsError(f"{path}: write failed: {exc.strerror or exc}") from None


__all__ = [
    "BUNDLE_BTF", "BUNDLE_KALLSYMS", "BUNDLE_VERSION", "BUNDLE_VMCOREINFO", "BtfError",
    "FORMAT_VERSION", "KallsymsError", "KallsymsRestricted", "MissingInput", "OutputExists",
    "SymbolsError", "banner_identifier", "build_isf", "encode_isf", "from_bundle", "from_host",
    "parse_vmcoreinfo", "write_isf",
]
