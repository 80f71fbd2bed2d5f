from __future__ import annotations

import pytest

from memdump.errors import UsageError
from memdump.sizes import parse_size


@pytest.mark.parametrize("text, value", [
    ("0", 0), ("4096", 4096), ("4k", 4096), ("4K", 4096), ("1m", 1 << 20), ("1M", 1 << 20),
    ("2g", 2 << 30), ("2G", 2 << 30), ("0x1000", 4096), ("0x10k", 16 << 10), (" 8k ", 8192),
])
def test_sizes_accepted(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "-4k", "+4k", "1.5m", "4x", "k", "m4", "0xzz", "4kb",
                                  "99999999999999999999999g"])
def test_sizes_refused(text):
    with pytest.raises(UsageError):
        parse_size(text)
