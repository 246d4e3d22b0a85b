"""Normalise every function of an image, in parallel, into a compact comparable form.

The differ never keeps full instruction listings: per function it keeps a digest of the
normalised shape, the external references in order, and the prologue facts the rules
need.  Listings for display are recomputed for the few functions that changed.
"""

from __future__ import annotations

import array
import bisect
import hashlib
import marshal
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple, TypeVar

import pehotpatch.cache as cache
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
_J = TypeVar("_J")


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


def code_size(img: PEImage, f: Function) -> int:
    """How many bytes of ``f`` are normalised (up to its section's end)."""
    size = min(f.size, MAX_FUNCTION_SIZE)
    s = img.section_at(f.rva)
    if s is not None:
        size = min(size, s.rva + s.size - f.rva)
    return max(0, size)


def function_bytes(img: PEImage, f: Function) -> bytes:
    return img.read(f.rva, code_size(img, f))


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


#: Earlier functions of the same size tried as templates for the next one of an image.
_RECENT = 3


def _normalise_all(img: PEImage, functions: Iterable[Function],
                   keep: Callable[[int], bool]) -> list[tuple[FuncCode, Template | None]]:
    """Every function of ``functions`` (in address order) normalised, with a template for
    those whose size ``keep`` accepts.  Within one image, a function that is a copy of one
    of the few functions of its size just before it (instantiations of one template or
    macro, differing in the addresses they use) reuses that normalisation through its
    template, as a moved copy in the other build does (:mod:`pehotpatch.templates`); the
    result is the one decoding gives.  A copy shares its source's template."""
    out: list[tuple[FuncCode, Template | None]] = []
    recent: dict[int, list[tuple[FuncCode, Template]]] = {}
    for f in functions:
        code = function_bytes(img, f)
        n = len(code)
        got: tuple[FuncCode, Template | None] | None = None
        near = recent.get(n)
        if near:
            relocs = img.relocations.within(f.rva, f.rva + n)
            for fc, t in reversed(near):
                refs = derive(t, code, f.rva, img.image_base, relocs, img.machine, fc.refs)
                if refs is not None:
                    got = (FuncCode(f.rva, fc.digest, refs, fc.n_insns, fc.first_insn_size, fc.hotpatch_nop,
                                    fc.entry_is_branch_target, fc.nops, fc.plain_lines), t)
                    break
        if got is None:
            got = _code_with_template(img, f) if keep(n) else (_summarise(f.rva, normalize_function(img, f)), None)
        out.append(got)
        if got[1] is not None:
            lst = recent.setdefault(n, [])
            lst.append((got[0], got[1]))
            if len(lst) > _RECENT:
                del lst[0]
    return out


# ---- the worker side (fork: images are inherited, only RVAs travel) ---------------------
_WORK: dict[int, tuple[PEImage, dict[int, Function]]] = {}


# Results travel as plain tuples: unpickling 11k frozen dataclass instances took the
# parent 0.17 s on numpy, plain tuples (rebuilt there) 0.04 s.
_make_code = FuncCode._make


def _pack(fc: FuncCode) -> tuple:
    return tuple(fc)


def _work(job: tuple[int, Sequence[int]]) -> list[tuple]:
    key, rvas = job
    img, by_rva = _WORK[key]
    return [_pack(_summarise(rva, normalize_function(img, by_rva[rva]))) for rva in rvas]


def _work_window(job: tuple[Sequence[int], Sequence[int]]) -> tuple[list[tuple], list[tuple]]:
    """One address window of a base and its rebuild: the rebuild's functions normalised
    (keeping templates of the sizes the base window has), then the base's functions,
    reusing those templates where they apply."""
    new_rvas, base_rvas = job
    bimg, bby = _WORK[0]
    nimg, nby = _WORK[1]
    done = _normalise_all(nimg, [nby[rva] for rva in new_rvas], _template_sizes(
        [code_size(bimg, bby[rva]) for rva in base_rvas], [code_size(nimg, nby[rva]) for rva in new_rvas]))
    lib = _Templates(done)
    base_out = []
    for rva in base_rvas:
        f = bby[rva]
        base_out.append(_pack(lib.code(bimg, f) or _summarise(rva, normalize_function(bimg, f))))
    return [_pack(fc) for fc, _ in done], base_out


def _template_sizes(base_sizes: Iterable[int], new_sizes: Sequence[int]) -> Callable[[int], bool]:
    """The sizes worth a template (it costs about a third of a decoding): a size some base
    function has (a moved copy may reuse it) or that two new functions share (a copy in
    the same image may)."""
    seen: set[int] = set()
    keep = set(base_sizes)
    for n in new_sizes:
        if n in seen:
            keep.add(n)
        seen.add(n)
    return keep.__contains__


def _windows(base: SymbolIndex, new: SymbolIndex, jobs: int) -> list[tuple[list[int], list[int]]]:
    """The functions of both images cut into address windows of about the same number of
    the rebuild's functions (a base function goes with the window its address is in)."""
    nr = sorted(f.rva for f in new.functions)
    br = sorted(f.rva for f in base.functions)
    step = max(200, len(nr) // (jobs * 16) + 1)
    cuts = [nr[i] for i in range(step, len(nr), step)]
    out = []
    lo = 0
    for k in range(len(cuts) + 1):
        hi = bisect.bisect_left(br, cuts[k]) if k < len(cuts) else len(br)
        out.append((nr[k * step : (k + 1) * step], br[lo:hi]))
        lo = hi
    return out


def _chunks(items: Sequence[int], n: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _jobs(key: int, rvas: Sequence[int], jobs: int) -> list[tuple[int, Sequence[int]]]:
    return [(key, c) for c in _chunks(rvas, max(200, len(rvas) // (jobs * 8) + 1))]


def _shared(worker: Callable[[_J], Any], work: Sequence[_J], jobs: int) -> list[Any]:
    """``worker(job)`` for every job, in order, shared between this process and ``jobs - 1``
    forks of it: each takes the next job not yet taken until none is left.  A fork sends
    its results when it is done (``marshal``: plain tuples of numbers and bytes); the jobs
    of a fork that fails are done here."""
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("l", 0)

    def take() -> int:
        with counter.get_lock():
            i = counter.value
            counter.value = i + 1
        return i

    def run(into: dict[int, Any]) -> None:
        while (i := take()) < len(work):
            into[i] = worker(work[i])

    def child(conn: Any) -> None:
        done: dict[int, Any] = {}
        try:
            run(done)
            conn.send_bytes(marshal.dumps(done))
        except BaseException:
            pass  # the parent does this fork's jobs again (and meets the error, if any)
        finally:
            conn.close()

    forks = []
    for _ in range(jobs - 1):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=child, args=(send,), daemon=True)
        proc.start()
        send.close()
        forks.append((proc, recv))
    results: dict[int, Any] = {}
    try:
        run(results)
    except BaseException:
        for proc, recv in forks:
            proc.terminate()
            recv.close()
            proc.join()
        raise
    for proc, recv in forks:
        try:
            results.update(marshal.loads(recv.recv_bytes()))
        except (EOFError, OSError, ValueError):
            pass  # the fork died: its jobs are done below
        finally:
            recv.close()
            proc.join()
    return [results[i] if i in results else worker(job) for i, job in enumerate(work)]


def build_codemaps(indexes: Sequence[SymbolIndex], *, jobs: int | None = None) -> list[dict[int, FuncCode]]:
    """Normalise every function of every index; returns one ``{rva: FuncCode}`` per index.

    An index whose image and function extents were normalised before by this same pehp
    is read back from the cache (:mod:`pehotpatch.cache`); the others are normalised and
    stored there."""
    keys = [_cache_key(ix) for ix in indexes]
    out = [_cached(k) for k in keys]
    todo = [i for i, got in enumerate(out) if got is None]
    if todo:
        made = _build_codemaps([indexes[i] for i in todo], jobs=jobs)
        for i, m in zip(todo, made, strict=True):
            out[i] = m
            if (k := keys[i]) is not None:
                cache.put(k, [tuple(fc) for fc in m.values()])
    return [m if m is not None else {} for m in out]


def _cache_key(ix: SymbolIndex) -> str | None:
    if cache.directory() is None:
        return None
    return _key(ix.image, ix.functions)


def _key(img: PEImage, functions: Sequence[Function]) -> str:
    """What is normalised: the image's bytes (its sections and relocations among them) and
    each function's extent."""
    extents = array.array("Q", [x for f in functions for x in (f.rva, f.size)])
    return cache.key("codemap", hashlib.sha256(img.data).digest(), str(img.machine).encode(),
                     img.image_base.to_bytes(8, "little"), extents.tobytes())


def _cached(name: str | None) -> dict[int, FuncCode] | None:
    if name is None:
        return None
    got = cache.get(name)
    if not isinstance(got, list):
        return None
    try:
        return {fc.rva: fc for fc in map(_make_code, got)}
    except TypeError:
        return None


def _build_codemaps(indexes: Sequence[SymbolIndex], *, jobs: int | None = None) -> list[dict[int, FuncCode]]:
    """:func:`build_codemaps` without the cache.

    With two indexes of the same x86/x64 machine (a base and its rebuild), the second
    is normalised first and each function of the first that is a moved copy of one of
    it reuses that normalisation (:mod:`pehotpatch.templates`); only the rest is
    decoded.  In parallel, this is done per address window, each window's base
    functions reusing its own rebuild functions: the result is the same, since a reused
    normalisation is exactly the one decoding gives."""
    jobs = jobs or min(2, os.cpu_count() or 1)
    total = sum(len(ix.functions) for ix in indexes)
    out: list[dict[int, FuncCode]] = [{} for _ in indexes]
    reuse = (len(indexes) == 2 and indexes[0].image.machine is indexes[1].image.machine
             and indexes[0].image.machine is not Machine.ARM64)
    parallel = (jobs > 1 and total >= 2000 and "fork" in multiprocessing.get_all_start_methods()
                and not multiprocessing.current_process().daemon)  # a daemon may not fork workers
    if not parallel:
        if reuse:
            done = _normalise_all(indexes[1].image, indexes[1].functions, lambda _n: True)
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
    try:
        if reuse:
            for new_part, base_part in _shared(_work_window, _windows(indexes[0], indexes[1], jobs), jobs):
                for k, part in ((1, new_part), (0, base_part)):
                    ok = out[k]
                    for packed in part:
                        ok[packed[0]] = _make_code(packed)
        else:
            work = [j for k, ix in enumerate(indexes) for j in _jobs(k, [f.rva for f in ix.functions], jobs)]
            for (k, _), result in zip(work, _shared(_work, work, jobs), strict=True):
                ok = out[k]
                for packed in result:
                    ok[packed[0]] = _make_code(packed)
    finally:
        _WORK.clear()
    return out


_EXACT_EXTENT = frozenset({"pdb", "pdata"})
_TAIL = 64


def without_padding(img: PEImage, rva: int, size: int) -> int:
    """A guessed extent without the run of ``int3`` bytes (two or more) it ends with: the
    next function's padding (as :mod:`pehotpatch.diff.starts` trims the extents it guesses)."""
    n = min(size, _TAIL)
    tail = img.try_read(rva + size - n, n) if n >= 2 else None
    if not tail or tail[-2:] != b"\xcc\xcc":
        return size
    kept = len(tail.rstrip(b"\xcc"))
    return size if kept == 0 else size - (n - kept)


def discover_call_targets(ix: SymbolIndex, code: dict[int, FuncCode]) -> tuple[SymbolIndex, dict[int, FuncCode]]:
    """Functions that are called but known to no symbol source (MSVC leaf functions have
    no ``.pdata`` entry): a new index that holds them too (``ix`` is not changed), and
    their code, already normalised.

    A call into a function whose extent is only a guess (no PDB or ``.pdata`` gives it)
    also starts a function there: the guess covered it.  Without that, one build could
    hold a run of import thunks as one function guessed from the padding before it, and
    the other, with less padding, as the separate thunks its calls reach, and every caller
    would compare as changed."""
    call = KIND_CODES[RefKind.CALL]
    targets = sorted({t for fc in code.values() for _, k, t in fc.refs if k == call})
    extra: list[Function] = []
    cut: dict[int, list[int]] = {}
    starts = [f.rva for f in ix.functions]

    for t in targets:
        f = ix.function_at(t)
        if f is not None:
            if f.rva != t and not f.sources & _EXACT_EXTENT:
                cut.setdefault(f.rva, []).append(t)
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
    for f in extra:
        f.size = without_padding(ix.image, f.rva, f.size)
    if not cut:
        return ix.with_functions(extra), _normalised(ix.image, extra)
    functions: list[Function] = []
    redo: list[Function] = []
    for f in ix.functions:
        cuts = cut.get(f.rva)
        if not cuts:
            functions.append(f)
            continue
        head = replace(f, size=without_padding(ix.image, f.rva, cuts[0] - f.rva), sources=set(f.sources), aliases=set(f.aliases),
                       exported_as=list(f.exported_as))
        functions.append(head)
        redo.append(head)
        for a, b in zip(cuts, [*cuts[1:], f.end], strict=True):
            piece = Function(f"sub_{a:x}", a, without_padding(ix.image, a, b - a), {"call-target"})
            functions.append(piece)
            redo.append(piece)
    functions = sorted([*functions, *extra], key=lambda f: f.rva)
    out = replace(ix, functions=functions, notes=list(ix.notes))
    return out, _normalised(ix.image, [*extra, *redo])


def _normalised(img: PEImage, functions: list[Function]) -> dict[int, FuncCode]:
    """``functions`` of ``img`` normalised, or read from the cache."""
    name = None
    if functions and cache.directory() is not None:
        name = _key(img, functions)
        got = _cached(name)
        if got is not None:
            return got
    out = {f.rva: _summarise(f.rva, normalize_function(img, f)) for f in functions}
    if name is not None:
        cache.put(name, [tuple(fc) for fc in out.values()])
    return out
