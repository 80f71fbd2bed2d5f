"""memdump's kernel module from user space: find its sources or an installed ``memdump.ko``,
build it against a kernel's headers, load and unload it, report its state.

Responders prepare a machine (build against the headers of the kernel that will be examined,
load, check the device node) and dump; or let one dump load the module, read through it and
unload it again (``module_loaded``, the dump's ``--load-module``).  The command line for all of
this is ``memdump.cli.module``, imported only when it is used.
"""

from memdump.module.build import build
from memdump.module.files import (DEVICE, MODULE, SYSFS, ModuleError, built_for, find_source_dir,
                                  installed_module, modinfo, module_for_running_kernel)
from memdump.module.kernel import Kernel, load, make_kernel, module_loaded
from memdump.module.status import device_status, status_lines

__all__ = ["DEVICE", "MODULE", "SYSFS", "Kernel", "ModuleError", "build", "built_for",
           "device_status", "find_source_dir", "installed_module", "load", "make_kernel", "modinfo",
           "module_for_running_kernel", "module_loaded", "status_lines"]
