"""Reuse one function's normalisation for another function with the same bytes.

A function that moved between two builds keeps its bytes except in the fields that
hold addresses: rel8/rel32 branch displacements, RIP-relative displacements and
relocated absolute addresses.  Its normalised shape is the same (those fields become
``@`` or stay internal offsets), and its references follow from the field values.  So
once one image's function is normalised, a function of the other image whose bytes
equal it outside those fields needs no decoding: its :class:`FuncCode` is the same
with the references recomputed from its own field values.

A :class:`Template` records, for one normalised function, where the fields are and the
function's bytes with them zeroed.  :func:`derive` checks a candidate against it and
gives the candidate's :class:`FuncCode`, or None when anything differs, in which case
the caller normalises the candidate itself.  The result is the one normalisation would
give: the bytes outside the fields decide the instruction boundaries and the text, each
field's value decides its target, and every target must stay on the same side
(external, or the same offset inside the function) as in the template.  Functions whose
normalisation looked at their own address (tables read through ``__ImageBase``, tables
shown as data) and ARM64 code get no template.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import NamedTuple

from pehotpatch.disasm import NormalizedCode
from pehotpatch.disasm.model import CALL, JUMP
from pehotpatch.image.machine import Machine

# Field kinds
PCREL = 0  # signed displacement from the end of the instruction
ABS_REF = 1  # relocated absolute address of an external target (a reference)
ABS_INTERNAL = 2  # relocated absolute address inside the function (an internal label)
_BRANCHES = frozenset((CALL, JUMP))


class Template(NamedTuple):
    size: int
    masked: bytes  # the function's bytes with every field zeroed
    relocs: tuple[int, ...]  # offsets of the relocations inside the function
    # (field offset, width, kind, end of instruction for PCREL / internal offset for
    # ABS_INTERNAL, index of the reference it makes or -1)
    fields: tuple[tuple[int, int, int, int, int], ...]
    head: int  # bytes before the first field
    tail: int  # where the bytes after the last field start


def _mask(code: bytes, fields: Sequence[tuple[int, int, int, int, int]]) -> bytes:
    buf = bytearray(code)
    for off, width, _k, _e, _r in fields:
        buf[off : off + width] = bytes(width)
    return bytes(buf)


def make_template(machine: Machine, code: bytes, rva: int, image_base: int,
                  relocs: Sequence[int], nc: NormalizedCode) -> Template | None:
    """The template of a function normalised as ``nc`` (None when it cannot have one)."""
    if machine is Machine.ARM64 or nc.position_dependent or not nc.shape:
        return None
    width = 4 if machine is Machine.X86 else 8
    n = len(code)
    offsets = nc.insn_offsets
    rel = [r - rva for r in relocs if r - rva + width <= n]
    if len(rel) != len(relocs):
        return None  # a relocation straddles the end of the function
    rel_targets = {o: int.from_bytes(code[o : o + width], "little") - image_base for o in rel}
    used: set[int] = set()
    fields: list[tuple[int, int, int, int, int]] = []
    mask = (1 << (8 * width)) - 1
    half = mask >> 1
    find = code.find
    n_off = len(offsets)
    for i, r in enumerate(nc.refs):
        ro = r.offset
        k = bisect_left(offsets, ro)
        if k >= n_off or offsets[k] != ro:
            return None
        end = offsets[k + 1] if k + 1 < n_off else nc.size
        if rel:
            hit = next((o for o in rel if ro <= o < end and o not in used and rel_targets[o] == r.target), None)
            if hit is not None:
                used.add(hit)
                fields.append((hit, width, ABS_REF, 0, i))
                continue
        disp = r.target - rva - end
        if disp > half:
            disp -= mask + 1  # the target wrapped around the address space
        if not -0x80000000 <= disp < 0x80000000:
            return None
        if end - ro <= 3 and -128 <= disp < 128 and r.kind in _BRANCHES:
            if code[end - 1] != disp & 0xFF:
                return None
            fields.append((end - 1, 1, PCREL, end, i))
            continue
        d4 = disp.to_bytes(4, "little", signed=True)
        p = find(d4, ro, end)
        if p < 0 or find(d4, p + 1, end) >= 0:
            return None
        fields.append((p, 4, PCREL, end, i))
    for o in rel:
        if o in used:
            continue
        t = rel_targets[o]
        if not 0 <= t - rva < n:
            return None  # an external address that made no reference: not understood
        fields.append((o, width, ABS_INTERNAL, t - rva, -1))
    spans = sorted((f[0], f[0] + f[1]) for f in fields)
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False)):
        return None
    head = spans[0][0] if spans else n
    tail = spans[-1][1] if spans else n
    return Template(n, _mask(code, fields), tuple(rel), tuple(fields), head, tail)


def derive(t: Template, code: bytes, rva: int, image_base: int, relocs: Sequence[int],
           machine: Machine, refs: Sequence[tuple[int, int, int]]) -> tuple[tuple[int, int, int], ...] | None:
    """The references ``(offset, kind, target)`` of the function ``code`` at ``rva`` if
    it normalises like the template's function, whose references are ``refs``; None
    when it may not."""
    n = len(code)
    if n != t.size or tuple(r - rva for r in relocs) != t.relocs:
        return None
    # the bytes outside the first and last field first: most functions that differ, differ there
    if code[: t.head] != t.masked[: t.head] or code[t.tail :] != t.masked[t.tail :]:
        return None
    if _mask(code, t.fields) != t.masked:
        return None
    addr_mask = 0xFFFFFFFF if machine is Machine.X86 else 0xFFFFFFFFFFFFFFFF
    out: list[tuple[int, int]] = []
    for off, width, kind, extra, ref in t.fields:
        if kind == PCREL:
            target = (rva + extra + int.from_bytes(code[off : off + width], "little", signed=True)) & addr_mask
        else:
            target = int.from_bytes(code[off : off + width], "little") - image_base
        inside = 0 <= target - rva < n
        if kind == ABS_INTERNAL:
            if target - rva != extra:
                return None
            continue
        if inside or target == 0:
            return None  # internal here, or __ImageBase: the text would differ
        out.append((ref, target))
    if len(out) != len(refs):
        return None
    out.sort()
    return tuple((refs[i][0], refs[i][1], target) for i, target in out)
