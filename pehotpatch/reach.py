"""What patched code reaches outside itself: the references that leave the patched
functions, and every function of the patch image that can run once the patch is applied.

One pure function, :func:`gather`, of a :class:`~pehotpatch.diff.DiffResult` and the
hot-patch set; no findings, no rendering.  The rules (HP6xx) and the patch planner both
read its result.

Stable API (names are only ever added):

``gather(diff, hotpatch) -> Reach``
    ``hotpatch``: a :class:`~pehotpatch.hotpatch_set.HotpatchSet` or any iterable of
    function names (decorated or plain).  *Patched* functions are the changed ones
    (``changed`` or ``changed-through-data``) whose name is in the set.

``Reach.running``: tuple of :class:`RunningFunction`
    Every function of the patch image (the intermediate) that can execute after the
    patch is applied: the patched functions, and, transitively, every **new** function
    (one the base does not have) that running code calls, jumps to, or whose address it
    takes (``lea``, a pointer in data it reads directly, a ``__ref_`` slot pointing at
    code, a pointer held by a new global that a ``__ref_`` slot points at: the global
    stays in the patch image with the pointers of the patch image).  Unpatched functions of the base are not in it: calls to them are
    redirected to the base.  Ordered: patched first (by RVA), then in discovery order.

``Reach.edges``: tuple of :class:`CodeEdge`
    Every reference from running code to a function other than itself:
    ``kind`` is ``call`` / ``jump`` (direct branches, tail calls included; a call to a
    new import thunk is an :class:`ImportUse` instead) or
    ``address`` (the function's address is taken: ``lea``, an immediate, a relocated
    pointer in data that the code reads directly, a ``__ref_`` slot's target, or a
    relocated pointer in a new global that a ``__ref_`` slot points at, ``via`` naming it;
    only a function's start counts: an address inside a function is a case label or
    the disassembler's reading of a displacement, not a function pointer);
    ``target_class`` is ``patched`` / ``unpatched`` / ``new``.

``Reach.ref_reads``: tuple of :class:`RefSlotRead`
    Every ``__ref_`` slot that running code reads, with the address it holds in the
    intermediate, what is there, and whether that is thread-local storage (the TLS
    template: the ``.tls`` section or the TLS directory's raw data range).

``Reach.imports``: tuple of :class:`ImportUse`
    Every IAT slot running code uses (directly or through an import thunk).

All RVAs are the intermediate's; ``base_rva`` fields give the paired base function.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from pehotpatch.codemap import KIND_NAMES, FuncCode
from pehotpatch.diff import CHANGED, THROUGH_DATA, DiffResult, describe_target, is_import_thunk
from pehotpatch.hotpatch_set import HotpatchSet
from pehotpatch.image.machine import Machine
from pehotpatch.image.pe import DIR_TLS, PEImage
from pehotpatch.image.symbols import Function, Global, SymbolIndex, plain_name, ref_target_name
from pehotpatch.vocab import RefKind

PATCHED = "patched"
UNPATCHED = "unpatched"
NEW = "new"

CALL = "call"
JUMP = "jump"
ADDRESS = "address"

#: How far a directly read piece of unnamed data is scanned for pointers (it ends at the
#: next global in any case).
MAX_DATA_SCAN = 256


@dataclass(frozen=True, slots=True)
class RunningFunction:
    name: str
    rva: int
    size: int
    target_class: str  # patched | new
    base_rva: int | None  # the paired base function (None for new functions)
    reached_by: str | None = None  # the running function that first reached it (None: patched)
    reached_how: str | None = None  # call | jump | address


@dataclass(frozen=True, slots=True)
class CodeEdge:
    source: str  # the running function holding the reference
    source_rva: int
    offset: int  # of the instruction inside the source
    kind: str  # call | jump | address
    target: str  # the target function's name (+offset when not its start)
    target_rva: int  # the referenced address
    function_rva: int  # start of the function containing target_rva
    target_class: str  # patched | unpatched | new
    base_rva: int | None  # the paired base function's start (None for new)
    via: str | None = None  # for address edges found in data: the data holding the pointer


@dataclass(frozen=True, slots=True)
class RefSlotRead:
    source: str
    source_rva: int
    offset: int
    slot: str  # the __ref_ slot's name
    slot_rva: int
    target: str  # the name of what the slot points at in the intermediate
    target_rva: int | None  # None when the slot's contents cannot be read
    target_section: str | None
    thread_local: bool  # the target is in the TLS template, not a thread's copy
    target_is_code: bool


@dataclass(frozen=True, slots=True)
class ImportUse:
    source: str
    source_rva: int
    offset: int
    slot_rva: int
    import_key: str  # "dll!function"
    thunk: str | None = None  # the import thunk called, when not used directly


@dataclass(frozen=True, slots=True)
class Reach:
    running: tuple[RunningFunction, ...]
    edges: tuple[CodeEdge, ...]
    ref_reads: tuple[RefSlotRead, ...]
    imports: tuple[ImportUse, ...]

    @property
    def running_new(self) -> tuple[RunningFunction, ...]:
        return tuple(r for r in self.running if r.target_class == NEW)

def spellings(names: Iterable[str], machine: Machine) -> frozenset[str]:
    """Every name as given and undecorated (x86 ``_f@8`` -> ``f``)."""
    out: set[str] = set()
    for n in names:
        out.add(n)
        out.add(plain_name(n, machine))
    return frozenset(out)


def in_hotpatch_set(fn: Function, names: Iterable[str], machine: Machine) -> bool:
    """Whether ``fn`` (any of its names, decorated or plain) is in ``names`` (a set made
    by :func:`spellings` is used as it is)."""
    spell = names if isinstance(names, frozenset) else spellings(names, machine)
    return any(n in spell or plain_name(n, machine) in spell for n in (fn.name, *fn.aliases))


def tls_ranges(img: PEImage) -> list[tuple[int, int]]:
    """RVA ranges of the TLS template: every ``.tls`` section and the TLS directory's
    raw data range."""
    out = [(s.rva, s.rva + max(s.size, 1)) for s in img.sections if s.name.startswith(".tls")]
    rva, size = img.directory(DIR_TLS)
    ptr = img.machine.pointer_size
    raw = img.try_read(rva, 2 * ptr) if rva and size >= 2 * ptr else None
    if raw is not None:
        start, end = struct.unpack("<QQ" if ptr == 8 else "<II", raw)
        if end > start >= img.image_base:
            out.append((start - img.image_base, end - img.image_base))
    return out


def gather(diff: DiffResult, hotpatch: HotpatchSet | Iterable[str]) -> Reach:
    """The references that leave patched code and the patch-image functions that can run."""
    return _Gatherer(diff, hotpatch).run()


class _Gatherer:
    def __init__(self, diff: DiffResult, hotpatch: HotpatchSet | Iterable[str]):
        self.diff = diff
        self.nix: SymbolIndex = diff.new.index
        self.img = self.nix.image
        self.code: dict[int, FuncCode] = diff.codes[1]
        m = self.img.machine
        names = spellings(hotpatch.sorted() if isinstance(hotpatch, HotpatchSet) else hotpatch, m)
        self.patched: dict[int, Function] = {}
        for fd in diff.functions:
            if fd.status in (CHANGED, THROUGH_DATA) and in_hotpatch_set(fd.new, names, m):
                self.patched[fd.new.rva] = fd.new
        self.base_of = {p.new.rva: p.base.rva for p in diff.correlation.functions}
        self.tls = tls_ranges(self.img)
        self.global_starts = sorted({g.rva for g in self.nix.globals})
        self.new_globals = {g.rva for g in diff.added_globals}

    def classify(self, fn: Function) -> str:
        if fn.rva in self.patched:
            return PATCHED
        return UNPATCHED if fn.rva in self.base_of else NEW

    def run(self) -> Reach:
        running: list[RunningFunction] = [
            RunningFunction(f.name, f.rva, f.size, PATCHED, self.base_of.get(f.rva))
            for f in sorted(self.patched.values(), key=lambda f: f.rva)
        ]
        seen = {r.rva for r in running}
        edges: list[CodeEdge] = []
        reads: list[RefSlotRead] = []
        imports: list[ImportUse] = []
        i = 0
        while i < len(running):
            src = self.nix.function_by_rva.get(running[i].rva)
            i += 1
            if src is None:  # pragma: no cover - running functions come from the index
                continue
            for e in self._visit(src, reads, imports):
                edges.append(e)
                if e.target_class == NEW and e.function_rva not in seen:
                    seen.add(e.function_rva)
                    tf = self.nix.function_by_rva[e.function_rva]
                    running.append(RunningFunction(tf.name, tf.rva, tf.size, NEW, None, src.name, e.kind))
        return Reach(tuple(running), tuple(edges), tuple(reads), tuple(imports))

    def _edge(self, src: Function, off: int, kind: str, t: int, via: str | None = None) -> CodeEdge | None:
        tf = self.nix.function_at(t)
        if tf is None or tf.rva == src.rva or (kind == ADDRESS and t != tf.rva):
            return None
        name = tf.name if t == tf.rva else f"{tf.name}+{t - tf.rva:#x}"
        return CodeEdge(src.name, src.rva, off, kind, name, t, tf.rva, self.classify(tf),
                        self.base_of.get(tf.rva), via)

    def _visit(self, src: Function, reads: list[RefSlotRead], imports: list[ImportUse]) -> list[CodeEdge]:
        fc = self.code.get(src.rva)
        if fc is None:
            return []
        slots = self.nix.imports_by_slot
        out: list[CodeEdge] = []
        for off, kcode, t in fc.refs:
            kind = KIND_NAMES.get(kcode, RefKind.DATA)
            if t in slots:
                imports.append(ImportUse(src.name, src.rva, off, t, slots[t]))
                continue
            sec = self.img.section_at(t)
            if sec is None:
                continue
            if kind in (RefKind.CALL, RefKind.JUMP):
                tf = self.nix.function_at(t)
                if (tf is not None and tf.rva != src.rva and tf.rva not in self.base_of
                        and is_import_thunk(self.nix, self.code.get(tf.rva))):
                    slot = self.code[tf.rva].refs[0][2]
                    imports.append(ImportUse(src.name, src.rva, off, slot, slots[slot], tf.name))
                    continue
                e = self._edge(src, off, CALL if kind == RefKind.CALL else JUMP, t)
                if e is not None:
                    out.append(e)
                continue
            if kind != RefKind.DATA:
                continue  # indirect call/jump through a non-IAT pointer: its data read is listed too
            if sec.executable:
                e = self._edge(src, off, ADDRESS, t)
                if e is not None:
                    out.append(e)
                continue
            g = self.nix.global_at(t)
            if g is not None and g.is_ref_slot:
                r = self._ref_read(src, off, g)
                reads.append(r)
                if r.target_is_code and r.target_rva is not None:
                    e = self._edge(src, off, ADDRESS, r.target_rva, via=g.name)
                    if e is not None:
                        out.append(e)
                elif r.target_rva is not None and not r.thread_local:
                    tg = self.nix.global_at(r.target_rva)
                    if tg is not None and tg.rva in self.new_globals:
                        # a new global stays in the patch image: its pointers are the patch image's
                        out.extend(self._pointers_in_data(src, off, r.target_rva, tg))
                continue
            if sec.writable:
                continue  # mutable data read directly: its pointers are whatever runs put there
            out.extend(self._pointers_in_data(src, off, t, g))
        return out

    def _ref_read(self, src: Function, off: int, g: Global) -> RefSlotRead:
        ptr = self.img.machine.pointer_size
        raw = self.img.try_read(g.rva, ptr)
        target_rva = None
        if raw is not None:
            v = int.from_bytes(raw, "little") - self.img.image_base
            target_rva = v if 0 <= v < self.img.size_of_image else None
        tsec = self.img.section_at(target_rva) if target_rva is not None else None
        tname = ref_target_name(g.name) or g.name
        if target_rva is not None:
            tname = describe_target(self.nix, target_rva)
        tl = target_rva is not None and any(a <= target_rva < b for a, b in self.tls)
        return RefSlotRead(src.name, src.rva, off, g.name, g.rva, tname, target_rva,
                           tsec.name if tsec else None, tl, bool(tsec and tsec.executable))

    def _pointers_in_data(self, src: Function, off: int, t: int, g: Global | None) -> list[CodeEdge]:
        """Code addresses stored in read-only data that running code reads directly."""
        if g is not None and g.size:
            begin, end = g.rva, g.rva + g.size
        else:
            begin = t
            i = bisect.bisect_right(self.global_starts, t)
            nxt = self.global_starts[i] if i < len(self.global_starts) else t + MAX_DATA_SCAN
            end = min(nxt, t + MAX_DATA_SCAN)
        ptr = self.img.machine.pointer_size
        via = g.name if g is not None else describe_target(self.nix, t)
        out = []
        for r in self.img.relocations.within(begin, end):
            raw = self.img.try_read(r, ptr)
            if raw is None:
                continue
            v = int.from_bytes(raw, "little") - self.img.image_base
            sec = self.img.section_at(v)
            if sec is None or not sec.executable:
                continue
            e = self._edge(src, off, ADDRESS, v, via=via)
            if e is not None:
                out.append(e)
        return out


def ref_slot_readers(diff: DiffResult) -> dict[str, list[str]]:
    """Intermediate functions that read ``__ref_`` slots -> the slot names they read (code
    compiled for hot-patching reads mutable globals through them)."""
    return ref_slot_readers_in(diff.new.index, diff.codes[1])


def ref_slot_readers_in(nix: SymbolIndex, code: dict[int, FuncCode]) -> dict[str, list[str]]:
    """:func:`ref_slot_readers` of an index and its functions' code."""
    out: dict[str, list[str]] = {}
    if not any(g.is_ref_slot for g in nix.globals):
        return out  # nothing to read (an image without symbols names no slot)
    for fn in nix.functions:
        fc = code.get(fn.rva)
        if fc is None:
            continue
        slots: list[str] = []
        for _off, kind, t in fc.refs:
            if KIND_NAMES.get(kind, RefKind.DATA) != RefKind.DATA:
                continue
            g = nix.global_at(t)
            if g is not None and g.is_ref_slot and g.name not in slots:
                slots.append(g.name)
        if slots:
            out[fn.name] = slots
    return out


def hotpatch_with_evidence(diff: DiffResult, readers: dict[str, list[str]] | None = None) -> HotpatchSet:
    """The intermediate's hot-patch set (a copy) with the code's own evidence added: every
    function that reads a ``__ref_`` slot.  The check and the plan both use this set."""
    return hotpatch_set_with(diff.new.hotpatch, ref_slot_readers(diff) if readers is None else readers)


def hotpatch_set_with(src: HotpatchSet | None, readers: dict[str, list[str]]) -> HotpatchSet:
    """A copy of ``src`` (an image's hot-patch set) with the functions of ``readers`` (see
    :func:`ref_slot_readers_in`) added as the code's evidence."""
    from pehotpatch.hotpatch_set import add_code_evidence

    hs = HotpatchSet()
    if src is not None:
        hs.names = {k: set(v) for k, v in src.names.items()}
        hs.available = set(src.available)
    add_code_evidence(hs, sorted(readers))
    return hs
