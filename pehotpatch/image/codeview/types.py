"""CodeView type records (PDB TPI/IPI streams, COFF ``.debug$T``) and a lazy TypeTable.

:class:`TypeRecords` indexes a buffer of records cheaply (one ``struct`` read per record:
its offset and leaf kind); :class:`TypeTable` decodes a record only when asked and caches
the result.  Type names are C-like (``struct ring *``, ``const char *``, ``int[16]``,
``void (*)(int)``).

Cycles: a struct that points to itself through a pointer is normal and harmless, since
names stop at a struct's name.  A cycle that does not go through a struct name (a
pointer to itself, a struct containing itself by value, a field list continued into
itself) is malformed input and raises :class:`~pehotpatch.errors.FormatError`, as
does any chain deeper than :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field

from pehotpatch.errors import FormatError

from ._binary import cstring, cstring_tail, int_numeric

MAX_DEPTH = 96
MAX_NAME = 1 << 14  # characters of a parameter list in a composed type name
MAX_FIELDS = 1 << 16  # members across one struct's field-list chain
# Characters of composed names (type names, signatures) one table keeps: beyond it names
# are no longer composed (``<type 0x1234>``).  Nested function types can make every name
# of a crafted stream MAX_NAME long; this keeps their total, and the time, bounded.
NAME_BUDGET = 1 << 26
FIRST_TYPE_INDEX = 0x1000

# --- leaf kinds -----------------------------------------------------------------------
LF_VTSHAPE = 0x000A
LF_LABEL = 0x000E
LF_ENDPRECOMP = 0x0014
LF_MODIFIER = 0x1001
LF_POINTER = 0x1002
LF_PROCEDURE = 0x1008
LF_MFUNCTION = 0x1009
LF_ARGLIST = 0x1201
LF_FIELDLIST = 0x1203
LF_BITFIELD = 0x1205
LF_METHODLIST = 0x1206
LF_BCLASS = 0x1400
LF_VBCLASS = 0x1401
LF_IVBCLASS = 0x1402
LF_INDEX = 0x1404
LF_VFUNCTAB = 0x1409
LF_ENUMERATE = 0x1502
LF_ARRAY = 0x1503
LF_CLASS = 0x1504
LF_STRUCTURE = 0x1505
LF_UNION = 0x1506
LF_ENUM = 0x1507
LF_PRECOMP = 0x1509
LF_MEMBER = 0x150D
LF_STMEMBER = 0x150E
LF_METHOD = 0x150F
LF_NESTTYPE = 0x1510
LF_ONEMETHOD = 0x1511
LF_TYPESERVER2 = 0x1515
LF_INTERFACE = 0x1519
LF_BINTERFACE = 0x151A
LF_VFTABLE = 0x151D
LF_FUNC_ID = 0x1601
LF_MFUNC_ID = 0x1602
LF_BUILDINFO = 0x1603
LF_SUBSTR_LIST = 0x1604
LF_STRING_ID = 0x1605
LF_UDT_SRC_LINE = 0x1606
LF_UDT_MOD_SRC_LINE = 0x1607

UDT_KINDS = frozenset({LF_CLASS, LF_STRUCTURE, LF_UNION, LF_INTERFACE, LF_ENUM})

# class/struct/union/enum property bits
PROP_PACKED = 0x0001
PROP_FORWARD_REF = 0x0080
PROP_SCOPED = 0x0100
PROP_HAS_UNIQUE_NAME = 0x0200

# modifier bits
MOD_CONST = 0x1
MOD_VOLATILE = 0x2
MOD_UNALIGNED = 0x4

# pointer attributes
PTR_KIND_MASK = 0x1F
PTR_MODE_SHIFT = 5
PTR_MODE_MASK = 0x7
PTR_CONST = 1 << 10
PTR_VOLATILE = 1 << 9
PTR_UNALIGNED = 1 << 11
PTR_RESTRICT = 1 << 12
PTR_SIZE_SHIFT = 13
PTR_SIZE_MASK = 0x3F
PTR_MODE_POINTER = 0
PTR_MODE_LVALUE_REF = 1
PTR_MODE_DATA_MEMBER = 2
PTR_MODE_MEMBER_FUNCTION = 3
PTR_MODE_RVALUE_REF = 4
_PTR_KIND_SIZE = {0x00: 2, 0x01: 4, 0x02: 4, 0x0A: 4, 0x0B: 6, 0x0C: 8}

CALLING_CONVENTIONS = {
    0x00: "__cdecl",
    0x01: "__far __cdecl",
    0x02: "__pascal",
    0x03: "__far __pascal",
    0x04: "__fastcall",
    0x05: "__far __fastcall",
    0x07: "__stdcall",
    0x08: "__far __stdcall",
    0x09: "__syscall",
    0x0A: "__far __syscall",
    0x0B: "__thiscall",
    0x0C: "__mipscall",
    0x0D: "__generic",
    0x0E: "__alphacall",
    0x0F: "__ppccall",
    0x10: "__shcall",
    0x11: "__armcall",
    0x12: "__am33call",
    0x13: "__tricall",
    0x14: "__sh5call",
    0x15: "__m32rcall",
    0x16: "__clrcall",
    0x17: "__inline",
    0x18: "__vectorcall",
    0x19: "__swiftcall",
}
CC_NEAR_C = 0x00
CC_THISCALL = 0x0B

# --- simple (built-in) types: index < 0x1000, kind in the low byte, mode in bits 8-11 ---
SIMPLE_KINDS: dict[int, tuple[str, int | None]] = {
    0x00: ("<no type>", None),
    0x03: ("void", None),
    0x07: ("<not translated>", None),
    0x08: ("HRESULT", 4),
    0x10: ("signed char", 1),
    0x20: ("unsigned char", 1),
    0x70: ("char", 1),
    0x71: ("wchar_t", 2),
    0x7A: ("char16_t", 2),
    0x7B: ("char32_t", 4),
    0x7C: ("char8_t", 1),
    0x68: ("__int8", 1),
    0x69: ("unsigned __int8", 1),
    0x11: ("short", 2),
    0x21: ("unsigned short", 2),
    0x72: ("__int16", 2),
    0x73: ("unsigned __int16", 2),
    0x12: ("long", 4),
    0x22: ("unsigned long", 4),
    0x74: ("int", 4),
    0x75: ("unsigned int", 4),
    0x13: ("long long", 8),
    0x23: ("unsigned long long", 8),
    0x76: ("__int64", 8),
    0x77: ("unsigned __int64", 8),
    0x14: ("__int128", 16),
    0x24: ("unsigned __int128", 16),
    0x78: ("__int128", 16),
    0x79: ("unsigned __int128", 16),
    0x46: ("_Float16", 2),
    0x40: ("float", 4),
    0x45: ("float", 4),
    0x44: ("__float48", 6),
    0x41: ("double", 8),
    0x42: ("long double", 10),
    0x43: ("__float128", 16),
    0x56: ("_Complex _Float16", 4),
    0x50: ("_Complex float", 8),
    0x55: ("_Complex float", 8),
    0x54: ("_Complex __float48", 12),
    0x51: ("_Complex double", 16),
    0x52: ("_Complex long double", 20),
    0x53: ("_Complex __float128", 32),
    0x30: ("bool", 1),
    0x31: ("__bool16", 2),
    0x32: ("__bool32", 4),
    0x33: ("__bool64", 8),
    0x34: ("__bool128", 16),
}
# simple pointer modes -> pointer size (0 = direct, not a pointer)
SIMPLE_MODE_PTR_SIZE = {1: 2, 2: 4, 3: 4, 4: 4, 5: 6, 6: 8, 7: 16}


# --- decoded records --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ModifierRecord:
    modified_type: int
    modifiers: int

    @property
    def is_const(self) -> bool:
        return bool(self.modifiers & MOD_CONST)

    @property
    def is_volatile(self) -> bool:
        return bool(self.modifiers & MOD_VOLATILE)


@dataclass(frozen=True, slots=True)
class PointerRecord:
    referent_type: int
    attributes: int
    containing_class: int = 0  # pointer-to-member only

    @property
    def kind(self) -> int:
        return self.attributes & PTR_KIND_MASK

    @property
    def mode(self) -> int:
        return (self.attributes >> PTR_MODE_SHIFT) & PTR_MODE_MASK

    @property
    def size(self) -> int:
        s = (self.attributes >> PTR_SIZE_SHIFT) & PTR_SIZE_MASK
        return s or _PTR_KIND_SIZE.get(self.kind, 0)

    @property
    def is_const(self) -> bool:
        return bool(self.attributes & PTR_CONST)

    @property
    def is_volatile(self) -> bool:
        return bool(self.attributes & PTR_VOLATILE)

    @property
    def is_reference(self) -> bool:
        return self.mode in (PTR_MODE_LVALUE_REF, PTR_MODE_RVALUE_REF)


@dataclass(frozen=True, slots=True)
class ProcedureRecord:
    return_type: int
    calling_convention: int
    options: int
    parameter_count: int
    arg_list: int


@dataclass(frozen=True, slots=True)
class MemberFunctionRecord:
    return_type: int
    class_type: int
    this_type: int
    calling_convention: int
    options: int
    parameter_count: int
    arg_list: int
    this_adjustment: int


@dataclass(frozen=True, slots=True)
class ArgListRecord:
    arg_types: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ArrayRecord:
    element_type: int
    index_type: int
    size: int
    name: str


@dataclass(frozen=True, slots=True)
class BitfieldRecord:
    type: int
    bit_size: int
    bit_offset: int


@dataclass(frozen=True, slots=True)
class ClassRecord:
    """LF_CLASS / LF_STRUCTURE / LF_INTERFACE / LF_UNION (unions have no base/vshape)."""

    kind: int
    member_count: int
    properties: int
    field_list: int
    derived_from: int
    vshape: int
    size: int
    name: str
    unique_name: str | None

    @property
    def is_forward_ref(self) -> bool:
        return bool(self.properties & PROP_FORWARD_REF)


@dataclass(frozen=True, slots=True)
class EnumRecord:
    member_count: int
    properties: int
    underlying_type: int
    field_list: int
    name: str
    unique_name: str | None

    kind: int = LF_ENUM

    @property
    def is_forward_ref(self) -> bool:
        return bool(self.properties & PROP_FORWARD_REF)


# field-list members
@dataclass(frozen=True, slots=True)
class MemberField:
    attributes: int
    type: int
    offset: int
    name: str


@dataclass(frozen=True, slots=True)
class StaticMemberField:
    attributes: int
    type: int
    name: str


@dataclass(frozen=True, slots=True)
class BaseClassField:
    attributes: int
    type: int
    offset: int
    virtual: bool = False
    vbptr_type: int = 0
    vbptr_offset: int = 0
    vtable_index: int = 0


@dataclass(frozen=True, slots=True)
class EnumerateField:
    attributes: int
    value: int
    name: str


@dataclass(frozen=True, slots=True)
class OneMethodField:
    attributes: int
    type: int
    vftable_offset: int | None
    name: str


@dataclass(frozen=True, slots=True)
class MethodField:
    count: int
    method_list: int
    name: str


@dataclass(frozen=True, slots=True)
class NestedTypeField:
    type: int
    name: str


@dataclass(frozen=True, slots=True)
class VFuncTabField:
    type: int


@dataclass(frozen=True, slots=True)
class IndexField:
    continuation: int


FieldMember = (
    MemberField
    | StaticMemberField
    | BaseClassField
    | EnumerateField
    | OneMethodField
    | MethodField
    | NestedTypeField
    | VFuncTabField
    | IndexField
)


@dataclass(frozen=True, slots=True)
class FieldListRecord:
    members: tuple[FieldMember, ...]


@dataclass(frozen=True, slots=True)
class FuncIdRecord:
    parent_scope: int
    function_type: int
    name: str


@dataclass(frozen=True, slots=True)
class MemberFuncIdRecord:
    class_type: int
    function_type: int
    name: str


@dataclass(frozen=True, slots=True)
class StringIdRecord:
    id: int
    string: str


@dataclass(frozen=True, slots=True)
class UnknownRecord:
    kind: int


TypeRecord = (
    ModifierRecord
    | PointerRecord
    | ProcedureRecord
    | MemberFunctionRecord
    | ArgListRecord
    | ArrayRecord
    | BitfieldRecord
    | ClassRecord
    | EnumRecord
    | FieldListRecord
    | FuncIdRecord
    | MemberFuncIdRecord
    | StringIdRecord
    | UnknownRecord
)


# --- layouts --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Field:
    name: str
    offset: int
    type_name: str
    size: int | None
    bit_offset: int | None = None
    bit_size: int | None = None
    type_index: int = 0


@dataclass(frozen=True, slots=True)
class TypeLayout:
    """The shape of a type: for struct/class/union its data members in declaration order."""

    name: str
    size: int | None
    kind: str  # struct, class, union, interface, enum, pointer, array, base, function, ...
    fields: list[Field] = field(default_factory=list)
    bases: list[Field] = field(default_factory=list)
    enumerators: list[tuple[str, int]] = field(default_factory=list)
    has_vfptr: bool = False
    is_forward_ref: bool = False  # a forward reference whose definition is not in the table
    type_index: int = 0


# --- record index -----------------------------------------------------------------------
_HH = struct.Struct("<HH")


class TypeRecords:
    """A buffer of type records indexed by type index (offsets computed on first use).

    ``buf[start:end]`` holds the records for indexes ``first_index, first_index+1, ...``.
    """

    __slots__ = (
        "buf",
        "start",
        "end",
        "first_index",
        "path",
        "expected_count",
        "_offsets",
        "_kinds",
    )

    def __init__(
        self,
        buf: bytes,
        start: int,
        end: int,
        first_index: int = FIRST_TYPE_INDEX,
        path: str | None = None,
        expected_count: int | None = None,
    ) -> None:
        if start < 0 or end > len(buf) or start > end:
            raise FormatError(f"type records: range {start:#x}..{end:#x} outside the buffer", path)
        if not 0 < first_index <= 0xFFFFFF:
            raise FormatError(f"type records: bad first type index {first_index:#x}", path)
        self.buf = buf
        self.start = start
        self.end = end
        self.first_index = first_index
        self.path = path
        self.expected_count = expected_count
        self._offsets: array | None = None
        self._kinds: array | None = None

    def _index(self) -> None:
        buf, pos, end, path = self.buf, self.start, self.end, self.path
        offsets = array("I")
        kinds = array("H")
        add_off = offsets.append
        add_kind = kinds.append
        unpack = _HH.unpack_from
        while pos < end:
            if pos + 4 > end:
                raise FormatError(f"type record header truncated at offset {pos:#x}", path)
            reclen, kind = unpack(buf, pos)
            if reclen < 2:
                raise FormatError(f"type record at offset {pos:#x} has bad length {reclen}", path)
            add_off(pos)
            add_kind(kind)
            pos += 2 + reclen
        if pos != end:
            raise FormatError(f"type record at offset {offsets[-1]:#x} runs past the end", path)
        if self.expected_count is not None and len(offsets) != self.expected_count:
            raise FormatError(
                f"type stream holds {len(offsets)} records, its header says {self.expected_count}",
                path,
            )
        self._offsets = offsets
        self._kinds = kinds

    def __len__(self) -> int:
        if self._offsets is None:
            self._index()
        return len(self._offsets)  # type: ignore[arg-type]

    @property
    def end_index(self) -> int:
        return self.first_index + len(self)

    def __contains__(self, ti: int) -> bool:
        return self.first_index <= ti < self.first_index + len(self)

    def locate(self, ti: int) -> tuple[int, int, int] | None:
        """``(kind, body_start, record_end)`` of type ``ti``, or None when out of range."""
        if self._offsets is None:
            self._index()
        i = ti - self.first_index
        offsets = self._offsets
        if i < 0 or i >= len(offsets):  # type: ignore[arg-type]
            return None
        pos = offsets[i]  # type: ignore[index]
        reclen = struct.unpack_from("<H", self.buf, pos)[0]
        return self._kinds[i], pos + 4, pos + 2 + reclen  # type: ignore[index]

    def kind(self, ti: int) -> int | None:
        if self._kinds is None:
            self._index()
        i = ti - self.first_index
        if i < 0 or i >= len(self._kinds):  # type: ignore[arg-type]
            return None
        return self._kinds[i]  # type: ignore[index]

    def indexes_of_kinds(self, kinds: frozenset[int]) -> list[int]:
        if self._offsets is None:
            self._index()
        first = self.first_index
        return [first + i for i, k in enumerate(self._kinds) if k in kinds]  # type: ignore[arg-type]


# --- record decoding --------------------------------------------------------------------
_I = struct.Struct("<I")
_H = struct.Struct("<H")
_MOD = struct.Struct("<IH")
_PTR = struct.Struct("<II")
_PROC = struct.Struct("<IBBHI")
_MFUNC = struct.Struct("<IIIBBHIi")
_ARR = struct.Struct("<II")
_BITF = struct.Struct("<IBB")
_CLASS = struct.Struct("<HHIII")
_UNION = struct.Struct("<HHI")
_ENUM = struct.Struct("<HHII")
_IDREC = struct.Struct("<II")


def _too_short(kind: int, pos: int, path: str | None) -> FormatError:
    return FormatError(f"type record {kind:#06x} at offset {pos:#x} is too short", path)


def _udt_names(
    buf: bytes, pos: int, end: int, props: int, path: str | None
) -> tuple[str, str | None]:
    name, pos = cstring(buf, pos, end, "type name", path)
    unique = None
    if props & PROP_HAS_UNIQUE_NAME:
        unique, pos = cstring(buf, pos, end, "type unique name", path)
    return name, unique


def decode_record(buf: bytes, kind: int, pos: int, end: int, path: str | None) -> TypeRecord:
    """Decode the body ``buf[pos:end]`` of a type record of leaf ``kind``."""
    n = end - pos
    if kind == LF_POINTER:
        if n < 8:
            raise _too_short(kind, pos, path)
        ref, attrs = _PTR.unpack_from(buf, pos)
        cls = 0
        mode = (attrs >> PTR_MODE_SHIFT) & PTR_MODE_MASK
        if mode in (PTR_MODE_DATA_MEMBER, PTR_MODE_MEMBER_FUNCTION) and n >= 12:
            cls = _I.unpack_from(buf, pos + 8)[0]
        return PointerRecord(ref, attrs, cls)
    if kind == LF_MODIFIER:
        if n < 6:
            raise _too_short(kind, pos, path)
        return ModifierRecord(*_MOD.unpack_from(buf, pos))
    if kind == LF_PROCEDURE:
        if n < 12:
            raise _too_short(kind, pos, path)
        return ProcedureRecord(*_PROC.unpack_from(buf, pos))
    if kind == LF_MFUNCTION:
        if n < 24:
            raise _too_short(kind, pos, path)
        return MemberFunctionRecord(*_MFUNC.unpack_from(buf, pos))
    if kind == LF_ARGLIST:
        if n < 4:
            raise _too_short(kind, pos, path)
        count = _I.unpack_from(buf, pos)[0]
        if count > (n - 4) // 4:
            raise FormatError(f"LF_ARGLIST at offset {pos:#x}: {count} arguments do not fit", path)
        return ArgListRecord(struct.unpack_from(f"<{count}I", buf, pos + 4))
    if kind in (LF_STRUCTURE, LF_CLASS, LF_INTERFACE):
        if n < 16:
            raise _too_short(kind, pos, path)
        count, props, flist, derived, vshape = _CLASS.unpack_from(buf, pos)
        size, p = int_numeric(buf, pos + 16, end, "struct size", path)
        name, unique = _udt_names(buf, p, end, props, path)
        return ClassRecord(kind, count, props, flist, derived, vshape, size, name, unique)
    if kind == LF_UNION:
        if n < 8:
            raise _too_short(kind, pos, path)
        count, props, flist = _UNION.unpack_from(buf, pos)
        size, p = int_numeric(buf, pos + 8, end, "union size", path)
        name, unique = _udt_names(buf, p, end, props, path)
        return ClassRecord(kind, count, props, flist, 0, 0, size, name, unique)
    if kind == LF_ENUM:
        if n < 12:
            raise _too_short(kind, pos, path)
        count, props, underlying, flist = _ENUM.unpack_from(buf, pos)
        name, unique = _udt_names(buf, pos + 12, end, props, path)
        return EnumRecord(count, props, underlying, flist, name, unique)
    if kind == LF_ARRAY:
        if n < 8:
            raise _too_short(kind, pos, path)
        elem, index = _ARR.unpack_from(buf, pos)
        size, p = int_numeric(buf, pos + 8, end, "array size", path)
        name = cstring_tail(buf, p, end, "array name", path)
        return ArrayRecord(elem, index, size, name)
    if kind == LF_BITFIELD:
        if n < 6:
            raise _too_short(kind, pos, path)
        return BitfieldRecord(*_BITF.unpack_from(buf, pos))
    if kind == LF_FIELDLIST:
        return FieldListRecord(_decode_field_list(buf, pos, end, path))
    if kind == LF_FUNC_ID:
        if n < 8:
            raise _too_short(kind, pos, path)
        scope, ftype = _IDREC.unpack_from(buf, pos)
        name = cstring_tail(buf, pos + 8, end, "LF_FUNC_ID name", path)
        return FuncIdRecord(scope, ftype, name)
    if kind == LF_MFUNC_ID:
        if n < 8:
            raise _too_short(kind, pos, path)
        cls, ftype = _IDREC.unpack_from(buf, pos)
        name = cstring_tail(buf, pos + 8, end, "LF_MFUNC_ID name", path)
        return MemberFuncIdRecord(cls, ftype, name)
    if kind == LF_STRING_ID:
        if n < 4:
            raise _too_short(kind, pos, path)
        sid = _I.unpack_from(buf, pos)[0]
        return StringIdRecord(sid, cstring_tail(buf, pos + 4, end, "LF_STRING_ID", path))
    return UnknownRecord(kind)


def _decode_field_list(buf: bytes, pos: int, end: int, path: str | None) -> tuple[FieldMember, ...]:
    out: list[FieldMember] = []
    h = _H.unpack_from
    while pos < end:
        leaf = buf[pos]
        if leaf >= 0xF0:  # LF_PAD0..LF_PAD15: skip to the next member
            pos += leaf & 0x0F if leaf & 0x0F else 1
            continue
        if pos + 2 > end:
            raise FormatError(f"field list member truncated at offset {pos:#x}", path)
        leaf = h(buf, pos)[0]
        p = pos + 2
        if leaf == LF_MEMBER:
            if p + 6 > end:
                raise _too_short(leaf, pos, path)
            attrs, ti = struct.unpack_from("<HI", buf, p)
            off, p = int_numeric(buf, p + 6, end, "LF_MEMBER offset", path)
            name, p = cstring(buf, p, end, "LF_MEMBER name", path)
            out.append(MemberField(attrs, ti, off, name))
        elif leaf == LF_ENUMERATE:
            if p + 2 > end:
                raise _too_short(leaf, pos, path)
            attrs = h(buf, p)[0]
            value, p = int_numeric(buf, p + 2, end, "LF_ENUMERATE value", path)
            name, p = cstring(buf, p, end, "LF_ENUMERATE name", path)
            out.append(EnumerateField(attrs, value, name))
        elif leaf in (LF_BCLASS, LF_BINTERFACE):
            if p + 6 > end:
                raise _too_short(leaf, pos, path)
            attrs, ti = struct.unpack_from("<HI", buf, p)
            off, p = int_numeric(buf, p + 6, end, "LF_BCLASS offset", path)
            out.append(BaseClassField(attrs, ti, off))
        elif leaf in (LF_VBCLASS, LF_IVBCLASS):
            if p + 10 > end:
                raise _too_short(leaf, pos, path)
            attrs, ti, vbptr = struct.unpack_from("<HII", buf, p)
            vboff, p = int_numeric(buf, p + 10, end, "LF_VBCLASS offset", path)
            vtidx, p = int_numeric(buf, p, end, "LF_VBCLASS index", path)
            out.append(BaseClassField(attrs, ti, vboff, True, vbptr, vboff, vtidx))
        elif leaf == LF_STMEMBER:
            if p + 6 > end:
                raise _too_short(leaf, pos, path)
            attrs, ti = struct.unpack_from("<HI", buf, p)
            name, p = cstring(buf, p + 6, end, "LF_STMEMBER name", path)
            out.append(StaticMemberField(attrs, ti, name))
        elif leaf == LF_ONEMETHOD:
            if p + 6 > end:
                raise _too_short(leaf, pos, path)
            attrs, ti = struct.unpack_from("<HI", buf, p)
            p += 6
            vfoff = None
            if ((attrs >> 2) & 7) in (4, 6):  # introducing virtual / pure introducing virtual
                if p + 4 > end:
                    raise _too_short(leaf, pos, path)
                vfoff = struct.unpack_from("<i", buf, p)[0]
                p += 4
            name, p = cstring(buf, p, end, "LF_ONEMETHOD name", path)
            out.append(OneMethodField(attrs, ti, vfoff, name))
        elif leaf == LF_METHOD:
            if p + 6 > end:
                raise _too_short(leaf, pos, path)
            count, mlist = struct.unpack_from("<HI", buf, p)
            name, p = cstring(buf, p + 6, end, "LF_METHOD name", path)
            out.append(MethodField(count, mlist, name))
        elif leaf == LF_NESTTYPE:
            if p + 6 > end:
                raise _too_short(leaf, pos, path)
            ti = struct.unpack_from("<I", buf, p + 2)[0]
            name, p = cstring(buf, p + 6, end, "LF_NESTTYPE name", path)
            out.append(NestedTypeField(ti, name))
        elif leaf == LF_VFUNCTAB:
            if p + 6 > end:
                raise _too_short(leaf, pos, path)
            out.append(VFuncTabField(struct.unpack_from("<I", buf, p + 2)[0]))
            p += 6
        elif leaf == LF_INDEX:
            if p + 6 > end:
                raise _too_short(leaf, pos, path)
            out.append(IndexField(struct.unpack_from("<I", buf, p + 2)[0]))
            p += 6
        else:
            # Field-list members carry no length: an unknown one ends the list.
            raise FormatError(f"unknown field list member {leaf:#06x} at offset {pos:#x}", path)
        pos = p
    return tuple(out)


# --- the table --------------------------------------------------------------------------
_UDT_KEYWORD = {
    LF_STRUCTURE: "struct",
    LF_CLASS: "class",
    LF_INTERFACE: "interface",
    LF_UNION: "union",
    LF_ENUM: "enum",
}
_NAME_PREFIXES = ("struct ", "class ", "union ", "enum ", "interface ")


def is_simple(ti: int) -> bool:
    return ti < FIRST_TYPE_INDEX


def simple_type_name(ti: int) -> str:
    kind = ti & 0xFF
    mode = (ti >> 8) & 0xF
    base = SIMPLE_KINDS.get(kind, (f"<simple {kind:#x}>", None))[0]
    if mode == 0:
        return base
    return f"{base} *"


def simple_type_size(ti: int) -> int | None:
    mode = (ti >> 8) & 0xF
    if mode:
        return SIMPLE_MODE_PTR_SIZE.get(mode)
    return SIMPLE_KINDS.get(ti & 0xFF, ("", None))[1]


class TypeTable:
    """Lazy, cached access to a type stream and (optionally) a separate id stream.

    In a PDB the TPI (types) and IPI (ids: LF_FUNC_ID, LF_MFUNC_ID, LF_STRING_ID...)
    have separate index spaces; in an object file's ``.debug$T`` they share one, so
    ``ids`` is left None there.
    """

    def __init__(
        self, types: TypeRecords | None, ids: TypeRecords | None = None, path: str | None = None
    ):
        self.types = types
        self.ids = ids
        self.path = path if path is not None else (types.path if types else None)
        self._records: dict[int, TypeRecord] = {}
        self._id_records: dict[int, TypeRecord] = {}
        self._names: dict[int, str] = {}
        self._sizes: dict[int, int | None] = {}
        self._ptrs: dict[int, bool] = {}
        self._resolved: dict[int, int] = {}
        self._defs: dict[tuple[int, str], int] | None = None
        self._udt_by_name: dict[str, int] | None = None
        self._sig_templates: dict[int, str] = {}
        self._proc_sigs: dict[int, tuple[int, str | None]] = {}
        self._id_names: dict[int, str | None] = {}
        self._name_budget = NAME_BUDGET + 8 * (len(types.buf) if types is not None else 0)

    # -- raw access --
    def __len__(self) -> int:
        return len(self.types) if self.types is not None else 0

    def record(self, ti: int) -> TypeRecord | None:
        """The decoded type record ``ti`` (None for simple types and unknown indexes)."""
        rec = self._records.get(ti)
        if rec is not None:
            return rec
        if ti < FIRST_TYPE_INDEX or self.types is None:
            return None
        loc = self.types.locate(ti)
        if loc is None:
            return None
        rec = decode_record(self.types.buf, loc[0], loc[1], loc[2], self.path)
        self._records[ti] = rec
        return rec

    def id_record(self, ti: int) -> TypeRecord | None:
        """The decoded id record ``ti`` (IPI in a PDB, the shared stream in an object)."""
        if self.ids is None:
            return self.record(ti)
        rec = self._id_records.get(ti)
        if rec is not None:
            return rec
        if ti < FIRST_TYPE_INDEX:
            return None
        loc = self.ids.locate(ti)
        if loc is None:
            return None
        rec = decode_record(self.ids.buf, loc[0], loc[1], loc[2], self.path)
        self._id_records[ti] = rec
        return rec

    def kind(self, ti: int) -> int | None:
        if ti < FIRST_TYPE_INDEX or self.types is None:
            return None
        return self.types.kind(ti)

    def _err(self, msg: str) -> FormatError:
        return FormatError(msg, self.path)

    # -- ids --
    def function_id(self, id_index: int) -> FuncIdRecord | MemberFuncIdRecord | None:
        rec = self.id_record(id_index)
        if isinstance(rec, (FuncIdRecord, MemberFuncIdRecord)):
            return rec
        return None

    def id_name(self, id_index: int) -> str | None:
        """Name of an LF_FUNC_ID (``Class::name`` for an LF_MFUNC_ID), or an LF_STRING_ID."""
        if id_index in self._id_names:
            return self._id_names[id_index]
        name = self._id_name(id_index)
        self._id_names[id_index] = name
        return name

    def _id_name(self, id_index: int) -> str | None:
        rec = self.id_record(id_index)
        if isinstance(rec, FuncIdRecord):
            if rec.parent_scope:
                scope = self.id_record(rec.parent_scope)
                if isinstance(scope, StringIdRecord) and scope.string:
                    return f"{scope.string}::{rec.name}"
            return rec.name
        if isinstance(rec, MemberFuncIdRecord):
            cls = self.record(rec.class_type)
            if isinstance(cls, (ClassRecord, EnumRecord)):
                return f"{cls.name}::{rec.name}"
            return rec.name
        if isinstance(rec, StringIdRecord):
            return rec.string
        return None

    def function_type_of(self, index: int, is_id: bool) -> int:
        """The TPI function type of a procedure symbol's type field (an id when ``is_id``)."""
        if not is_id:
            return index
        rec = self.function_id(index)
        return rec.function_type if rec is not None else 0

    # -- forward references --
    def _build_defs(self) -> dict[tuple[int, str], int]:
        defs: dict[tuple[int, str], int] = {}
        by_name: dict[str, int] = {}
        if self.types is not None:
            for ti in self.types.indexes_of_kinds(UDT_KINDS):
                rec = self.record(ti)
                if not isinstance(rec, (ClassRecord, EnumRecord)) or rec.is_forward_ref:
                    continue
                group = LF_ENUM if rec.kind == LF_ENUM else LF_STRUCTURE
                if rec.unique_name:
                    defs.setdefault((group, "u:" + rec.unique_name), ti)
                defs.setdefault((group, "n:" + rec.name), ti)
                by_name.setdefault(rec.name, ti)
        self._defs = defs
        self._udt_by_name = by_name
        return defs

    def resolve(self, ti: int) -> int:
        """The definition of a forward-referenced struct/class/union/enum (else ``ti``)."""
        r = self._resolved.get(ti)
        if r is not None:
            return r
        rec = self.record(ti)
        out = ti
        if isinstance(rec, (ClassRecord, EnumRecord)) and rec.is_forward_ref:
            defs = self._defs if self._defs is not None else self._build_defs()
            group = LF_ENUM if rec.kind == LF_ENUM else LF_STRUCTURE
            hit = None
            if rec.unique_name:
                hit = defs.get((group, "u:" + rec.unique_name))
            if hit is None:
                hit = defs.get((group, "n:" + rec.name))
            if hit is not None:
                out = hit
        self._resolved[ti] = out
        return out

    def udt_by_name(self, name: str) -> int | None:
        """Type index of the definition of struct/class/union/enum ``name`` (or None)."""
        if self._udt_by_name is None:
            self._build_defs()
        assert self._udt_by_name is not None
        for prefix in _NAME_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        return self._udt_by_name.get(name)

    # -- names --
    def type_name(self, ti: int) -> str:
        """A C-like name: ``struct ring *``, ``const char *``, ``int[16]``, ``void (*)(int)``."""
        name = self._names.get(ti)
        if name is None:
            name = self._decl(ti, "", 0) if self._name_budget > 0 else f"<type {ti:#x}>"
            self._name_budget -= len(name)
            self._names[ti] = name
        return name

    def _decl(self, ti: int, inner: str, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise self._err(f"type {ti:#x}: type chain deeper than {MAX_DEPTH} (cycle?)")
        if len(inner) > 2 * MAX_NAME:  # return types nesting function types
            inner = inner[: 2 * MAX_NAME] + "..."
        if ti < FIRST_TYPE_INDEX:
            kind = ti & 0xFF
            mode = (ti >> 8) & 0xF
            base = SIMPLE_KINDS.get(kind, (f"<simple {kind:#x}>", None))[0]
            if mode:
                inner = "*" + inner
            return _join(base, inner)
        rec = self.record(ti)
        if rec is None:
            return _join(f"<type {ti:#x}>", inner)
        if isinstance(rec, ModifierRecord):
            quals = _quals(rec.modifiers)
            target = rec.modified_type
            if self._is_pointer(target, depth + 1):
                # qualifiers of a pointer go after its star: char *const
                return self._decl_pointer(target, inner, depth + 1, quals)
            if not quals:
                return self._decl(target, inner, depth + 1)
            return quals + " " + self._decl(target, inner, depth + 1)
        if isinstance(rec, PointerRecord):
            return self._decl_pointer(ti, inner, depth, "")
        if isinstance(rec, ArrayRecord):
            esize = self._size(rec.element_type, depth + 1)
            count = str(rec.size // esize) if esize else ("" if rec.size == 0 else "?")
            return self._decl(rec.element_type, f"{inner}[{count}]", depth + 1)
        if isinstance(rec, (ProcedureRecord, MemberFunctionRecord)):
            args = self._arg_names(rec.arg_list, depth + 1)
            cc = self._cc_prefix(rec)
            return self._decl(rec.return_type, f"{cc}{inner}({args})", depth + 1)
        if isinstance(rec, (ClassRecord, EnumRecord)):
            return _join(f"{_UDT_KEYWORD.get(rec.kind, 'struct')} {rec.name}", inner)
        if isinstance(rec, BitfieldRecord):
            return self._decl(rec.type, inner, depth + 1)
        if isinstance(rec, UnknownRecord):
            return _join(f"<leaf {rec.kind:#06x}>", inner)
        return _join(f"<type {ti:#x}>", inner)

    def _is_pointer(self, ti: int, depth: int) -> bool:
        if ti < FIRST_TYPE_INDEX:
            return bool((ti >> 8) & 0xF)
        return isinstance(self.record(ti), PointerRecord)

    def _decl_pointer(self, ti: int, inner: str, depth: int, extra_quals: str) -> str:
        if depth > MAX_DEPTH:
            raise self._err(f"type {ti:#x}: type chain deeper than {MAX_DEPTH} (cycle?)")
        if ti < FIRST_TYPE_INDEX:  # simple pointer with a modifier on it
            sep = " " if extra_quals and inner and inner[0] not in "[)" else ""
            star = "*" + extra_quals + sep
            return self._decl(ti & 0xFF, star + inner, depth + 1)
        rec = self.record(ti)
        assert isinstance(rec, PointerRecord)
        mode = rec.mode
        if mode == PTR_MODE_LVALUE_REF:
            star = "&"
        elif mode == PTR_MODE_RVALUE_REF:
            star = "&&"
        elif mode in (PTR_MODE_DATA_MEMBER, PTR_MODE_MEMBER_FUNCTION):
            cls = self.record(rec.containing_class) if rec.containing_class else None
            cname = cls.name if isinstance(cls, (ClassRecord, EnumRecord)) else "?"
            star = f"{cname}::*"
        else:
            star = "*"
        quals = " ".join(q for q in (_ptr_quals(rec.attributes), extra_quals) if q)
        if quals:
            star += quals + (" " if inner and inner[0] not in "[)" else "")
        new_inner = star + inner
        ref = rec.referent_type
        if ref >= FIRST_TYPE_INDEX:
            target = self.record(ref)
            if isinstance(target, (ProcedureRecord, MemberFunctionRecord)):
                cc = self._cc_prefix(target)
                args = self._arg_names(target.arg_list, depth + 1)
                return self._decl(target.return_type, f"({cc}{new_inner})({args})", depth + 1)
            if isinstance(target, ArrayRecord):
                new_inner = f"({new_inner})"
        return self._decl(ref, new_inner, depth + 1)

    def _cc_prefix(self, rec: ProcedureRecord | MemberFunctionRecord) -> str:
        cc = rec.calling_convention
        if cc == CC_NEAR_C or (isinstance(rec, MemberFunctionRecord) and cc == CC_THISCALL):
            return ""
        return CALLING_CONVENTIONS.get(cc, f"__callconv{cc:#x}") + " "

    def _arg_types(self, arglist: int, depth: int) -> tuple[int, ...]:
        if arglist == 0:
            return ()
        rec = self.record(arglist)
        if not isinstance(rec, ArgListRecord):
            raise self._err(f"type {arglist:#x} is not an LF_ARGLIST")
        return rec.arg_types

    def _arg_names(self, arglist: int, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise self._err(f"type {arglist:#x}: type chain deeper than {MAX_DEPTH} (cycle?)")
        args = self._arg_types(arglist, depth)
        if not args:
            return "void"
        names = []
        for i, a in enumerate(args):
            if a == 0 and i == len(args) - 1:
                names.append("...")
                continue
            cached = self._names.get(a)
            if cached is None:
                cached = self._decl(a, "", depth + 1)
                self._names[a] = cached
            names.append(cached)
        joined = ", ".join(names)
        if len(joined) > MAX_NAME:
            # nested function types can multiply name lengths; keep names bounded
            joined = joined[:MAX_NAME] + "..."
        return joined

    def procedure_signature(
        self, type_index: int, is_id: bool, name: str
    ) -> tuple[int, str | None]:
        """For a procedure symbol's type field: ``(function type, signature or None)``.

        ``is_id`` says the field holds an id (S_GPROC32_ID and friends), resolved through
        its LF_FUNC_ID / LF_MFUNC_ID.  Results are cached per type field value.
        """
        key = (type_index << 1) | is_id
        hit = self._proc_sigs.get(key)
        if hit is None:
            ftype = self.function_type_of(type_index, is_id)
            tmpl = None
            if ftype and self.kind(ftype) in (LF_PROCEDURE, LF_MFUNCTION):
                self.signature(ftype, "")
                tmpl = self._sig_templates[ftype]
            hit = (ftype, tmpl)
            self._proc_sigs[key] = hit
        ftype, tmpl = hit
        return ftype, (tmpl.replace("\0", name) if tmpl is not None else None)

    def signature(self, func_type: int, name: str) -> str:
        """``int telemetry_push(struct ring *, unsigned int)`` for an LF_PROCEDURE/LF_MFUNCTION.

        The calling convention is shown only when it is not the default one (``__cdecl``
        for functions, ``__thiscall`` or ``__cdecl`` for member functions).
        """
        tmpl = self._sig_templates.get(func_type)
        if tmpl is not None:
            return tmpl.replace("\0", name)
        rec = self.record(func_type)
        if not isinstance(rec, (ProcedureRecord, MemberFunctionRecord)):
            raise self._err(f"type {func_type:#x} is not a function type")
        args = self._arg_names(rec.arg_list, 1)
        cc = self._cc_prefix(rec)
        suffix = ""
        if isinstance(rec, MemberFunctionRecord) and rec.this_type:
            this = self.record(rec.this_type)
            if isinstance(this, PointerRecord):
                pointee = self.record(this.referent_type)
                if isinstance(pointee, ModifierRecord) and pointee.is_const:
                    suffix = " const"
        # The declarator is built once per function type around a placeholder name.
        if self._name_budget > 0:
            tmpl = self._decl(rec.return_type, f"{cc}\0({args}){suffix}", 1)
        else:
            tmpl = f"<type {func_type:#x}> \0(...)"
        self._name_budget -= len(tmpl)
        self._sig_templates[func_type] = tmpl
        return tmpl.replace("\0", name)

    # -- sizes and properties --
    def type_size(self, ti: int) -> int | None:
        """Size in bytes, or None for void, functions and undefined forward references."""
        return self._size(ti, 0)

    def _size(self, ti: int, depth: int) -> int | None:
        if ti < FIRST_TYPE_INDEX:
            return simple_type_size(ti)
        if ti in self._sizes:
            return self._sizes[ti]
        if depth > MAX_DEPTH:
            raise self._err(f"type {ti:#x}: type chain deeper than {MAX_DEPTH} (cycle?)")
        rec = self.record(self.resolve(ti))
        size: int | None
        if isinstance(rec, PointerRecord):
            size = rec.size or None
        elif isinstance(rec, ModifierRecord):
            size = self._size(rec.modified_type, depth + 1)
        elif isinstance(rec, ClassRecord):
            size = None if rec.is_forward_ref else rec.size
        elif isinstance(rec, EnumRecord):
            size = None if rec.is_forward_ref else self._size(rec.underlying_type, depth + 1)
        elif isinstance(rec, ArrayRecord):
            size = rec.size
        elif isinstance(rec, BitfieldRecord):
            size = self._size(rec.type, depth + 1)
        else:
            size = None
        self._sizes[ti] = size
        return size

    def is_const(self, ti: int) -> bool:
        """True when an object of this type is read-only (const, or an array of const)."""
        for _ in range(MAX_DEPTH):
            if ti < FIRST_TYPE_INDEX:
                return False
            rec = self.record(ti)
            if isinstance(rec, ModifierRecord):
                if rec.is_const:
                    return True
                ti = rec.modified_type
            elif isinstance(rec, ArrayRecord):
                ti = rec.element_type
            elif isinstance(rec, PointerRecord):
                return rec.is_const
            else:
                return False
        raise self._err(f"type {ti:#x}: modifier chain deeper than {MAX_DEPTH} (cycle?)")

    def contains_pointers(self, ti: int) -> bool:
        """True when the type is a pointer or holds one (in a member, base class or element)."""
        return self._contains_ptr(ti, set(), 0)

    def _contains_ptr(self, ti: int, active: set[int], depth: int) -> bool:
        if ti < FIRST_TYPE_INDEX:
            return bool((ti >> 8) & 0xF)
        hit = self._ptrs.get(ti)
        if hit is not None:
            return hit
        if depth > MAX_DEPTH:
            raise self._err(f"type {ti:#x}: type nesting deeper than {MAX_DEPTH}")
        if ti in active:
            raise self._err(f"type {ti:#x} contains itself by value")
        active.add(ti)
        real = self.resolve(ti)
        rec = self.record(real)
        result = False
        if isinstance(rec, PointerRecord):
            result = True
        elif isinstance(rec, ModifierRecord):
            result = self._contains_ptr(rec.modified_type, active, depth + 1)
        elif isinstance(rec, ArrayRecord):
            result = self._contains_ptr(rec.element_type, active, depth + 1)
        elif isinstance(rec, ClassRecord) and not rec.is_forward_ref:
            if real != ti and real in active:
                raise self._err(f"type {real:#x} contains itself by value")
            active.add(real)
            for m in self._members(rec.field_list):
                if isinstance(m, VFuncTabField):
                    result = True
                elif isinstance(m, (MemberField, BaseClassField)):
                    if isinstance(m, BaseClassField) and m.virtual:
                        result = True  # a virtual base brings a vbptr
                    elif self._contains_ptr(m.type, active, depth + 1):
                        result = True
                if result:
                    break
            active.discard(real)
        active.discard(ti)
        self._ptrs[ti] = result
        return result

    def _members(self, field_list: int) -> list[FieldMember]:
        """All members of a field list, following LF_INDEX continuations."""
        out: list[FieldMember] = []
        seen: set[int] = set()
        ti = field_list
        while ti:
            if ti in seen:
                raise self._err(f"field list {ti:#x} continues into itself")
            seen.add(ti)
            rec = self.record(ti)
            if rec is None:
                break
            if not isinstance(rec, FieldListRecord):
                raise self._err(f"type {ti:#x} is not an LF_FIELDLIST")
            ti = 0
            for m in rec.members:
                if isinstance(m, IndexField):
                    ti = m.continuation
                else:
                    out.append(m)
            if len(out) > MAX_FIELDS:
                raise self._err(f"field list {field_list:#x} has more than {MAX_FIELDS} members")
        return out

    # -- layouts --
    def layout(self, ti: int) -> TypeLayout:
        """Fields, bases and size of a struct/class/union (enumerators of an enum)."""
        real = self.resolve(ti)
        name = self.type_name(ti)
        size = self.type_size(ti)
        rec = self.record(real)
        if isinstance(rec, ClassRecord):
            kind = _UDT_KEYWORD.get(rec.kind, "struct")
            if rec.is_forward_ref:
                return TypeLayout(name, None, kind, is_forward_ref=True, type_index=real)
            fields: list[Field] = []
            bases: list[Field] = []
            has_vfptr = False
            for m in self._members(rec.field_list):
                if isinstance(m, MemberField):
                    mrec = self.record(m.type)
                    if isinstance(mrec, BitfieldRecord):
                        fields.append(
                            Field(
                                m.name,
                                m.offset,
                                self.type_name(mrec.type),
                                self.type_size(mrec.type),
                                mrec.bit_offset,
                                mrec.bit_size,
                                m.type,
                            )
                        )
                    else:
                        fields.append(
                            Field(
                                m.name,
                                m.offset,
                                self.type_name(m.type),
                                self.type_size(m.type),
                                type_index=m.type,
                            )
                        )
                elif isinstance(m, BaseClassField):
                    bname = self.type_name(m.type)
                    bases.append(
                        Field(bname, m.offset, bname, self.type_size(m.type), type_index=m.type)
                    )
                elif isinstance(m, VFuncTabField):
                    has_vfptr = True
            return TypeLayout(name, size, kind, fields, bases, has_vfptr=has_vfptr, type_index=real)
        if isinstance(rec, EnumRecord):
            if rec.is_forward_ref:
                return TypeLayout(name, None, "enum", is_forward_ref=True, type_index=real)
            enums = [
                (m.name, m.value)
                for m in self._members(rec.field_list)
                if isinstance(m, EnumerateField)
            ]
            return TypeLayout(name, size, "enum", enumerators=enums, type_index=real)
        if ti < FIRST_TYPE_INDEX:
            kind = "pointer" if (ti >> 8) & 0xF else "base"
        elif isinstance(rec, PointerRecord):
            kind = "reference" if rec.is_reference else "pointer"
        elif isinstance(rec, ModifierRecord):
            kind = "modifier"
        elif isinstance(rec, ArrayRecord):
            kind = "array"
        elif isinstance(rec, (ProcedureRecord, MemberFunctionRecord)):
            kind = "function"
        elif isinstance(rec, BitfieldRecord):
            kind = "bitfield"
        else:
            kind = "unknown"
        return TypeLayout(name, size, kind, type_index=real)


def _join(base: str, inner: str) -> str:
    if not inner:
        return base
    if inner[0] == "[":
        return base + inner
    return f"{base} {inner}"


def _quals(mods: int) -> str:
    q = []
    if mods & MOD_CONST:
        q.append("const")
    if mods & MOD_VOLATILE:
        q.append("volatile")
    if mods & MOD_UNALIGNED:
        q.append("__unaligned")
    return " ".join(q)


def _ptr_quals(attrs: int) -> str:
    q = []
    if attrs & PTR_CONST:
        q.append("const")
    if attrs & PTR_VOLATILE:
        q.append("volatile")
    if attrs & PTR_RESTRICT:
        q.append("__restrict")
    return " ".join(q)
