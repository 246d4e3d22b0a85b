"""Compare two correlated builds: what really changed, function by function.

Two paired functions are equal when their normalised shapes are equal and every
external reference resolves to the same thing on both sides: the paired function or
global, the same import, or the same unnamed data (by the correlation's data map).
Equal code that reads read-only data whose bytes changed is "changed through data";
code that differs only by the 2-byte hot-patch no-op at the entry is a prologue
difference, not a behaviour change.
"""

from __future__ import annotations

import bisect
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pehotpatch.codemap import (
    KIND_CODES,
    KIND_NAMES,
    FuncCode,
    build_codemaps,
    discover_call_targets,
    normalize_function,
)
from pehotpatch.correlate import Correlation, correlate
from pehotpatch.image.machine import Machine
from pehotpatch.image.pe import PEImage
from pehotpatch.image.symbols import Function, Global, SymbolIndex
from pehotpatch.load import LoadedImage
from pehotpatch.perf import paused_gc

#: Names a referenced address the same way on both sides (see _Resolver.key).
KeyFn = Callable[[int], tuple]

UNCHANGED = "unchanged"
CHANGED = "changed"
THROUGH_DATA = "changed-through-data"
PROLOGUE_ONLY = "prologue-only"
PADDING_ONLY = "padding-only"  # differs only by alignment no-ops inside the body

MAX_DATA_COMPARE = 256
_DATA = KIND_CODES["data"]
_TWO_I32 = struct.Struct("<ii")


@dataclass
class RefDifference:
    offset_base: int
    offset_new: int
    kind: str
    base_target: str
    new_target: str


@dataclass
class FunctionDiff:
    name: str
    base: Function
    new: Function
    status: str
    method: str  # how the pair was made
    reason: str = ""  # "code", "references", "data", "prologue"
    ref_difference: RefDifference | None = None
    data: list[str] = field(default_factory=list)  # changed read-only data this function reads

    @property
    def changed(self) -> bool:
        return self.status in (CHANGED, THROUGH_DATA)


@dataclass
class GlobalDiff:
    name: str
    base: Global
    new: Global
    changes: list[str]  # "initializer", "size", "type"
    detail: str = ""


@dataclass
class ImageDiff:
    machine: tuple[str, str] | None = None
    kind: tuple[str, str] | None = None
    sections_added: list[str] = field(default_factory=list)
    sections_removed: list[str] = field(default_factory=list)
    section_perms_changed: list[tuple[str, str, str]] = field(default_factory=list)
    exports_added: list[str] = field(default_factory=list)
    exports_removed: list[str] = field(default_factory=list)
    exports_repointed: list[tuple[str, str, str]] = field(default_factory=list)
    imports_added: list[str] = field(default_factory=list)
    imports_removed: list[str] = field(default_factory=list)
    import_dlls_added: list[str] = field(default_factory=list)
    import_dlls_renamed: list[tuple[str, str]] = field(default_factory=list)  # (base, new)
    entry_point: tuple[str, str] | None = None
    tls_callbacks: tuple[list[str], list[str]] | None = None
    resources_changed: bool = False


@dataclass
class DiffResult:
    base: LoadedImage
    new: LoadedImage
    correlation: Correlation
    functions: list[FunctionDiff]  # every paired function that is not plainly unchanged
    unchanged: int
    added_functions: list[Function]
    removed_functions: list[Function]
    globals_changed: list[GlobalDiff]
    added_globals: list[Global]
    removed_globals: list[Global]
    image: ImageDiff
    codes: tuple[dict[int, FuncCode], dict[int, FuncCode]]
    seconds: float = 0.0

    def by_status(self, status: str) -> list[FunctionDiff]:
        return [f for f in self.functions if f.status == status]

    @property
    def changed_functions(self) -> list[FunctionDiff]:
        return [f for f in self.functions if f.changed]


class _Resolver:
    """Turns reference targets into comparable keys, in the new image's terms."""

    def __init__(self, ix: SymbolIndex, corr: Correlation | None, side: str):
        self.ix = ix
        self.corr = corr
        self.side = side
        self._keys: dict[int, tuple] = {}
        self._ro: dict[int, bool] = {}

    def readonly(self, t: int) -> bool:
        ro = self._ro.get(t)
        if ro is None:
            ro = self._ro[t] = _readonly(self.ix.image, t)
        return ro

    def key(self, t: int) -> tuple:
        k = self._keys.get(t)
        if k is None:
            k = self._keys[t] = self._key(t)
        return k

    def _key(self, t: int) -> tuple:
        ix = self.ix
        slot = ix.imports_by_slot.get(t)
        if slot is not None:
            return ("import", slot if self.corr is None else self.corr.import_key(slot))
        f = ix.function_at(t)
        if f is not None:
            if self.corr is None:
                return ("fn", f.rva, t - f.rva)
            m = self.corr.function_map.get(f.rva)
            return ("fn", m, t - f.rva) if m is not None else ("fn?", f.name, t - f.rva)
        g = ix.global_at(t)
        if g is not None:
            if self.corr is None:
                return ("data", g.rva, t - g.rva)
            m = self.corr.global_map.get(g.rva)
            return ("data", m, t - g.rva) if m is not None else ("data?", g.name, t - g.rva)
        if self.corr is None:
            return ("data", t, 0)
        m = self.corr.data_map.get(t)
        return ("data", m, 0) if m is not None else ("data?", t, 0)

    def describe(self, t: int) -> str:
        return describe_target(self.ix, t)


def describe_target(ix: SymbolIndex, t: int) -> str:
    """A human name for an address: ``dll!func``, ``name+0x10``, ``"string"``, ``.rdata+0x40``."""
    slot = ix.imports_by_slot.get(t)
    if slot is not None:
        return slot
    f = ix.function_at(t)
    if f is not None:
        return f.name if t == f.rva else f"{f.name}+{t - f.rva:#x}"
    g = ix.global_at(t)
    if g is not None:
        return g.name if t == g.rva else f"{g.name}+{t - g.rva:#x}"
    s = read_cstring(ix.image, t)
    if s is not None:
        return repr(s)
    sec = ix.image.section_at(t)
    if sec is not None:
        return f"{sec.name}+{t - sec.rva:#x}"
    return f"{t:#x}"


def read_cstring(img: PEImage, t: int, limit: int = 120) -> str | None:
    sec = img.section_at(t)
    if sec is None or sec.writable or sec.executable:
        return None
    raw = img.try_read(t, min(limit + 1, max(0, sec.rva + sec.size - t)))
    if not raw:
        return None
    m = _CSTRING.match(raw)
    return m.group(1).decode("ascii") if m else None


# At least two printable ASCII characters (tab, CR and LF allowed) and the terminator.
_CSTRING = re.compile(rb"([\t\n\r\x20-\x7e]{2,})\0")


def _readonly(img: PEImage, t: int) -> bool:
    s = img.section_at(t)
    return s is not None and not s.writable and not s.executable


class _DataView:
    """Read-only data of one image as the differ sees it: extents, pointers, jump tables."""

    def __init__(self, ix: SymbolIndex, code: dict[int, FuncCode]):
        self.ix = ix
        starts = {g.rva for g in ix.globals}
        for fc in code.values():
            for _, kind, t in fc.refs:
                if kind == 2:
                    starts.add(t)
        self.starts = sorted(starts)
        self._same: dict[tuple[int, int, int, int], bool] = {}
        self._same_data: dict[tuple[int, int], bool] = {}
        self._extent: dict[int, int] = {}
        self._head: dict[int, bytes | None] = {}

    def extent(self, t: int) -> int:
        n = self._extent.get(t)
        if n is None:
            n = self._extent[t] = self._find_extent(t)
        return n

    def _find_extent(self, t: int) -> int:
        g = self.ix.global_at(t)
        if g is not None and g.size:
            return max(0, min(MAX_DATA_COMPARE, g.rva + g.size - t))
        s = read_cstring(self.ix.image, t, MAX_DATA_COMPARE)
        if s is not None:
            return len(s) + 1
        i = bisect.bisect_right(self.starts, t)
        nxt = self.starts[i] if i < len(self.starts) else t + 16
        return max(1, min(nxt - t, 64))

    def _may_be_table(self, t: int, f: Function) -> bool:
        """Whether the first two 32-bit words at ``t`` could be entries of a jump table
        of ``f`` (a cheap test before :meth:`jump_table` reads the whole run)."""
        head = self._head.get(t, b"")
        if head == b"":
            head = self._head[t] = self.ix.image.try_read(t, 8)
        if head is None:
            return False
        a, b = _TWO_I32.unpack(head)
        lo, hi = f.rva, f.end
        if lo <= t + a < hi and lo <= t + b < hi:
            return True
        return lo <= (a & 0xFFFFFFFF) < hi and lo <= (b & 0xFFFFFFFF) < hi

    def jump_table(self, t: int, f: Function) -> list[int] | None:
        """Entries of a jump table at ``t`` serving ``f``, as offsets into ``f``.

        Two encodings: 32-bit offsets relative to the table (clang x64) and 32-bit
        RVAs (MSVC x64).  At least two consecutive entries must land inside ``f``."""
        img = self.ix.image
        sec = img.section_at(t)
        if sec is None:
            return None
        blob = img.try_read(t, min(4 * 4096, max(0, sec.rva + sec.size - t)) & ~3)
        if not blob:
            return None
        for relative in (True, False):
            out: list[int] = []
            for (v,) in struct.iter_unpack("<i" if relative else "<I", blob):
                dest = t + v if relative else v
                if not (f.rva <= dest < f.end):
                    break
                out.append(dest - f.rva)
            if len(out) >= 2:
                return out
        return None

    def compare(self, other: _DataView, t_self: int, t_other: int, key_self: KeyFn, key_other: KeyFn,
                f_self: Function, f_other: Function) -> bool:
        """True when the read-only data at ``t_self`` (base) equals ``t_other`` (new)."""
        memo = (t_self, t_other, f_self.rva, f_other.rva)
        got = self._same.get(memo)
        if got is None:
            got = self._same[memo] = self._compare(other, t_self, t_other, key_self, key_other, f_self, f_other)
        return got

    def _compare(self, other: _DataView, t_self: int, t_other: int, key_self: KeyFn, key_other: KeyFn,
                 f_self: Function, f_other: Function) -> bool:
        if self._may_be_table(t_self, f_self):
            ja = self.jump_table(t_self, f_self)
            if ja is not None:
                jb = other.jump_table(t_other, f_other) if other._may_be_table(t_other, f_other) else None
                return jb is not None and ja == jb
        memo = (t_self, t_other)
        got = self._same_data.get(memo)
        if got is None:
            got = self._same_data[memo] = self._compare_data(other, t_self, t_other, key_self, key_other)
        return got

    def _window(self, t: int) -> bytes | None:
        """Up to MAX_DATA_COMPARE bytes at ``t`` (fewer at the end of its section)."""
        sec = self.ix.image.section_at(t)
        if sec is None:
            return None
        return self.ix.image.try_read(t, min(MAX_DATA_COMPARE, sec.rva + sec.size - t))

    def _compare_data(self, other: _DataView, t_self: int, t_other: int, key_self: KeyFn,
                      key_other: KeyFn) -> bool:
        # Equal bytes as far as any extent could reach: equal, whatever the extent.
        wa = self._window(t_self)
        if wa is not None and wa == other._window(t_other):
            return True
        # A sized global on either side sets the extent (a grown table is a change);
        # guessed extents of unnamed data compare only what both sides agree on, so a
        # guess cannot run into unrelated data that follows on one side.
        gs, go = self.ix.global_at(t_self), other.ix.global_at(t_other)
        if (gs is not None and gs.size) or (go is not None and go.size):
            n = max(self.extent(t_self), other.extent(t_other))
        else:
            n = min(self.extent(t_self), other.extent(t_other))
        a = self.ix.image.try_read(t_self, n)
        b = other.ix.image.try_read(t_other, n)
        if a is None or b is None:
            return a == b
        if a == b:
            return True
        ra = [r - t_self for r in self.ix.image.relocations.within(t_self, t_self + n)]
        rb = [r - t_other for r in other.ix.image.relocations.within(t_other, t_other + n)]
        if not ra or ra != rb:
            return False
        ptr = self.ix.image.machine.pointer_size
        ma, mb = bytearray(a), bytearray(b)
        for o in ra:
            va = int.from_bytes(a[o : o + ptr], "little") - self.ix.image.image_base
            vb = int.from_bytes(b[o : o + ptr], "little") - other.ix.image.image_base
            if key_self(va) != key_other(vb):
                sa = read_cstring(self.ix.image, va)
                if sa is None or sa != read_cstring(other.ix.image, vb):
                    return False
            ma[o : o + ptr] = mb[o : o + ptr] = b"\0" * ptr
        return ma == mb


def compare_function(pair_base: Function, pair_new: Function, method: str,
                     cb: FuncCode | None, cn: FuncCode | None,
                     rb: _Resolver, rn: _Resolver, db: _DataView, dn: _DataView) -> FunctionDiff:
    name = pair_new.name
    fd = FunctionDiff(name, pair_base, pair_new, UNCHANGED, method)
    if cb is None or cn is None:
        fd.status, fd.reason = CHANGED, "code"
        return fd
    padding_only = False
    if cb.digest != cn.digest or len(cb.refs) != len(cn.refs):
        # Padding-only needs no-ops on a side, and the same instructions besides them.
        if (len(cb.refs) != len(cn.refs) or not (cb.nops or cn.nops) or cb.plain_lines != cn.plain_lines
                or not _equal_without_padding(rb.ix, pair_base, rn.ix, pair_new)):
            fd.status, fd.reason = CHANGED, "code"
            return fd
        padding_only = True
    for (ob, kb, tb), (on, kn, tn) in zip(cb.refs, cn.refs, strict=True):
        kb_key, kn_key = rb.key(tb), rn.key(tn)
        if kb != kn or kb_key != kn_key:
            fd.status, fd.reason = CHANGED, "references"
            fd.ref_difference = RefDifference(ob, on, KIND_NAMES.get(kn, "data"),
                                              rb.describe(tb), rn.describe(tn))
            return fd
        if kn == _DATA and kn_key[0] != "import" and rn.readonly(tn) and rb.readonly(tb):
            if not db.compare(dn, tb, tn, rb.key, rn.key, pair_base, pair_new):
                label = rn.describe(tn)
                if label not in fd.data:
                    fd.data.append(label)
    if fd.data:
        fd.status, fd.reason = THROUGH_DATA, "data"
    elif padding_only:
        fd.status, fd.reason = PADDING_ONLY, "alignment no-ops"
    elif cb.hotpatch_nop != cn.hotpatch_nop:
        fd.status, fd.reason = PROLOGUE_ONLY, "prologue"
    return fd


# capstone prints branch targets below 10 in decimal ("jmp 8"), others in hex
_X86_BRANCH_LINE = re.compile(r"^((?:j|loop)\w*|call) (0x[0-9a-f]+|\d+)$")


def _without_padding(ix: SymbolIndex, f: Function) -> list[str] | None:
    """The shape's lines without alignment no-ops, internal branch targets as indexes.

    Builds with and without ``/hotpatch`` differ in the alignment no-ops clang puts
    before loop heads; those move the code after them but change nothing it does."""
    if ix.image.machine is Machine.ARM64:
        return None
    nc = normalize_function(ix.image, f)
    skip = len(nc.hotpatch_nop)
    first = 1 if skip else 0
    lines = nc.shape.split("\n")
    offs = nc.insn_offsets[first : first + len(lines)]
    if len(offs) != len(lines):
        return None
    kept = [(o, ln) for o, ln in zip(offs, lines, strict=True) if not ln.startswith("nop")]
    starts = [o for o, _ in kept]
    out = []
    for _, ln in kept:
        m = _X86_BRANCH_LINE.match(ln)
        if m:
            ln = f"{m.group(1)} #{bisect.bisect_left(starts, int(m.group(2), 0) + skip)}"
        out.append(ln)
    return out


def _equal_without_padding(bix: SymbolIndex, fb: Function, nix: SymbolIndex, fn: Function) -> bool:
    a = _without_padding(bix, fb)
    return a is not None and a == _without_padding(nix, fn)


#: ``progress(stage, done, total)``: called as each stage (normalise, correlate, compare)
#: starts with ``done=0``, and as the comparison goes on.
Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def diff_images(base: LoadedImage, new: LoadedImage, *, jobs: int | None = None,
                progress: Progress | None = None) -> DiffResult:
    """Correlate and compare two loaded builds."""
    with paused_gc():
        return _diff_images(base, new, jobs=jobs, progress=progress or _no_progress)


def _diff_images(base: LoadedImage, new: LoadedImage, *, jobs: int | None, progress: Progress) -> DiffResult:
    t0 = time.perf_counter()
    progress("normalise", 0, len(base.index.functions) + len(new.index.functions))
    bcode, ncode = build_codemaps([base.index, new.index], jobs=jobs)
    # Loading's results are not changed: the diff keeps images whose indexes also hold the
    # functions found as call targets.
    bix, extra = discover_call_targets(base.index, bcode)
    bcode.update(extra)
    nix, extra = discover_call_targets(new.index, ncode)
    ncode.update(extra)
    base, new = replace(base, index=bix), replace(new, index=nix)
    progress("correlate", 0, 1)
    corr = correlate(base.index, new.index, bcode, ncode)
    progress("compare", 0, len(corr.functions))
    rb = _Resolver(base.index, corr, "base")
    rn = _Resolver(new.index, None, "new")
    db, dn = _DataView(base.index, bcode), _DataView(new.index, ncode)
    diffs: list[FunctionDiff] = []
    unchanged = 0
    for i, p in enumerate(corr.functions):
        if i and not i % 512:
            progress("compare", i, len(corr.functions))
        fd = compare_function(p.base, p.new, p.method, bcode.get(p.base.rva), ncode.get(p.new.rva), rb, rn, db, dn)
        if fd.status == UNCHANGED:
            unchanged += 1
        else:
            diffs.append(fd)
    globals_changed = [gd for gp in corr.globals if (gd := _compare_global(base.index, new.index, gp.base, gp.new))]
    # Import thunks (a lone jump through an IAT slot) are import plumbing: the imports
    # diff reports them, the function lists do not.
    added = [f for f in corr.added_functions if not is_import_thunk(new.index, ncode.get(f.rva))]
    removed = [f for f in corr.removed_functions if not is_import_thunk(base.index, bcode.get(f.rva))]
    result = DiffResult(
        base=base,
        new=new,
        correlation=corr,
        functions=diffs,
        unchanged=unchanged,
        added_functions=added,
        removed_functions=removed,
        globals_changed=globals_changed,
        added_globals=corr.added_globals,
        removed_globals=corr.removed_globals,
        image=_compare_image(base.index, new.index, corr),
        codes=(bcode, ncode),
    )
    result.seconds = time.perf_counter() - t0
    return result


def is_import_thunk(ix: SymbolIndex, fc: FuncCode | None) -> bool:
    return (fc is not None and fc.n_insns <= 3 and len(fc.refs) == 1
            and fc.refs[0][2] in ix.imports_by_slot)


def _compare_global(bix: SymbolIndex, nix: SymbolIndex, gb: Global, gn: Global) -> GlobalDiff | None:
    if gb.is_ref_slot or gn.is_ref_slot:
        return None
    changes: list[str] = []
    detail = []
    if gb.size is not None and gn.size is not None and gb.size != gn.size:
        changes.append("size")
        detail.append(f"size {gb.size} -> {gn.size}")
    if gb.type_name and gn.type_name and gb.type_name != gn.type_name:
        changes.append("type")
        detail.append(f"type {gb.type_name} -> {gn.type_name}")
    size = min(x for x in (gb.size, gn.size) if x is not None) if (gb.size or gn.size) else 0
    if size and not changes:
        size = min(size, 1 << 20)
        db = bix.image.try_read(gb.rva, size)
        dn = nix.image.try_read(gn.rva, size)
        if db is not None and dn is not None and db != dn and not _pointer_only_difference(bix, nix, gb, gn, db, dn):
            changes.append("initializer")
            off = next(i for i in range(size) if db[i] != dn[i])
            detail.append(f"first differing byte at +{off:#x}")
    if not changes:
        return None
    return GlobalDiff(gn.name, gb, gn, changes, "; ".join(detail))


def _pointer_only_difference(bix: SymbolIndex, nix: SymbolIndex, gb: Global, gn: Global,
                             db: bytes, dn: bytes) -> bool:
    """True when the bytes differ only in relocated pointers that point to the same things."""
    brel = set(bix.image.relocations.within(gb.rva, gb.rva + len(db)))
    nrel = set(nix.image.relocations.within(gn.rva, gn.rva + len(dn)))
    if not brel and not nrel:
        return False
    ptr = bix.image.machine.pointer_size
    boffs = sorted(r - gb.rva for r in brel)
    noffs = sorted(r - gn.rva for r in nrel)
    if boffs != noffs:
        return False
    masked_b, masked_n = bytearray(db), bytearray(dn)
    for o in boffs:
        vb = int.from_bytes(db[o : o + ptr], "little") - bix.image.image_base
        vn = int.from_bytes(dn[o : o + ptr], "little") - nix.image.image_base
        if describe_target(bix, vb) != describe_target(nix, vn):
            return False
        masked_b[o : o + ptr] = masked_n[o : o + ptr] = b"\0" * ptr
    return masked_b == masked_n


def _compare_image(bix: SymbolIndex, nix: SymbolIndex, corr: Correlation) -> ImageDiff:
    b, n = bix.image, nix.image
    d = ImageDiff()
    if b.machine is not n.machine:
        d.machine = (b.machine.value, n.machine.value)
    if b.kind != n.kind:
        d.kind = (b.kind, n.kind)
    bsec = {s.name: s for s in b.sections}
    nsec = {s.name: s for s in n.sections}
    d.sections_added = sorted(nsec.keys() - bsec.keys())
    d.sections_removed = sorted(bsec.keys() - nsec.keys())
    for name in sorted(bsec.keys() & nsec.keys()):
        if bsec[name].perms != nsec[name].perms:
            d.section_perms_changed.append((name, bsec[name].perms, nsec[name].perms))
    bexp = {e.name or f"#{e.ordinal}": e for e in b.exports}
    nexp = {e.name or f"#{e.ordinal}": e for e in n.exports}
    d.exports_added = sorted(nexp.keys() - bexp.keys())
    d.exports_removed = sorted(bexp.keys() - nexp.keys())
    rb = _Resolver(bix, corr, "base")
    rn = _Resolver(nix, None, "new")
    for name in sorted(bexp.keys() & nexp.keys()):
        eb, en = bexp[name], nexp[name]
        if eb.forwarder or en.forwarder:
            if eb.forwarder != en.forwarder:
                d.exports_repointed.append((name, eb.forwarder or describe_target(bix, eb.rva),
                                            en.forwarder or describe_target(nix, en.rva)))
            continue
        if rb.key(eb.rva) != rn.key(en.rva):
            d.exports_repointed.append((name, describe_target(bix, eb.rva), describe_target(nix, en.rva)))
    bimp = {i.key for i in b.imports}
    nimp = {i.key for i in n.imports}
    d.imports_added = sorted(nimp - bimp)
    d.imports_removed = sorted(bimp - nimp)
    bdll = {i.dll.lower() for i in b.imports}
    d.import_dlls_added = sorted({i.dll.lower() for i in n.imports} - bdll)
    d.import_dlls_renamed = sorted({(k.partition("!")[0], v.partition("!")[0]) for k, v in corr.import_map.items()})
    if b.entry_rva or n.entry_rva:
        if rb.key(b.entry_rva) != rn.key(n.entry_rva):
            d.entry_point = (describe_target(bix, b.entry_rva), describe_target(nix, n.entry_rva))
    if [rb.key(t) for t in b.tls_callbacks] != [rn.key(t) for t in n.tls_callbacks]:
        d.tls_callbacks = ([describe_target(bix, t) for t in b.tls_callbacks],
                           [describe_target(nix, t) for t in n.tls_callbacks])
    d.resources_changed = b.resource_digest != n.resource_digest
    return d
