"""What ``memdump module status`` reports: the kernel, the module, its device node (which must
be a character device, 0400, root:root), an installed or built module and the headers."""

from __future__ import annotations

import os
import stat
from typing import List, Optional, Tuple

from memdump.errors import MemdumpError
from memdump.host import Host
from memdump.module.files import DEVICE, MODULE, SYSFS, built_for, find_source_dir, installed_module


def device_status(host: Host) -> tuple[str, bool]:
    """A line about the device node, and whether it is as it must be (a char device, 0400 root)."""
    try:
        st = os.stat(host.path(DEVICE))
    except FileNotFoundError:
        return f"{DEVICE} missing", False
    except OSError as exc:
        return f"{DEVICE}: {exc.strerror}", False
    mode = stat.S_IMODE(st.st_mode)
    kind = (f"character device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            if stat.S_ISCHR(st.st_mode) else "not a character device")
    good = stat.S_ISCHR(st.st_mode) and mode == 0o400 and st.st_uid == 0 and st.st_gid == 0
    verdict = "ok" if good else "WRONG: must be a character device, mode 0400, owner root:root"
    return f"{DEVICE} {kind}, mode {mode:04o}, owner {st.st_uid}:{st.st_gid} ({verdict})", good


def status_lines(host: Host, source_dir: str | None) -> list[tuple[str, str]]:
    release = host.kernel_release()
    rows = [("kernel", release)]
    if host.exists(SYSFS):
        facts = []
        for name, label in (("version", "version"), ("refcnt", "users"), ("taint", "taint")):
            value = (host.read_text(f"{SYSFS}/{name}") or "").strip()
            if value:
                facts.append(f"{label} {value}")
        rows.append(("module", "loaded" + (f" ({', '.join(facts)})" if facts else "")))
    else:
        rows.append(("module", "not loaded"))
    rows.append(("device", device_status(host)[0]))
    installed = installed_module(host, release)
    rows.append(("installed", installed or f"none for {release}"))
    try:
        sources = find_source_dir(source_dir)
    except MemdumpError:
        rows.append(("sources", "not found (pass --source-dir DIR)"))
    else:
        built = sources / f"{MODULE}.ko"
        if built.is_file():
            try:
                made = built_for(built)
                state = f"built for {made}" + (", this kernel" if made == release else
                                               ", not this kernel: run 'memdump module build'")
            except MemdumpError as exc:
                state = str(exc)
        else:
            state = "not built"
        rows.append(("sources", f"{sources} ({state})"))
    headers = f"/lib/modules/{release}/build"
    rows.append(("headers", headers if host.exists(f"{headers}/Makefile")
                 else f"missing (apt-get install linux-headers-{release})"))
    return rows
