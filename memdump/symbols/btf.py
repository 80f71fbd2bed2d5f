"""A reader for raw BTF, the kernel's compact type information (``/sys/kernel/btf/vmlinux``).

The blob is a header, a type section and a string section (``include/uapi/linux/btf.h``).
Every type record is twelve bytes -- name offset, an ``info`` word (kind, kind_flag, vlen) and a
size-or-type word -- followed by kind-specific data. Type ids count records from 1; id 0 is
``void``. :func:`parse` turns the blob into one typed record per id and checks every offset
and type reference, so the ISF builder can index ``Btf.types`` without further checks.

Only little-endian BTF is read: that is every kernel memdump dumps (x86_64, arm64), and a
big-endian blob is refused with a clear error rather than decoded into garbage.
"""

from __future__ import annotations

import enum
import struct
from typing import Dict, List, NamedTuple, Tuple

from memdump.symbols.errors import BtfError

BTF_MAGIC = 0xEB9F
BTF_VERSION = 1
HEADER = struct.Struct("<HBBIIIII")
TYPE_RECORD = struct.Struct("<III")
WORD = struct.Struct("<I")
SIGNED_WORD = struct.Struct("<i")

ARRAY_RECORD = struct.Struct("<III")


class Kind(enum.IntEnum):
    """BTF_KIND_* values."""

    VOID = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


class IntEncoding(enum.IntFlag):
    """BTF_INT_* encoding bits of an INT type."""

    NONE = 0
    SIGNED = 1
    CHAR = 2
    BOOL = 4


class Linkage(enum.IntEnum):
    """Linkage of a FUNC (BTF_FUNC_*) or a VAR (BTF_VAR_*); the values coincide."""

    STATIC = 0
    GLOBAL = 1
    EXTERN = 2


class BtfHeader(NamedTuple):
    version: int
    flags: int
    header_length: int
    type_offset: int
    type_length: int
    string_offset: int
    string_length: int


class Member(NamedTuple):
    """A struct or union member. ``bit_offset`` counts from the start of the aggregate;
    ``bitfield_size`` is 0 for an ordinary member (or for a bitfield encoded the pre-kind_flag
    way, through an INT type whose ``bits`` are narrower than its size)."""

    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int


class Enumerator(NamedTuple):
    name: str
    value: int


class Param(NamedTuple):
    name: str
    type_id: int


class VarSecinfo(NamedTuple):
    """One variable of a DATASEC: the VAR's type id, its offset in the section and its size."""

    type_id: int
    offset: int
    size: int


class BtfType:
    """One type record. Subclasses add what their kind carries."""

    __slots__ = ("kind", "name")

    def __init__(self, kind: Kind, name: str):
        self.kind = kind
        self.name = name

    def __repr__(self) -> str:
        fields = ", ".join(f"{slot}={getattr(self, slot)!r}" for slot in self._all_slots())
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self._all_slots())

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def _all_slots(cls) -> List[str]:
        slots: List[str] = []
        for klass in reversed(cls.__mro__):
            slots.extend(getattr(klass, "__slots__", ()))
        return slots


class VoidType(BtfType):
    __slots__ = ()


class IntType(BtfType):
    __slots__ = ("size", "encoding", "bits", "bit_offset")

    def __init__(self, name: str, size: int, encoding: IntEncoding, bits: int, bit_offset: int):
        super().__init__(Kind.INT, name)
        self.size = size
        self.encoding = encoding
        self.bits = bits
        self.bit_offset = bit_offset

    @property
    def signed(self) -> bool:
        return bool(self.encoding & IntEncoding.SIGNED)

    @property
    def is_bitfield_carrier(self) -> bool:
        """True for the INTs old BTF used to encode bitfields (narrower than their storage)."""
        return self.bits != self.size * 8 or self.bit_offset != 0


class FloatType(BtfType):
    __slots__ = ("size",)

    def __init__(self, name: str, size: int):
        super().__init__(Kind.FLOAT, name)
        self.size = size


class RefType(BtfType):
    """PTR, TYPEDEF, VOLATILE, CONST, RESTRICT and TYPE_TAG: a name (typedef, tag) and a target."""

    __slots__ = ("ref",)

    def __init__(self, kind: Kind, name: str, ref: int):
        super().__init__(kind, name)
        self.ref = ref


class ArrayType(BtfType):
    __slots__ = ("elem", "index", "count")

    def __init__(self, elem: int, index: int, count: int):
        super().__init__(Kind.ARRAY, "")
        self.elem = elem
        self.index = index
        self.count = count


class CompositeType(BtfType):
    """STRUCT or UNION."""

    __slots__ = ("size", "members")

    def __init__(self, kind: Kind, name: str, size: int, members: List[Member]):
        super().__init__(kind, name)
        self.size = size
        self.members = members

    @property
    def is_union(self) -> bool:
        return self.kind == Kind.UNION


class EnumType(BtfType):
    """ENUM or ENUM64; values are already sign-interpreted."""

    __slots__ = ("size", "signed", "values")

    def __init__(self, kind: Kind, name: str, size: int, signed: bool, values: List[Enumerator]):
        super().__init__(kind, name)
        self.size = size
        self.signed = signed
        self.values = values


class FwdType(BtfType):
    __slots__ = ("is_union",)

    def __init__(self, name: str, is_union: bool):
        super().__init__(Kind.FWD, name)
        self.is_union = is_union


class FuncType(BtfType):
    __slots__ = ("proto", "linkage")

    def __init__(self, name: str, proto: int, linkage: int):
        super().__init__(Kind.FUNC, name)
        self.proto = proto
        self.linkage = linkage


class FuncProtoType(BtfType):
    __slots__ = ("ret", "params")

    def __init__(self, ret: int, params: List[Param]):
        super().__init__(Kind.FUNC_PROTO, "")
        self.ret = ret
        self.params = params


class VarType(BtfType):
    __slots__ = ("ref", "linkage")

    def __init__(self, name: str, ref: int, linkage: int):
        super().__init__(Kind.VAR, name)
        self.ref = ref
        self.linkage = linkage


class DataSecType(BtfType):
    __slots__ = ("size", "variables")

    def __init__(self, name: str, size: int, variables: List[VarSecinfo]):
        super().__init__(Kind.DATASEC, name)
        self.size = size
        self.variables = variables


class DeclTagType(BtfType):
    """A tag on a declaration; ``component_idx`` is -1 for the whole type, else a member or
    parameter index."""

    __slots__ = ("ref", "component_idx")

    def __init__(self, name: str, ref: int, component_idx: int):
        super().__init__(Kind.DECL_TAG, name)
        self.ref = ref
        self.component_idx = component_idx


class Btf:
    """Parsed BTF: ``types[id]`` is the record of type ``id`` (``types[0]`` is void)."""

    def __init__(self, header: BtfHeader, types: List[BtfType]):
        self.header = header
        self.types = types

    def __len__(self) -> int:
        return len(self.types)

    def __getitem__(self, type_id: int) -> BtfType:
        return self.types[type_id]

    def find(self, kind: Kind, name: str) -> List[int]:
        """Ids of every type of ``kind`` named ``name`` (a linear search, for tests and tools)."""
        return [i for i, t in enumerate(self.types) if t.kind == kind and t.name == name]

    def strip(self, type_id: int) -> int:
        """Follow typedefs, qualifiers and type tags to the type they stand for."""
        types = self.types
        seen = 0
        t = types[type_id]
        while t.kind in _TRANSPARENT:
            type_id = t.ref  # type: ignore[attr-defined]
            t = types[type_id]
            seen += 1
            if seen > len(types):
                raise BtfError(f"BTF: typedef/qualifier loop through type {type_id}")
        return type_id


_TRANSPARENT = frozenset({Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG})


class _Strings:
    """The string section, decoded lazily: BTF names repeat a lot, so each offset is decoded
    once."""

    __slots__ = ("data", "cache")

    def __init__(self, data: bytes):
        self.data = data
        self.cache: Dict[int, str] = {0: ""}

    def __call__(self, offset: int) -> str:
        text = self.cache.get(offset)
        if text is not None:
            return text
        data = self.data
        if offset >= len(data):
            raise BtfError(f"BTF: name offset {offset} beyond the {len(data)}-byte string section")
        end = data.find(b"\0", offset)
        if end < 0:
            raise BtfError(f"BTF: string at offset {offset} is not NUL-terminated")
        text = data[offset:end].decode("utf-8", "replace")
        self.cache[offset] = text
        return text


def parse_header(data: bytes) -> BtfHeader:
    if len(data) < HEADER.size:
        raise BtfError(f"BTF: {len(data)} bytes is too short for a BTF header")
    if data[0:2] == b"\xeb\x9f":
        raise BtfError("BTF: big-endian BTF is not supported (only little-endian kernels)")
    magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(data)
    if magic != BTF_MAGIC:
        raise BtfError(f"BTF: bad magic {magic:#06x} (expected {BTF_MAGIC:#06x}); not a raw BTF blob")
    if version != BTF_VERSION:
        raise BtfError(f"BTF: version {version} is not supported (only version {BTF_VERSION})")
    if hdr_len < HEADER.size or hdr_len > len(data):
        raise BtfError(f"BTF: header length {hdr_len} is out of range")
    body = len(data) - hdr_len
    for what, off, length in (("type", type_off, type_len), ("string", str_off, str_len)):
        if off + length > body:
            raise BtfError(
                f"BTF: {what} section ({length} bytes at {off}) runs past the end of the blob"
                f" ({body} bytes after the header)"
            )
    if type_off % 4:
        raise BtfError(f"BTF: type section offset {type_off} is not 4-byte aligned")
    return BtfHeader(version, flags, hdr_len, type_off, type_len, str_off, str_len)


def parse(data: bytes) -> Btf:
    """Parse a raw BTF blob (little-endian, version 1) into one record per type id."""
    header = parse_header(data)
    view = memoryview(data)
    type_start = header.header_length + header.type_offset
    type_end = type_start + header.type_length
    str_start = header.header_length + header.string_offset
    strings_data = bytes(view[str_start : str_start + header.string_length])
    if strings_data and strings_data[0] != 0:
        raise BtfError("BTF: the string section does not start with an empty string")
    name = _Strings(strings_data)
    types_view = view[type_start:type_end]
    types: List[BtfType] = [VoidType(Kind.VOID, "")]
    append = types.append
    unpack_record = TYPE_RECORD.unpack_from
    unpack_word = WORD.unpack_from
    iter_unpack = struct.iter_unpack
    end = len(types_view)
    offset = 0
    max_ref = 0

    KIND_PTR, KIND_FUNC_PROTO, KIND_FUNC = Kind.PTR, Kind.FUNC_PROTO, Kind.FUNC
    KIND_STRUCT, KIND_UNION = Kind.STRUCT, Kind.UNION
    ref_kinds = {int(k): k for k in (Kind.PTR, Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST,
                                     Kind.RESTRICT, Kind.TYPE_TAG)}
    kinds = {int(k): k for k in Kind}

    try:
        while offset < end:
            if offset + 12 > end:
                raise BtfError(f"BTF: type {len(types)} at offset {offset} is truncated")
            name_off, info, size_or_type = unpack_record(types_view, offset)
            offset += 12
            kind_value = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            kind_flag = info >> 31
            if kind_value in ref_kinds:
                if size_or_type > max_ref:
                    max_ref = size_or_type
                append(RefType(ref_kinds[kind_value], name(name_off), size_or_type))
            elif kind_value == KIND_FUNC_PROTO:
                items = 8 * vlen
                _need(offset + items, end, len(types))
                params = [
                    Param(name(n), t) for n, t in iter_unpack("<II", types_view[offset : offset + items])
                ] if vlen else []
                offset += items
                for p in params:
                    if p.type_id > max_ref:
                        max_ref = p.type_id
                if size_or_type > max_ref:
                    max_ref = size_or_type
                append(FuncProtoType(size_or_type, params))
            elif kind_value == KIND_FUNC:
                if size_or_type > max_ref:
                    max_ref = size_or_type
                append(FuncType(name(name_off), size_or_type, vlen))
            elif kind_value == KIND_STRUCT or kind_value == KIND_UNION:
                items = 12 * vlen
                _need(offset + items, end, len(types))
                raw = iter_unpack("<III", types_view[offset : offset + items]) if vlen else ()
                offset += items
                if kind_flag:
                    members = [Member(name(n), t, o & 0xFFFFFF, o >> 24) for n, t, o in raw]
                else:
                    members = [Member(name(n), t, o, 0) for n, t, o in raw]
                for m in members:
                    if m.type_id > max_ref:
                        max_ref = m.type_id
                append(CompositeType(kinds[kind_value], name(name_off), size_or_type, members))
            elif kind_value == Kind.INT:
                _need(offset + 4, end, len(types))
                (word,) = unpack_word(types_view, offset)
                offset += 4
                append(IntType(name(name_off), size_or_type, IntEncoding((word >> 24) & 0x0F),
                               word & 0xFF, (word >> 16) & 0xFF))
            elif kind_value == Kind.ARRAY:
                _need(offset + 12, end, len(types))
                elem, index, count = ARRAY_RECORD.unpack_from(types_view, offset)
                offset += 12
                if elem > max_ref:
                    max_ref = elem
                if index > max_ref:
                    max_ref = index
                append(ArrayType(elem, index, count))
            elif kind_value == Kind.ENUM:
                items = 8 * vlen
                _need(offset + items, end, len(types))
                raw = iter_unpack("<Ii", types_view[offset : offset + items]) if vlen else ()
                offset += items
                if kind_flag:
                    values = [Enumerator(name(n), v) for n, v in raw]
                else:
                    # kind_flag 0 marks an unsigned enum: read the 32 bits as unsigned.
                    values = [Enumerator(name(n), v & 0xFFFFFFFF) for n, v in raw]
                append(EnumType(Kind.ENUM, name(name_off), size_or_type, bool(kind_flag), values))
            elif kind_value == Kind.ENUM64:
                items = 12 * vlen
                _need(offset + items, end, len(types))
                raw = iter_unpack("<III", types_view[offset : offset + items]) if vlen else ()
                offset += items
                values = []
                for n, lo, hi in raw:
                    value = (hi << 32) | lo
                    if kind_flag and value >= 1 << 63:
                        value -= 1 << 64
                    values.append(Enumerator(name(n), value))
                append(EnumType(Kind.ENUM64, name(name_off), size_or_type, bool(kind_flag), values))
            elif kind_value == Kind.FWD:
                append(FwdType(name(name_off), bool(kind_flag)))
            elif kind_value == Kind.VAR:
                _need(offset + 4, end, len(types))
                (linkage,) = unpack_word(types_view, offset)
                offset += 4
                if size_or_type > max_ref:
                    max_ref = size_or_type
                append(VarType(name(name_off), size_or_type, linkage))
            elif kind_value == Kind.DATASEC:
                items = 12 * vlen
                _need(offset + items, end, len(types))
                variables = [
                    VarSecinfo(t, o, s) for t, o, s in iter_unpack("<III", types_view[offset : offset + items])
                ] if vlen else []
                offset += items
                for v in variables:
                    if v.type_id > max_ref:
                        max_ref = v.type_id
                append(DataSecType(name(name_off), size_or_type, variables))
            elif kind_value == Kind.FLOAT:
                append(FloatType(name(name_off), size_or_type))
            elif kind_value == Kind.DECL_TAG:
                _need(offset + 4, end, len(types))
                (component_idx,) = SIGNED_WORD.unpack_from(types_view, offset)
                offset += 4
                if size_or_type > max_ref:
                    max_ref = size_or_type
                append(DeclTagType(name(name_off), size_or_type, component_idx))
            else:
                raise BtfError(f"BTF: type {len(types)} has unknown kind {kind_value}")
    except struct.error as exc:  # a vlen running past the section
        raise BtfError(f"BTF: type {len(types)} at offset {offset} is truncated ({exc})") from None

    if max_ref >= len(types):
        bad = _first_bad_reference(types)
        raise BtfError(
            f"BTF: type {bad[0]} refers to type {bad[1]}, beyond the last type {len(types) - 1}"
            " (module BTF needs the vmlinux BTF it extends, which this reader does not combine)"
        )
    return Btf(header, types)


def _need(upto: int, end: int, type_id: int) -> None:
    if upto > end:
        raise BtfError(f"BTF: type {type_id} runs past the end of the type section")


def references(t: BtfType) -> List[int]:
    """The type ids a record refers to."""
    if isinstance(t, (RefType, VarType, DeclTagType)):
        return [t.ref]
    if isinstance(t, FuncType):
        return [t.proto]
    if isinstance(t, ArrayType):
        return [t.elem, t.index]
    if isinstance(t, CompositeType):
        return [m.type_id for m in t.members]
    if isinstance(t, FuncProtoType):
        return [t.ret] + [p.type_id for p in t.params]
    if isinstance(t, DataSecType):
        return [v.type_id for v in t.variables]
    return []


def _first_bad_reference(types: List[BtfType]) -> Tuple[int, int]:
    limit = len(types)
    for type_id, t in enumerate(types):
        for ref in references(t):
            if ref >= limit:
                return type_id, ref
    return 0, limit  # not reached: parse() only calls this when some reference is too large


def variables(btf: Btf) -> Dict[str, List[int]]:
    """VAR type ids by variable name (a name can repeat: static variables of different files)."""
    found: Dict[str, List[int]] = {}
    for type_id, t in enumerate(btf.types):
        if t.kind == Kind.VAR:
            found.setdefault(t.name, []).append(type_id)
    return found


def type_name(btf: Btf, type_id: int, _depth: int = 0) -> str:
    """A C-like spelling of a type, for messages and tests (``struct list_head *``)."""
    t = btf.types[type_id]
    if _depth > 32:
        return "..."
    kind = t.kind
    if kind == Kind.VOID:
        return "void"
    if kind in (Kind.INT, Kind.FLOAT, Kind.TYPEDEF):
        return t.name
    if kind in (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64):
        word = {Kind.STRUCT: "struct", Kind.UNION: "union"}.get(kind, "enum")
        return f"{word} {t.name or '(anon)'}"
    if kind == Kind.FWD:
        return f"{'union' if t.is_union else 'struct'} {t.name}"  # type: ignore[attr-defined]
    if kind == Kind.PTR:
        return type_name(btf, t.ref, _depth + 1) + " *"  # type: ignore[attr-defined]
    if kind in (Kind.CONST, Kind.VOLATILE, Kind.RESTRICT):
        return f"{kind.name.lower()} " + type_name(btf, t.ref, _depth + 1)  # type: ignore[attr-defined]
    if kind == Kind.TYPE_TAG:
        return type_name(btf, t.ref, _depth + 1)  # type: ignore[attr-defined]
    if kind == Kind.ARRAY:
        return f"{type_name(btf, t.elem, _depth + 1)}[{t.count}]"  # type: ignore[attr-defined]
    if kind in (Kind.FUNC_PROTO, Kind.FUNC):
        return "function"
    return kind.name.lower()


__all__ = [
    "ArrayType", "Btf", "BtfHeader", "BtfType", "CompositeType", "DataSecType", "DeclTagType",
    "Enumerator", "EnumType", "FloatType", "FuncProtoType", "FuncType", "FwdType", "IntEncoding",
    "IntType", "Kind", "Linkage", "Member", "Param", "RefType", "VarSecinfo", "VarType",
    "VoidType", "parse", "parse_header", "references", "type_name", "variables",
]
