"""Normalise every function of an image, in parallel, into a compact comparable form.

The differ never keeps full instruction listings: per function it keeps a digest of the
normalised shape, the external references in order, and the prologue facts the rules
need.  Listings for display are recomputed for the few functions that changed.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from pehotpatch.disasm import NormalizedCode, normalize
from pehotpatch.image.pe import PEImage
from pehotpatch.image.symbols import Function, SymbolIndex

KIND_CODES = {"call": 0, "jump": 1, "data": 2, "indirect_call": 3, "indirect_jump": 4}
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}
MAX_FUNCTION_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FuncCode:
    rva: int
    digest: bytes  # of the normalised shape
    refs: tuple[tuple[int, int, int], ...]  # (offset, kind code, target RVA)
    n_insns: int
    first_insn_size: int
    hotpatch_nop: bytes
    entry_is_branch_target: bool
    has_nops: bool = False  # alignment no-ops inside the body (see diff's padding-only)


def _summarise(rva: int, nc: NormalizedCode) -> FuncCode:
    return FuncCode(
        rva,
        hashlib.blake2b(nc.shape.encode("utf-8", "surrogatepass"), digest_size=16).digest(),
        tuple((r.offset, KIND_CODES.get(r.kind, 2), r.target) for r in nc.refs),
        len(nc.insn_offsets),
        nc.first_insn_size,
        nc.hotpatch_nop,
        nc.entry_is_branch_target,
        nc.shape.startswith("nop") or "\nnop" in nc.shape,
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


# ---- the worker side (fork: images are inherited, only RVAs travel) ---------------------
_WORK: dict[int, tuple[PEImage, dict[int, Function]]] = {}


def _work(job: tuple[int, Sequence[int]]) -> list[FuncCode]:
    key, rvas = job
    img, by_rva = _WORK[key]
    return [_summarise(rva, normalize_function(img, by_rva[rva])) for rva in rvas]


def _chunks(items: Sequence[int], n: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def build_codemaps(indexes: Sequence[SymbolIndex], *, jobs: int | None = None) -> list[dict[int, FuncCode]]:
    """Normalise every function of every index; returns one ``{rva: FuncCode}`` per index."""
    jobs = jobs or min(2, os.cpu_count() or 1)
    total = sum(len(ix.functions) for ix in indexes)
    out: list[dict[int, FuncCode]] = [{} for _ in indexes]
    if jobs <= 1 or total < 2000 or "fork" not in multiprocessing.get_all_start_methods():
        for k, ix in enumerate(indexes):
            for f in ix.functions:
                out[k][f.rva] = _summarise(f.rva, normalize_function(ix.image, f))
        return out
    _WORK.clear()
    work: list[tuple[int, Sequence[int]]] = []
    for k, ix in enumerate(indexes):
        _WORK[k] = (ix.image, {f.rva: f for f in ix.functions})
        # Interleave big and small functions so chunks cost about the same.
        rvas = [f.rva for f in ix.functions]
        work.extend((k, c) for c in _chunks(rvas, max(200, len(rvas) // (jobs * 8) + 1)))
    ctx = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            for (k, _), result in zip(work, pool.map(_work, work), strict=True):
                for fc in result:
                    out[k][fc.rva] = fc
    finally:
        _WORK.clear()
    return out


def discover_call_targets(ix: SymbolIndex, code: dict[int, FuncCode]) -> dict[int, FuncCode]:
    """Add functions that are called but known to no symbol source (MSVC leaf functions
    have no ``.pdata`` entry); return their code, already normalised."""
    call = KIND_CODES["call"]
    targets = sorted({t for fc in code.values() for _, k, t in fc.refs if k == call})
    extra: list[Function] = []
    starts = [f.rva for f in ix.functions]
    import bisect

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
    ix.add_functions(extra)
    return {f.rva: _summarise(f.rva, normalize_function(ix.image, f)) for f in extra}
