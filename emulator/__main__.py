from __future__ import annotations

from emulator.cli import main

main()
