"""Build a Volatility 3 symbol table (ISF, Intermediate Symbol Format) from BTF and kallsyms.

What goes where, following what Volatility's ``symbols/intermed.py`` reads (format 6.2.0, the
newest format its loader has a class for) and what dwarf2json writes:

* ``base_types``: every BTF INT and FLOAT by name (``char``, ``int``, ``long unsigned int``, ...),
  ``void``, ``pointer`` (the size of ``long``: 8 on 64-bit kernels), and the C integer types
  Volatility casts to when BTF happens to lack one.
* ``user_types``: every STRUCT and UNION with its size and fields (byte offset and a type
  descriptor). Typedefs, ``const``/``volatile``/``restrict`` and type tags are resolved away;
  bitfields become ``bitfield`` descriptors; a flexible array has count 0. An anonymous struct
  or union member is listed as ``unnamed_field_<hex offset>`` with ``anonymous: true``, which
  Volatility flattens into its parent.
* ``enums``: every ENUM and ENUM64 with its size, constants and an integer base type.
* ``symbols``: every kernel symbol of kallsyms with its address; a type where one is known --
  from a BTF VAR of the same name (BTF lists per-CPU variables), else from
  :data:`KNOWN_SYMBOL_TYPES`, the declarations of the globals Volatility's linux plugins read
  (``init_task`` is a ``task_struct``). ``linux_banner`` carries the banner as
  ``constant_data``: that is the string Volatility scans the image for to pick this table.

Names: a named struct keeps its name. A struct or union without one takes the name of the
typedef that names it (``atomic_t``, ``kuid_t``: the names Volatility's own code tests for),
otherwise ``unnamed_<16 hex digits>``, a hash of its layout, so identical anonymous types share
one entry and names stay the same from one run to the next. When several structs and unions
share a name, the one the rest of the kernel refers to most keeps it (a struct before a union
on a tie) and each other becomes ``<name>_<16 hex digits>``; enums, a namespace of their own
in the ISF, are treated the same way among themselves.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

import memdump
from memdump.symbols import btf as btf_mod
from memdump.symbols import kallsyms as kallsyms_mod
from memdump.symbols.btf import (
    ArrayType,
    Btf,
    CompositeType,
    EnumType,
    FwdType,
    IntEncoding,
    IntType,
    Kind,
    Linkage,
)
from memdump.symbols.errors import BtfError, KallsymsError, SymbolsError

# The newest ISF format Volatility 3 has a reader for (intermed.Version8Format); a file that
# claims a newer minor version is refused by its loader.
FORMAT_VERSION = "6.2.0"
PRODUCER_NAME = "memdump"
BANNER_PREFIX = "Linux version "

Descriptor = Dict[str, Any]


@dataclass(frozen=True)
class KnownSymbol:
    """A global whose type BTF does not record (vmlinux BTF lists only per-CPU variables),
    spelled as in C: ``struct task_struct``, ``char *``, ``struct fb_info *[32]``, ``char []``
    (a flexible array, count 0). ``[?]`` means "as many elements as fit before the next
    symbol", for arrays whose length is a macro BTF does not keep."""

    name: str
    declaration: str


KNOWN_SYMBOL_TYPES: Tuple[KnownSymbol, ...] = (
    # the process list and the KASLR search
    KnownSymbol("init_task", "struct task_struct"),
    KnownSymbol("init_mm", "struct mm_struct"),
    KnownSymbol("init_files", "struct files_struct"),
    KnownSymbol("init_fs", "struct fs_struct"),
    KnownSymbol("init_nsproxy", "struct nsproxy"),
    KnownSymbol("init_pid_ns", "struct pid_namespace"),
    KnownSymbol("init_net", "struct net"),
    KnownSymbol("init_cred", "struct cred"),
    # modules
    KnownSymbol("modules", "struct list_head"),
    KnownSymbol("module_kset", "struct kset *"),
    KnownSymbol("mod_tree", "struct mod_tree_root"),
    KnownSymbol("module_addr_min", "long unsigned int"),
    KnownSymbol("module_addr_max", "long unsigned int"),
    # the kernel log: printk ring buffer (5.10+) and the older log_buf
    KnownSymbol("prb", "struct printk_ringbuffer *"),
    KnownSymbol("printk_rb_static", "struct printk_ringbuffer"),
    KnownSymbol("printk_rb_dynamic", "struct printk_ringbuffer"),
    KnownSymbol("log_buf", "char *"),
    KnownSymbol("log_buf_len", "unsigned int"),
    KnownSymbol("log_first_idx", "unsigned int"),
    KnownSymbol("log_next_idx", "unsigned int"),
    KnownSymbol("log_end", "unsigned int"),
    # sockets and files
    KnownSymbol("net_namespace_list", "struct list_head"),
    KnownSymbol("socket_file_ops", "struct file_operations"),
    KnownSymbol("sockfs_dentry_operations", "struct dentry_operations"),
    KnownSymbol("tty_drivers", "struct list_head"),
    # memory layout
    KnownSymbol("mem_section", "struct mem_section **"),
    KnownSymbol("mem_map", "struct page *"),
    KnownSymbol("vmemmap_base", "long unsigned int"),
    KnownSymbol("page_offset_base", "long unsigned int"),
    KnownSymbol("vmalloc_base", "long unsigned int"),
    KnownSymbol("phys_base", "long unsigned int"),
    KnownSymbol("max_pfn", "long unsigned int"),
    KnownSymbol("node_data", "struct pglist_data *[?]"),
    # kernel text bounds: declared char[] in asm/sections.h
    KnownSymbol("_text", "char []"),
    KnownSymbol("_stext", "char []"),
    KnownSymbol("_etext", "char []"),
    KnownSymbol("_sinittext", "char []"),
    KnownSymbol("_einittext", "char []"),
    KnownSymbol("_end", "char []"),
    # kallsyms tables (Volatility reads their sizes to pick a layout)
    KnownSymbol("kallsyms_num_syms", "unsigned int"),
    KnownSymbol("kallsyms_relative_base", "long unsigned int"),
    # assorted tables the linux plugins walk
    KnownSymbol("taint_flags", "struct taint_flag [?]"),
    KnownSymbol("cap_last_cap", "int"),
    KnownSymbol("timekeeper", "struct timekeeper"),
    KnownSymbol("idt_table", "struct gate_struct [256]"),
    KnownSymbol("keyboard_notifier_list", "struct atomic_notifier_head"),
    KnownSymbol("prog_idr", "struct idr"),
    KnownSymbol("bpf_kallsyms", "struct list_head"),
    KnownSymbol("ftrace_mod_maps", "struct list_head"),
    KnownSymbol("ftrace_ops_list", "struct ftrace_ops *"),
    KnownSymbol("ftrace_list_end", "struct ftrace_ops"),
    KnownSymbol("num_registered_fb", "int"),
    KnownSymbol("registered_fb", "struct fb_info *[32]"),
)

# C integer types Volatility's linux support casts to, with their LP64 layout, added when the
# BTF lacks them (BTF only carries the types the kernel uses): name -> (size, signed, kind).
STANDARD_BASE_TYPES: Dict[str, Tuple[int, bool, str]] = {
    "char": (1, False, "char"),
    "signed char": (1, True, "char"),
    "unsigned char": (1, False, "char"),
    "short int": (2, True, "int"),
    "short unsigned int": (2, False, "int"),
    "int": (4, True, "int"),
    "unsigned int": (4, False, "int"),
    "long int": (8, True, "int"),
    "long unsigned int": (8, False, "int"),
    "long long int": (8, True, "int"),
    "long long unsigned int": (8, False, "int"),
    "_Bool": (1, False, "bool"),
}

# The base type an enum of (size, signed) is read through.
ENUM_BASES: Dict[Tuple[int, bool], str] = {
    (1, False): "unsigned char",
    (1, True): "signed char",
    (2, False): "short unsigned int",
    (2, True): "short int",
    (4, False): "unsigned int",
    (4, True): "int",
    (8, False): "long long unsigned int",
    (8, True): "long long int",
}

# Volatility adds the KASLR shift it finds in the image to every kernel-image address of the
# ISF, as for dwarf2json's vmlinux addresses; kallsyms shows them already moved, so the ISF
# stores them less the offset. Addresses below the kernel-image mapping (per-CPU offsets) are
# not moved by KASLR and are kept as they are.
X86_64_KERNEL_MAP = 0xFFFFFFFF80000000
X86_64_TEXT_LINK_ADDRESS = 0xFFFFFFFF81000000
KASLR_ALIGN = 0x200000  # CONFIG_PHYSICAL_ALIGN's minimum on x86_64

_CHAR_NAMES = frozenset({"char", "signed char", "unsigned char"})
_TRANSPARENT = frozenset({Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG})
_MAX_DEPTH = 256
_VOID: Descriptor = {"kind": "base", "name": "void"}
_FUNCTION: Descriptor = {"kind": "function"}


class Declaration(NamedTuple):
    """A parsed :class:`KnownSymbol` declaration: ``target`` (``struct x``, ``union x``, a base
    type or typedef name), pointer depth, and the array count (None: not an array; -1: count
    from the gap to the next symbol)."""

    target: str
    pointers: int
    count: Optional[int]


def parse_declaration(text: str) -> Declaration:
    text = text.strip()
    count: Optional[int] = None
    match = re.match(r"^(.*?)\s*\[(\d*|\?)\]$", text)
    if match:
        text, digits = match.group(1), match.group(2)
        count = -1 if digits == "?" else int(digits or 0)
    pointers = text.count("*")
    target = text.replace("*", "").strip()
    return Declaration(" ".join(target.split()), pointers, count)


def build(
    btf: Btf,
    kallsyms: kallsyms_mod.Kallsyms,
    banner: bytes,
    *,
    release: Optional[str] = None,
    btf_sha256: Optional[str] = None,
    kallsyms_sha256: Optional[str] = None,
    extra_symbols: Optional[Dict[str, int]] = None,
    kaslr_offset: Optional[int] = None,
) -> Dict[str, Any]:
    """The ISF as a dict, ready for ``json.dumps``. ``banner`` is the kernel's ``linux_banner``
    (``/proc/version``) with its trailing newline; ``extra_symbols`` adds addresses kallsyms
    lacks (from VMCOREINFO, as the running kernel sees them). ``kaslr_offset`` is the amount
    KASLR moved the kernel image by (VMCOREINFO's KERNELOFFSET); by default it is derived
    from ``_text`` (see :func:`derive_kaslr_offset`)."""
    return _Builder(btf, kallsyms, banner, release, btf_sha256, kallsyms_sha256, extra_symbols, kaslr_offset).build()


def derive_kaslr_offset(kallsyms: kallsyms_mod.Kallsyms) -> int:
    """How far KASLR moved the kernel image: ``_text`` as kallsyms shows it, less the address
    x86_64 kernels are linked at (``__START_KERNEL_map`` + the default CONFIG_PHYSICAL_START)."""
    if "_text" not in kallsyms:
        raise KallsymsError(
            "kallsyms has no _text, so the KASLR offset is unknown: give VMCOREINFO (its KERNELOFFSET)"
        )
    text = kallsyms.address("_text")
    offset = text - X86_64_TEXT_LINK_ADDRESS
    if offset < 0 or offset % KASLR_ALIGN:
        raise SymbolsError(
            f"_text at {text:#x} is not x86_64's link address {X86_64_TEXT_LINK_ADDRESS:#x} moved by a"
            " multiple of 2 MiB: give VMCOREINFO (its KERNELOFFSET) to say where the kernel was linked"
        )
    return offset


def check_banner(banner: bytes) -> bytes:
    """The banner as the kernel holds it: ``Linux version ...`` ending in a newline."""
    if not banner.startswith(BANNER_PREFIX.encode()):
        shown = banner[:60].decode("latin-1")
        raise SymbolsError(f"banner {shown!r} does not start with {BANNER_PREFIX!r} (give /proc/version)")
    banner = banner.rstrip(b"\0")
    if b"\0" in banner:
        raise SymbolsError("banner contains a NUL byte")
    if not banner.endswith(b"\n"):
        banner += b"\n"  # the kernel's linux_banner always ends with one; /proc/version too
    return banner


def release_from_banner(banner: bytes) -> str:
    words = banner.decode("latin-1").split()
    return words[2] if len(words) > 2 else "unknown"


def banner_identifier(isf: Dict[str, Any]) -> bytes:
    """The bytes Volatility 3 searches the memory image for to choose this symbol table: the
    base64 ``constant_data`` of the ``linux_banner`` symbol (what its LinuxIdentifier reads),
    checked to be typed as an array of ``char`` holding the banner and its NUL."""
    symbol = isf.get("symbols", {}).get("linux_banner")
    if not symbol:
        raise SymbolsError("ISF has no linux_banner symbol: Volatility cannot match it to an image")
    data = symbol.get("constant_data")
    if not data:
        raise SymbolsError("ISF's linux_banner has no constant_data: Volatility cannot match it")
    identifier = base64.b64decode(data)
    kind = symbol.get("type", {})
    subtype = kind.get("subtype", {})
    if kind.get("kind") != "array" or subtype.get("kind") != "base" or subtype.get("name") != "char":
        raise SymbolsError("ISF's linux_banner is not typed as an array of char")
    if kind.get("count") != len(identifier):
        raise SymbolsError(
            f"ISF's linux_banner type holds {kind.get('count')} chars, its constant {len(identifier)} bytes"
        )
    if not identifier.startswith(BANNER_PREFIX.encode()) or not identifier.endswith(b"\n\0"):
        raise SymbolsError("ISF's linux_banner constant is not a 'Linux version ...\\n' string")
    return identifier


def _producer_version() -> str:
    # The schema wants MAJOR.MINOR.PATCH; a development suffix is dropped.
    match = re.match(r"^(\d+)\.(\d+)\.(\d+)", memdump.__version__)
    return ".".join(match.groups()) if match else "0.0.0"


class _Builder:
    def __init__(
        self,
        btf: Btf,
        kallsyms: kallsyms_mod.Kallsyms,
        banner: bytes,
        release: Optional[str],
        btf_sha256: Optional[str],
        kallsyms_sha256: Optional[str],
        extra_symbols: Optional[Dict[str, int]],
        kaslr_offset: Optional[int],
    ):
        self.btf = btf
        self.types = btf.types
        self.kallsyms = kallsyms
        self.banner = check_banner(banner)
        self.release = release or release_from_banner(self.banner)
        self.btf_sha256 = btf_sha256
        self.kallsyms_sha256 = kallsyms_sha256
        self.extra_symbols = extra_symbols or {}
        self.kaslr_offset = kaslr_offset
        self.descriptors: List[Optional[Descriptor]] = [None] * len(btf.types)
        self.composite_names: Dict[int, str] = {}
        self.enum_names: Dict[int, str] = {}
        # (name, is_union) -> the ISF name a FWD of that kind and name refers to
        self.forward_targets: Dict[Tuple[str, bool], str] = {}
        self._signatures: Dict[int, str] = {}
        self._in_progress: Set[int] = set()

    # -- entry ------------------------------------------------------------------------------

    def build(self) -> Dict[str, Any]:
        missing = kallsyms_mod.missing(self.kallsyms)
        missing = [name for name in missing if name not in self.extra_symbols]
        if missing:
            raise KallsymsError(
                f"kallsyms lacks {', '.join(missing)}: the kernel was built without"
                " CONFIG_KALLSYMS_ALL, so data symbols have no addresses and Volatility cannot use"
                " the symbol table"
            )
        if self.kaslr_offset is None:
            self.kaslr_offset = derive_kaslr_offset(self.kallsyms)
        base_types = self._base_types()
        self._name_composites()
        self._name_enums()
        user_types = self._user_types()
        enums = self._enums(base_types)
        symbols = self._symbols(user_types, base_types)
        return {
            "metadata": self._metadata(),
            "base_types": base_types,
            "user_types": user_types,
            "enums": enums,
            "symbols": symbols,
        }

    def _metadata(self) -> Dict[str, Any]:
        linux: Dict[str, Any] = {}
        types_source: Dict[str, Any] = {"name": f"btf-{self.release}"}
        if self.btf_sha256:
            types_source.update(hash_type="sha256", hash_value=self.btf_sha256)
        # kallsyms lines are System.map lines: "<address> <type> <name>"
        symbols_source: Dict[str, Any] = {"kind": "system-map", "name": f"kallsyms-{self.release}"}
        if self.kallsyms_sha256:
            symbols_source.update(hash_type="sha256", hash_value=self.kallsyms_sha256)
        linux["types"] = [types_source]
        linux["symbols"] = [symbols_source]
        return {
            "format": FORMAT_VERSION,
            "producer": {"name": PRODUCER_NAME, "version": _producer_version()},
            "linux": linux,
        }

    # -- base types -------------------------------------------------------------------------

    def _base_types(self) -> Dict[str, Any]:
        found: Dict[str, Dict[str, Any]] = {}
        carriers: Dict[str, Dict[str, Any]] = {}
        for t in self.types:
            if t.kind == Kind.INT:
                assert isinstance(t, IntType)
                if t.encoding & IntEncoding.BOOL:
                    kind = "bool"
                elif t.encoding & IntEncoding.CHAR or t.name in _CHAR_NAMES:
                    kind = "char"
                else:
                    kind = "int"
                entry = {"size": t.size, "signed": t.signed, "kind": kind, "endian": "little"}
                target = carriers if t.is_bitfield_carrier else found
                target.setdefault(t.name, entry)
            elif t.kind == Kind.FLOAT:
                found.setdefault(t.name, {"size": t.size, "signed": True, "kind": "float", "endian": "little"})
        for name, entry in carriers.items():
            found.setdefault(name, entry)
        for name, (size, signed, kind) in STANDARD_BASE_TYPES.items():
            found.setdefault(name, {"size": size, "signed": signed, "kind": kind, "endian": "little"})
        pointer_size = found["long unsigned int"]["size"]
        found["pointer"] = {"size": pointer_size, "signed": False, "kind": "int", "endian": "little"}
        found["void"] = {"size": 0, "signed": False, "kind": "void", "endian": "little"}
        return {name: found[name] for name in sorted(found)}

    # -- naming -----------------------------------------------------------------------------

    def _weights(self, ids: Sequence[int]) -> Dict[int, int]:
        """How often the rest of the BTF refers to each of ``ids``, directly or through one
        pointer, typedef or qualifier: the measure of which same-named type is "the" one."""
        wanted = set(ids)
        refs: Dict[int, int] = {}
        via: Dict[int, List[int]] = {}
        for type_id, t in enumerate(self.types):
            for ref in btf_mod.references(t):
                refs[ref] = refs.get(ref, 0) + 1
            if t.kind == Kind.PTR or t.kind in _TRANSPARENT:
                if t.ref in wanted:  # type: ignore[attr-defined]
                    via.setdefault(t.ref, []).append(type_id)  # type: ignore[attr-defined]
        return {i: refs.get(i, 0) + sum(refs.get(m, 0) for m in via.get(i, ())) for i in ids}

    def _name_composites(self) -> None:
        types = self.types
        by_name: Dict[str, List[int]] = {}
        anonymous: List[int] = []
        for type_id, t in enumerate(types):
            if t.kind == Kind.STRUCT or t.kind == Kind.UNION:
                if t.name:
                    by_name.setdefault(t.name, []).append(type_id)
                else:
                    anonymous.append(type_id)
        names = self.composite_names
        clashing = [i for ids in by_name.values() if len(ids) > 1 for i in ids]
        weights = self._weights(clashing) if clashing else {}
        for name, ids in by_name.items():
            if len(ids) == 1:
                names[ids[0]] = name
                continue
            keeper = max(ids, key=lambda i: (weights[i], types[i].kind == Kind.STRUCT, -i))
            for type_id in ids:
                if type_id == keeper:
                    names[type_id] = name
                else:
                    candidate = f"{name}_{self._hash(type_id)}"
                    names[type_id] = candidate if candidate not in by_name else f"{candidate}_{type_id}"
        taken = set(names.values())
        for t in types:
            if t.kind == Kind.TYPEDEF and t.name and t.name not in taken:
                target = t.ref  # type: ignore[attr-defined]
                tt = types[target]
                if (tt.kind == Kind.STRUCT or tt.kind == Kind.UNION) and not tt.name and target not in names:
                    names[target] = t.name
                    taken.add(t.name)
        for type_id in anonymous:
            if type_id not in names:
                names[type_id] = f"unnamed_{self._hash(type_id)}"
        # A FWD names a struct or union; it stands for the definition of its kind and name.
        for name, ids in by_name.items():
            for is_union in (False, True):
                kind = Kind.UNION if is_union else Kind.STRUCT
                of_kind = [i for i in ids if types[i].kind == kind]
                if not of_kind:
                    continue
                plain = [i for i in of_kind if names[i] == name]
                chosen = plain[0] if plain else of_kind[0]
                self.forward_targets[(name, is_union)] = names[chosen]

    def _name_enums(self) -> None:
        types = self.types
        by_name: Dict[str, List[int]] = {}
        anonymous: List[int] = []
        for type_id, t in enumerate(types):
            if t.kind == Kind.ENUM or t.kind == Kind.ENUM64:
                if t.name:
                    by_name.setdefault(t.name, []).append(type_id)
                else:
                    anonymous.append(type_id)
        names = self.enum_names
        clashing = [i for ids in by_name.values() if len(ids) > 1 for i in ids]
        weights = self._weights(clashing) if clashing else {}
        for name, ids in by_name.items():
            if len(ids) == 1:
                names[ids[0]] = name
                continue
            keeper = max(ids, key=lambda i: (weights[i], -i))
            for type_id in ids:
                if type_id == keeper:
                    names[type_id] = name
                else:
                    candidate = f"{name}_{self._hash(type_id)}"
                    names[type_id] = candidate if candidate not in by_name else f"{candidate}_{type_id}"
        taken = set(names.values())
        for t in types:
            if t.kind == Kind.TYPEDEF and t.name and t.name not in taken:
                target = t.ref  # type: ignore[attr-defined]
                tt = types[target]
                if (tt.kind == Kind.ENUM or tt.kind == Kind.ENUM64) and not tt.name and target not in names:
                    names[target] = t.name
                    taken.add(t.name)
        for type_id in anonymous:
            if type_id not in names:
                names[type_id] = f"unnamed_{self._hash(type_id)}"

    def _hash(self, type_id: int) -> str:
        return hashlib.sha1(self._signature(type_id).encode("utf-8", "surrogateescape")).hexdigest()[:16]

    def _signature(self, type_id: int) -> str:
        """What a struct, union or enum looks like in the ISF: its kind, size and fields (or
        constants). Named types inside are referred to by their BTF name, anonymous ones by
        their own signature, so no name depends on a name computed later."""
        cached = self._signatures.get(type_id)
        if cached is not None:
            return cached
        t = self.types[type_id]
        if type_id in self._in_progress:
            return f"#{type_id}"
        self._in_progress.add(type_id)
        try:
            if isinstance(t, CompositeType):
                parts = [f"{t.kind.name} {t.size}"]
                for m in t.members:
                    parts.append(f"{m.name}@{m.bit_offset}:{m.bitfield_size}:{self._shape(m.type_id, 0)}")
                text = "{" + ";".join(parts) + "}"
            elif isinstance(t, EnumType):
                text = f"enum {t.size} {int(t.signed)} " + ",".join(f"{v.name}={v.value}" for v in t.values)
            else:
                text = self._shape(type_id, 0)
        finally:
            self._in_progress.discard(type_id)
        self._signatures[type_id] = text
        return text

    def _shape(self, type_id: int, depth: int) -> str:
        if depth > _MAX_DEPTH:
            raise BtfError(f"BTF: type {type_id} nests deeper than {_MAX_DEPTH} levels")
        t = self.types[type_id]
        kind = t.kind
        if kind in _TRANSPARENT or kind == Kind.VAR:
            return self._shape(t.ref, depth + 1)  # type: ignore[attr-defined]
        if kind == Kind.PTR:
            return self._shape(t.ref, depth + 1) + "*"  # type: ignore[attr-defined]
        if kind == Kind.ARRAY:
            return f"{self._shape(t.elem, depth + 1)}[{t.count}]"  # type: ignore[attr-defined]
        if kind in (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FWD):
            if t.name:
                return f"{kind.name} {t.name}"
            return self._signature(type_id)
        if kind in (Kind.FUNC, Kind.FUNC_PROTO):
            return "fn"
        return t.name or kind.name

    # -- type descriptors -------------------------------------------------------------------

    def descriptor(self, type_id: int, depth: int = 0) -> Descriptor:
        found = self.descriptors[type_id]
        if found is not None:
            return found
        if depth > _MAX_DEPTH:
            raise BtfError(f"BTF: type {type_id} nests deeper than {_MAX_DEPTH} levels (a loop?)")
        t = self.types[type_id]
        kind = t.kind
        result: Descriptor
        if kind in _TRANSPARENT:
            result = self.descriptor(t.ref, depth + 1)  # type: ignore[attr-defined]
        elif kind == Kind.PTR:
            result = {"kind": "pointer", "subtype": self.descriptor(t.ref, depth + 1)}  # type: ignore[attr-defined]
        elif kind == Kind.STRUCT:
            result = {"kind": "struct", "name": self.composite_names[type_id]}
        elif kind == Kind.UNION:
            result = {"kind": "union", "name": self.composite_names[type_id]}
        elif kind == Kind.ARRAY:
            assert isinstance(t, ArrayType)
            result = {"kind": "array", "count": t.count, "subtype": self.descriptor(t.elem, depth + 1)}
        elif kind == Kind.INT or kind == Kind.FLOAT:
            result = {"kind": "base", "name": t.name}
        elif kind == Kind.ENUM or kind == Kind.ENUM64:
            result = {"kind": "enum", "name": self.enum_names[type_id]}
        elif kind == Kind.FUNC_PROTO or kind == Kind.FUNC:
            result = _FUNCTION
        elif kind == Kind.FWD:
            assert isinstance(t, FwdType)
            word = "union" if t.is_union else "struct"
            result = {"kind": word, "name": self.forward_targets.get((t.name, t.is_union), t.name)}
        elif kind == Kind.VOID:
            result = _VOID
        elif kind == Kind.VAR:
            result = self.descriptor(t.ref, depth + 1)  # type: ignore[attr-defined]
        else:
            raise BtfError(f"BTF: type {type_id} ({kind.name}) is used where a data type belongs")
        self.descriptors[type_id] = result
        return result

    def _storage(self, type_id: int) -> Tuple[int, Descriptor]:
        """The size and descriptor of a bitfield's declared type (an integer or an enum)."""
        stripped = self.btf.strip(type_id)
        t = self.types[stripped]
        if isinstance(t, (IntType, EnumType)):
            return t.size, self.descriptor(stripped)
        raise BtfError(f"BTF: a bitfield of type {type_id} ({t.kind.name}) is not an integer or enum")

    # -- user types -------------------------------------------------------------------------

    def _user_types(self) -> Dict[str, Any]:
        types = self.types
        result: Dict[str, Any] = {}
        for type_id in sorted(self.composite_names, key=self.composite_names.__getitem__):
            name = self.composite_names[type_id]
            if name in result:
                continue  # an identical anonymous type already listed under this name
            t = types[type_id]
            assert isinstance(t, CompositeType)
            result[name] = {
                "kind": "union" if t.kind == Kind.UNION else "struct",
                "size": t.size,
                "fields": self._fields(type_id, t),
            }
        return result

    def _fields(self, owner: int, t: CompositeType) -> Dict[str, Any]:
        fields: Dict[str, Any] = {}
        types = self.types
        descriptor = self.descriptor
        for m in t.members:
            member_type = types[m.type_id]
            bit_length = m.bitfield_size
            bit_offset = m.bit_offset
            if not bit_length and member_type.kind == Kind.INT and member_type.is_bitfield_carrier:  # type: ignore[attr-defined]
                # BTF without kind_flag: the INT carries the width and an extra offset.
                bit_length = member_type.bits  # type: ignore[attr-defined]
                bit_offset += member_type.bit_offset  # type: ignore[attr-defined]
            if bit_length:
                size, base = self._storage(m.type_id)
                unit = size * 8
                start = (bit_offset // unit) * size if unit else bit_offset // 8
                position = bit_offset - start * 8
                if position + bit_length > unit:
                    # a bitfield straddling its natural unit (packed structs): start at its byte
                    start, position = bit_offset // 8, bit_offset % 8
                field: Dict[str, Any] = {
                    "type": {"kind": "bitfield", "bit_position": position, "bit_length": bit_length, "type": base},
                    "offset": start,
                }
            else:
                field = {"type": descriptor(m.type_id), "offset": bit_offset // 8}
            name = m.name
            if not name:
                stripped = types[self.btf.strip(m.type_id)]
                if stripped.kind != Kind.STRUCT and stripped.kind != Kind.UNION:
                    continue  # an unnamed bitfield: padding, nothing to read
                name = f"unnamed_field_{bit_offset // 8:x}"
                suffix = 1
                while name in fields:
                    name = f"unnamed_field_{bit_offset // 8:x}_{suffix}"
                    suffix += 1
                field["anonymous"] = True
            elif name in fields:
                raise BtfError(f"BTF: type {owner} ({t.name or 'anonymous'}) has two members named {name!r}")
            fields[name] = field
        return fields

    # -- enums ------------------------------------------------------------------------------

    def _enums(self, base_types: Dict[str, Any]) -> Dict[str, Any]:
        result: Dict[str, Any] = {}
        types = self.types
        for type_id in sorted(self.enum_names, key=self.enum_names.__getitem__):
            name = self.enum_names[type_id]
            if name in result:
                continue
            t = types[type_id]
            assert isinstance(t, EnumType)
            signed = t.signed or any(v.value < 0 for v in t.values)
            base = ENUM_BASES.get((t.size, signed))
            if base is None or base not in base_types:
                base = next(
                    (n for n, b in base_types.items() if b["kind"] in ("int", "char") and b["size"] == t.size
                     and b["signed"] == signed),
                    "void",
                )
            constants: Dict[str, int] = {}
            for v in t.values:
                constants.setdefault(v.name, v.value)
            result[name] = {"size": t.size, "base": base, "constants": constants}
        return result

    # -- symbols ----------------------------------------------------------------------------

    def _symbols(self, user_types: Dict[str, Any], base_types: Dict[str, Any]) -> Dict[str, Any]:
        addresses: Dict[str, int] = {name: s.address for name, s in self.kallsyms.symbols.items()}
        for name, address in self.extra_symbols.items():
            addresses.setdefault(name, address)
        offset = self.kaslr_offset
        if offset:
            image = X86_64_KERNEL_MAP
            addresses = {name: a - offset if a >= image else a for name, a in addresses.items()}
        symbols: Dict[str, Dict[str, Any]] = {name: {"address": addresses[name]} for name in sorted(addresses)}

        for name, ids in btf_mod.variables(self.btf).items():
            entry = symbols.get(name)
            if entry is None:
                continue
            typed = self._variable_type(ids)
            if typed is not None:
                entry["type"] = typed

        typedefs: Optional[Dict[str, int]] = None
        for known in KNOWN_SYMBOL_TYPES:
            entry = symbols.get(known.name)
            if entry is None or "type" in entry:
                continue
            if typedefs is None:
                typedefs = {t.name: i for i, t in enumerate(self.types) if t.kind == Kind.TYPEDEF}
            typed = self._declared_type(known, user_types, base_types, typedefs)
            if typed is not None:
                entry["type"] = typed

        banner = self.banner + b"\0"  # the array holds the string and its terminating NUL
        symbols["linux_banner"]["type"] = {
            "kind": "array",
            "count": len(banner),
            "subtype": {"kind": "base", "name": "char"},
        }
        symbols["linux_banner"]["constant_data"] = base64.b64encode(banner).decode("ascii")
        return symbols

    def _variable_type(self, ids: List[int]) -> Optional[Descriptor]:
        """The type of a variable BTF lists under one name: a global definition wins; several
        different ones leave the symbol untyped rather than guessed."""
        globals_ = [i for i in ids if self.types[i].linkage == Linkage.GLOBAL]  # type: ignore[attr-defined]
        descriptors = [self.descriptor(i) for i in (globals_ or ids)]
        if len({repr(d) for d in descriptors}) == 1:
            return descriptors[0]
        return None

    def _declared_type(
        self,
        known: KnownSymbol,
        user_types: Dict[str, Any],
        base_types: Dict[str, Any],
        typedefs: Dict[str, int],
    ) -> Optional[Descriptor]:
        declaration = parse_declaration(known.declaration)
        target = declaration.target
        element: Descriptor
        element_size: Optional[int]
        if target.startswith("struct ") or target.startswith("union "):
            word, _, name = target.partition(" ")
            isf_name = self.forward_targets.get((name, word == "union"))
            if isf_name is None or isf_name not in user_types:
                return None  # this kernel has no such type (an older or newer layout)
            element = {"kind": word, "name": isf_name}
            element_size = user_types[isf_name]["size"]
        elif target in base_types:
            element = {"kind": "base", "name": target}
            element_size = base_types[target]["size"]
        elif target in typedefs:
            element = self.descriptor(typedefs[target])
            element_size = None
        else:
            return None
        for _ in range(declaration.pointers):
            element = {"kind": "pointer", "subtype": element}
            element_size = base_types["pointer"]["size"]
        if declaration.count is None:
            return element
        count = declaration.count
        if count < 0:
            gap = self.kallsyms.gap_after(known.name) if known.name in self.kallsyms else 0
            count = gap // element_size if element_size else 0
        return {"kind": "array", "count": count, "subtype": element}
