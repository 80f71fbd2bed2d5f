"""memdump's kernel module from user space: find its sources or an installed ``memdump.ko``,
build it against a kernel's headers, load and unload it, report its state.

Responders prepare a machine (build against the headers of the kernel that will be examined,
load, check the device node) and dump; or let one dump load the module, read through it and
unload it again (``module_loaded``, the dump's ``--load-module``).  The command line for all of
this is ``memdump.cli.module``, imported only when it is used.
"""

from __future__ import annotations

from memdump.lazy import lazy_exports

_EXPORTS = {
    "build": "memdump.module.build",
    "DEVICE": "memdump.module.names", "MODULE": "memdump.module.names", "SYSFS": "memdump.module.names",
    "ModuleError": "memdump.module.files", "built_for": "memdump.module.files",
    "find_source_dir": "memdump.module.files", "installed_module": "memdump.module.names",
    "modinfo": "memdump.module.files", "module_for_running_kernel": "memdump.module.files",
    "Kernel": "memdump.module.kernel", "load": "memdump.module.kernel",
    "make_kernel": "memdump.module.kernel", "module_loaded": "memdump.module.kernel",
    "device_status": "memdump.module.status", "status_lines": "memdump.module.status",
}
__all__ = sorted(_EXPORTS)


# loaded on first use: the kmod source needs the module's file names on every dump, not
# the build, load and status code
__getattr__ = lazy_exports("memdump.module", globals(), _EXPORTS)
