from __future__ import annotations

from memdump.cli import entry

entry()
