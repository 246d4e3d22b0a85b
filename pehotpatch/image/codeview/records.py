"""The decoded CodeView type records (one frozen dataclass per leaf kind pehp reads) and
the members of field lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from .leaves import (
    LF_ENUM,
    MOD_CONST,
    PROP_FORWARD_REF,
    PTR_CONST,
    PTR_KIND_MASK,
    PTR_KIND_SIZE,
    PTR_MODE_LVALUE_REF,
    PTR_MODE_MASK,
    PTR_MODE_RVALUE_REF,
    PTR_MODE_SHIFT,
    PTR_SIZE_MASK,
    PTR_SIZE_SHIFT,
)


@dataclass(frozen=True, slots=True)
class ModifierRecord:
    modified_type: int
    modifiers: int

    @property
    def is_const(self) -> bool:
        return bool(self.modifiers & MOD_CONST)

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
        return s or PTR_KIND_SIZE.get(self.kind, 0)

    @property
    def is_const(self) -> bool:
        return bool(self.attributes & PTR_CONST)

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
