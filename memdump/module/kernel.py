"""The live kernel's module interface: load and unload memdump.ko, wait for its device node.

The kernel is reached through :class:`Kernel` (``finit_module``/``delete_module`` through ctypes,
``insmod``/``rmmod`` where the syscall cannot be made), which tests replace through
``make_kernel``.  ``module_loaded`` is what a dump's ``--load-module`` does: the module is loaded
for the dump and unloaded after it only when this call loaded it.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

from memdump.errors import MemdumpError, UsageError
from memdump.host import Host
from memdump.remarks import Remark, no_remark
from memdump.module.files import (COMPRESSED, DEVICE, MODULE, SYSFS, ModuleError, built_for,
                                  module_for_running_kernel)

# x86-64, arm64 (and every architecture on the generic table), ppc64, s390x, i386
SYSCALLS = {"x86_64": (313, 176), "aarch64": (273, 106), "riscv64": (273, 106),
            "ppc64le": (353, 129), "ppc64": (353, 129), "s390x": (344, 129),
            "i386": (350, 129), "i686": (350, 129)}


def _libc_syscall():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall, ctypes


class Kernel:
    """The live kernel's module interface (``root`` must be ``/``)."""

    def __init__(self, host: Host):
        if host.root != "/":
            raise UsageError("cannot load or unload a kernel module under a redirected --root")
        self.host = host

    def loaded(self) -> bool:
        return os.path.isdir(SYSFS)

    def _syscall(self, index: int, *args) -> int | None:
        """The syscall's errno (0 on success), or None when it cannot be made from here."""
        numbers = SYSCALLS.get(os.uname().machine)
        if numbers is None:
            return None
        try:
            call, ctypes = _libc_syscall()
        except (OSError, ImportError, AttributeError):
            return None
        ctypes.set_errno(0)
        result = call(ctypes.c_long(numbers[index]), *args)
        return 0 if result == 0 else ctypes.get_errno()

    def load(self, path: str, params: tuple[str, ...] = ()) -> None:
        if path.endswith(COMPRESSED):  # the kmod tools decompress; finit_module may not
            return self._tool(["insmod", path, *params], "insmod")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ModuleError(f"{path}: {exc.strerror}") from None
        try:
            import ctypes
            err = self._syscall(0, ctypes.c_int(fd), ctypes.c_char_p(" ".join(params).encode()),
                                ctypes.c_int(0))
        finally:
            os.close(fd)
        if err is None or err == errno.ENOSYS:
            return self._tool(["insmod", path, *params], "insmod")
        if err:
            raise ModuleError(f"load {path}: {load_failure(err, path, self.host)}")

    def unload(self) -> None:
        import ctypes
        err = self._syscall(1, ctypes.c_char_p(MODULE.encode()), ctypes.c_uint(os.O_NONBLOCK))
        if err is None or err == errno.ENOSYS:
            return self._tool(["rmmod", MODULE], "rmmod")
        if err in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK):
            raise ModuleError(f"unload {MODULE}: in use (a reader has {DEVICE} open); "
                              f"try 'memdump module unload' when it is done")
        if err == errno.ENOENT:
            return
        if err:
            raise ModuleError(f"unload {MODULE}: {os.strerror(err)}"
                              + (" (needs root with CAP_SYS_MODULE)" if err == errno.EPERM else ""))

    def _tool(self, command: list[str], what: str) -> None:
        try:
            done = subprocess.run(command, capture_output=True, text=True)
        except OSError as exc:
            raise ModuleError(f"{what}: {exc.strerror}") from None
        if done.returncode:
            detail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise ModuleError(f"{' '.join(command)} failed: {detail}")


def load_failure(err: int, path: str, host: Host) -> str:
    """Why finit_module refused ``path``, in the responder's terms."""
    if err == errno.ENOEXEC:
        try:
            release = built_for(path)
        except MemdumpError:
            release = "?"
        return (f"the kernel refused it (built for {release}, this kernel is "
                f"{host.kernel_release()}; run 'memdump module build')")
    if err in (errno.EKEYREJECTED, errno.ENOKEY, errno.EBADMSG):
        return "the kernel requires signed modules (module.sig_enforce or lockdown): sign it"
    if err == errno.EPERM:
        return ("permission denied (needs root with CAP_SYS_MODULE; kernel lockdown or "
                "kernel.modules_disabled=1 also refuse it)")
    if err == errno.EEXIST:
        return f"a module named {MODULE} is already loaded"
    return os.strerror(err)


def make_kernel(host: Host) -> Kernel:
    """The kernel interface for ``host`` (tests replace this with a fake)."""
    return Kernel(host)


def wait_for_device(host: Host, seconds: float = 5.0) -> bool:
    """devtmpfs creates the node at once, udev may take a moment."""
    deadline = time.monotonic() + seconds
    while not host.exists(DEVICE):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def load(host: Host, path: str | None, source_dir: str | None = None,
         params: tuple[str, ...] = ()) -> str:
    """Load the module unless it is loaded; returns what was loaded ('' when nothing was)."""
    kernel = make_kernel(host)
    if kernel.loaded():
        return ""
    module = path or module_for_running_kernel(host, source_dir)
    if not os.path.exists(module):
        raise ModuleError(f"{module}: no such file")
    if not module.endswith(COMPRESSED):
        release = built_for(module)
        if release != host.kernel_release():
            raise ModuleError(f"{module} was built for {release}, this kernel is "
                              f"{host.kernel_release()} (run 'memdump module build')")
    kernel.load(module, params) if params else kernel.load(module)
    if not wait_for_device(host):
        try:
            kernel.unload()  # loaded for nothing: leave the machine as it was
        except MemdumpError:
            pass
        raise ModuleError(f"{MODULE} loaded but {DEVICE} did not appear (no devtmpfs or udev?)")
    return module


@contextmanager
def module_loaded(host: Host, path: Optional[str],
                  remark: Remark = no_remark) -> Iterator[None]:
    """``--load-module [PATH]``: the module is loaded while the body runs; unloaded after it
    only when this call loaded it. ``remark(level, text)``: level 1 says what was done, level 0
    warns that an unload failed."""
    loaded = load(host, path or None)
    remark(1, f"loaded {loaded}" if loaded
           else f"module {MODULE} already loaded: using it (it stays loaded)")
    try:
        yield
    finally:
        if loaded:
            try:
                make_kernel(host).unload()
                remark(1, f"unloaded {MODULE}")
            except MemdumpError as exc:
                remark(0, f"warning: {exc}")
