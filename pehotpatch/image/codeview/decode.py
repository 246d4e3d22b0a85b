"""Decoding one CodeView type record's body into its :mod:`.records` dataclass.

Numeric leaves, names and field lists are bounds-checked against the record; a record
too short for its leaf raises :class:`~pehotpatch.errors.FormatError`.
"""

from __future__ import annotations

import struct

from pehotpatch.errors import FormatError

from ._binary import cstring, cstring_tail, int_numeric
from .leaves import (
    LF_ARGLIST,
    LF_ARRAY,
    LF_BCLASS,
    LF_BINTERFACE,
    LF_BITFIELD,
    LF_CLASS,
    LF_ENUM,
    LF_ENUMERATE,
    LF_FIELDLIST,
    LF_FUNC_ID,
    LF_INDEX,
    LF_INTERFACE,
    LF_IVBCLASS,
    LF_MEMBER,
    LF_METHOD,
    LF_MFUNC_ID,
    LF_MFUNCTION,
    LF_MODIFIER,
    LF_NESTTYPE,
    LF_ONEMETHOD,
    LF_POINTER,
    LF_PROCEDURE,
    LF_STMEMBER,
    LF_STRING_ID,
    LF_STRUCTURE,
    LF_UNION,
    LF_VBCLASS,
    LF_VFUNCTAB,
    PROP_HAS_UNIQUE_NAME,
    PTR_MODE_DATA_MEMBER,
    PTR_MODE_MASK,
    PTR_MODE_MEMBER_FUNCTION,
    PTR_MODE_SHIFT,
)
from .records import (
    ArgListRecord,
    ArrayRecord,
    BaseClassField,
    BitfieldRecord,
    ClassRecord,
    EnumerateField,
    EnumRecord,
    FieldListRecord,
    FieldMember,
    FuncIdRecord,
    IndexField,
    MemberField,
    MemberFuncIdRecord,
    MemberFunctionRecord,
    MethodField,
    ModifierRecord,
    NestedTypeField,
    OneMethodField,
    PointerRecord,
    ProcedureRecord,
    StaticMemberField,
    StringIdRecord,
    TypeRecord,
    UnknownRecord,
    VFuncTabField,
)

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
