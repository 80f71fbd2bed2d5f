"""SIZE arguments as the original memdump takes them: a number with an optional k/m/g suffix."""

from __future__ import annotations

from memdump.errors import UsageError

_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MAX_SIZE = (1 << 64) - 1


def parse_size(text: str, what: str = "size") -> int:
    """Parse ``4k``, ``1M``, ``2g``, ``4096`` or ``0x1000`` (suffixes case-insensitive, powers of 1024).

    Raises UsageError naming ``what`` for anything else: empty, negative, fractional, unknown suffix,
    or a value beyond 64 bits.
    """
    raw = text.strip()
    if not raw:
        raise UsageError(f"bad {what}: empty")
    if raw.startswith(("-", "+")):
        raise UsageError(f"bad {what} {text!r}: must be a non-negative number")
    lowered = raw.lower()
    suffix = ""
    if lowered[-1] in "kmgt" and not lowered.startswith("0x"):
        suffix, lowered = lowered[-1], lowered[:-1]
    elif lowered.startswith("0x") and lowered[-1] in "kmgt":
        # hex digits never include k/m/g/t, so a trailing letter here is a suffix too
        suffix, lowered = lowered[-1], lowered[:-1]
    try:
        if lowered.startswith("0x"):
            number = int(lowered[2:], 16)
        elif lowered.isdigit():
            number = int(lowered, 10)
        else:
            raise ValueError
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: expected a number with an optional k, m or g suffix") from None
    value = number * _SUFFIXES[suffix]
    if value > MAX_SIZE:
        raise UsageError(f"bad {what} {text!r}: larger than 64 bits")
    return value


def format_size(n: int) -> str:
    """Human-readable size for remarks (binary units)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
