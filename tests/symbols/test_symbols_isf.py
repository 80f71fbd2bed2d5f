"""The ISF built from a BTF blob the test writes itself: every offset, size, type descriptor,
enum and symbol checked against what was written; the result validated against Volatility 3's
own schema and loaded by Volatility 3, which reads a task_struct back out of a buffer."""

from __future__ import annotations

import base64
import json
import lzma
import os
import re
import struct
from pathlib import Path

import pytest

from memdump import __version__
from memdump.symbols import FORMAT_VERSION, banner_identifier, build_isf, encode_isf, write_isf
from memdump.symbols.errors import OutputExists, SymbolsError
from symbols_btf_writer import BOOL, SIGNED, BtfWriter

BANNER = "Linux version 6.1.0-test (builder@example) (gcc 12) #1 SMP PREEMPT_DYNAMIC\n"

INIT_TASK = 0xFFFFFFFF82600000
TAINT_FLAGS = 0xFFFFFFFF82602000


class Kernel:
    """A miniature kernel's BTF: the types, the ids the tests need, and kallsyms for it."""

    def __init__(self) -> None:
        w = BtfWriter()
        self.w = w
        i = {}
        i["char"] = w.int_("char", 1)
        i["int"] = w.int_("int", 4, SIGNED)
        i["uint"] = w.int_("unsigned int", 4)
        i["long"] = w.int_("long int", 8, SIGNED)
        i["ulong"] = w.int_("long unsigned int", 8)
        i["bool"] = w.int_("_Bool", 1, BOOL)

        # struct list_head { struct list_head *next, *prev; } -- the pointer comes first
        i["list_head_ptr"] = w.ptr(w.next_id + 1)
        i["list_head"] = w.struct("list_head", 16, [("next", i["list_head_ptr"], 0, 0), ("prev", i["list_head_ptr"], 64, 0)])

        # typedef chain: pid_t -> __kernel_pid_t -> int, used as const volatile pid_t
        i["kernel_pid_t"] = w.typedef("__kernel_pid_t", i["int"])
        i["pid_t"] = w.typedef("pid_t", i["kernel_pid_t"])
        i["cv_pid"] = w.const(w.volatile(i["pid_t"]))

        i["level"] = w.enum("level", 4, [("LOW", -2), ("HIGH", 3)], signed=True)
        i["state"] = w.enum("task_state", 4, [("RUNNING", 0), ("DEAD", 0x80000000)], signed=False)
        i["wide"] = w.enum64("wide", 8, [("HUGE", 1 << 40), ("MINUS", -1)], signed=True)
        i["anon_enum"] = w.enum("", 4, [("ANON_A", 1), ("ANON_B", 2)], signed=False)

        # typedef struct { int counter; } atomic_t;
        i["atomic_anon"] = w.struct("", 4, [("counter", i["int"], 0, 0)])
        i["atomic_t"] = w.typedef("atomic_t", i["atomic_anon"])

        # union { struct { int a; int b; }; long c; } -- nested anonymous types
        i["inner"] = w.struct("", 8, [("a", i["int"], 0, 0), ("b", i["int"], 32, 0)])
        i["anon_union"] = w.union("", 8, [("", i["inner"], 0, 0), ("c", i["long"], 0, 0)])

        i["mm_struct"] = w.struct("mm_struct", 8, [("users", i["atomic_t"], 0, 0), ("map_count", i["int"], 32, 0)])
        i["opaque_fwd"] = w.fwd("opaque")
        i["union_fwd"] = w.fwd("clash", union=True)

        # struct clash, union clash and enum clash: three types, one name
        i["clash_struct"] = w.struct("clash", 4, [("x", i["int"], 0, 0)])
        i["clash_union"] = w.union("clash", 4, [("y", i["int"], 0, 0), ("z", i["uint"], 0, 0)])
        i["clash_enum"] = w.enum("clash", 4, [("CLASH_A", 1)], signed=False)

        i["char_ptr"] = w.ptr(i["char"])
        i["char_ptr_ptr"] = w.ptr(i["char_ptr"])
        i["comm"] = w.array(i["char"], i["int"], 16)
        i["flex"] = w.array(i["ulong"], i["int"], 0)
        i["mm_ptr"] = w.ptr(i["mm_struct"])
        i["opaque_ptr"] = w.ptr(i["opaque_fwd"])
        i["union_fwd_ptr"] = w.ptr(i["union_fwd"])
        # int (*handler)(struct task_struct *): the prototype refers to types written after it
        proto = w.next_id
        i["proto"] = w.func_proto(i["int"], [("task", proto + 1)])
        i["task_ptr"] = w.ptr(proto + 3)
        i["handler"] = w.ptr(proto)
        i["task_struct"] = w.struct("task_struct", 120, [
            ("pid", i["cv_pid"], 0, 0),
            ("flags", i["uint"], 32, 3),
            ("prio", i["uint"], 35, 5),
            ("nice", i["uint"], 40, 24),
            ("", i["anon_union"], 64, 0),
            ("tasks", i["list_head"], 128, 0),
            ("comm", i["comm"], 256, 0),
            ("mm", i["mm_ptr"], 384, 0),
            ("secret", i["opaque_ptr"], 448, 0),
            ("argv", i["char_ptr_ptr"], 512, 0),
            ("level", i["level"], 576, 0),
            ("state", i["state"], 608, 0),
            ("refs", i["atomic_t"], 640, 0),
            ("is_kthread", i["bool"], 672, 0),
            ("wide", i["wide"], 704, 0),
            ("handler", i["handler"], 768, 0),
            ("cs", i["clash_struct"], 832, 0),
            ("cu", i["union_fwd_ptr"], 896, 0),
            ("vals", i["flex"], 960, 0),
        ])
        assert i["task_struct"] == proto + 3

        # bitfields the pre-kind_flag way: the member type is an INT narrower than its size
        i["carrier_lo"] = w.int_("unsigned int", 4, 0, bits=4)
        i["carrier_hi"] = w.int_("unsigned int", 4, 0, bits=12, offset=2)
        i["old_bits"] = w.struct("old_bits", 4, [("lo", i["carrier_lo"], 0, 0), ("hi", i["carrier_hi"], 4, 0)], kind_flag=0)
        # a packed struct whose 30-bit field straddles its natural 4-byte unit
        i["packed_bits"] = w.struct("packed_bits", 5, [("c", i["char"], 0, 0), ("v", i["uint"], 8, 30)])

        # two struct dup: the second is the one the kernel refers to, so it keeps the name
        i["dup_rare"] = w.struct("dup", 4, [("only", i["int"], 0, 0)])
        i["dup_common"] = w.struct("dup", 8, [("a", i["int"], 0, 0), ("b", i["int"], 32, 0)])
        dup_ptr = w.ptr(i["dup_common"])
        i["holder"] = w.struct("holder", 16, [("one", dup_ptr, 0, 0), ("two", dup_ptr, 64, 0)])

        i["taint_flag"] = w.struct("taint_flag", 8, [("c_true", i["char"], 0, 0), ("c_false", i["char"], 8, 0), ("module", i["bool"], 16, 0)])

        i["do_fork"] = w.func("do_fork", i["proto"])
        i["rq_var"] = w.var("runqueue_count", i["long"])
        i["dup_var_a"] = w.var("dupvar", i["int"], linkage=0)
        i["dup_var_b"] = w.var("dupvar", i["ulong"], linkage=0)
        w.datasec(".data..percpu", 64, [(i["rq_var"], 0, 8), (i["dup_var_a"], 8, 4), (i["dup_var_b"], 16, 8)])
        w.decl_tag("kfunc", i["do_fork"])
        w.type_tag("rcu", i["int"])
        w.float_("double", 8)
        w.restrict(i["char_ptr"])
        self.ids = i
        self.blob = w.blob()

    kallsyms = "\n".join([
        "ffffffff81000000 T _text",
        "ffffffff81000000 T _stext",
        "ffffffff81001000 T do_fork",
        "ffffffff81002000 t helper",
        "ffffffff81003000 t helper",
        "ffffffff81004000 T _etext",
        "ffffffff82000000 R linux_banner",
        f"{INIT_TASK:016x} D init_task",
        "ffffffff82601000 D modules",
        f"{TAINT_FLAGS:016x} R taint_flags",
        f"{TAINT_FLAGS + 24:016x} R after_taint_flags",
        "ffffffff82700000 D prb",
        "000000000001a000 D runqueue_count",
        "000000000001a008 d dupvar",
        "ffffffffc0001000 t mod_func\t[mymod]",
        "",
    ])


@pytest.fixture(scope="module")
def kernel():
    return Kernel()


@pytest.fixture(scope="module")
def isf(kernel):
    return build_isf(kernel.blob, kernel.kallsyms, BANNER)


def base(name):
    return {"kind": "base", "name": name}


def ptr(subtype):
    return {"kind": "pointer", "subtype": subtype}


def test_metadata(isf):
    meta = isf["metadata"]
    assert meta["format"] == FORMAT_VERSION == "6.2.0"
    assert meta["producer"] == {"name": "memdump", "version": __version__}
    types_source, = meta["linux"]["types"]
    symbols_source, = meta["linux"]["symbols"]
    assert types_source["name"] == "btf-6.1.0-test"
    assert symbols_source == {**symbols_source, "kind": "system-map", "name": "kallsyms-6.1.0-test", "hash_type": "sha256"}
    assert re.fullmatch(r"[0-9a-f]{64}", types_source["hash_value"])


def test_base_types(isf):
    bt = isf["base_types"]
    assert bt["pointer"] == {"size": 8, "signed": False, "kind": "int", "endian": "little"}
    assert bt["void"]["kind"] == "void"
    assert bt["char"] == {"size": 1, "signed": False, "kind": "char", "endian": "little"}
    assert bt["int"] == {"size": 4, "signed": True, "kind": "int", "endian": "little"}
    assert bt["long unsigned int"] == {"size": 8, "signed": False, "kind": "int", "endian": "little"}
    assert bt["_Bool"]["kind"] == "bool"
    assert bt["double"] == {"size": 8, "signed": True, "kind": "float", "endian": "little"}
    # the bitfield-carrier INTs named "unsigned int" do not replace the real 4-byte one
    assert bt["unsigned int"] == {"size": 4, "signed": False, "kind": "int", "endian": "little"}
    # C types Volatility casts to are there even though this BTF lacks them
    for name in ("unsigned char", "short int", "long long unsigned int"):
        assert name in bt


def test_task_struct_every_field(isf):
    ut = isf["user_types"]
    task = ut["task_struct"]
    assert (task["kind"], task["size"]) == ("struct", 120)
    bitfield = lambda pos, length: {"kind": "bitfield", "bit_position": pos, "bit_length": length, "type": base("unsigned int")}
    union_name = next(n for n, t in ut.items() if t["kind"] == "union" and "c" in t["fields"])
    assert task["fields"] == {
        "pid": {"type": base("int"), "offset": 0},
        "flags": {"type": bitfield(0, 3), "offset": 4},
        "prio": {"type": bitfield(3, 5), "offset": 4},
        "nice": {"type": bitfield(8, 24), "offset": 4},
        "unnamed_field_8": {"type": {"kind": "union", "name": union_name}, "offset": 8, "anonymous": True},
        "tasks": {"type": {"kind": "struct", "name": "list_head"}, "offset": 16},
        "comm": {"type": {"kind": "array", "count": 16, "subtype": base("char")}, "offset": 32},
        "mm": {"type": ptr({"kind": "struct", "name": "mm_struct"}), "offset": 48},
        "secret": {"type": ptr({"kind": "struct", "name": "opaque"}), "offset": 56},
        "argv": {"type": ptr(ptr(base("char"))), "offset": 64},
        "level": {"type": {"kind": "enum", "name": "level"}, "offset": 72},
        "state": {"type": {"kind": "enum", "name": "task_state"}, "offset": 76},
        "refs": {"type": {"kind": "struct", "name": "atomic_t"}, "offset": 80},
        "is_kthread": {"type": base("_Bool"), "offset": 84},
        "wide": {"type": {"kind": "enum", "name": "wide"}, "offset": 88},
        "handler": {"type": ptr({"kind": "function"}), "offset": 96},
        "cs": {"type": {"kind": "struct", "name": "clash"}, "offset": 104},
        "cu": {"type": ptr({"kind": "union", "name": ut_name_of_union_clash(ut)}), "offset": 112},
        "vals": {"type": {"kind": "array", "count": 0, "subtype": base("long unsigned int")}, "offset": 120},
    }


def ut_name_of_union_clash(ut):
    names = [n for n, t in ut.items() if t["kind"] == "union" and set(t["fields"]) == {"y", "z"}]
    assert len(names) == 1
    return names[0]


def test_anonymous_types_nest_and_get_stable_names(kernel, isf):
    ut = isf["user_types"]
    union_name = isf["user_types"]["task_struct"]["fields"]["unnamed_field_8"]["type"]["name"]
    assert re.fullmatch(r"unnamed_[0-9a-f]{16}", union_name)
    union = ut[union_name]
    assert (union["kind"], union["size"]) == ("union", 8)
    inner_ref = union["fields"]["unnamed_field_0"]
    assert inner_ref["anonymous"] is True and inner_ref["offset"] == 0
    assert union["fields"]["c"] == {"type": base("long int"), "offset": 0}
    inner = ut[inner_ref["type"]["name"]]
    assert inner == {"kind": "struct", "size": 8, "fields": {
        "a": {"type": base("int"), "offset": 0}, "b": {"type": base("int"), "offset": 4}}}
    # the same blob gives the same names
    again = build_isf(kernel.blob, kernel.kallsyms, BANNER)
    assert again["user_types"]["task_struct"]["fields"]["unnamed_field_8"]["type"]["name"] == union_name


def test_typedef_named_anonymous_struct(isf):
    assert isf["user_types"]["atomic_t"] == {"kind": "struct", "size": 4, "fields": {"counter": {"type": base("int"), "offset": 0}}}
    assert isf["user_types"]["mm_struct"]["fields"]["users"] == {"type": {"kind": "struct", "name": "atomic_t"}, "offset": 0}


def test_list_head_points_to_itself(isf):
    assert isf["user_types"]["list_head"] == {"kind": "struct", "size": 16, "fields": {
        "next": {"type": ptr({"kind": "struct", "name": "list_head"}), "offset": 0},
        "prev": {"type": ptr({"kind": "struct", "name": "list_head"}), "offset": 8}}}


def test_name_clashes(isf):
    ut = isf["user_types"]
    assert ut["clash"] == {"kind": "struct", "size": 4, "fields": {"x": {"type": base("int"), "offset": 0}}}
    union_name = ut_name_of_union_clash(ut)
    assert re.fullmatch(r"clash_[0-9a-f]{16}", union_name)
    assert ut[union_name]["size"] == 4
    assert isf["enums"]["clash"] == {"size": 4, "base": "unsigned int", "constants": {"CLASH_A": 1}}
    # of two struct dup, the one referred to keeps the name; the other is renamed
    assert ut["dup"]["size"] == 8
    assert ut["holder"]["fields"]["one"]["type"] == ptr({"kind": "struct", "name": "dup"})
    renamed = [n for n in ut if n.startswith("dup_")]
    assert len(renamed) == 1 and ut[renamed[0]]["fields"] == {"only": {"type": base("int"), "offset": 0}}
    # no FWD becomes a type of its own
    assert "opaque" not in ut


def test_old_style_and_straddling_bitfields(isf):
    ut = isf["user_types"]
    old = ut["old_bits"]["fields"]
    assert old["lo"] == {"type": {"kind": "bitfield", "bit_position": 0, "bit_length": 4, "type": base("unsigned int")}, "offset": 0}
    # member offset 4 plus the carrier's own offset 2
    assert old["hi"] == {"type": {"kind": "bitfield", "bit_position": 6, "bit_length": 12, "type": base("unsigned int")}, "offset": 0}
    packed = ut["packed_bits"]
    assert packed["size"] == 5
    assert packed["fields"]["v"] == {"type": {"kind": "bitfield", "bit_position": 0, "bit_length": 30, "type": base("unsigned int")}, "offset": 1}


def test_enums(isf):
    enums = isf["enums"]
    assert enums["level"] == {"size": 4, "base": "int", "constants": {"LOW": -2, "HIGH": 3}}
    assert enums["task_state"] == {"size": 4, "base": "unsigned int", "constants": {"RUNNING": 0, "DEAD": 0x80000000}}
    assert enums["wide"] == {"size": 8, "base": "long long int", "constants": {"HUGE": 1 << 40, "MINUS": -1}}
    anonymous = [e for n, e in enums.items() if n.startswith("unnamed_")]
    assert anonymous == [{"size": 4, "base": "unsigned int", "constants": {"ANON_A": 1, "ANON_B": 2}}]
    for enum in enums.values():
        assert enum["base"] in isf["base_types"]


def test_symbols(isf):
    symbols = isf["symbols"]
    assert symbols["_text"] == {"address": 0xFFFFFFFF81000000, "type": {"kind": "array", "count": 0, "subtype": base("char")}}
    assert symbols["do_fork"] == {"address": 0xFFFFFFFF81001000}  # functions stay untyped
    assert symbols["helper"] == {"address": 0xFFFFFFFF81002000}  # the first of two statics
    assert symbols["init_task"] == {"address": INIT_TASK, "type": {"kind": "struct", "name": "task_struct"}}
    assert symbols["modules"]["type"] == {"kind": "struct", "name": "list_head"}
    # 24 bytes before the next symbol, 8 per struct taint_flag
    assert symbols["taint_flags"]["type"] == {"kind": "array", "count": 3, "subtype": {"kind": "struct", "name": "taint_flag"}}
    # prb's type (struct printk_ringbuffer) is not in this BTF: an address, no guessed type
    assert symbols["prb"] == {"address": 0xFFFFFFFF82700000}
    # a per-CPU VAR of the BTF types its symbol
    assert symbols["runqueue_count"] == {"address": 0x1A000, "type": base("long int")}
    # two VARs of one name and different types: left untyped
    assert "type" not in symbols["dupvar"]
    assert "mod_func" not in symbols  # a module's symbol
    banner = BANNER.encode() + b"\0"
    assert symbols["linux_banner"] == {
        "address": 0xFFFFFFFF82000000,
        "type": {"kind": "array", "count": len(banner), "subtype": base("char")},
        "constant_data": base64.b64encode(banner).decode(),
    }


def test_banner_identifier_is_what_volatility_scans_for(isf):
    assert banner_identifier(isf) == BANNER.encode() + b"\0"
    broken = json.loads(json.dumps(isf))
    broken["symbols"]["linux_banner"]["type"]["count"] = 5
    with pytest.raises(SymbolsError, match="holds 5 chars"):
        banner_identifier(broken)
    del broken["symbols"]["linux_banner"]
    with pytest.raises(SymbolsError, match="no linux_banner"):
        banner_identifier(broken)


def test_banner_without_newline_gets_the_kernels_newline(kernel):
    isf = build_isf(kernel.blob, kernel.kallsyms, BANNER.rstrip("\n"))
    assert banner_identifier(isf) == BANNER.encode() + b"\0"


def test_banner_that_is_not_one_is_refused(kernel):
    with pytest.raises(SymbolsError, match="does not start with 'Linux version '"):
        build_isf(kernel.blob, kernel.kallsyms, "6.1.0-test\n")


def test_release_given_names_the_sources(kernel):
    isf = build_isf(kernel.blob, kernel.kallsyms, BANNER, release="6.1.0-18-amd64")
    assert isf["metadata"]["linux"]["types"][0]["name"] == "btf-6.1.0-18-amd64"


# -- writing --------------------------------------------------------------------------------------


def test_write_json_and_xz(isf, tmp_path):
    plain = tmp_path / "kernel.json"
    packed = tmp_path / "kernel.json.xz"
    write_isf(isf, str(plain))
    write_isf(isf, str(packed))
    assert json.loads(plain.read_bytes()) == isf
    assert json.loads(lzma.decompress(packed.read_bytes())) == isf
    assert packed.read_bytes()[:6] == b"\xfd7zXZ\0"
    assert plain.stat().st_mode & 0o777 == 0o644 & ~current_umask()


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_never_overwrites(isf, tmp_path):
    target = tmp_path / "kernel.json"
    target.write_text("evidence")
    with pytest.raises(OutputExists, match="already exists"):
        write_isf(isf, str(target))
    assert target.read_text() == "evidence"


def test_write_never_follows_a_symlink(isf, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    link = tmp_path / "kernel.json"
    link.symlink_to(victim)
    with pytest.raises(OutputExists):
        write_isf(isf, str(link))
    assert victim.read_text() == "keep"


def test_write_into_missing_directory_is_one_line(isf, tmp_path):
    with pytest.raises(SymbolsError) as caught:
        write_isf(isf, str(tmp_path / "nope" / "kernel.json"))
    assert "cannot create" in str(caught.value) and "\n" not in str(caught.value)


# -- Volatility 3's schema -----------------------------------------------------------------------


def volatility_schema(fmt):
    schemas = pytest.importorskip("volatility3.schemas")
    path = Path(schemas.__file__).parent / f"schema-{fmt}.json"
    if not path.exists():
        pytest.skip(f"this volatility3 has no schema {path.name}")
    return json.loads(path.read_text())


# The JSON-schema keywords Volatility's ISF schemas use; the fallback checker below implements
# exactly these, and the test refuses a schema that uses any other.
_KEYWORDS = {"$schema", "id", "title", "type", "definitions", "properties", "additionalProperties",
             "required", "pattern", "$ref", "oneOf", "items", "format", "media"}
_TYPES = {"object": dict, "string": str, "array": list, "boolean": bool}


def schema_keywords(schema):
    found = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            found.add(key)
            if key in ("properties", "definitions"):
                for sub in value.values():
                    found |= schema_keywords(sub)
            elif key in ("media", "format"):
                continue  # annotations: their contents are not keywords
            elif isinstance(value, (dict, list)):
                found |= schema_keywords(value)
    elif isinstance(schema, list):
        for sub in schema:
            found |= schema_keywords(sub)
    return found


def schema_errors(instance, schema, root, where="$"):
    """A checker of the JSON-schema subset in _KEYWORDS (format and media are annotations)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return schema_errors(instance, root["definitions"][name], root, where)
    errors = []
    if "oneOf" in schema:
        matches = sum(1 for sub in schema["oneOf"] if not schema_errors(instance, sub, root, where))
        if matches != 1:
            errors.append(f"{where}: matches {matches} of oneOf")
    kind = schema.get("type")
    if kind == "integer" and (not isinstance(instance, int) or isinstance(instance, bool)):
        return errors + [f"{where}: not an integer"]
    if kind == "number" and (not isinstance(instance, (int, float)) or isinstance(instance, bool)):
        return errors + [f"{where}: not a number"]
    if kind in _TYPES and not isinstance(instance, _TYPES[kind]):
        return errors + [f"{where}: not {kind}"]
    if "pattern" in schema and isinstance(instance, str) and not re.search(schema["pattern"], instance):
        errors.append(f"{where}: {instance!r} does not match {schema['pattern']}")
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{where}: {key} missing")
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            if key in properties:
                errors += schema_errors(value, properties[key], root, f"{where}.{key}")
            elif extra is False:
                errors.append(f"{where}: unexpected {key}")
            elif isinstance(extra, dict):
                errors += schema_errors(value, extra, root, f"{where}.{key}")
    if isinstance(instance, list) and "items" in schema:
        for n, item in enumerate(instance):
            errors += schema_errors(item, schema["items"], root, f"{where}[{n}]")
    return errors


def validate(isf, schema):
    """Validation errors of ``isf``: with jsonschema when it is installed, else with the subset
    checker above."""
    try:
        import jsonschema
    except ImportError:
        assert schema_keywords(schema) <= _KEYWORDS, schema_keywords(schema) - _KEYWORDS
        return schema_errors(isf, schema, schema)
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [e.message for e in validator.iter_errors(isf)]


def test_isf_passes_volatilitys_schema(isf):
    schema = volatility_schema(FORMAT_VERSION)
    assert validate(isf, schema) == []


def test_schema_check_can_fail(isf):
    schema = volatility_schema(FORMAT_VERSION)
    broken = json.loads(json.dumps(isf))
    broken["user_types"]["task_struct"]["fields"]["pid"]["type"] = {"kind": "base"}  # no name
    broken["metadata"]["producer"]["version"] = "tip"
    errors = validate(broken, schema)
    assert errors, "a broken ISF passed the schema"


# -- Volatility 3 loads it -----------------------------------------------------------------------


def task_bytes():
    """A task_struct as the miniature kernel lays it out, with known values."""
    data = bytearray(120)
    struct.pack_into("<i", data, 0, 1234)
    struct.pack_into("<I", data, 4, 5 | (17 << 3) | (0xABCDE << 8))  # flags:3, prio:5, nice:24
    struct.pack_into("<ii", data, 8, 7, 9)  # the anonymous struct's a and b
    struct.pack_into("<QQ", data, 16, 16, 16)  # an empty list: tasks points at itself
    data[32:48] = b"swapper/0".ljust(16, b"\0")
    struct.pack_into("<i", data, 72, -2)
    struct.pack_into("<I", data, 76, 0x80000000)
    struct.pack_into("<i", data, 80, 3)
    data[84] = 1
    struct.pack_into("<q", data, 88, 1 << 40)
    return bytes(data)


@pytest.fixture(scope="module")
def volatility_table(isf, tmp_path_factory):
    pytest.importorskip("volatility3")
    from volatility3.framework import contexts
    from volatility3.framework.symbols import intermed

    path = tmp_path_factory.mktemp("isf") / "memdump-test.json.xz"
    write_isf(isf, str(path))
    context = contexts.Context()
    table = intermed.IntermediateSymbolTable(context, "temporary.memdump", name="memdump", isf_url=path.as_uri())
    context.symbol_space.append(table)
    return context, table


def test_volatility_loads_the_isf(volatility_table):
    context, table = volatility_table
    init_task = table.get_symbol("init_task")
    assert init_task.address == INIT_TASK
    assert init_task.type.vol.type_name == "memdump!task_struct"
    task = table.get_type("task_struct")
    assert task.size == 120
    assert task.relative_child_offset("comm") == 32
    assert task.relative_child_offset("tasks") == 16
    # Volatility flattens the anonymous union and the anonymous struct inside it
    assert task.relative_child_offset("a") == 8
    assert task.relative_child_offset("b") == 12
    assert task.relative_child_offset("c") == 8
    assert table.get_symbol("linux_banner").constant_data == BANNER.encode() + b"\0"
    assert table.get_symbol("taint_flags").type.vol.count == 3


def test_volatility_reads_a_task_struct(volatility_table, isf):
    from volatility3.framework.layers.physical import BufferDataLayer
    from volatility3.framework.automagic import symbol_cache

    context, table = volatility_table
    isf_json = json.loads(encode_isf(isf))
    layer = BufferDataLayer(context, "memdump.buffer", "buffer", task_bytes())
    context.add_layer(layer)
    task = context.object("memdump!task_struct", layer_name="buffer", offset=0)
    assert task.pid == 1234
    assert (task.flags, task.prio, task.nice) == (5, 17, 0xABCDE)
    assert (task.a, task.b) == (7, 9)
    assert task.c == (9 << 32) | 7
    assert task.comm.cast("string", max_length=16, errors="replace") == "swapper/0"
    assert int(task.tasks.next) == int(task.tasks.prev) == task.tasks.vol.offset == 16
    assert task.tasks.next.dereference().vol.type_name == "memdump!list_head"
    assert task.level == -2 and task.level.description == "LOW"
    assert task.state.description == "DEAD"
    assert task.refs.counter == 3
    assert task.is_kthread
    assert task.wide.description == "HUGE"
    # what Volatility's symbol cache records as this file's identifier, the string it scans for
    assert symbol_cache.LinuxIdentifier.get_identifier(isf_json) == BANNER.encode() + b"\0"


# -- the running kernel's BTF, loaded by Volatility's linux symbol table -----------------------

HOST_BTF = "/sys/kernel/btf/vmlinux"

# addresses for the symbols the builder requires: the test must not depend on reading the
# host's kallsyms as root, and only the types are under test here
HOST_KALLSYMS = (
    "ffffffff81000000 T _text\n"
    "ffffffff82000000 D linux_banner\n"
    f"{INIT_TASK:016x} D init_task\n"
    "ffffffff82601000 D modules\n"
)


@pytest.fixture(scope="module")
def host_btf():
    if not os.access(HOST_BTF, os.R_OK):
        pytest.skip(f"{HOST_BTF} is absent or unreadable here")
    with open(HOST_BTF, "rb") as handle:
        return handle.read()


@pytest.fixture(scope="module")
def host_isf(host_btf):
    return build_isf(host_btf, HOST_KALLSYMS, BANNER)


def test_host_isf_passes_volatilitys_schema(host_isf):
    schema = volatility_schema(FORMAT_VERSION)
    assert validate(host_isf, schema)[:5] == []


def test_host_isf_references_only_defined_types(host_isf):
    """Every struct, union, enum and base type a field names is in the ISF, except structs the
    kernel only declares (a FWD without a definition)."""
    ut, enums, bases = host_isf["user_types"], host_isf["enums"], host_isf["base_types"]
    undefined = set()

    def walk(d):
        kind = d["kind"]
        if kind in ("pointer", "array"):
            walk(d["subtype"])
        elif kind == "bitfield":
            walk(d["type"])
        elif kind == "base":
            assert d["name"] in bases, d
        elif kind == "enum":
            assert d["name"] in enums, d
        elif kind in ("struct", "union"):
            if d["name"] not in ut:
                undefined.add(d["name"])
            else:
                assert ut[d["name"]]["kind"] == kind, d

    for t in ut.values():
        for field in t["fields"].values():
            walk(field["type"])
    from memdump.symbols import btf as btf_mod

    parsed = btf_mod.parse(open(HOST_BTF, "rb").read())
    declared_only = {t.name for t in parsed.types if t.kind == btf_mod.Kind.FWD}
    assert undefined <= declared_only


def test_host_isf_loads_as_volatilitys_linux_table(host_btf, host_isf, tmp_path):
    pytest.importorskip("volatility3")
    from volatility3.framework import contexts
    from volatility3.framework.symbols import linux
    from volatility3.framework.symbols.linux.extensions import network  # noqa: F401  (the table binds its classes)
    from symbols_btf_writer import independent_struct_members

    path = tmp_path / "host.json"
    write_isf(host_isf, str(path))
    context = contexts.Context()
    # the linux table binds its classes to task_struct, list_head, file, ... : all must exist
    table = linux.LinuxKernelIntermedSymbols(context, "temporary.host", name="host", isf_url=path.as_uri())
    context.symbol_space.append(table)
    assert table.get_symbol("init_task").type.vol.type_name == "host!task_struct"
    task = table.get_type("task_struct")
    expected = independent_struct_members(host_btf, "task_struct")
    for member in ("pid", "comm", "tasks"):
        assert task.relative_child_offset(member) == expected[member] // 8, member
    assert task.vol.members["comm"][1].vol.count == 16
