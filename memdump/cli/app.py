"""The command line: the classic ``memdump [options] > image`` plus subcommands.

A thin layer over the library: click's flags become ``DumpOptions`` for ``memdump.acquire``;
every failure a user can cause becomes one line on stderr and a non-zero exit. The subcommands
are in ``memdump.cli.images`` (sources, info, convert, verify) and ``memdump.cli.module``
(imported only when ``memdump module`` is run).
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

import click

from memdump import __version__
from memdump.acquisition import DumpOptions, acquire
from memdump.cli.images import add_to
from memdump.errors import MemdumpError, UsageError
from memdump.formats import FORMATS
from memdump.sizes import parse_size
from memdump.sources import names

PROG = "memdump"


def remark(text: str) -> None:
    """One line on stderr, prefixed like the original's remarks."""
    click.echo(f"{PROG}: {text}", err=True)


class SizeType(click.ParamType):
    """SIZE with k/m/g suffixes (powers of 1024); 0 keeps the documented default."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(value, f"{param.opts[0]} value" if param else "size")
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeType()


class Commands(click.Group):
    """The subcommands; those in LAZY are imported only when asked for (or listed in --help)."""

    LAZY = {"module": ("memdump.cli.module", "module_command"),
            "symbols": ("memdump.cli.symbols", "symbols_command")}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.LAZY))

    def get_command(self, ctx, name):
        if name in self.LAZY and name not in self.commands:
            import importlib

            module, attr = self.LAZY[name]
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)


CONTEXT = dict(help_option_names=["--help"], max_content_width=100)


@click.group(cls=Commands, invoke_without_command=True, context_settings=CONTEXT)
@click.option("-b", "buffer_size", type=SIZE, default="0", metavar="SIZE",
              help="Bytes per read operation (default 0: the page size, which memdump serves with 1 MiB "
                   "reads and the same output).")
@click.option("-k", "kernel", is_flag=True, help="Dump kernel (virtual) memory instead of physical memory.")
@click.option("-m", "map_target", metavar="FILE",
              help="Write the memory map: one '0x<start> 0x<end>' line per dumped region; '-' is stderr.")
@click.option("-p", "page_size", type=SIZE, default="0", metavar="SIZE",
              help="Memory page size, the step over a hole (default 0: the system page size).")
@click.option("-s", "dump_size", type=SIZE, default="0", metavar="SIZE",
              help="Number of memory bytes to dump (default 0: all).")
@click.option("-v", "verbose", count=True, help="Verbose remarks on stderr; repeat for more.")
@click.option("--source", "source_name", type=click.Choice(("auto",) + names()), default="auto",
              show_default=True, help="Where memory is read from; auto picks the first usable source.")
@click.option("--scan", is_flag=True,
              help="The original blind walk from address 0 (reads MMIO too); default: RAM ranges only.")
@click.option("--root", metavar="DIR", help="Resolve /dev, /proc, /sys and /boot under DIR (a fake machine).")
@click.option("-o", "--output", metavar="PATH", help="Write the image to PATH (created, never overwritten).")
@click.option("--format", "image_format", type=click.Choice(FORMATS), default="raw", show_default=True,
              help="raw: the original's stream, holes left out; padded: file offset = physical address; "
                   "lime: LiME v1; elf: ELF64 core. padded, lime and elf zero-fill unreadable pages.")
@click.option("--manifest", "manifest_path", metavar="PATH",
              help="Write a JSON manifest: source, kernel, times, regions, unread pages, digests.")
@click.option("--hash", "hashes", metavar="ALG", multiple=True,
              help="Digest the output with ALG (any hashlib name; repeatable); with -o also writes "
                   "PATH.ALG. The manifest always has sha256.")
@click.option("--no-progress", is_flag=True, help="No progress line on stderr (shown only on a terminal).")
@click.option("--load-module", "load_module", metavar="[PATH]", is_flag=False, flag_value="", default=None,
              help="Load memdump's kernel module for this dump (PATH, else the one installed or built for "
                   "this kernel) and unload it afterwards if this run loaded it.")
@click.version_option(__version__, prog_name=PROG)
@click.pass_context
def cli(ctx, **options):
    """Dump system memory to standard output, skipping holes in memory maps.

    SIZE takes k, m and g suffixes (case-insensitive, powers of 1024). Run 'memdump sources' to
    see which memory sources work on this machine and why the others do not; 'memdump info',
    'convert' and 'verify' inspect, convert and check images.
    """
    if ctx.invoked_subcommand is not None:
        # Options written before a subcommand belong to the dump; only --root and -k carry over
        # (to 'sources'). Anything else would be silently ignored: refuse it instead.
        given = [param.opts[0] for param in ctx.command.params
                 if ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE
                 and param.name not in ("root", "kernel")]
        if given:
            raise UsageError(f"{', '.join(given)}: dump options do not apply to "
                             f"'{ctx.invoked_subcommand}' (put a subcommand's options after it)")
        ctx.obj = {"root": options["root"], "kernel": options["kernel"]}
        return
    verbose = options["verbose"]
    acquire(dump_options(options), remark=lambda level, text: remark(text) if verbose >= level else None)


def dump_options(options: dict) -> DumpOptions:
    """The dump's flags (click's parameter names) as DumpOptions."""
    return DumpOptions(source=options["source_name"], format=options["image_format"],
                       output=options["output"], map_path=options["map_target"],
                       manifest=options["manifest_path"], hashes=tuple(options["hashes"]),
                       dump_size=options["dump_size"], buffer_size=options["buffer_size"],
                       page_size=options["page_size"], kernel=options["kernel"],
                       scan=options["scan"], root=options["root"], verbose=options["verbose"],
                       no_progress=options["no_progress"], load_module=options["load_module"])


add_to(cli)


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: one line on stderr and a non-zero exit for anything a user can cause."""
    try:
        cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        remark("interrupted")
        sys.exit(130)
    except click.ClickException as exc:
        remark(exc.format_message().replace("\n", " "))
        sys.exit(2)
    except MemdumpError as exc:
        remark(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        remark("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        remark("output write error: Broken pipe")
        sys.exit(1)
    sys.exit(0)


def entry() -> None:
    """The installed command: ``main`` and then leave without the interpreter's teardown.

    Freeing every object at exit rewrites megabytes of the examined machine's RAM for nothing
    (measured in the real-kernel tier: about 10 MiB); the image and map are already written and
    closed, so the only buffers left to flush are Python's own stdout and stderr.
    """
    try:
        main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    else:
        code = 0
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None when the descriptor was closed at start
                stream.flush()
        except (OSError, ValueError):
            code = code or 1
    os._exit(code)
