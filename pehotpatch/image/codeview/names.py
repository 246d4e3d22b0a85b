"""The type table's C-like names of types and signatures of functions.

Cycles: a struct that points to itself through a pointer is normal and harmless, since
names stop at a struct's name.  A pointer to itself or a chain deeper than
:data:`~.leaves.MAX_DEPTH` raises :class:`~pehotpatch.errors.FormatError`.
"""

from __future__ import annotations

from .facts import TypeFacts
from .leaves import (
    CALLING_CONVENTIONS,
    CC_NEAR_C,
    CC_THISCALL,
    FIRST_TYPE_INDEX,
    LF_MFUNCTION,
    LF_PROCEDURE,
    MAX_DEPTH,
    MAX_NAME,
    MOD_CONST,
    MOD_UNALIGNED,
    MOD_VOLATILE,
    NAME_BUDGET,
    PTR_CONST,
    PTR_MODE_DATA_MEMBER,
    PTR_MODE_LVALUE_REF,
    PTR_MODE_MEMBER_FUNCTION,
    PTR_MODE_RVALUE_REF,
    PTR_RESTRICT,
    PTR_VOLATILE,
    SIMPLE_KINDS,
    UDT_KEYWORD,
)
from .records import (
    ArgListRecord,
    ArrayRecord,
    BitfieldRecord,
    ClassRecord,
    EnumRecord,
    MemberFunctionRecord,
    ModifierRecord,
    PointerRecord,
    ProcedureRecord,
    UnknownRecord,
)
from .stream import TypeRecords


class TypeNames(TypeFacts):
    """C-like type names (``struct ring *``, ``const char *``, ``int[16]``,
    ``void (*)(int)``) and function signatures, cached per type index.

    Composed names are bounded: a parameter list keeps at most ``MAX_NAME`` characters
    and one table composes at most ``NAME_BUDGET`` characters (plus eight per byte of
    its stream) before falling back to ``<type 0x1234>``.
    """

    def __init__(
        self, types: TypeRecords | None, ids: TypeRecords | None = None, path: str | None = None
    ) -> None:
        super().__init__(types, ids, path)
        self._names: dict[int, str] = {}
        self._sig_templates: dict[int, str] = {}
        self._proc_sigs: dict[int, tuple[int, str | None]] = {}
        self._name_budget = NAME_BUDGET + 8 * (len(types.buf) if types is not None else 0)

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
            return _join(f"{UDT_KEYWORD.get(rec.kind, 'struct')} {rec.name}", inner)
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
