"""Boot Debian's kernel under QEMU for the real-kernel tier: initramfs, QEMU, QMP, console.

Facts this follows (see /work/shared/kernel-lab.md): TCG only (KVM does not boot here); a
busybox /init that mounts devtmpfs/proc/sysfs itself and insmods virtio + 9p in dependency order;
the host's / shared read-only over 9p and a second, writable 9p share for results; guest RAM in a
host file (offset == guest physical address) so the host can compare any dump with the truth,
pausing the guest with QMP ``stop``/``cont`` around the comparison; QEMU always under
``timeout`` and its exit code never trusted (the console sentinels are).

Standard library only: this runs as root from .ci/run before anything is installed.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

# Modules the guest needs for the 9p shares (virtio_pci is the transport's bus).
NEEDED_MODULES = ("virtio_pci", "9pnet_virtio", "9p")

INIT_SCRIPT = r"""#!/bin/busybox sh
# /init of the memdump test initramfs: mount the basics, load virtio + 9p,
# mount the host's / read-only and the results share, run the step script.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in $(cat /modules.order); do
    insmod /lib/modules/$m || echo "@@MD:INSMOD-FAILED:$m@@"
done
mkdir -p /host /results
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 host0 /host \
    || echo "@@MD:MOUNT-FAILED:host0@@"
# cache=none: the host writes ack files the guest must see at once, and the
# guest's dumps must not sit in its page cache (that would change its RAM).
mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=262144 results /results \
    || echo "@@MD:MOUNT-FAILED:results@@"
echo "@@MD:BOOTED@@"
if [ -f /results/guest.sh ]; then
    sh /results/guest.sh > /results/guest.log 2>&1
    echo "@@MD:END:$?@@"
else
    echo "@@MD:END:no-script@@"
fi
poweroff -f
"""


# ---------------------------------------------------------------------------------------------
# initramfs


class Cpio:
    """A minimal writer of the "newc" cpio format the kernel unpacks (no mknod needed)."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0]
        self.ino += 1
        header = b"070701" + b"".join(b"%08X" % v for v in fields)
        self.out.write(header + name_b)
        self.out.write(b"\0" * ((4 - (len(header) + len(name_b)) % 4) % 4))
        self.out.write(data)
        self.out.write(b"\0" * ((4 - len(data) % 4) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def module_load_order(kver: str, wanted: tuple[str, ...] = NEEDED_MODULES) -> list[str]:
    """Paths (relative to /lib/modules/<kver>) of ``wanted`` and their dependencies, deps first."""
    base = Path("/lib/modules") / kver
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (base / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        deps[path] = rest.split()
        name = Path(path).name.split(".ko")[0]
        by_name[name] = path
        by_name[name.replace("-", "_")] = path
    builtin = set()
    builtin_file = base / "modules.builtin"
    if builtin_file.exists():
        builtin = {Path(p).name.split(".ko")[0] for p in builtin_file.read_text().split()}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name in builtin or name.replace("_", "-") in builtin:
            continue
        if name not in by_name:
            raise RuntimeError(f"module {name} not found for kernel {kver}")
        visit(by_name[name])
    return order


def module_bytes(path: Path) -> bytes:
    """The module's ELF bytes; Debian may ship .ko.xz (busybox insmod wants them plain)."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        # no zstd in the standard library: use the zstd tool if present
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return data


def build_initramfs(kver: str, out: Path, busybox: str = "/bin/busybox",
                    extra_modules: tuple[str, ...] = ()) -> list[str]:
    """Write a gzip'd initramfs to ``out``; returns the module load order it contains."""
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "host", "results", "lib", "lib/modules"):
        cpio.directory(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("bin/busybox", Path(busybox).read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("init", INIT_SCRIPT.encode(), 0o755)
    order = module_load_order(kver, NEEDED_MODULES + tuple(extra_modules))
    names = []
    for rel in order:
        plain = Path(rel).name.split(".ko")[0] + ".ko"
        cpio.file(f"lib/modules/{plain}", module_bytes(Path("/lib/modules") / kver / rel))
        names.append(plain)
    cpio.file("modules.order", ("\n".join(names) + "\n").encode())
    out.write_bytes(gzip.compress(cpio.finish(), compresslevel=1))
    return names


# ---------------------------------------------------------------------------------------------
# QMP


class Qmp:
    """Just enough QMP: connect, negotiate, execute a command and wait for its return."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.buffer = b""
        self._message()  # greeting
        self.execute("qmp_capabilities")

    def _message(self) -> dict:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command: str, **arguments) -> dict:
        message = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            reply = self._message()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error']}")
            # asynchronous events (STOP, RESUME, ...) are skipped

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# the guest


@dataclass
class GuestConfig:
    kver: str
    workdir: Path            # writable share (results); also holds initramfs, console, QMP socket
    ram_file: Path           # guest RAM, offset == guest physical address
    memory_mib: int = 1024
    cpus: int = 2
    cpu_model: str = "max"
    timeout: float = 480.0
    append: str = ""
    extra_args: list[str] = field(default_factory=list)
    # virtio-mem: (backing file, device region MiB, requested MiB) -> nested
    # "System RAM (virtio_mem)" in the guest, with unplugged (PageOffline) sub-blocks
    virtio_mem: tuple[Path, int, int] | None = None


class GuestStalled(Exception):
    """The guest sent no sentinel before the step's deadline."""


class Guest:
    """One QEMU run: start it, follow its console, pause/resume it, make sure it ends."""

    def __init__(self, cfg: GuestConfig, initramfs: Path) -> None:
        self.cfg = cfg
        self.initramfs = initramfs
        self.console = cfg.workdir / "console.log"
        self.qmp_path = cfg.workdir / "qmp.sock"
        self.proc: subprocess.Popen | None = None
        self.qmp: Qmp | None = None
        self._console_pos = 0
        self._partial = ""
        self.lines: list[str] = []
        self.started = 0.0
        self._deadline: float | None = None
        self.step_started = 0.0

    @property
    def deadline(self) -> float | None:
        return self._deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self._deadline = value
        self.step_started = time.monotonic()

    def command(self) -> list[str]:
        cfg = self.cfg
        # secretmem.enable: memfd_secret (pages removed from the direct map) is off by default
        # before 6.5; the tier checks the module refuses such a page
        append = "console=ttyS0 panic=-1 loglevel=4 secretmem.enable=1 " + cfg.append
        memory = f"{cfg.memory_mib}M"
        devices: list[str] = []
        if cfg.virtio_mem:
            backing, region, requested = cfg.virtio_mem
            memory += f",maxmem={cfg.memory_mib + region}M"
            # hot-plugged memory blocks come online as they are added (the default is offline)
            append += " memhp_default_state=online"
            devices = ["-object", f"memory-backend-file,id=vmem0,size={region}M,mem-path={backing},"
                                  "share=on",
                       "-device", f"virtio-mem-pci,id=vm0,memdev=vmem0,requested-size={requested}M,"
                                  "block-size=2M"]
        return [
            "timeout", "-k", "10", str(int(cfg.timeout)),
            "qemu-system-x86_64",
            "-accel", "tcg", "-cpu", cfg.cpu_model, "-smp", str(cfg.cpus),
            "-m", memory,
            "-object", f"memory-backend-file,id=mem,size={cfg.memory_mib}M,"
                       f"mem-path={cfg.ram_file},share=on",
            "-machine", "pc,memory-backend=mem",
            "-kernel", f"/boot/vmlinuz-{cfg.kver}",
            "-initrd", str(self.initramfs),
            "-append", append.strip(),
            "-display", "none", "-monitor", "none", "-nic", "none", "-no-reboot",
            "-serial", f"file:{self.console}",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-virtfs", "local,path=/,mount_tag=host0,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={cfg.workdir},mount_tag=results,security_model=none,multidevs=remap",
            *devices,
            *cfg.extra_args,
        ]

    def start(self) -> None:
        for stale in (self.console, self.qmp_path):
            if stale.exists():
                stale.unlink()
        self.console.touch()
        self.started = time.monotonic()
        with open(self.cfg.workdir / "qemu.out", "wb") as out:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        try:
            self.qmp = Qmp(self.qmp_path)
        except OSError as exc:
            text = (self.cfg.workdir / "qemu.out").read_text(errors="replace").strip()
            raise RuntimeError(f"QEMU did not start: {exc}; {text[-300:]}") from None

    def new_lines(self) -> list[str]:
        """Console lines written since the last call (``\\r`` stripped)."""
        with open(self.console, "rb") as f:
            f.seek(self._console_pos)
            data = f.read()
        self._console_pos += len(data)
        text = self._partial + data.decode("utf-8", "replace").replace("\r", "")
        *complete, self._partial = text.split("\n")
        self.lines.extend(complete)
        return complete

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self, poll: float = 0.05):
        """Yield ``(name, argument)`` for each ``@@MD:name[:argument]@@`` sentinel, until QEMU ends.

        Raises GuestStalled when ``deadline`` (a time.monotonic() value the caller moves on at
        each step) passes before the next sentinel."""
        while True:
            alive = self.running()
            if alive and self.deadline is not None and time.monotonic() > self.deadline:
                raise GuestStalled(f"no word from the guest for "
                                   f"{time.monotonic() - self.step_started:.0f}s")
            for line in self.new_lines():
                start = line.find("@@MD:")
                end = line.find("@@", start + 5)
                if start < 0 or end < 0:
                    continue
                name, _, argument = line[start + 5:end].partition(":")
                yield name, argument
            if not alive:
                return
            time.sleep(poll)

    def virtio_mem_state(self) -> tuple[int, int]:
        """(guest physical address, plugged bytes) of the virtio-mem device, from QEMU."""
        assert self.qmp is not None
        path = "/machine/peripheral/vm0"
        return (int(self.qmp.execute("qom-get", path=path, property="memaddr")),
                int(self.qmp.execute("qom-get", path=path, property="size")))

    def pause(self) -> None:
        assert self.qmp is not None
        self.qmp.execute("stop")

    def resume(self) -> None:
        assert self.qmp is not None
        self.qmp.execute("cont")

    def finish(self, grace: float = 30.0) -> int | None:
        """Wait for QEMU to end (the guest powers off itself); kill it if it does not."""
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                if self.qmp:
                    self.qmp.execute("quit")
            except (OSError, RuntimeError, ConnectionError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # SIGTERM reaches QEMU through `timeout`, which forwards it; SIGKILL would
                # only kill `timeout` and orphan QEMU.
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if self.qmp:
            self.qmp.close()
            self.qmp = None
        self.new_lines()
        return self.proc.returncode
