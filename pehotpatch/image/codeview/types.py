"""The CodeView type table: lazy, cached access to type records (PDB TPI/IPI streams,
COFF ``.debug$T``), and the layouts of types.

The table is built in layers: :mod:`.lookup` (records, ids, forward references),
:mod:`.facts` (sizes, const-ness, pointers), :mod:`.names` (names and signatures) and
this module (layouts).  The records are indexed by :mod:`.stream`, decoded by
:mod:`.decode` into :mod:`.records`; leaf kinds and built-in types are in :mod:`.leaves`.
:class:`TypeTable` decodes a record only when asked and caches the result.  Type names
are C-like (``struct ring *``, ``const char *``, ``int[16]``, ``void (*)(int)``).

Cycles: a struct that points to itself through a pointer is normal and harmless, since
names stop at a struct's name.  A cycle that does not go through a struct name (a
pointer to itself, a struct containing itself by value, a field list continued into
itself) is malformed input and raises :class:`~pehotpatch.errors.FormatError`, as
does any chain deeper than :data:`~.leaves.MAX_DEPTH`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .leaves import FIRST_TYPE_INDEX, UDT_KEYWORD
from .names import TypeNames
from .records import (
    ArrayRecord,
    BaseClassField,
    BitfieldRecord,
    ClassRecord,
    EnumerateField,
    EnumRecord,
    MemberField,
    MemberFunctionRecord,
    ModifierRecord,
    OneMethodField,
    PointerRecord,
    ProcedureRecord,
    VFuncTabField,
)


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
    # the class's own virtual methods (LF_ONEMETHOD): (name, vtable offset) for those it
    # introduces, (name, None) for overrides; overload groups (LF_METHOD) are not read
    virtuals: tuple[tuple[str, int | None], ...] = ()



#: LF_ONEMETHOD method properties (attribute bits 2-4) of virtual methods: virtual
#: (an override), introducing virtual, pure virtual, pure introducing virtual.
_VIRTUAL = frozenset({1, 4, 5, 6})


class TypeTable(TypeNames):
    """Lazy, cached access to a type stream: records (:class:`TypeLookup`), sizes and
    properties (:class:`TypeFacts`), names and signatures (:class:`TypeNames`) and the
    layouts of types (here)."""

    def layout(self, ti: int) -> TypeLayout:
        """Fields, bases and size of a struct/class/union (enumerators of an enum)."""
        real = self.resolve(ti)
        name = self.type_name(ti)
        size = self.type_size(ti)
        rec = self.record(real)
        if isinstance(rec, ClassRecord):
            kind = UDT_KEYWORD.get(rec.kind, "struct")
            if rec.is_forward_ref:
                return TypeLayout(name, None, kind, is_forward_ref=True, type_index=real)
            fields: list[Field] = []
            bases: list[Field] = []
            has_vfptr = False
            virtuals: list[tuple[str, int | None]] = []
            for m in self._members(rec.field_list):
                if isinstance(m, OneMethodField) and (m.attributes >> 2) & 7 in _VIRTUAL:
                    virtuals.append((m.name, m.vftable_offset))
                    continue
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
            return TypeLayout(name, size, kind, fields, bases, has_vfptr=has_vfptr, type_index=real,
                              virtuals=tuple(virtuals))
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
