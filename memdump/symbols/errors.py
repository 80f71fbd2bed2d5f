"""Errors of the symbol-table builder: each is one line for the user, never a traceback."""

from __future__ import annotations

from memdump.errors import MemdumpError


class SymbolsError(MemdumpError):
    """Building a Volatility symbol table from the kernel's BTF and kallsyms failed."""


class BtfError(SymbolsError):
    """The BTF blob is damaged, of another byte order, or uses a kind this parser does not know."""


class KallsymsError(SymbolsError):
    """``/proc/kallsyms`` is unreadable, empty, or lacks what Volatility needs."""


class KallsymsRestricted(KallsymsError):
    """Every address in kallsyms reads as zero: kptr_restrict (or a non-root reader) hides them."""


class MissingInput(SymbolsError):
    """A file the symbol table is built from is absent (no BTF in this kernel, no bundle file)."""


class OutputExists(SymbolsError):
    """The symbol file already exists; symbol files are created, never overwritten."""
