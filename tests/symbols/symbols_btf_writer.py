"""A small writer of raw BTF blobs for the symbol-table tests.

It encodes records exactly as include/uapi/linux/btf.h lays them out, independently of the
parser under test: the tests build a kernel's worth of types with it and check that what comes
back -- from the parser and in the ISF -- is what they put in.
"""

from __future__ import annotations

import struct
from typing import List, Sequence, Tuple

KIND = {
    "INT": 1, "PTR": 2, "ARRAY": 3, "STRUCT": 4, "UNION": 5, "ENUM": 6, "FWD": 7, "TYPEDEF": 8,
    "VOLATILE": 9, "CONST": 10, "RESTRICT": 11, "FUNC": 12, "FUNC_PROTO": 13, "VAR": 14,
    "DATASEC": 15, "FLOAT": 16, "DECL_TAG": 17, "TYPE_TAG": 18, "ENUM64": 19,
}

SIGNED, CHAR, BOOL = 1, 2, 4


class BtfWriter:
    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.offsets = {"": 0}
        self.records: List[bytes] = []

    @property
    def next_id(self) -> int:
        """The id the next record will get (ids count from 1; 0 is void)."""
        return len(self.records) + 1

    def name(self, text: str) -> int:
        if text not in self.offsets:
            self.offsets[text] = len(self.strings)
            self.strings += text.encode() + b"\0"
        return self.offsets[text]

    def record(self, kind: str, name: str, vlen: int, kind_flag: int, size_or_type: int, tail: bytes = b"") -> int:
        info = (kind_flag << 31) | (KIND[kind] << 24) | vlen
        self.records.append(struct.pack("<III", self.name(name), info, size_or_type) + tail)
        return len(self.records)

    # one helper per kind -------------------------------------------------------------------

    def int_(self, name: str, size: int, encoding: int = 0, bits: int = -1, offset: int = 0) -> int:
        bits = size * 8 if bits < 0 else bits
        return self.record("INT", name, 0, 0, size, struct.pack("<I", (encoding << 24) | (offset << 16) | bits))

    def ptr(self, ref: int) -> int:
        return self.record("PTR", "", 0, 0, ref)

    def array(self, elem: int, index: int, count: int) -> int:
        return self.record("ARRAY", "", 0, 0, 0, struct.pack("<III", elem, index, count))

    def composite(self, kind: str, name: str, size: int, members: Sequence[Tuple[str, int, int, int]],
                  kind_flag: int = 1) -> int:
        """members: (name, type id, bit offset, bitfield size); bitfield sizes need kind_flag."""
        tail = b""
        for member_name, type_id, bit_offset, bitfield_size in members:
            offset = (bitfield_size << 24) | bit_offset if kind_flag else bit_offset
            tail += struct.pack("<III", self.name(member_name), type_id, offset)
        return self.record(kind, name, len(members), kind_flag, size, tail)

    def struct(self, name: str, size: int, members: Sequence[Tuple[str, int, int, int]], kind_flag: int = 1) -> int:
        return self.composite("STRUCT", name, size, members, kind_flag)

    def union(self, name: str, size: int, members: Sequence[Tuple[str, int, int, int]], kind_flag: int = 1) -> int:
        return self.composite("UNION", name, size, members, kind_flag)

    def enum(self, name: str, size: int, values: Sequence[Tuple[str, int]], signed: bool) -> int:
        tail = b"".join(struct.pack("<Ii", self.name(n), v if signed or v < 2**31 else v - 2**32) for n, v in values)
        return self.record("ENUM", name, len(values), int(signed), size, tail)

    def enum64(self, name: str, size: int, values: Sequence[Tuple[str, int]], signed: bool) -> int:
        tail = b""
        for n, v in values:
            v &= (1 << 64) - 1
            tail += struct.pack("<III", self.name(n), v & 0xFFFFFFFF, v >> 32)
        return self.record("ENUM64", name, len(values), int(signed), size, tail)

    def fwd(self, name: str, union: bool = False) -> int:
        return self.record("FWD", name, 0, int(union), 0)

    def typedef(self, name: str, ref: int) -> int:
        return self.record("TYPEDEF", name, 0, 0, ref)

    def volatile(self, ref: int) -> int:
        return self.record("VOLATILE", "", 0, 0, ref)

    def const(self, ref: int) -> int:
        return self.record("CONST", "", 0, 0, ref)

    def restrict(self, ref: int) -> int:
        return self.record("RESTRICT", "", 0, 0, ref)

    def type_tag(self, name: str, ref: int) -> int:
        return self.record("TYPE_TAG", name, 0, 0, ref)

    def func_proto(self, ret: int, params: Sequence[Tuple[str, int]]) -> int:
        tail = b"".join(struct.pack("<II", self.name(n), t) for n, t in params)
        return self.record("FUNC_PROTO", "", len(params), 0, ret, tail)

    def func(self, name: str, proto: int, linkage: int = 1) -> int:
        return self.record("FUNC", name, linkage, 0, proto)

    def var(self, name: str, ref: int, linkage: int = 1) -> int:
        return self.record("VAR", name, 0, 0, ref, struct.pack("<I", linkage))

    def datasec(self, name: str, size: int, variables: Sequence[Tuple[int, int, int]]) -> int:
        tail = b"".join(struct.pack("<III", t, o, s) for t, o, s in variables)
        return self.record("DATASEC", name, len(variables), 0, size, tail)

    def float_(self, name: str, size: int) -> int:
        return self.record("FLOAT", name, 0, 0, size)

    def decl_tag(self, name: str, ref: int, component_idx: int = -1) -> int:
        return self.record("DECL_TAG", name, 0, 0, ref, struct.pack("<i", component_idx))

    # the blob ------------------------------------------------------------------------------

    def blob(self, magic: bytes = b"\x9f\xeb", version: int = 1) -> bytes:
        types = b"".join(self.records)
        header = magic + struct.pack("<BBIIIII", version, 0, 24, 0, len(types), len(types), len(self.strings))
        return header + types + bytes(self.strings)


# bytes that follow the 12-byte record, per kind: (fixed, per vlen item)
_TAIL = {1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0), 8: (0, 0),
         9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0), 15: (0, 12),
         16: (0, 0), 17: (4, 0), 18: (0, 0), 19: (0, 12)}


def independent_struct_members(blob: bytes, wanted: str) -> dict:
    """Walk the type section with bare struct.unpack and return {member: bit offset} of the
    STRUCT named ``wanted``."""
    _, _, _, hdr_len, type_off, type_len, str_off, _ = struct.unpack_from("<HBBIIIII", blob)
    strings = hdr_len + str_off

    def name(off):
        return blob[strings + off: blob.index(b"\0", strings + off)].decode()

    pos, end = hdr_len + type_off, hdr_len + type_off + type_len
    while pos < end:
        name_off, info, _ = struct.unpack_from("<III", blob, pos)
        kind, vlen, flag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        if kind == 4 and name(name_off) == wanted:
            members = {}
            for i in range(vlen):
                m_name, _, offset = struct.unpack_from("<III", blob, pos + 12 + 12 * i)
                members[name(m_name)] = offset & 0xFFFFFF if flag else offset
            return members
        fixed, item = _TAIL[kind]
        pos += 12 + fixed + item * vlen
    raise AssertionError(f"no struct {wanted} in the BTF")
