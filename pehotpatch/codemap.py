"""Normalise every function of an image, in parallel, into a compact comparable form.

The differ never keeps full instruction listings: per function it keeps a digest of the
normalised shape, the external references in order, and the prologue facts the rules
need.  Listings for display are recomputed for the few functions that changed.
"""

from __future__ import annotations

import bisect
import hashlib
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

from pehotpatch.disasm import NormalizedCode, normalize
from pehotpatch.image.machine import Machine
from pehotpatch.image.pe import PEImage
from pehotpatch.image.symbols import Function, SymbolIndex
from pehotpatch.templates import Template, derive, make_template
from pehotpatch.vocab import RefKind

#: Reference kinds as the small integers kept in :attr:`FuncCode.refs` (0 to 4, in
#: :class:`RefKind` order), and back.
KIND_CODES: dict[str, int] = {k: i for i, k in enumerate(RefKind)}
KIND_NAMES: dict[int, RefKind] = dict(enumerate(RefKind))
_DATA = KIND_CODES[RefKind.DATA]
MAX_FUNCTION_SIZE = 16 * 1024 * 1024


class FuncCode(NamedTuple):
    rva: int
    digest: bytes  # of the normalised shape
    refs: tuple[tuple[int, int, int], ...]  # (offset, kind code, target RVA)
    n_insns: int
    first_insn_size: int
    hotpatch_nop: bytes
    entry_is_branch_target: bool
    nops: int = 0  # alignment no-op lines inside the body (see diff's padding-only)
    plain_lines: int = 0  # the other lines of the shape


def _summarise(rva: int, nc: NormalizedCode) -> FuncCode:
    return FuncCode(
        rva,
        hashlib.blake2b(nc.shape.encode("utf-8", "surrogatepass"), digest_size=16).digest(),
        tuple((r.offset, KIND_CODES.get(r.kind, _DATA), r.target) for r in nc.refs),
        len(nc.insn_offsets),
        nc.first_insn_size,
        nc.hotpatch_nop,
        nc.entry_is_branch_target,
        nops := nc.shape.count("\nnop") + nc.shape.startswith("nop"),
        nc.shape.count("\n") + 1 - nops if nc.shape else 0,
    )


def function_bytes(img: PEImage, f: Function) -> bytes:
    size = min(f.size, MAX_FUNCTION_SIZE)
    s = img.section_at(f.rva)
    if s is not None:
        size = min(size, s.rva + s.size - f.rva)
    return img.read(f.rva, max(0, size))


def normalize_function(img: PEImage, f: Function) -> NormalizedCode:
    code = function_bytes(img, f)
    return normalize(
        img.machine,
        code,
        f.rva,
        image_base=img.image_base,
        relocs=img.relocations.within(f.rva, f.rva + len(code)),
    )


def _code_with_template(img: PEImage, f: Function) -> tuple[FuncCode, Template | None]:
    code = function_bytes(img, f)
    relocs = img.relocations.within(f.rva, f.rva + len(code))
    nc = normalize(img.machine, code, f.rva, image_base=img.image_base, relocs=relocs)
    return _summarise(f.rva, nc), make_template(img.machine, code, f.rva, img.image_base, relocs, nc)


class _Templates:
    """The normalised functions of one image, to reuse for moved copies in the other
    (see :mod:`pehotpatch.templates`)."""

    NEAREST = 3  # candidates of the same size tried on each side of the address

    def __init__(self, done: Iterable[tuple[FuncCode, Template | None]]):
        by_size: dict[int, list[tuple[int, FuncCode, Template]]] = {}
        for fc, t in done:
            if t is not None:
                by_size.setdefault(t.size, []).append((fc.rva, fc, t))
        for lst in by_size.values():
            lst.sort(key=_first)
        self.by_size = by_size
        self.starts = {n: [e[0] for e in lst] for n, lst in by_size.items()}

    def code(self, img: PEImage, f: Function) -> FuncCode | None:
        """``f``'s code when a function of the same size normalises the same way."""
        code = function_bytes(img, f)
        cands = self.by_size.get(len(code))
        if not cands:
            return None
        i = bisect.bisect_left(self.starts[len(code)], f.rva)
        near = cands[max(0, i - self.NEAREST) : i + self.NEAREST]
        near.sort(key=lambda e: abs(e[0] - f.rva))
        relocs = img.relocations.within(f.rva, f.rva + len(code))
        for _rva, fc, t in near:
            refs = derive(t, code, f.rva, img.image_base, relocs, img.machine, fc.refs)
            if refs is not None:
                return FuncCode(f.rva, fc.digest, refs, fc.n_insns, fc.first_insn_size,
                                fc.hotpatch_nop, fc.entry_is_branch_target, fc.nops, fc.plain_lines)
        return None


def _first(e: tuple) -> int:
    return e[0]


# ---- the worker side (fork: images are inherited, only RVAs travel) ---------------------
_WORK: dict[int, tuple[PEImage, dict[int, Function]]] = {}


# Results travel as plain tuples: unpickling 11k frozen dataclass instances took the
# parent 0.17 s on numpy, plain tuples (rebuilt there) 0.04 s.
_make_code = FuncCode._make
_make_template = Template._make
def _pack(fc: FuncCode) -> tuple:
    return tuple(fc)


def _work(job: tuple[int, Sequence[int]]) -> list[tuple]:
    key, rvas = job
    img, by_rva = _WORK[key]
    return [_pack(_summarise(rva, normalize_function(img, by_rva[rva]))) for rva in rvas]


def _work_templates(job: tuple[int, Sequence[int]]) -> list[tuple[tuple, tuple | None]]:
    key, rvas = job
    img, by_rva = _WORK[key]
    out = []
    for rva in rvas:
        fc, t = _code_with_template(img, by_rva[rva])
        out.append((_pack(fc), None if t is None else tuple(t)))
    return out


_LIBRARY: list[_Templates] = []


def _work_reusing(job: tuple[int, Sequence[int]]) -> list[tuple]:
    key, rvas = job
    img, by_rva = _WORK[key]
    lib = _LIBRARY[0]
    out = []
    for rva in rvas:
        f = by_rva[rva]
        out.append(_pack(lib.code(img, f) or _summarise(rva, normalize_function(img, f))))
    return out


def _chunks(items: Sequence[int], n: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _jobs(key: int, rvas: Sequence[int], jobs: int) -> list[tuple[int, Sequence[int]]]:
    return [(key, c) for c in _chunks(rvas, max(200, len(rvas) // (jobs * 8) + 1))]


def build_codemaps(indexes: Sequence[SymbolIndex], *, jobs: int | None = None) -> list[dict[int, FuncCode]]:
    """Normalise every function of every index; returns one ``{rva: FuncCode}`` per index.

    With two indexes of the same x86/x64 machine (a base and its rebuild), the second
    is normalised first and each function of the first that is a moved copy of one of
    it reuses that normalisation (:mod:`pehotpatch.templates`); only the rest is
    decoded."""
    jobs = jobs or min(2, os.cpu_count() or 1)
    total = sum(len(ix.functions) for ix in indexes)
    out: list[dict[int, FuncCode]] = [{} for _ in indexes]
    reuse = (len(indexes) == 2 and indexes[0].image.machine is indexes[1].image.machine
             and indexes[0].image.machine is not Machine.ARM64)
    parallel = jobs > 1 and total >= 2000 and "fork" in multiprocessing.get_all_start_methods()
    if not parallel:
        if reuse:
            done = [_code_with_template(indexes[1].image, f) for f in indexes[1].functions]
            out[1] = {fc.rva: fc for fc, _ in done}
            lib = _Templates(done)
            for f in indexes[0].functions:
                out[0][f.rva] = lib.code(indexes[0].image, f) or _summarise(
                    f.rva, normalize_function(indexes[0].image, f))
            return out
        for k, ix in enumerate(indexes):
            for f in ix.functions:
                out[k][f.rva] = _summarise(f.rva, normalize_function(ix.image, f))
        return out
    _WORK.clear()
    for k, ix in enumerate(indexes):
        _WORK[k] = (ix.image, {f.rva: f for f in ix.functions})
    ctx = multiprocessing.get_context("fork")
    try:
        if reuse:
            # The rebuild first, keeping templates; then the base, in workers forked
            # after the templates are in place (they inherit them).
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                first = _jobs(1, [f.rva for f in indexes[1].functions], jobs)
                done = [(_make_code(fc), None if t is None else _make_template(t))
                        for chunk in pool.map(_work_templates, first) for fc, t in chunk]
            out[1] = {fc.rva: fc for fc, _ in done}
            _LIBRARY[:] = [_Templates(done)]
            del done
            work, worker = _jobs(0, [f.rva for f in indexes[0].functions], jobs), _work_reusing
        else:
            work = [j for k, ix in enumerate(indexes) for j in _jobs(k, [f.rva for f in ix.functions], jobs)]
            worker = _work
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            for (k, _), result in zip(work, pool.map(worker, work), strict=True):
                ok = out[k]
                for packed in result:
                    ok[packed[0]] = _make_code(packed)
    finally:
        _WORK.clear()
        _LIBRARY.clear()
    return out


def discover_call_targets(ix: SymbolIndex, code: dict[int, FuncCode]) -> tuple[SymbolIndex, dict[int, FuncCode]]:
    """Functions that are called but known to no symbol source (MSVC leaf functions have
    no ``.pdata`` entry): a new index that holds them too (``ix`` is not changed), and
    their code, already normalised."""
    call = KIND_CODES[RefKind.CALL]
    targets = sorted({t for fc in code.values() for _, k, t in fc.refs if k == call})
    extra: list[Function] = []
    starts = [f.rva for f in ix.functions]

    for t in targets:
        if ix.function_at(t) is not None:
            continue
        s = ix.image.section_at(t)
        if s is None or not s.executable:
            continue
        i = bisect.bisect_right(starts, t)
        nxt = starts[i] if i < len(starts) else s.rva + s.size
        end = min(nxt, s.rva + s.size)
        if extra and extra[-1].rva < t < extra[-1].end:
            extra[-1].size = t - extra[-1].rva
        extra.append(Function(f"sub_{t:x}", t, max(1, end - t), {"call-target"}))
    return ix.with_functions(extra), {f.rva: _summarise(f.rva, normalize_function(ix.image, f)) for f in extra}
