"""``memdump symbols -o PATH``: a Volatility 3 symbol table for the kernel an image comes from."""

from __future__ import annotations

from typing import Optional

import click

from memdump.errors import UsageError


@click.command("symbols")
@click.option("-o", "--output", "output", metavar="PATH", required=True,
              help="The symbol table to write: JSON, xz-compressed when PATH ends in .xz "
                   "(created, never overwritten).")
@click.option("--root", metavar="DIR",
              help="Read the kernel's files under DIR (another machine's root) instead of /.")
@click.option("--bundle", metavar="DIR",
              help="Read a bundle saved beside an image (files btf, kallsyms, version, and "
                   "optionally vmcoreinfo) instead of the running kernel.")
def symbols_command(output: str, root: Optional[str], bundle: Optional[str]):
    """Write a Volatility 3 symbol table (ISF) for the running kernel, from its BTF
    (/sys/kernel/btf/vmlinux), its symbols (/proc/kallsyms, as root) and its banner
    (/proc/version): the table Volatility matches to an image of this kernel, with no debug
    package to download."""
    from memdump import symbols

    if root and bundle:
        raise UsageError("--root and --bundle: give one (a bundle holds its machine's files)")
    isf = symbols.from_bundle(bundle) if bundle else symbols.from_host(root or "/")
    symbols.write_isf(isf, output)
    types = len(isf.get("user_types", {})) + len(isf.get("enums", {})) + len(isf.get("base_types", {}))
    banner = symbols.banner_identifier(isf).rstrip(b"\0").decode("utf-8", "replace").strip()
    click.echo(f"{output}: {types} types, {len(isf.get('symbols', {}))} symbols for {banner}")
