"""The type table's facts about types: sizes, const-ness, pointers held, members.

A struct containing itself by value, a field list continued into itself or a chain
deeper than :data:`~.leaves.MAX_DEPTH` is malformed input and raises
:class:`~pehotpatch.errors.FormatError`.
"""

from __future__ import annotations

from .leaves import (
    FIRST_TYPE_INDEX,
    MAX_DEPTH,
    MAX_FIELDS,
    simple_type_size,
)
from .lookup import TypeLookup
from .records import (
    ArrayRecord,
    BaseClassField,
    BitfieldRecord,
    ClassRecord,
    EnumRecord,
    FieldListRecord,
    FieldMember,
    IndexField,
    MemberField,
    ModifierRecord,
    PointerRecord,
    VFuncTabField,
)
from .stream import TypeRecords


class TypeFacts(TypeLookup):
    """Sizes and properties of types: size in bytes, const-ness, whether a type holds
    pointers, and the members of a field list."""

    def __init__(
        self, types: TypeRecords | None, ids: TypeRecords | None = None, path: str | None = None
    ) -> None:
        super().__init__(types, ids, path)
        self._sizes: dict[int, int | None] = {}
        self._ptrs: dict[int, bool] = {}

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
