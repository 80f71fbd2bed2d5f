"""memdump's kernel module from the command line: ``memdump module build|load|unload|status``
and the dump's ``--load-module [PATH]``.

Responders prepare a machine with the group (build against the headers of the kernel that will be
examined, load, check the device node) and dump; or let one dump load the module, read through it
and unload it again.  ``--load-module`` unloads only a module it loaded itself: one that was
already there is used and left loaded, and ``--source auto`` never loads anything unless asked.

pip installs only the Python packages, not ``kmod/``: ``build`` looks for the sources relative to
the package (a checkout or an editable install), in ``<prefix>/share/memdump/kmod`` and in the
DKMS location ``/usr/src/memdump-<version>``, or takes ``--source-dir``.

The kernel is reached through :class:`Kernel` (``finit_module``/``delete_module`` through ctypes,
``insmod``/``rmmod`` where the syscall cannot be made), which tests replace with a fake.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import stat
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import click

from memdump.errors import MemdumpError, UsageError
from memdump.host import Host

MODULE = "memdump"
DEVICE = "/dev/memdump"
SYSFS = f"/sys/module/{MODULE}"
KMOD_FILES = ("Kbuild", "Makefile", "memdump_main.c")
COMPRESSED = (".xz", ".gz", ".zst")
# x86-64, arm64 (and every architecture on the generic table), ppc64, s390x, i386
SYSCALLS = {"x86_64": (313, 176), "aarch64": (273, 106), "riscv64": (273, 106),
            "ppc64le": (353, 129), "ppc64": (353, 129), "s390x": (344, 129),
            "i386": (350, 129), "i686": (350, 129)}


class ModuleError(MemdumpError):
    """The module could not be built, found, loaded or unloaded; the message says why."""


def say(text: str) -> None:
    click.echo(f"memdump: {text}", err=True)


# ---------------------------------------------------------------------------------------------
# module files


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


def installed_module(host: Host, release: str | None = None) -> str | None:
    """An installed memdump.ko for ``release`` (default: the running kernel), from modules.dep."""
    release = release or host.kernel_release()
    text = host.read_text(f"/lib/modules/{release}/modules.dep")
    for line in (text or "").splitlines():
        path = line.split(":", 1)[0]
        if os.path.basename(path).split(".ko")[0] == MODULE:
            return f"/lib/modules/{release}/{path}"
    return None


def candidate_source_dirs() -> list[Path]:
    """Where the kmod/ sources may be when no --source-dir is given, most specific first."""
    package = Path(__file__).resolve().parent
    found = [package.parent / "kmod", Path(sys.prefix) / "share" / MODULE / "kmod"]
    found += [Path(p) for p in sorted(glob.glob(f"/usr/src/{MODULE}-*"), reverse=True)]
    return found


def is_source_dir(path: Path) -> bool:
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
    raise ModuleError("cannot find the module's sources (kmod/; pip installs only the Python "
                      "packages): pass --source-dir DIR, the kmod/ directory of a memdump "
                      "checkout or release")


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


# ---------------------------------------------------------------------------------------------
# the kernel


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
def module_loaded(host: Host, path: str, verbose: int) -> Iterator[None]:
    """``--load-module [PATH]``: the module is loaded while the body runs; unloaded after it
    only when this call loaded it."""
    note = (lambda text: say(text) if verbose else None)
    loaded = load(host, path or None)
    note(f"loaded {loaded}" if loaded else f"module {MODULE} already loaded: using it (it stays loaded)")
    try:
        yield
    finally:
        if loaded:
            try:
                make_kernel(host).unload()
                note(f"unloaded {MODULE}")
            except MemdumpError as exc:
                say(f"warning: {exc}")


def run_with_module(path: str, dump: Callable[[], None], *, root: str | None, verbose: int) -> None:
    """The CLI's ``--load-module``: load, dump, unload if this run loaded it."""
    with module_loaded(Host.at(root), path, verbose):
        dump()


# ---------------------------------------------------------------------------------------------
# build


def build(source_dir: Path, *, kver: str | None, kdir: str | None, build_dir: str | None,
          make_vars: tuple[str, ...], verbose: bool) -> Path:
    """``make -C <kmod> KVER=.. [KDIR=..] [VAR=VALUE...]``; returns the built memdump.ko."""
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
    if verbose:
        say(" ".join(command))
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise ModuleError(f"make: {exc.strerror} (install make and gcc)") from None
    text = done.stdout.decode("utf-8", "replace")
    if verbose:
        click.echo(text, err=True, nl=False)
    ko = work / f"{MODULE}.ko"
    if done.returncode or not ko.is_file():
        lines = text.strip().splitlines()
        first = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "")
        raise ModuleError(f"build failed (make exit {done.returncode}): {first.strip()}")
    got = built_for(ko)
    if got != release:
        raise ModuleError(f"{ko} was built for {got}, not {release} (check --kdir)")
    return ko


# ---------------------------------------------------------------------------------------------
# status


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


# ---------------------------------------------------------------------------------------------
# the command group

CONTEXT = dict(help_option_names=["--help"], max_content_width=100)


@click.group("module", context_settings=CONTEXT)
def module_command():
    """Build, load, unload and inspect memdump's kernel module (/dev/memdump).

    The module serves System RAM read-only where /dev/mem cannot (CONFIG_STRICT_DEVMEM).
    A dump can also load it for itself: 'memdump --load-module [PATH] ...'.
    """


@module_command.command("build")
@click.option("--source-dir", metavar="DIR", help="The module's sources (memdump's kmod/ directory); "
              "default: found next to the package, in <prefix>/share/memdump/kmod or /usr/src/memdump-*.")
@click.option("--build-dir", metavar="DIR", help="Copy the sources to DIR (new or empty) and build there.")
@click.option("--kver", metavar="RELEASE", help="Kernel release to build for (default: the running one).")
@click.option("--kdir", metavar="DIR", help="Kernel build or headers tree (default: /lib/modules/RELEASE/build).")
@click.option("-v", "verbose", is_flag=True, help="Show make's command and output.")
@click.argument("make_vars", nargs=-1, metavar="[NAME=VALUE]...")
def build_command(source_dir, build_dir, kver, kdir, verbose, make_vars):
    """Build memdump.ko against a kernel's headers (make -C kmod KVER=... [KDIR=...]).

    Extra NAME=VALUE arguments go to make (W=1 for extra warnings). Prints the module's path.
    """
    ko = build(find_source_dir(source_dir), kver=kver, kdir=kdir, build_dir=build_dir,
               make_vars=tuple(make_vars), verbose=verbose)
    click.echo(str(ko))


# --root on load/unload only lets tests point the command at a fake machine (with a fake kernel)
ROOT = click.option("--root", metavar="DIR", hidden=True)


@module_command.command("load")
@click.argument("args", nargs=-1, metavar="[PATH] [NAME=VALUE]...")
@click.option("--source-dir", metavar="DIR", help="Where a built module may be (see 'build').")
@ROOT
def load_command(args, source_dir, root):
    """Load the module: PATH, else the one installed for the running kernel, else one built in the
    sources. NAME=VALUE are module parameters (allow_unsafe_copy=1: see the module's README).
    Does nothing when it is already loaded."""
    host = Host.at(root)
    params = tuple(a for a in args if "=" in a and not os.path.exists(a))
    paths = [a for a in args if a not in params]
    if len(paths) > 1:
        raise UsageError(f"one module PATH at most, got {' '.join(paths)}")
    done = load(host, paths[0] if paths else None, source_dir, params)
    line, good = device_status(host)
    click.echo(f"loaded {done}{' ' + ' '.join(params) if params else ''}" if done
               else f"{MODULE} already loaded")
    if not good:
        raise ModuleError(f"{MODULE} is loaded but {line}")


@module_command.command("unload")
@ROOT
def unload_command(root):
    """Unload the module (refused while anyone has /dev/memdump open)."""
    host = Host.at(root)
    kernel = make_kernel(host)
    if not kernel.loaded():
        click.echo(f"{MODULE} not loaded")
        return
    kernel.unload()
    click.echo(f"unloaded {MODULE}")


@module_command.command("status")
@click.option("--root", metavar="DIR", help="Inspect the fake machine under DIR.")
@click.option("--source-dir", metavar="DIR", help="The module's sources (see 'build').")
def status_command(root, source_dir):
    """Is the module loaded, is its device node root-only, is there a module for this kernel?"""
    for key, value in status_lines(Host.at(root), source_dir):
        click.echo(f"{key + ':':<10} {value}")


__all__ = ["module_command", "run_with_module", "module_loaded", "build", "load", "modinfo",
           "built_for", "find_source_dir", "status_lines", "Kernel", "ModuleError"]
