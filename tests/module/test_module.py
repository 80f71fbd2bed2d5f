"""``memdump module build|load|unload|status`` and the dump's ``--load-module``, on fake roots
with a fake kernel (no root, no module loading, no kernel headers needed)."""

from __future__ import annotations

import os
import stat

import pytest

from conftest import REPO, fake_ko, run_main
from emulator.machine import Machine
from emulator.rootfs import write_root
from memdump.module import files as module_files
from memdump.module import kernel as module_kernel
from memdump.module import status as module_status
from memdump.errors import UsageError
from memdump.host import Host

RELEASE = "6.1.0-emulated"  # conftest.fake_ko's default


@pytest.fixture
def machine_root(tmp_path):
    """A strict-devmem machine without the module (fresh per test: loading changes it)."""
    machine = Machine(seed=11, ram_size=8 << 20, release=RELEASE)
    root = tmp_path / "root"
    write_root(machine, str(root), strict_devmem=True)
    return root, machine


class FakeKernel:
    """Loading links the root's dev/mem image to dev/memdump and creates sys/module/memdump."""

    calls: list = []

    def __init__(self, host: Host, refuse_unload: bool = False, refuse_load: str = ""):
        self.host = host
        self.root = host.root
        self.refuse_unload = refuse_unload
        self.refuse_load = refuse_load

    def loaded(self):
        return os.path.isdir(os.path.join(self.root, "sys/module/memdump"))

    def load(self, path):
        FakeKernel.calls.append(("load", path))
        if self.refuse_load:
            raise module_files.ModuleError(f"load {path}: {self.refuse_load}")
        os.makedirs(os.path.join(self.root, "sys/module/memdump"))
        os.link(os.path.join(self.root, "dev/mem"), os.path.join(self.root, "dev/memdump"))

    def unload(self):
        FakeKernel.calls.append(("unload",))
        if self.refuse_unload:
            raise module_files.ModuleError("unload memdump: in use (a reader has /dev/memdump open)")
        os.rmdir(os.path.join(self.root, "sys/module/memdump"))
        os.unlink(os.path.join(self.root, "dev/memdump"))


@pytest.fixture
def kernel(monkeypatch):
    FakeKernel.calls = []
    options: dict = {}
    monkeypatch.setattr(module_kernel, "make_kernel", lambda host: FakeKernel(host, **options))
    return options


def loaded(root) -> bool:
    return (root / "sys/module/memdump").is_dir() and (root / "dev/memdump").exists()


# ---------------------------------------------------------------------------------------------
# --load-module


def test_load_module_loads_dumps_and_unloads(machine_root, kernel, tmp_path, capfdbinary):
    root, machine = machine_root
    ko = fake_ko(tmp_path / "memdump.ko")
    code, out, err = run_main(capfdbinary, "--root", str(root), "--load-module", ko, "-v", "-s", "1m")
    assert code == 0, err
    assert FakeKernel.calls == [("load", ko), ("unload",)]
    assert "source kmod" in err and f"loaded {ko}" in err and "unloaded memdump" in err
    first = machine.ram[0]
    assert out[:4096] == machine.contents(first.start, first.start + 4096) and len(out) == 1 << 20
    assert not loaded(root)


def test_a_module_already_loaded_stays(machine_root, kernel, tmp_path, capfdbinary):
    root, _ = machine_root
    FakeKernel(Host(str(root))).load("before")
    FakeKernel.calls = []
    code, out, err = run_main(capfdbinary, "--root", str(root), "--load-module", "-v", "-s", "64k")
    assert code == 0, err
    assert FakeKernel.calls == [] and loaded(root)
    assert "already loaded" in err and "source kmod" in err and len(out) == 64 << 10


def test_auto_never_loads_the_module(machine_root, kernel, capfdbinary):
    root, _ = machine_root
    code, out, err = run_main(capfdbinary, "--root", str(root), "-v", "-s", "64k")
    assert code == 0, err
    assert FakeKernel.calls == [] and not loaded(root)
    assert "source kcore" in err  # kmod absent, devmem limited by STRICT_DEVMEM


def test_the_module_is_unloaded_when_the_dump_fails(machine_root, kernel, tmp_path, capfdbinary):
    root, _ = machine_root
    (tmp_path / "exists.img").write_bytes(b"")
    code, out, err = run_main(capfdbinary, "--root", str(root), "--load-module", fake_ko(tmp_path / "m.ko"),
                              "-o", str(tmp_path / "exists.img"))
    assert code == 2 and "file exists" in err
    assert [c[0] for c in FakeKernel.calls] == ["load", "unload"] and not loaded(root)


def test_a_failed_unload_is_one_warning_line(machine_root, kernel, tmp_path, capfdbinary):
    root, _ = machine_root
    kernel["refuse_unload"] = True
    code, out, err = run_main(capfdbinary, "--root", str(root), "--load-module", fake_ko(tmp_path / "m.ko"),
                              "-s", "64k")
    assert code == 0 and len(out) == 64 << 10
    assert err.strip().splitlines() == [
        "memdump: warning: unload memdump: in use (a reader has /dev/memdump open)"]


@pytest.mark.parametrize("make, words", [
    (lambda tmp: fake_ko(tmp / "old.ko", vermagic="5.10.0-30-amd64 SMP mod_unload "),
     ["was built for 5.10.0-30-amd64", f"this kernel is {RELEASE}", "memdump module build"]),
    (lambda tmp: str(tmp / "missing.ko"), ["missing.ko: no such file"]),
    (lambda tmp: str((tmp / "junk.ko").write_bytes(b"junk") and tmp / "junk.ko"),
     ["not a 64-bit little-endian ELF module"]),
])
def test_load_module_errors_are_one_line(machine_root, kernel, tmp_path, capfdbinary, make, words):
    root, _ = machine_root
    code, out, err = run_main(capfdbinary, "--root", str(root), "--load-module", make(tmp_path), "-s", "64k")
    assert code == 1 and out == b"" and FakeKernel.calls == []
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for word in words:
        assert word in err


def test_kernel_refusal_is_one_line(machine_root, kernel, tmp_path, capfdbinary):
    root, _ = machine_root
    kernel["refuse_load"] = "the kernel requires signed modules (module.sig_enforce or lockdown): sign it"
    code, out, err = run_main(capfdbinary, "--root", str(root), "--load-module", fake_ko(tmp_path / "m.ko"))
    assert code == 1 and out == b"" and "sign it" in err and len(err.strip().splitlines()) == 1


def test_without_a_path_the_installed_module_is_loaded(machine_root, kernel, tmp_path, capfdbinary):
    root, _ = machine_root
    updates = root / f"lib/modules/{RELEASE}/updates/dkms"
    updates.mkdir(parents=True)
    fake_ko(updates / "memdump.ko")
    (root / f"lib/modules/{RELEASE}/modules.dep").write_text("updates/dkms/memdump.ko:\nkernel/fs/9p/9p.ko:\n")
    code, out, err = run_main(capfdbinary, "--root", str(root), "--load-module", "-s", "64k")
    assert code == 0, err
    assert FakeKernel.calls[0] == ("load", str(updates / "memdump.ko"))


def test_without_a_path_or_a_module_it_says_what_to_do(machine_root, kernel, monkeypatch, tmp_path, capfdbinary):
    root, _ = machine_root
    monkeypatch.setattr(module_files, "candidate_source_dirs", lambda: [tmp_path / "nowhere"])
    code, out, err = run_main(capfdbinary, "--root", str(root), "--load-module", "-s", "64k")
    assert code == 1 and out == b""
    assert f"no memdump.ko for this kernel ({RELEASE})" in err and "memdump module build" in err


def test_a_module_built_in_the_sources_is_found(machine_root, kernel, monkeypatch, tmp_path, capfdbinary):
    root, _ = machine_root
    sources = kmod_copy(tmp_path)
    fake_ko(sources / "memdump.ko")
    monkeypatch.setattr(module_files, "candidate_source_dirs", lambda: [sources])
    code, out, err = run_main(capfdbinary, "--root", str(root), "--load-module", "-s", "64k")
    assert code == 0, err
    assert FakeKernel.calls[0] == ("load", str(sources / "memdump.ko"))


def test_the_real_kernel_interface_refuses_a_redirected_root(tmp_path):
    with pytest.raises(UsageError, match="--root"):
        module_kernel.Kernel(Host(str(tmp_path)))


# ---------------------------------------------------------------------------------------------
# memdump module load / unload / status


def test_module_load_and_unload_commands(machine_root, kernel, tmp_path, capfdbinary):
    root, _ = machine_root
    ko = fake_ko(tmp_path / "memdump.ko")
    code, out, err = run_main(capfdbinary, "module", "load", ko, "--root", str(root))
    # the fake device is a regular file, not a 0400 character device: load says so
    assert code == 1 and loaded(root) and f"loaded {ko}" in out.decode()
    assert "not a character device" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_main(capfdbinary, "module", "load", ko, "--root", str(root))
    assert b"already loaded" in out and FakeKernel.calls == [("load", ko)]
    code, out, err = run_main(capfdbinary, "module", "unload", "--root", str(root))
    assert code == 0 and out == b"unloaded memdump\n" and not loaded(root)
    code, out, err = run_main(capfdbinary, "module", "unload", "--root", str(root))
    assert code == 0 and out == b"memdump not loaded\n"


def test_module_unload_in_use_is_one_line(machine_root, kernel, capfdbinary):
    root, _ = machine_root
    FakeKernel(Host(str(root))).load("before")
    kernel["refuse_unload"] = True
    code, out, err = run_main(capfdbinary, "module", "unload", "--root", str(root))
    assert code == 1 and err == "memdump: unload memdump: in use (a reader has /dev/memdump open)\n"


def status(capfd, root, *extra):
    code, out, err = run_main(capfd, "module", "status", "--root", str(root), *extra)
    assert code == 0, err
    return dict((k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in out.decode().splitlines()))


def test_status_of_a_machine_without_the_module(machine_root, monkeypatch, tmp_path, capfdbinary):
    root, _ = machine_root
    monkeypatch.setattr(module_files, "candidate_source_dirs", lambda: [tmp_path / "nowhere"])
    rows = status(capfdbinary, root)
    assert rows == {"kernel": RELEASE, "module": "not loaded", "device": "/dev/memdump missing",
                    "installed": f"none for {RELEASE}", "sources": "not found (pass --source-dir DIR)",
                    "headers": f"missing (apt-get install linux-headers-{RELEASE})"}


def test_status_of_a_prepared_machine(machine_root, tmp_path, capfdbinary):
    root, _ = machine_root
    FakeKernel(Host(str(root))).load("before")
    for name, value in (("version", "0.1.0\n"), ("refcnt", "1\n"), ("taint", "OE\n")):
        (root / "sys/module/memdump" / name).write_text(value)
    updates = root / f"lib/modules/{RELEASE}/updates/dkms"
    updates.mkdir(parents=True)
    (root / f"lib/modules/{RELEASE}/modules.dep").write_text("updates/dkms/memdump.ko.xz:\n")
    (root / f"lib/modules/{RELEASE}/build").mkdir()
    (root / f"lib/modules/{RELEASE}/build/Makefile").write_text("")
    sources = kmod_copy(tmp_path)
    fake_ko(sources / "memdump.ko", vermagic="5.10.0-30-amd64 SMP ")
    rows = status(capfdbinary, root, "--source-dir", str(sources))
    assert rows["module"] == "loaded (version 0.1.0, users 1, taint OE)"
    assert rows["device"].startswith("/dev/memdump not a character device") and "WRONG" in rows["device"]
    assert rows["installed"] == f"/lib/modules/{RELEASE}/updates/dkms/memdump.ko.xz"
    assert rows["sources"] == f"{sources} (built for 5.10.0-30-amd64, not this kernel: run 'memdump module build')"
    assert rows["headers"] == f"/lib/modules/{RELEASE}/build"


def test_device_status_wants_a_root_only_character_device(monkeypatch):
    class St:
        st_mode, st_rdev, st_uid, st_gid = stat.S_IFCHR | 0o400, os.makedev(10, 123), 0, 0

    monkeypatch.setattr(module_status.os, "stat", lambda path: St)
    line, good = module_status.device_status(Host())
    assert good and line == "/dev/memdump character device 10:123, mode 0400, owner 0:0 (ok)"
    St.st_mode = stat.S_IFCHR | 0o444
    assert module_status.device_status(Host())[1] is False


# ---------------------------------------------------------------------------------------------
# memdump module build


def kmod_copy(tmp_path):
    """A kmod/ directory (the real file names; contents do not matter to a fake make)."""
    sources = tmp_path / "kmod"
    sources.mkdir()
    for name in ("Kbuild", "Makefile", "memdump_main.c", "memdump.h"):
        (sources / name).write_text(f"# {name}\n")
    return sources


def test_build_runs_make_with_kver_kdir_and_variables(fake_make, tmp_path, capfdbinary):
    _, headers = fake_make
    sources = kmod_copy(tmp_path)
    code, out, err = run_main(capfdbinary, "module", "build", "--source-dir", str(sources), "--kver",
                              "6.1.0-56-amd64", "--kdir", str(headers), "W=1")
    assert code == 0, err
    assert out.decode() == f"{sources / 'memdump.ko'}\n"
    assert (tmp_path / "make.args").read_text().split() == [
        "-C", str(sources), "KVER=6.1.0-56-amd64", f"KDIR={headers}", "W=1"]


def test_build_in_a_copy(fake_make, tmp_path, capfdbinary):
    _, headers = fake_make
    sources = kmod_copy(tmp_path)
    (sources / "memdump.o").write_text("stale")
    code, out, err = run_main(capfdbinary, "module", "build", "--source-dir", str(sources), "--build-dir",
                              str(tmp_path / "build"), "--kver", "6.1.0-56-amd64", "--kdir", str(headers))
    assert code == 0, err
    assert out.decode() == f"{tmp_path / 'build' / 'memdump.ko'}\n"
    assert (tmp_path / "build" / "memdump_main.c").exists() and not (tmp_path / "build" / "memdump.o").exists()
    assert not (sources / "memdump.ko").exists()


def test_a_failed_build_leaves_no_build_dir(fake_make, tmp_path, capfdbinary, monkeypatch):
    _, headers = fake_make
    sources = kmod_copy(tmp_path)
    monkeypatch.setenv("FAKE_MAKE_FAIL", "1")
    empty = tmp_path / "empty"
    empty.mkdir()
    for build in (tmp_path / "new", empty):
        code, out, err = run_main(capfdbinary, "module", "build", "--source-dir", str(sources), "--build-dir",
                                  str(build), "--kver", "6.1.0-56-amd64", "--kdir", str(headers))
        assert code == 1 and "build failed" in err
    assert not (tmp_path / "new").exists() and list(empty.iterdir()) == []


@pytest.mark.parametrize("args, env, code, words", [
    (["--kver", "6.1.0-56-amd64", "--kdir", "{tmp}/nothing"], {}, 1, ["no kernel headers for 6.1.0-56-amd64"]),
    (["--kver", "6.1.0-56-amd64", "--kdir", "{headers}"], {"FAKE_MAKE_FAIL": "1"}, 1,
     ["build failed (make exit 2)", "error: unknown type name"]),
    (["--kver", "6.2.0-1-amd64", "--kdir", "{headers}"], {}, 1, ["built for 6.1.0-56-amd64, not 6.2.0-1-amd64"]),
    (["--kver", "6.1.0-56-amd64", "--kdir", "{headers}", "W"], {}, 2, ["make variables are NAME=VALUE"]),
    (["--source-dir", "{tmp}"], {}, 2, ["not memdump's kmod/ directory"]),
])
def test_build_errors_are_one_line(fake_make, tmp_path, capfdbinary, monkeypatch, args, env, code, words):
    _, headers = fake_make
    sources = kmod_copy(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = [a.format(tmp=tmp_path, headers=headers) for a in args]
    if "--source-dir" not in args:
        args += ["--source-dir", str(sources)]
    got, out, err = run_main(capfdbinary, "module", "build", *args)
    assert got == code and out == b""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for word in words:
        assert word in err


def test_sources_are_found_next_to_the_package():
    """In a checkout (or an editable install) kmod/ sits beside the memdump package."""
    assert module_files.find_source_dir() == module_files.candidate_source_dirs()[0]
    assert module_files.find_source_dir() == __import__("pathlib").Path(REPO) / "kmod"


def test_no_sources_anywhere_says_source_dir(monkeypatch, tmp_path, capfdbinary):
    monkeypatch.setattr(module_files, "candidate_source_dirs", lambda: [tmp_path / "a", tmp_path / "b"])
    code, out, err = run_main(capfdbinary, "module", "build", "--kver", "6.1.0-56-amd64")
    assert code == 1 and "cannot find the module's sources" in err and "--source-dir" in err


# ---------------------------------------------------------------------------------------------
# module files


def test_modinfo_reads_vermagic_and_version(tmp_path):
    info = module_files.modinfo(fake_ko(tmp_path / "m.ko"))
    assert info["vermagic"].split()[0] == RELEASE and info["version"] == "0.1.0"
    assert module_files.built_for(tmp_path / "m.ko") == RELEASE


def test_modinfo_of_compressed_modules(tmp_path):
    import lzma

    raw = (tmp_path / "m.ko")
    fake_ko(raw)
    (tmp_path / "m.ko.xz").write_bytes(lzma.compress(raw.read_bytes()))
    assert module_files.built_for(tmp_path / "m.ko.xz") == RELEASE


def test_load_failure_reasons():
    host = Host()
    import errno

    assert "signed" in module_kernel.load_failure(errno.EKEYREJECTED, "/x.ko", host)
    assert "CAP_SYS_MODULE" in module_kernel.load_failure(errno.EPERM, "/x.ko", host)
    assert "already loaded" in module_kernel.load_failure(errno.EEXIST, "/x.ko", host)


def test_module_load_passes_parameters(machine_root, monkeypatch, tmp_path, capfdbinary):
    root, _ = machine_root
    seen = []

    class ParamKernel(FakeKernel):
        def load(self, path, params=()):
            seen.append((path, params))
            super().load(path)

    monkeypatch.setattr(module_kernel, "make_kernel", lambda host: ParamKernel(host))
    ko = fake_ko(tmp_path / "memdump.ko")
    code, out, err = run_main(capfdbinary, "module", "load", ko, "allow_unsafe_copy=1", "--root", str(root))
    assert seen == [(ko, ("allow_unsafe_copy=1",))] and f"loaded {ko} allow_unsafe_copy=1" in out.decode()
    code, out, err = run_main(capfdbinary, "module", "load", ko, ko, "--root", str(root))
    assert code == 2 and "one module PATH at most" in err
