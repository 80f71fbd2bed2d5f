"""What the module is called and where the kernel shows it: all a dump through it needs (the
rest of ``memdump.module`` loads only to build, load or inspect the module)."""

from __future__ import annotations

import os
from typing import Optional

from memdump.host import Host

MODULE = "memdump"
DEVICE = "/dev/memdump"
SYSFS = f"/sys/module/{MODULE}"


def installed_module(host: Host, release: Optional[str] = None) -> Optional[str]:
    """An installed memdump.ko for ``release`` (default: the running kernel), from modules.dep."""
    release = release or host.kernel_release()
    text = host.read_text(f"/lib/modules/{release}/modules.dep")
    for line in (text or "").splitlines():
        path = line.split(":", 1)[0]
        if os.path.basename(path).split(".ko")[0] == MODULE:
            return f"/lib/modules/{release}/{path}"
    return None
