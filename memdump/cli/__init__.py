"""memdump's command line (``memdump.cli.app``): ``main`` for tests and tools, ``entry`` for the
installed command."""

from memdump.cli.app import cli, entry, main

__all__ = ["cli", "entry", "main"]
