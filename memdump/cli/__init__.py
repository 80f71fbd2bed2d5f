"""memdump's command line (``memdump.cli.app``): ``main`` for tests and tools, ``entry`` for the
installed command."""

from __future__ import annotations

from memdump.cli.app import cli, entry, main

__all__ = ["cli", "entry", "main"]
