"""Compare two correlated builds: what really changed, function by function.

Two paired functions are equal when their normalised shapes are equal and every
external reference resolves to the same thing on both sides: the paired function or
global, the same import, or the same unnamed data (by the correlation's data map).
Equal code that reads read-only data whose bytes changed is "changed through data";
code that differs only by the 2-byte hot-patch no-op at the entry is a prologue
difference, not a behaviour change.

This module compares functions and assembles the result; :mod:`.targets` names what
references point to, :mod:`.data` compares read-only data and jump tables, :mod:`.image`
compares globals and the image itself, :mod:`.starts` finds the function starts that the
padding between functions shows and no symbol source gives.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pehotpatch.cache as cache
from pehotpatch.codemap import (
    KIND_CODES,
    KIND_NAMES,
    FuncCode,
    build_codemaps,
    discover_call_targets,
    normalize_function,
)
from pehotpatch.correlate import Correlation, correlate
from pehotpatch.diff.data import DataView
from pehotpatch.diff.image import GlobalDiff, ImageDiff, compare_global, compare_image
from pehotpatch.diff.starts import split_at_padding
from pehotpatch.diff.targets import Resolver, describe_target, read_cstring
from pehotpatch.image.machine import Machine
from pehotpatch.image.symbols import Function, Global, SymbolIndex
from pehotpatch.load import LoadedImage
from pehotpatch.perf import paused_gc
from pehotpatch.vocab import FunctionStatus, RefKind

UNCHANGED = FunctionStatus.UNCHANGED
CHANGED = FunctionStatus.CHANGED
THROUGH_DATA = FunctionStatus.THROUGH_DATA
PROLOGUE_ONLY = FunctionStatus.PROLOGUE_ONLY
PADDING_ONLY = FunctionStatus.PADDING_ONLY

_DATA = KIND_CODES[RefKind.DATA]


@dataclass
class RefDifference:
    offset_base: int
    offset_new: int
    kind: RefKind
    base_target: str
    new_target: str


@dataclass
class FunctionDiff:
    name: str
    base: Function
    new: Function
    status: FunctionStatus
    method: str  # how the pair was made
    reason: str = ""  # "code", "references", "data", "prologue"
    ref_difference: RefDifference | None = None
    data: list[str] = field(default_factory=list)  # changed read-only data this function reads

    @property
    def changed(self) -> bool:
        return self.status in (CHANGED, THROUGH_DATA)


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
    # False when only some pairs were compared (see compare_correlated): ``functions``
    # and ``unchanged`` then cover those pairs alone
    compared_all: bool = True

    def by_status(self, status: FunctionStatus) -> list[FunctionDiff]:
        return [f for f in self.functions if f.status == status]

    @property
    def changed_functions(self) -> list[FunctionDiff]:
        return [f for f in self.functions if f.changed]


def compare_function(pair_base: Function, pair_new: Function, method: str,
                     cb: FuncCode | None, cn: FuncCode | None,
                     rb: Resolver, rn: Resolver, db: DataView, dn: DataView) -> FunctionDiff:
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
            fd.ref_difference = RefDifference(ob, on, KIND_NAMES.get(kn, RefKind.DATA),
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
        pr = progress or _no_progress
        return compare_correlated(correlate_images(base, new, jobs=jobs, progress=pr), progress=pr)


@dataclass
class Correlated:
    """Two builds with every function normalised and paired, not yet compared (the first
    half of :func:`diff_images`)."""

    base: LoadedImage
    new: LoadedImage
    correlation: Correlation
    codes: tuple[dict[int, FuncCode], dict[int, FuncCode]]
    started: float


def correlate_images(base: LoadedImage, new: LoadedImage, *, jobs: int | None = None,
                     progress: Progress | None = None) -> Correlated:
    """Normalise and correlate every function of both builds.  ``base`` and ``new`` are
    not changed: the result holds images whose indexes also hold the functions found
    after the padding between functions and as call targets."""
    progress = progress or _no_progress
    t0 = time.perf_counter()
    progress("normalise", 0, len(base.index.functions) + len(new.index.functions))
    base = replace(base, index=split_at_padding(base.index))
    new = replace(new, index=split_at_padding(new.index))
    bcode, ncode = build_codemaps([base.index, new.index], jobs=jobs)
    bix, extra = discover_call_targets(base.index, bcode)
    bcode.update(extra)
    nix, extra = discover_call_targets(new.index, ncode)
    ncode.update(extra)
    base, new = replace(base, index=bix), replace(new, index=nix)
    progress("correlate", 0, 1)
    corr = correlate(base.index, new.index, bcode, ncode, cache_key=_pairing_key(base, new))
    return Correlated(base, new, corr, (bcode, ncode), t0)


def _pairing_key(base: LoadedImage, new: LoadedImage) -> str | None:
    """The pairing's cache entry: both images' bytes and PDBs (which the indexes are
    built from), and what the indexes hold that the pairing reads (in case a caller
    changed an index after loading)."""
    if cache.directory() is None:
        return None
    parts: list[bytes] = []
    for side in (base, new):
        ix = side.index
        parts.append(hashlib.sha256(ix.image.data).digest())
        parts.append(cache.file_digest(side.pdb_path))
        parts.append(repr([(f.rva, f.size, f.name, sorted(f.aliases), sorted(f.sources), f.module, f.is_static,
                            f.exported_as) for f in ix.functions]).encode())
        parts.append(repr([(g.rva, g.size, g.name, g.module) for g in ix.globals]).encode())
    return cache.key("pairing", *parts)


def compare_correlated(c: Correlated, *, progress: Progress | None = None,
                       only: Callable[[Function], bool] | None = None) -> DiffResult:
    """Compare the paired functions, globals and images of ``c`` (the second half of
    :func:`diff_images`).

    ``only``: compare just the pairs whose new function it accepts; the result's
    ``functions`` and ``unchanged`` then cover those pairs alone and ``compared_all`` is
    False (the patch plan needs only the hot-patched functions' status)."""
    progress = progress or _no_progress
    base, new, corr = c.base, c.new, c.correlation
    bcode, ncode = c.codes
    pairs = corr.functions if only is None else [p for p in corr.functions if only(p.new)]
    progress("compare", 0, len(pairs))
    rb = Resolver(base.index, corr)
    rn = Resolver(new.index, None)
    db, dn = DataView(base.index, bcode), DataView(new.index, ncode)
    diffs: list[FunctionDiff] = []
    unchanged = 0
    for i, p in enumerate(pairs):
        if i and not i % 512:
            progress("compare", i, len(pairs))
        fd = compare_function(p.base, p.new, p.method, bcode.get(p.base.rva), ncode.get(p.new.rva), rb, rn, db, dn)
        if fd.status == UNCHANGED:
            unchanged += 1
        else:
            diffs.append(fd)
    globals_changed = [gd for gp in corr.globals if (gd := compare_global(base.index, new.index, gp.base, gp.new))]
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
        image=compare_image(base.index, new.index, corr),
        codes=(bcode, ncode),
        compared_all=only is None,
    )
    result.seconds = time.perf_counter() - c.started
    return result


def is_import_thunk(ix: SymbolIndex, fc: FuncCode | None) -> bool:
    return (fc is not None and fc.n_insns <= 3 and len(fc.refs) == 1
            and fc.refs[0][2] in ix.imports_by_slot)


__all__ = [
    "CHANGED", "PADDING_ONLY", "PROLOGUE_ONLY", "THROUGH_DATA", "UNCHANGED",
    "Correlated", "DiffResult", "FunctionDiff", "GlobalDiff", "ImageDiff", "Progress", "RefDifference",
    "compare_correlated", "compare_function", "correlate_images", "describe_target", "diff_images", "is_import_thunk", "read_cstring",
]
