"""What every rule reads: the diff, the options, and facts derived from them once.

The context never changes the :class:`~pehotpatch.diff.DiffResult` it is given; the
hot-patch set it works with is a copy of the intermediate's, with the ``code``
evidence (functions that read a ``__ref_`` slot) added.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from pehotpatch.codemap import KIND_NAMES, FuncCode
from pehotpatch.diff import CHANGED, THROUGH_DATA, DiffResult, FunctionDiff, describe_target
from pehotpatch.hotpatch_set import HotpatchSet
from pehotpatch.image.codeview.records import (
    ArgListRecord,
    ModifierRecord,
    PointerRecord,
    ProcedureRecord,
)
from pehotpatch.image.machine import Machine
from pehotpatch.image.symbols import Function, Global, SymbolIndex, plain_name
from pehotpatch.reach import Reach, gather, hotpatch_with_evidence, ref_slot_readers
from pehotpatch.rules.options import CheckOptions
from pehotpatch.vocab import RefKind, Side

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.image.codeview.types import TypeTable


@dataclass(frozen=True, slots=True)
class CodeRef:
    offset: int
    kind: RefKind
    target: int


class Context:
    def __init__(self, diff: DiffResult, options: CheckOptions):
        self.diff = diff
        self.options = options
        self.base = diff.base
        self.new = diff.new
        self.bix: SymbolIndex = diff.base.index
        self.nix: SymbolIndex = diff.new.index
        self.machine: Machine = diff.new.pe.machine
        self.base_machine: Machine = diff.base.pe.machine

    # ---- code -------------------------------------------------------------------------
    def code(self, side: Side, rva: int) -> FuncCode | None:
        """The normalised summary of the function at ``rva`` on one side."""
        return self.diff.codes[side].get(rva)

    def refs(self, side: Side, fn: Function) -> list[CodeRef]:
        fc = self.code(side, fn.rva)
        if fc is None:
            return []
        return [CodeRef(o, KIND_NAMES.get(k, RefKind.DATA), t) for o, k, t in fc.refs]

    def index(self, side: Side) -> SymbolIndex:
        return self.bix if side == Side.BASE else self.nix

    def describe(self, side: Side, rva: int) -> str:
        return describe_target(self.index(side), rva)

    def global_at(self, side: Side, rva: int) -> Global | None:
        return self.index(side).global_at(rva)

    def global_near(self, side: Side, rva: int) -> tuple[Global, int] | None:
        """The global containing ``rva``, or else the closest one before it in the same
        section whose size is unknown (public-only symbols): (global, offset)."""
        ix = self.index(side)
        g = ix.global_at(rva)
        if g is not None:
            return g, rva - g.rva
        i = bisect.bisect_right([x.rva for x in ix.globals], rva) - 1
        if i < 0:
            return None
        g = ix.globals[i]
        sec = ix.image.section_at(rva)
        if g.size is None and sec is not None and sec.contains(g.rva) and rva - g.rva < 4096:
            return g, rva - g.rva
        return None

    # ---- the hot-patch set --------------------------------------------------------------
    @cached_property
    def ref_slot_readers(self) -> dict[str, list[str]]:
        """Intermediate functions that read ``__ref_`` slots -> the slot names they read."""
        return ref_slot_readers(self.diff)

    @cached_property
    def hotpatch(self) -> HotpatchSet:
        return hotpatch_with_evidence(self.diff, self.ref_slot_readers)

    @cached_property
    def reach(self) -> Reach:
        """What patched code reaches: the patch-image functions that can run, the
        references leaving them, the __ref_ slots and IAT slots they use."""
        return gather(self.diff, self.hotpatch)

    @cached_property
    def _set_lookup(self) -> dict[str, str]:
        """Every spelling of a set name (as given, undecorated) -> the name in the set."""
        out: dict[str, str] = {}
        for name in self.hotpatch.sorted():
            out.setdefault(name, name)
            out.setdefault(plain_name(name, self.machine), name)
        return out

    def set_name(self, fn: Function) -> str | None:
        """The name under which ``fn`` is in the hot-patch set, or None."""
        for n in sorted({fn.name, *fn.aliases}):
            hit = self._set_lookup.get(n) or self._set_lookup.get(plain_name(n, self.machine))
            if hit is not None:
                return hit
        return None

    def in_set(self, fn: Function) -> bool:
        return self.set_name(fn) is not None

    def set_sources(self, fn: Function) -> list[str]:
        n = self.set_name(fn)
        return sorted(self.hotpatch.names.get(n, ())) if n else []

    @property
    def has_set_source(self) -> bool:
        """Whether any source besides the code itself said which functions are marked."""
        return bool(self.hotpatch.available - {"code"})

    def find_new_function(self, set_name: str) -> Function | None:
        by = self.nix.functions_by_name
        return by.get(set_name) or by.get(plain_name(set_name, self.machine))

    # ---- what changed ----------------------------------------------------------------------
    @cached_property
    def changed(self) -> list[FunctionDiff]:
        return [fd for fd in self.diff.functions if fd.status in (CHANGED, THROUGH_DATA)]

    @cached_property
    def patched(self) -> list[FunctionDiff]:
        """The functions the patch redirects: changed, and in the hot-patch set."""
        return [fd for fd in self.changed if self.in_set(fd.new)]

    @cached_property
    def patched_names(self) -> set[str]:
        return {fd.new.name for fd in self.patched}

    @cached_property
    def fdiff_by_new_rva(self) -> dict[int, FunctionDiff]:
        return {fd.new.rva: fd for fd in self.diff.functions}

    @cached_property
    def fdiff_by_name(self) -> dict[str, FunctionDiff]:
        out: dict[str, FunctionDiff] = {}
        for fd in self.diff.functions:
            for n in (fd.new.name, *fd.new.aliases, fd.base.name):
                out.setdefault(n, fd)
        return out

    @cached_property
    def signature_changes(self) -> dict[int, tuple[str, str, Function, Function]]:
        """Paired functions whose PDB signatures differ in a way callers can see:
        new RVA -> (base sig, new sig, base, new).  Keyed by address, not name: two
        static functions of one name in two modules are two functions.

        Qualifiers of a parameter itself (``const``/``volatile`` on the parameter,
        ``restrict`` on a pointer parameter) are not part of the calling contract; a
        difference only in those is not a change (:meth:`qualifier_only_changes`)."""
        out: dict[int, tuple[str, str, Function, Function]] = {}
        bt, nt = self.pdb_types(Side.BASE), self.pdb_types(Side.NEW)
        for p in self.diff.correlation.functions:
            sb, sn = p.base.signature, p.new.signature
            if sb and sn and _norm_sig(sb) != _norm_sig(sn):
                if abi_equal(bt, p.base.type_index, nt, p.new.type_index):
                    self._qualifier_only[p.new.name] = (sb, sn)
                    continue
                out[p.new.rva] = (sb, sn, p.base, p.new)
        return out

    @cached_property
    def _qualifier_only(self) -> dict[str, tuple[str, str]]:
        return {}

    @property
    def qualifier_only_changes(self) -> dict[str, tuple[str, str]]:
        """Functions whose signatures differ only in parameter qualifiers: name -> (base, new)."""
        _ = self.signature_changes
        return self._qualifier_only

    def pdb_types(self, side: Side) -> TypeTable | None:
        pdb = self.index(side).pdb
        return getattr(pdb, "types", None) if pdb is not None else None

    def inline_sites(self, side: Side) -> dict[str, set[str]]:
        """Procedure name -> names of the functions inlined into it (empty without a PDB)."""
        pdb = self.index(side).pdb
        sites = getattr(pdb, "inline_sites", None) if pdb is not None else None
        if not sites:
            return {}
        if isinstance(sites, dict):
            return {k: set(v) for k, v in sites.items()}
        # A list of S_INLINESITE records: resolve the inlinee ids through the id stream.
        out: dict[str, set[str]] = {}
        types = getattr(pdb, "types", None)
        for s in sites:
            proc = getattr(s, "procedure", None)
            inl = getattr(s, "inlinee", None)
            if proc is None or inl is None:
                continue
            name = inl if isinstance(inl, str) else (types.id_name(inl) if types is not None else None)
            if name:
                out.setdefault(proc, set()).add(name)
        return out


def abi_equal(bt: TypeTable | None, bti: int | None, nt: TypeTable | None, nti: int | None) -> bool:
    """Whether two procedure types (each in its own PDB) have the same calling
    convention, return type and parameter types once each parameter's own top-level
    qualifiers are dropped."""
    if bt is None or nt is None or not bti or not nti:
        return False
    try:
        rb, rn = bt.record(bti), nt.record(nti)
        if not isinstance(rb, ProcedureRecord) or not isinstance(rn, ProcedureRecord):
            return False
        if rb.calling_convention != rn.calling_convention or rb.parameter_count != rn.parameter_count:
            return False
        if _abi_key(bt, rb.return_type) != _abi_key(nt, rn.return_type):
            return False
        ab, an = bt.record(rb.arg_list), nt.record(rn.arg_list)
        if not isinstance(ab, ArgListRecord) or not isinstance(an, ArgListRecord):
            return False
        if len(ab.arg_types) != len(an.arg_types):
            return False
        return all(_abi_key(bt, x) == _abi_key(nt, y) for x, y in zip(ab.arg_types, an.arg_types, strict=True))
    except Exception:  # noqa: BLE001 - a type we cannot read: keep the string comparison
        return False


def _abi_key(types: TypeTable, ti: int) -> str:
    """A parameter's type as the caller passes it: top-level const/volatile dropped, and
    a pointer's own const/volatile/restrict; what it points to keeps its qualifiers."""
    for _ in range(8):
        rec = types.record(ti) if ti >= 0x1000 else None
        if isinstance(rec, ModifierRecord):
            ti = rec.modified_type
            continue
        if isinstance(rec, PointerRecord):
            return f"ptr({rec.kind},{rec.mode},{rec.size})->{types.type_name(rec.referent_type)}"
        break
    return str(types.type_name(ti))


def _norm_sig(sig: str) -> str:
    return " ".join(sig.replace("*", " * ").replace("&", " & ").replace(",", " , ").split())
