#!/usr/bin/env python3
"""Check that the built documentation documents every command-line option.

    python3 docs/check_cli_reference.py [--man MANPAGE]... BUILD_HTML_DIR

Walks the click command tree of ``memdump`` (memdump.cli:cli and every subcommand, recursively)
and of ``memdump-emulator`` (emulator.cli:cli), and checks that every option string (``-b``,
``-o`` and ``--output``, ``--source``, ...) and every argument of every command has an entry in
the HTML build's inventory of command-line options (``objects.inv``, type ``std:cmdoption``, which
sphinx-click's ``.. option::`` entries fill) under the right program (``memdump``,
``memdump convert``, ...), and that the page the entry points to carries its anchor.

``--man FILE`` (repeatable) also checks a built man page: every option string of ``memdump`` and
its subcommands must appear in it, and every subcommand must have a section.

Hidden options and commands are not rendered by sphinx-click, and ``--help`` by nobody: they are
not checked. Exit status 0 when nothing is missing, 1 when something is (each listed on stderr),
2 for a usage error (no such directory, not a Sphinx HTML build).
"""

from __future__ import annotations

import argparse
import importlib
import os
import posixpath
import re
import sys
from dataclasses import dataclass
from typing import Iterator

DOCS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(DOCS)
sys.path.insert(0, REPO)

import click  # noqa: E402

# (import path, program name) of every click command the reference documents
COMMANDS = (("memdump.cli:cli", "memdump"), ("emulator.cli:cli", "memdump-emulator"))
# the man page documents this one
MAN_COMMAND = "memdump"


@dataclass(frozen=True)
class Entry:
    program: str  # "memdump", "memdump convert", ...
    name: str  # "-b", "--output", "IMAGE"
    kind: str  # "option" or "argument"

    def __str__(self) -> str:
        return f"{self.program} {self.name}" + (" (argument)" if self.kind == "argument" else "")


def load(spec: str) -> click.Command:
    module, attr = spec.split(":")
    return getattr(importlib.import_module(module), attr)


def walk(command: click.Command, program: str,
         parent: click.Context | None = None) -> Iterator[tuple[str, click.Command, click.Context]]:
    """(program, command, context) for ``command`` and every visible subcommand, depth first."""
    ctx = click.Context(command, info_name=program.split()[-1], parent=parent)
    yield program, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            yield from walk(sub, f"{program} {name}", ctx)


def entries(command: click.Command, program: str) -> Iterator[Entry]:
    for prog, cmd, ctx in walk(command, program):
        help_option = cmd.get_help_option(ctx)
        for param in cmd.get_params(ctx):
            if param is help_option:
                continue
            if isinstance(param, click.Option):
                if getattr(param, "hidden", False):
                    continue
                for opt in list(param.opts) + list(param.secondary_opts):
                    yield Entry(prog, opt, "option")
            elif isinstance(param, click.Argument):
                yield Entry(prog, param.human_readable_name, "argument")


def subcommands(command: click.Command, program: str) -> list[str]:
    return [prog for prog, _cmd, _ctx in walk(command, program) if prog != program]


# -- the HTML build ----------------------------------------------------------------------------

def load_inventory(html_dir: str) -> dict[str, str]:
    """std:cmdoption entries of the build: "memdump-convert.--to" -> "cli.html#cmdoption-..."."""
    from sphinx.util.inventory import InventoryFile

    path = os.path.join(html_dir, "objects.inv")
    try:
        with open(path, "rb") as handle:
            inventory = InventoryFile.load(handle, "", posixpath.join)
    except FileNotFoundError:
        raise SystemExit(f"check_cli_reference: {path}: missing (is {html_dir} a Sphinx HTML build?)") from None
    found: dict[str, str] = {}
    for name, item in dict(inventory.get("std:cmdoption", {})).items():
        uri = item.uri if hasattr(item, "uri") else item[2]  # an _InventoryItem, or a tuple before Sphinx 8.2
        found[name] = uri
    return found


# How Sphinx's ``.. option::`` splits a description into the indexed name and its value (an
# argument such as "[NAME=VALUE]..." is indexed as "[NAME").
try:
    from sphinx.domains.std import option_desc_re as OPTION_DESC
except ImportError:  # pragma: no cover - older or newer Sphinx layouts
    OPTION_DESC = re.compile(r"((?:/|--|-|\+)?[^\s=]+)(=?\s*.*)")


def inventory_key(entry: Entry) -> str:
    # Sphinx's ``.. program::`` turns the spaces of "memdump convert" into dashes.
    program = re.sub(r"\s+", "-", entry.program)
    match = OPTION_DESC.match(entry.name)
    name = match.group(1) if match else entry.name
    return f"{program}.{name}"


def anchor_present(html_dir: str, uri: str, pages: dict[str, str]) -> bool:
    page, _, anchor = uri.partition("#")
    if page not in pages:
        try:
            with open(os.path.join(html_dir, page), encoding="utf-8") as handle:
                pages[page] = handle.read()
        except OSError:
            pages[page] = ""
    return not anchor or f'id="{anchor}"' in pages[page]


def check_html(html_dir: str, wanted: list[Entry]) -> list[str]:
    inventory = load_inventory(html_dir)
    pages: dict[str, str] = {}
    missing = []
    for entry in wanted:
        uri = inventory.get(inventory_key(entry))
        if uri is None:
            missing.append(f"{entry}: not in the reference")
        elif not anchor_present(html_dir, uri, pages):
            missing.append(f"{entry}: indexed as {uri}, but the page has no such anchor")
    return missing


# -- a man page --------------------------------------------------------------------------------

def man_text(path: str) -> str:
    """The roff source with its escapes for '-' undone, so option strings can be searched."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    return text.replace("\\-", "-").replace("\\(hy", "-").replace("\\(en", "-").replace("\\&", "")


def check_man(path: str, wanted: list[Entry], programs: list[str]) -> list[str]:
    try:
        text = man_text(path)
    except OSError as exc:
        return [f"{path}: {exc.strerror}"]
    missing = []
    for entry in wanted:
        if entry.kind != "option":
            continue
        if not re.search(rf"(?<![\w-]){re.escape(entry.name)}(?![\w-])", text):
            missing.append(f"{path}: {entry}: not in the man page")
    for program in programs:
        # titled with the full command path ("memdump module build") or, as sphinx-click
        # titles it, with its last word
        names = "|".join(re.escape(name) for name in (program, program.split()[-1]))
        if not re.search(rf"^\.S[SH] \"?(?:{names})\"?\s*$", text, re.MULTILINE | re.IGNORECASE):
            missing.append(f"{path}: no section for '{program}'")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html_dir", metavar="BUILD_HTML_DIR", help="output directory of sphinx -b html")
    parser.add_argument("--man", action="append", default=[], metavar="FILE",
                        help="also check this built man page (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every entry checked")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.html_dir):
        print(f"check_cli_reference: {args.html_dir}: no such directory", file=sys.stderr)
        return 2

    wanted: list[Entry] = []
    man_wanted: list[Entry] = []
    man_programs: list[str] = []
    commands = 0
    for spec, program in COMMANDS:
        command = load(spec)
        commands += sum(1 for _ in walk(command, program))
        found = list(entries(command, program))
        wanted += found
        if program == MAN_COMMAND:
            man_wanted = found
            man_programs = subcommands(command, program)

    try:
        missing = check_html(args.html_dir, wanted)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    for path in args.man:
        missing += check_man(path, man_wanted, man_programs)

    if args.verbose:
        for entry in wanted:
            print(f"checked {entry}")
    if missing:
        print(f"check_cli_reference: {len(missing)} missing from the documentation:", file=sys.stderr)
        for line in missing:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"check_cli_reference: all {len(wanted)} options and arguments of {commands} commands are "
          f"in the reference" + (f" and in {', '.join(args.man)}" if args.man else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
