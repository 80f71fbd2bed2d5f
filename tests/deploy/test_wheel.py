"""The wheel: every module of memdump/ and emulator/, and the kernel module's sources as the data
package memdump_kmod, from which an installed memdump builds the module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

KMOD_SHIPPED = ("Kbuild", "Makefile", "dkms.conf", "README.md")
KMOD_SUFFIXES = (".c", ".h")


def project_copy(where):
    """What a build reads, copied (setuptools writes build/ and *.egg-info next to its input)."""
    where.mkdir()
    shutil.copy(os.path.join(REPO, "pyproject.toml"), where)
    shutil.copy(os.path.join(REPO, "README.md"), where)
    for name in ("memdump", "emulator", "kmod"):
        shutil.copytree(os.path.join(REPO, name), where / name, ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", "*.o", "*.ko", "*.mod", "*.mod.c", ".*.cmd"))
    return where


def python_files(package):
    found = set()
    for directory, dirs, files in os.walk(os.path.join(REPO, package)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found |= {os.path.relpath(os.path.join(directory, f), REPO).replace(os.sep, "/")
                  for f in files if f.endswith(".py")}
    return found


def kmod_sources():
    return sorted(f for f in os.listdir(os.path.join(REPO, "kmod"))
                  if f in KMOD_SHIPPED or f.endswith(KMOD_SUFFIXES))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    if sys.version_info < (3, 9):
        pytest.skip("building memdump needs setuptools 77 or newer, which needs Python 3.9; "
                    "Python 3.8 installs a wheel built elsewhere")
    tmp = tmp_path_factory.mktemp("wheel")
    source = project_copy(tmp / "project")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"),
                           str(source)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert done.returncode == 0, done.stdout.decode(errors="replace")
    wheels = list((tmp / "dist").glob("memdump-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_the_wheel_holds_every_module_and_the_kmod_sources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = (python_files("memdump") | python_files("emulator")) - names
    assert not missing, f"not in the wheel (list the package in pyproject.toml): {sorted(missing)}"
    assert {f"memdump_kmod/{f}" for f in kmod_sources()} <= names
    assert len(kmod_sources()) >= 7 and "Kbuild" in kmod_sources()
    assert not [n for n in names if n.endswith((".o", ".ko", ".pyc"))]


def test_an_installed_memdump_builds_the_module_from_its_own_sources(wheel, tmp_path, fake_make):
    _, headers = fake_make
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                           str(target), str(wheel)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert done.returncode == 0, done.stdout.decode(errors="replace")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target), PYTHONDONTWRITEBYTECODE="1")

    def memdump(*args):
        return subprocess.run([sys.executable, "-m", "memdump", *args], cwd=str(work), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)

    status = memdump("module", "status")
    assert f"{target / 'memdump_kmod'} (not built)" in status.stdout, status.stdout + status.stderr
    build = tmp_path / "build"
    done = memdump("module", "build", "--build-dir", str(build), "--kver", "6.1.0-56-amd64", "--kdir", str(headers))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{build / 'memdump.ko'}\n"
    assert sorted(os.listdir(build)) == sorted(kmod_sources() + ["memdump.ko"])
    assert (tmp_path / "make.args").read_text().split()[:2] == ["-C", str(build)]
    # never built inside the installed package
    refused = memdump("module", "build", "--kver", "6.1.0-56-amd64", "--kdir", str(headers))
    assert refused.returncode == 2 and "--build-dir DIR" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (target / "memdump_kmod" / "memdump.ko").exists()
