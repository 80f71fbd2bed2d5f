"""The BTF parser: every kind decoded as written, malformed blobs refused with one clear line,
and the running kernel's own BTF parsed completely and checked against an independent decoder."""

from __future__ import annotations

import os
import struct

import pytest

from memdump.errors import MemdumpError
from memdump.symbols import btf
from memdump.symbols.btf import IntEncoding, Kind, Member
from memdump.symbols.errors import BtfError
from symbols_btf_writer import BOOL, CHAR, SIGNED, BtfWriter, independent_struct_members

HOST_BTF = "/sys/kernel/btf/vmlinux"


def every_kind() -> tuple:
    w = BtfWriter()
    ids = {}
    ids["int"] = w.int_("int", 4, SIGNED)
    ids["char"] = w.int_("char", 1, CHAR)
    ids["bool"] = w.int_("_Bool", 1, BOOL)
    ids["carrier"] = w.int_("unsigned int", 4, 0, bits=5, offset=3)
    ids["ptr"] = w.ptr(ids["int"])
    ids["array"] = w.array(ids["char"], ids["int"], 16)
    ids["fwd_struct"] = w.fwd("opaque")
    ids["fwd_union"] = w.fwd("opaque_u", union=True)
    ids["struct"] = w.struct("pair", 16, [("a", ids["int"], 0, 0), ("flags", ids["int"], 35, 3), ("p", ids["ptr"], 64, 0)])
    ids["union"] = w.union("either", 8, [("i", ids["int"], 0, 0), ("p", ids["ptr"], 0, 0)], kind_flag=0)
    ids["enum_signed"] = w.enum("sign", 4, [("NEG", -5), ("POS", 7)], signed=True)
    ids["enum_unsigned"] = w.enum("mask", 4, [("ALL", 0xFFFFFFFF), ("ONE", 1)], signed=False)
    ids["enum64_signed"] = w.enum64("wide_s", 8, [("MIN", -(2**63)), ("M1", -1)], signed=True)
    ids["enum64_unsigned"] = w.enum64("wide_u", 8, [("BIG", 2**64 - 1), ("T40", 1 << 40)], signed=False)
    ids["typedef"] = w.typedef("pid_t", ids["int"])
    ids["volatile"] = w.volatile(ids["typedef"])
    ids["const"] = w.const(ids["volatile"])
    ids["restrict"] = w.restrict(ids["ptr"])
    ids["proto"] = w.func_proto(ids["int"], [("x", ids["int"]), ("", ids["ptr"])])
    ids["func"] = w.func("do_thing", ids["proto"], linkage=1)
    ids["var"] = w.var("counter", ids["int"], linkage=0)
    ids["datasec"] = w.datasec(".data..percpu", 64, [(ids["var"], 8, 4)])
    ids["float"] = w.float_("double", 8)
    ids["decl_tag"] = w.decl_tag("user", ids["struct"], 1)
    ids["type_tag"] = w.type_tag("rcu", ids["int"])
    return w, ids


def test_every_kind_decodes_as_written():
    w, ids = every_kind()
    parsed = btf.parse(w.blob())
    assert len(parsed) == w.next_id
    assert parsed[0].kind == Kind.VOID

    t = parsed[ids["int"]]
    assert (t.kind, t.name, t.size, t.bits, t.bit_offset, t.signed) == (Kind.INT, "int", 4, 32, 0, True)
    assert parsed[ids["char"]].encoding == IntEncoding.CHAR
    assert parsed[ids["bool"]].encoding == IntEncoding.BOOL
    carrier = parsed[ids["carrier"]]
    assert (carrier.bits, carrier.bit_offset, carrier.is_bitfield_carrier) == (5, 3, True)
    assert not parsed[ids["int"]].is_bitfield_carrier

    assert (parsed[ids["ptr"]].kind, parsed[ids["ptr"]].ref) == (Kind.PTR, ids["int"])
    a = parsed[ids["array"]]
    assert (a.kind, a.elem, a.index, a.count) == (Kind.ARRAY, ids["char"], ids["int"], 16)

    assert (parsed[ids["fwd_struct"]].name, parsed[ids["fwd_struct"]].is_union) == ("opaque", False)
    assert (parsed[ids["fwd_union"]].name, parsed[ids["fwd_union"]].is_union) == ("opaque_u", True)

    s = parsed[ids["struct"]]
    assert (s.kind, s.name, s.size) == (Kind.STRUCT, "pair", 16)
    assert s.members == [
        Member("a", ids["int"], 0, 0),
        Member("flags", ids["int"], 35, 3),  # kind_flag: bit offset 35, 3 bits wide
        Member("p", ids["ptr"], 64, 0),
    ]
    u = parsed[ids["union"]]
    assert (u.kind, u.is_union, [m.name for m in u.members]) == (Kind.UNION, True, ["i", "p"])
    assert all(m.bitfield_size == 0 for m in u.members)

    assert [(v.name, v.value) for v in parsed[ids["enum_signed"]].values] == [("NEG", -5), ("POS", 7)]
    assert parsed[ids["enum_signed"]].signed
    unsigned = parsed[ids["enum_unsigned"]]
    assert [(v.name, v.value) for v in unsigned.values] == [("ALL", 0xFFFFFFFF), ("ONE", 1)]
    assert not unsigned.signed
    e64 = parsed[ids["enum64_signed"]]
    assert (e64.kind, e64.size) == (Kind.ENUM64, 8)
    assert [v.value for v in e64.values] == [-(2**63), -1]
    assert [v.value for v in parsed[ids["enum64_unsigned"]].values] == [2**64 - 1, 1 << 40]

    assert (parsed[ids["typedef"]].name, parsed[ids["typedef"]].ref) == ("pid_t", ids["int"])
    assert parsed[ids["volatile"]].ref == ids["typedef"]
    assert parsed[ids["const"]].ref == ids["volatile"]
    assert parsed[ids["restrict"]].ref == ids["ptr"]
    assert parsed.strip(ids["const"]) == ids["int"]

    proto = parsed[ids["proto"]]
    assert proto.ret == ids["int"]
    assert [(p.name, p.type_id) for p in proto.params] == [("x", ids["int"]), ("", ids["ptr"])]
    func = parsed[ids["func"]]
    assert (func.name, func.proto, func.linkage) == ("do_thing", ids["proto"], 1)
    var = parsed[ids["var"]]
    assert (var.name, var.ref, var.linkage) == ("counter", ids["int"], 0)
    sec = parsed[ids["datasec"]]
    assert (sec.name, sec.size) == (".data..percpu", 64)
    assert [(v.type_id, v.offset, v.size) for v in sec.variables] == [(ids["var"], 8, 4)]
    assert (parsed[ids["float"]].kind, parsed[ids["float"]].size) == (Kind.FLOAT, 8)
    tag = parsed[ids["decl_tag"]]
    assert (tag.name, tag.ref, tag.component_idx) == ("user", ids["struct"], 1)
    tt = parsed[ids["type_tag"]]
    assert (tt.kind, tt.name, tt.ref) == (Kind.TYPE_TAG, "rcu", ids["int"])

    assert btf.variables(parsed) == {"counter": [ids["var"]]}
    assert btf.type_name(parsed, ids["restrict"]) == "restrict int *"


def test_header_with_extra_fields_is_honoured():
    """hdr_len larger than today's 24 bytes (a newer kernel's header): sections are relative
    to its end."""
    w = BtfWriter()
    w.int_("int", 4, SIGNED)
    types, strings = b"".join(w.records), bytes(w.strings)
    header = b"\x9f\xeb" + struct.pack("<BBIIIII", 1, 0, 32, 0, len(types), len(types), len(strings)) + bytes(8)
    parsed = btf.parse(header + types + strings)
    assert parsed.header.header_length == 32
    assert parsed[1].name == "int"


def damaged(kind):
    w = BtfWriter()
    w.int_("int", 4, SIGNED)
    blob = bytearray(w.blob())
    if kind == "big-endian":
        return bytes(b"\xeb\x9f" + blob[2:])
    if kind == "magic":
        return b"\x7fELF" + bytes(blob[4:])
    if kind == "version":
        blob[2] = 2
        return bytes(blob)
    if kind == "short":
        return bytes(blob[:10])
    if kind == "section":
        struct.pack_into("<I", blob, 20, 10_000)  # string length past the end
        return bytes(blob)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, words",
    [
        ("big-endian", "big-endian"),
        ("magic", "bad magic"),
        ("version", "version 2"),
        ("short", "too short"),
        ("section", "runs past the end"),
    ],
)
def test_damaged_headers_are_refused(kind, words):
    with pytest.raises(BtfError) as caught:
        btf.parse(damaged(kind))
    message = str(caught.value)
    assert words in message
    assert "\n" not in message
    assert isinstance(caught.value, MemdumpError)


def test_reference_past_the_last_type_is_refused():
    w = BtfWriter()
    w.int_("int", 4, SIGNED)
    w.ptr(99)
    with pytest.raises(BtfError, match="type 2 refers to type 99"):
        btf.parse(w.blob())


def test_unknown_kind_is_refused():
    w = BtfWriter()
    w.int_("int", 4, SIGNED)
    w.records.append(struct.pack("<III", 0, 25 << 24, 0))
    with pytest.raises(BtfError, match="unknown kind 25"):
        btf.parse(w.blob())


def test_truncated_members_are_refused():
    w = BtfWriter()
    i = w.int_("int", 4, SIGNED)
    w.struct("s", 8, [("a", i, 0, 0), ("b", i, 32, 0)])
    blob = w.blob()
    types_len = sum(len(r) for r in w.records)
    # claim the struct has 3 members while only 2 are there: the vlen runs off the section
    w.records[-1] = w.records[-1][:4] + struct.pack("<I", (1 << 31) | (4 << 24) | 3) + w.records[-1][8:]
    with pytest.raises(BtfError, match="runs past the end of the type section"):
        btf.parse(w.blob())
    assert btf.parse(blob)[2].size == 8 and types_len > 0


def test_name_offset_outside_strings_is_refused():
    w = BtfWriter()
    w.records.append(struct.pack("<III", 5000, 1 << 24, 4) + struct.pack("<I", 32))
    with pytest.raises(BtfError, match="name offset 5000"):
        btf.parse(w.blob())


# -- the running kernel's BTF, checked against an independent decoder ---------------------------


@pytest.mark.skipif(not os.access(HOST_BTF, os.R_OK), reason=f"{HOST_BTF} is absent or unreadable here")
def test_host_btf_parses_and_task_struct_matches_an_independent_decode():
    with open(HOST_BTF, "rb") as handle:
        blob = handle.read()
    parsed = btf.parse(blob)
    assert len(parsed) > 1000
    task_ids = parsed.find(Kind.STRUCT, "task_struct")
    assert len(task_ids) == 1
    members = {m.name: m.bit_offset for m in parsed[task_ids[0]].members}
    expected = independent_struct_members(blob, "task_struct")
    for field in ("pid", "comm", "tasks"):
        assert members[field] == expected[field], field
        assert members[field] % 8 == 0
    comm = next(m for m in parsed[task_ids[0]].members if m.name == "comm")
    comm_type = parsed[parsed.strip(comm.type_id)]
    assert comm_type.kind == Kind.ARRAY and comm_type.count == 16
