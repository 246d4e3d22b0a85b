"""The merged symbol index: one view of an image's functions and globals.

Sources, best first: the PDB (procedures with ranges and signatures, data symbols with
types), PDB publics (``__ref_*`` slots and anything without a private record), COFF
symbols in the image, exports, and ``.pdata`` ranges (unnamed functions).  Without a
PDB the index still works from the last three, and says so in ``notes``.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pehotpatch.image.machine import Machine
from pehotpatch.image.pe import PEImage

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.image.pdb import Pdb

REF_PREFIXES = ("__ref_", "___ref_")


def ref_target_name(name: str) -> str | None:
    """``__ref_G`` -> ``G`` (x86: ``___ref_G`` with the C underscore); else None."""
    if name.startswith("___ref_"):
        return name[len("___ref_") :]
    if name.startswith("__ref_"):
        return name[len("__ref_") :]
    return None


def plain_name(name: str, machine: Machine) -> str:
    """Undecorate a C name as the compiler wrote it for ``machine``.

    x86 C names carry a leading underscore (``_f``), stdcall adds ``@N`` (``_f@8``) and
    fastcall is ``@f@8``; x64 and ARM64 names are undecorated.  C++ names are kept."""
    n = name
    if machine is not Machine.X86 or n.startswith("?"):
        return n
    if n.startswith("@"):
        head, sep, tail = n[1:].rpartition("@")
        return head if sep and tail.isdigit() else n
    head, sep, tail = n.rpartition("@")
    if sep and tail.isdigit():
        n = head
    return n[1:] if n.startswith("_") else n


@dataclass
class Function:
    name: str
    rva: int
    size: int
    sources: set[str] = field(default_factory=set)
    aliases: set[str] = field(default_factory=set)  # other names at the same address (ICF)
    signature: str | None = None
    type_index: int | None = None
    module: str | None = None
    is_static: bool = False
    exported_as: list[str] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.rva + self.size

    @property
    def named(self) -> bool:
        return not self.name.startswith("sub_")


@dataclass
class Global:
    name: str
    rva: int
    size: int | None
    section: str
    writable: bool
    sources: set[str] = field(default_factory=set)
    type_name: str | None = None
    type_index: int | None = None
    contains_pointers: bool | None = None
    is_const: bool | None = None
    is_static: bool = False
    module: str | None = None

    @property
    def is_ref_slot(self) -> bool:
        return ref_target_name(self.name) is not None

    @property
    def mutable(self) -> bool:
        return self.writable and not self.is_ref_slot


@dataclass
class SymbolIndex:
    image: PEImage
    functions: list[Function]
    globals: list[Global]
    has_pdb: bool
    pdb: Pdb | None = None
    notes: list[str] = field(default_factory=list)

    @cached_property
    def _fstarts(self) -> list[int]:
        return [f.rva for f in self.functions]

    @cached_property
    def _gstarts(self) -> list[int]:
        return [g.rva for g in self.globals]

    @cached_property
    def functions_by_name(self) -> dict[str, Function]:
        out: dict[str, Function] = {}
        for f in self.functions:
            out.setdefault(f.name, f)
            for a in f.aliases:
                out.setdefault(a, f)
        return out

    @cached_property
    def globals_by_name(self) -> dict[str, Global]:
        out: dict[str, Global] = {}
        for g in self.globals:
            out.setdefault(g.name, g)
        return out

    @cached_property
    def function_by_rva(self) -> dict[int, Function]:
        return {f.rva: f for f in self.functions}

    def function_at(self, rva: int) -> Function | None:
        i = bisect.bisect_right(self._fstarts, rva) - 1
        if i >= 0 and self.functions[i].rva <= rva < max(self.functions[i].end, self.functions[i].rva + 1):
            return self.functions[i]
        return None

    def global_at(self, rva: int) -> Global | None:
        """The global containing ``rva`` (or starting at it, for unknown sizes)."""
        i = bisect.bisect_right(self._gstarts, rva) - 1
        if i < 0:
            return None
        g = self.globals[i]
        if g.rva == rva or (g.size is not None and g.rva <= rva < g.rva + g.size):
            return g
        return None

    def with_functions(self, extra: list[Function]) -> SymbolIndex:
        """A new index that also holds ``extra`` (functions found later, e.g. call
        targets); this one is left as it is."""
        if not extra:
            return self
        return replace(self, functions=sorted([*self.functions, *extra], key=lambda f: f.rva),
                       notes=list(self.notes))

    @cached_property
    def imports_by_slot(self) -> dict[int, str]:
        return {i.iat_rva: i.key for i in self.image.imports}


def build_index(img: PEImage, pdb: Pdb | None = None) -> SymbolIndex:
    """Merge every symbol source of ``img`` (and its PDB, when given) into one index."""
    funcs: dict[int, Function] = {}
    glbs: dict[int, Global] = {}
    notes: list[str] = []

    def add_func(name: str, rva: int, size: int, source: str, **kw: Any) -> Function | None:
        s = img.section_at(rva)
        if s is None or not s.executable:
            return None
        f = funcs.get(rva)
        if f is None:
            f = funcs[rva] = Function(name, rva, size, {source}, **kw)
            return f
        f.sources.add(source)
        if not f.named and not name.startswith("sub_"):
            f.aliases.discard(name)
            f.name = name
        elif name != f.name and not name.startswith("sub_"):
            f.aliases.add(name)
        if size and (not f.size or source == "pdb"):
            f.size = size
        for k, v in kw.items():
            if v is not None and getattr(f, k, None) in (None, False, [], ""):
                setattr(f, k, v)
        return f

    iat_slots = {i.iat_rva for i in img.imports}

    def add_global(name: str, rva: int, size: int | None, source: str, **kw: Any) -> None:
        s = img.section_at(rva)
        if s is None or s.executable or rva in iat_slots:
            return  # IAT slots are imports, not globals
        g = glbs.get(rva)
        if g is None:
            glbs[rva] = Global(name, rva, size, s.name, s.writable, {source}, **kw)
            return
        g.sources.add(source)
        if g.size is None and size is not None:
            g.size = size
        for k, v in kw.items():
            if v is not None and getattr(g, k, None) is None:
                setattr(g, k, v)

    if pdb is not None:
        for p in pdb.procedures:
            if p.rva is None:
                continue  # no address (e.g. in a section the image does not have)
            add_func(
                p.name, p.rva, p.size, "pdb",
                signature=p.signature, type_index=p.type_index, module=p.module,
                is_static=not p.is_global,
            )
        for d in pdb.globals_:
            if d.rva is None:
                continue
            add_global(
                d.name, d.rva, d.size, "pdb",
                type_name=d.type_name, type_index=d.type_index,
                contains_pointers=d.contains_pointers, is_const=d.is_const,
                is_static=not d.is_global, module=d.module,
            )
        for pub in pdb.publics:
            if pub.name.startswith(".weak.") or pub.rva is None:
                continue  # lld's aliases for weak definitions (the __ref_ slots)
            name = plain_name(pub.name, img.machine)
            if pub.is_function:
                add_func(name, pub.rva, 0, "public")
            else:
                add_global(name, pub.rva, None, "public")
    else:
        notes.append("no PDB: names come from exports, COFF symbols and .pdata only; "
                     "signatures, types and static functions are unknown")

    for e in img.exports:
        if e.forwarder or not e.name:
            continue
        f = add_func(e.name, e.rva, 0, "export")
        if f is not None:
            f.exported_as.append(e.name)
        else:
            add_global(e.name, e.rva, None, "export")
    for cs in img.coff_symbols:
        if cs.rva is None or not cs.name or cs.name.startswith("."):
            continue
        if cs.is_function:
            add_func(plain_name(cs.name, img.machine), cs.rva, 0, "coff", is_static=not cs.is_external)
        elif cs.storage_class in (2, 3):
            add_global(plain_name(cs.name, img.machine), cs.rva, None, "coff")
    for rf in img.functions:
        f = funcs.get(rf.begin)
        if f is None:
            add_func(f"sub_{rf.begin:x}", rf.begin, rf.end - rf.begin, "pdata")
        else:
            f.sources.add("pdata")
            if not f.size:
                f.size = rf.end - rf.begin

    flist = sorted(funcs.values(), key=lambda f: f.rva)
    guessed = _fill_sizes(img, flist)
    if guessed and img.machine is not Machine.ARM64:
        flist = _split_at_call_targets(img, flist, guessed)
    glist = sorted(glbs.values(), key=lambda g: g.rva)
    _fill_global_sizes(img, glist)
    if pdb is None and not img.functions and not img.coff_symbols:
        notes.append("no .pdata and no COFF symbols: only exported functions are known")
    return SymbolIndex(img, flist, glist, pdb is not None, pdb, notes)


def _fill_sizes(img: PEImage, funcs: list[Function]) -> list[Function]:
    """Give size-less functions (exports, publics) the distance to the next start;
    returns those functions (their sizes are guesses)."""
    guessed = []
    for i, f in enumerate(funcs):
        if f.size:
            continue
        s = img.section_at(f.rva)
        limit = s.rva + s.size if s else f.rva + 1
        nxt = funcs[i + 1].rva if i + 1 < len(funcs) else limit
        f.size = max(1, min(nxt, limit) - f.rva)
        guessed.append(f)
    return guessed


# A direct call: E8 and a 32-bit displacement from the end of the instruction.
_CALL_REL32 = re.compile(rb"\xe8(....)", re.DOTALL)
_FUNCTION_ALIGN = 16
_MIN_GUESSED_SPLIT = 64


def call_scan_targets(img: PEImage) -> set[int]:
    """Targets of every ``E8 rel32`` byte pattern in the executable sections that land
    on a 16-byte boundary inside one: function entries, found without decoding.

    Compilers for x86 and x64 start functions on 16-byte boundaries; a byte pattern
    that is not really a call rarely points at one, since the displacement is then
    arbitrary."""
    execs = [(s.rva, s.rva + s.size) for s in img.sections if s.executable and s.size]
    out: set[int] = set()
    unpack = int.from_bytes
    for lo, hi in execs:
        code = img.read(lo, hi - lo)
        for m in _CALL_REL32.finditer(code):
            t = (lo + m.end() + unpack(m.group(1), "little", signed=True))
            if t % _FUNCTION_ALIGN == 0 and any(a <= t < b for a, b in execs):
                out.add(t)
    return out


def pointer_targets(img: PEImage) -> set[int]:
    """Code addresses stored in relocated pointers outside the code: function pointers
    (dispatch tables, callbacks), functions that no direct call reaches.

    x64 only: x86 compilers keep jump tables as absolute (relocated) addresses of case
    labels, while x64 ones store offsets or RVAs, which carry no relocation."""
    if img.machine is not Machine.X64:
        return set()
    width = img.machine.pointer_size
    execs = [(s.rva, s.rva + s.size) for s in img.sections if s.executable and s.size]
    out: set[int] = set()
    for s in img.sections:
        if s.executable or not s.size:
            continue
        rel = img.relocations.within(s.rva, s.rva + s.size - width + 1)
        if not rel:
            continue
        blob = img.read(s.rva, s.size)
        for r in rel:
            o = r - s.rva
            t = int.from_bytes(blob[o : o + width], "little") - img.image_base
            if any(a <= t < b for a, b in execs):
                out.add(t)
    return out


def _split_at_call_targets(img: PEImage, funcs: list[Function], guessed: list[Function]) -> list[Function]:
    """Functions whose extent is a guess (an export without ``.pdata``) may cover many
    functions (hand-written assembly has no unwind data): start a new function at every
    call target (:func:`call_scan_targets`) and every code pointer in the data
    (:func:`pointer_targets`) inside them."""
    big = [f for f in guessed if f.size >= _MIN_GUESSED_SPLIT]
    if not big:
        return funcs
    targets = sorted(call_scan_targets(img) | pointer_targets(img))
    extra: list[Function] = []
    for f in big:
        lo = bisect.bisect_right(targets, f.rva)
        hi = bisect.bisect_left(targets, f.end)
        if lo >= hi:
            continue
        cuts = targets[lo:hi]
        end = f.end
        f.size = cuts[0] - f.rva
        for a, b in zip(cuts, [*cuts[1:], end], strict=True):
            extra.append(Function(f"sub_{a:x}", a, b - a, {"call-scan"}))
    return sorted([*funcs, *extra], key=lambda f: f.rva) if extra else funcs


_CONST_PREFIXES = ("__real@", "__xmm@", "__ymm@", "__zmm@")


def _fill_global_sizes(img: PEImage, glbs: list[Global]) -> None:
    """Sizes for globals known only by a public symbol.

    ``__ref_`` slots are one pointer; MSVC-style constants (``__real@400eb2db1e9f2778``,
    ``__xmm@...``) spell their bytes in their name; writable data (e.g. ARM64's merged
    globals, which lose their PDB records) extends to the next global.  Read-only data
    without a size keeps none: the next symbol may be far away and unrelated."""
    for i, g in enumerate(glbs):
        if g.size is not None:
            continue
        if g.is_ref_slot:
            g.size = img.machine.pointer_size
            continue
        if g.name.startswith(_CONST_PREFIXES):
            digits = g.name.partition("@")[2]
            if digits and all(c in "0123456789abcdefABCDEF" for c in digits):
                g.size = len(digits) // 2
            continue
        s = img.section_at(g.rva)
        if s is None or not s.writable:
            continue
        limit = s.rva + s.size
        nxt = glbs[i + 1].rva if i + 1 < len(glbs) else limit
        g.size = max(1, min(nxt, limit) - g.rva)
