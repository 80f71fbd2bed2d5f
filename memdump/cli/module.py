"""``memdump module build|load|unload|status``: the kernel module from the command line."""

from __future__ import annotations

import os

import click

from memdump.errors import UsageError
from memdump.host import Host
from memdump.module import kernel as kernel_mod
from memdump.module.build import build
from memdump.module.files import MODULE, ModuleError, find_source_dir
from memdump.module.status import device_status, status_lines

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
    echo = (lambda text: click.echo(text, err=True, nl=False)) if verbose else None
    ko = build(find_source_dir(source_dir), kver=kver, kdir=kdir, build_dir=build_dir,
               make_vars=tuple(make_vars), echo=echo)
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
    done = kernel_mod.load(host, paths[0] if paths else None, source_dir, params)
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
    kernel = kernel_mod.make_kernel(host)
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
