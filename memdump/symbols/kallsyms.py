"""Read ``/proc/kallsyms``: the running kernel's symbol addresses.

Each line is ``<hex address> <type letter> <name>``, and symbols of loaded modules carry a
fourth column, ``[module]``, separated by a tab. Only the kernel's own symbols belong in a
vmlinux symbol table, so module lines are skipped.

The kernel prints every address as zero when ``kernel.kptr_restrict`` hides them from the
reader (always at 2; at 1 for readers without ``CAP_SYSLOG``). Such a file is refused: an ISF
with zero addresses would load and then resolve nothing.

Data symbols (``init_task``, ``linux_banner``) are listed only when the kernel was built with
``CONFIG_KALLSYMS_ALL``; :func:`missing` says which of the symbols Volatility needs are absent.
"""

from __future__ import annotations

import bisect
from typing import Dict, Iterable, List, NamedTuple, Optional

from memdump.symbols.errors import KallsymsError, KallsymsRestricted

# Symbols Volatility's linux support cannot do without: the banner it matches, init_task for
# the KASLR shift and the process list, and the files/mm of init_task that confirm it.
REQUIRED = ("linux_banner", "init_task")

RESTRICTED_ADVICE = (
    "run as root with kernel.kptr_restrict at 1 or 0 (sysctl kernel.kptr_restrict=1)"
)


class Kallsym(NamedTuple):
    name: str
    address: int
    letter: str  # nm-style type: T/t text, D/d data, R/r read-only, B/b bss, ...

    @property
    def is_global(self) -> bool:
        return self.letter.isupper()


class Kallsyms:
    """The kernel's symbols by name. A name that repeats (static symbols of different files)
    keeps its first global definition, else its first local one; ``duplicates`` counts the
    names dropped that way."""

    def __init__(self, symbols: Dict[str, Kallsym], ordered: List[Kallsym], duplicates: int):
        self.symbols = symbols
        self.ordered = ordered
        self.duplicates = duplicates
        self._addresses: Optional[List[int]] = None

    def __contains__(self, name: object) -> bool:
        return name in self.symbols

    def __getitem__(self, name: str) -> Kallsym:
        return self.symbols[name]

    def __len__(self) -> int:
        return len(self.symbols)

    def address(self, name: str) -> int:
        return self.symbols[name].address

    def gap_after(self, name: str) -> int:
        """Bytes from ``name`` to the next higher address among the kernel's symbols (0 when it
        is the last): an upper bound on the size of the object at ``name``."""
        address = self.symbols[name].address
        if self._addresses is None:
            self._addresses = sorted({s.address for s in self.ordered})
        addresses = self._addresses
        i = bisect.bisect_right(addresses, address)
        return addresses[i] - address if i < len(addresses) else 0


def parse(text: str, *, source: str = "kallsyms") -> Kallsyms:
    """Parse kallsyms text; raise when it is empty or shows only zero addresses."""
    symbols: Dict[str, Kallsym] = {}
    ordered: List[Kallsym] = []
    duplicates = 0
    nonzero = False
    for number, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        if "\t" in line:  # "<addr> <t> <name>\t[module]": a module's symbol
            continue
        parts = line.split()
        if len(parts) != 3:
            raise KallsymsError(f"{source}: line {number} is not '<address> <type> <name>': {line[:80]!r}")
        address_text, letter, name = parts
        try:
            address = int(address_text, 16)
        except ValueError:
            raise KallsymsError(f"{source}: line {number}: bad address {address_text[:40]!r}") from None
        if address:
            nonzero = True
        symbol = Kallsym(name, address, letter)
        ordered.append(symbol)
        previous = symbols.get(name)
        if previous is None:
            symbols[name] = symbol
        else:
            duplicates += 1
            if letter.isupper() and not previous.letter.isupper():
                symbols[name] = symbol
    if not ordered:
        raise KallsymsError(f"{source}: no kernel symbols (empty file)")
    if not nonzero:
        raise KallsymsRestricted(
            f"{source}: every address is zero (kptr_restrict hides them): {RESTRICTED_ADVICE}"
        )
    return Kallsyms(symbols, ordered, duplicates)


def missing(table: Kallsyms, names: Iterable[str] = REQUIRED) -> List[str]:
    """The names in ``names`` that the table lacks."""
    return [name for name in names if name not in table.symbols]
