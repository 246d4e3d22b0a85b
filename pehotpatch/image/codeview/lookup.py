"""The base layer of the type table: decoded records on demand (cached), ids and their
names, and forward references resolved to their definitions.
"""

from __future__ import annotations

from pehotpatch.errors import FormatError

from .decode import decode_record
from .leaves import (
    FIRST_TYPE_INDEX,
    LF_ENUM,
    LF_STRUCTURE,
    UDT_KINDS,
    UDT_PREFIXES,
)
from .records import (
    ClassRecord,
    EnumRecord,
    FuncIdRecord,
    MemberFuncIdRecord,
    StringIdRecord,
    TypeRecord,
)
from .stream import TypeRecords


class TypeLookup:
    """Lazy, cached access to a type stream and (optionally) a separate id stream.

    In a PDB the TPI (types) and IPI (ids: LF_FUNC_ID, LF_MFUNC_ID, LF_STRING_ID...)
    have separate index spaces; in an object file's ``.debug$T`` they share one, so
    ``ids`` is left None there.  This layer decodes records on demand, names ids and
    resolves forward references; the layers above add sizes, names and layouts.
    """

    def __init__(
        self, types: TypeRecords | None, ids: TypeRecords | None = None, path: str | None = None
    ) -> None:
        self.types = types
        self.ids = ids
        self.path = path if path is not None else (types.path if types else None)
        self._records: dict[int, TypeRecord] = {}
        self._id_records: dict[int, TypeRecord] = {}
        self._resolved: dict[int, int] = {}
        self._defs: dict[tuple[int, str], int] | None = None
        self._udt_by_name: dict[str, int] | None = None
        self._id_names: dict[int, str | None] = {}

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
        for prefix in UDT_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        return self._udt_by_name.get(name)
