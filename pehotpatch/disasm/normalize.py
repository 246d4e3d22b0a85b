"""Per-ISA instruction normalisation: code -> (shape, refs) independent of layout.

A function's *shape* is its disassembly text with every address that depends on where
things were placed replaced: external addresses by the placeholder ``@`` (each one has a
:class:`Ref`, in the same order), addresses inside the function by ``+0x..`` offsets.
Two functions whose shapes are equal and whose refs name the same symbols are the same
code, whatever the layout of the images around them.

Speed matters (the differ normalises every function of both images), so the x86/x64 path
never looks at instructions one by one in Python: the text of the whole function is
produced in bulk (see :mod:`._decode`) and the few places that hold addresses are found
with regular expressions over that text.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import attrgetter

from pehotpatch.disasm._decode import decoder
from pehotpatch.disasm.arm64 import normalize_arm64
from pehotpatch.disasm.model import (
    CALL,
    DATA,
    HOTPATCH_NOP_ENCODINGS,
    INDIRECT_CALL,
    INDIRECT_JUMP,
    JUMP,
    PLACEHOLDER,
    NormalizedCode,
    Ref,
    apply_relocs,
    internal_label,
    line_starts,
    sentinel,
)
from pehotpatch.image.machine import Machine

__all__ = ["normalize"]


def normalize(
    machine: Machine,
    code: bytes,
    rva: int,
    *,
    image_base: int,
    relocs: Sequence[int] = (),
) -> NormalizedCode:
    """Normalise one function's code (``code`` starts at ``rva``).

    ``relocs``: sorted RVAs of base-relocation fixups (x86 HIGHLOW, x64/ARM64 DIR64);
    only those inside ``[rva, rva + len(code))`` are used.  An absolute operand under a
    relocation is an address (``VA - image_base`` is its RVA) and becomes a ref; an
    immediate not under one stays a literal.
    """
    if machine.__class__ is not Machine:
        machine = Machine(machine)
    if code.__class__ is not bytes:
        code = bytes(code)
    if machine is Machine.ARM64:
        return normalize_arm64(code, rva, image_base, relocs)
    return _normalize_x86(machine, code, rva, image_base, relocs)


# ---- x86 / x64 ---------------------------------------------------------------------------
# Each pass below uses ``re.split`` with groups: the result alternates between the text
# between matches and the matched pieces, so the pieces can be examined in bulk (``map``)
# and replaced in the list before joining it back, without a Python step per match for
# the common cases.  The text keeps its lines (one per instruction of the body), starting
# and ending with a newline; the line index of a piece is the number of newlines before
# it, minus one.
_X86_PAD = frozenset((b"int3", b"nop"))
# Direct branches: the whole line is "mnemonic target" (bnd-prefixed ones are rare)
_BRANCH_RE = re.compile(r"\n(call|j[a-z]+|loop[a-z]*|xbegin) (0x[0-9a-f]+|\d+)(?=\n)")
_BRANCH_PREFIXED_RE = re.compile(
    r"\n((?:bnd |notrack )?(?:call|j[a-z]+|loop[a-z]*|xbegin)) (0x[0-9a-f]+|\d+)(?=\n)"
)
# RIP-relative operands: [text, "[rip + 0x..]", text, ...]
_RIP_SPLIT_RE = re.compile(r"(\[rip(?: [+-] (?:0x[0-9a-f]+|\d+))?\])")
# [base + index*scale + disp] after `lea reg, [rip -> __ImageBase]`: MSVC x64 jump and
# index tables, whose displacement is an RVA.
_IMAGEBASE_INDEXED_RE = re.compile(
    r"\[(r[a-z0-9]+) \+ (r[a-z0-9]+)(?:\*[1248])? \+ (0x[0-9a-f]+)\]"
)
_MIN_TABLE_RVA = 0x1000
_SENTINEL_SPLIT_RE = {
    w: re.compile("(" + re.escape(f"{sentinel(w, 0):#x}"[:-1]) + "[0-3])") for w in (4, 8)
}
_NL = "\n"
_count = str.count


def _normalize_x86(
    machine: Machine, code: bytes, rva: int, image_base: int, relocs: Sequence[int]
) -> NormalizedCode:
    x64 = machine is Machine.X64
    width = 8 if x64 else 4
    mask = (1 << (8 * width)) - 1
    code_len = len(code)
    if relocs:
        dcode, rels = apply_relocs(code, rva, image_base, relocs, width)
    else:
        dcode, rels = code, None
    # Decode with the body (what follows the hot-patch no-op) at address 0: branch
    # targets inside the function then print as offsets and need no rewriting.
    hp_nop = code[:2]
    if code_len > 2 and hp_nop in HOTPATCH_NOP_ENCODINGS[machine]:
        base = 2
    else:
        base = 0
        hp_nop = b""
    pairs, sizes = decoder(machine).decode(dcode, -base & mask)
    n = len(pairs)
    if n == 0:
        return NormalizedCode("", [], [], 0, b"", 0, machine, set(), False)
    if pairs[-1][0] in _X86_PAD:  # trailing int3 / nop padding
        k = n
        while k > 1 and pairs[k - 1][0] in _X86_PAD:
            k -= 1
        pairs = pairs[:k]
        sizes = sizes[:k]
    ends = list(accumulate(sizes))
    insn_offsets = [0, *ends[:-1]]
    first = 1 if base else 0
    text = (
        (b"\n" + b"\n".join(map(b" ".join, pairs[1:] if base else pairs)) + b"\n")
        .replace(b" \n", b"\n")
        .decode("ascii", "replace")
    )
    refs: list[Ref] = []
    nstages = 0

    # Direct branches leaving the function
    count = text.count
    brx = _BRANCH_PREFIXED_RE if "bnd " in text else _BRANCH_RE
    lim = code_len - base  # printed targets below this are inside the function
    nop_lo = mask + 1 - base  # ... and so are these (the no-op, at -2 / -1)
    pieces: list[str] = []
    last = 0
    nl = 0
    pos0 = 0
    for m in brx.finditer(text):
        v = int(m.group(2), 16)
        if v < lim or v >= nop_lo:
            continue
        s = m.start()
        nl += count(_NL, pos0, s + 1)
        pos0 = s + 1
        idx = nl - 1 + first
        kind = CALL if m.group(1).endswith("call") else JUMP
        refs.append(Ref(insn_offsets[idx], kind, (rva + v + base) & mask))
        pieces.append(text[last : m.start(2)])
        pieces.append(PLACEHOLDER)
        last = m.end(2)
    if pieces:
        pieces.append(text[last:])
        text = "".join(pieces)
        nstages += 1

    # RIP-relative operands (x64)
    imagebase_regs: dict[str, int] = {}
    if x64 and "[rip" in text:
        parts = _RIP_SPLIT_RE.split(text)
        nls = list(accumulate(map(_count, parts[0::2], repeat(_NL))))
        start = len(refs)
        for j in range(1, len(parts), 2):
            tok = parts[j]
            idx = nls[j >> 1] - 1 + first
            off = ends[idx]
            if len(tok) > 5:
                disp = int(tok[7:-1], 16)
                off = off + disp if tok[5] == "+" else off - disp
            if 0 <= off < code_len:
                parts[j] = "[" + internal_label(off, base) + "]"
                continue
            parts[j] = "[" + PLACEHOLDER + "]"
            target = rva + off
            seg = parts[j - 1]
            ls = seg.rfind(_NL) + 1
            if seg.startswith("call ", ls):
                kind = INDIRECT_CALL
            elif seg.startswith(_JMP_HEADS, ls):
                kind = INDIRECT_JUMP
            else:
                kind = DATA
                if target == 0 and seg.startswith("lea ", ls):
                    # the line index orders it against later uses of the register
                    imagebase_regs.setdefault(seg[ls + 4 : seg.index(",", ls)], idx)
            refs.append(Ref(insn_offsets[idx], kind, target))
        text = "".join(parts)
        if len(refs) > start:
            nstages += 1

    # Table displacements relative to a register holding __ImageBase
    if imagebase_regs:
        new = _table_refs(text, imagebase_regs, insn_offsets, first, refs)
        if new is not None:
            text = new
            nstages += 1

    # Relocated absolute addresses (x86 mostly)
    if rels:
        text = _reloc_refs(text, rels, width, insn_offsets, first, refs)
        nstages += 1

    if nstages > 1:
        refs.sort(key=_REF_OFFSET)
    return NormalizedCode(text[1:-1], refs, insn_offsets, sizes[0], hp_nop, ends[-1], machine)


def _first(item: tuple) -> int:
    return item[0]


_REF_OFFSET = attrgetter("offset")
_JMP_HEADS = ("jmp ", "notrack jmp ")


def _table_refs(
    text: str,
    imagebase_regs: dict[str, int],
    insn_offsets: list[int],
    first: int,
    refs: list[Ref],
) -> str | None:
    """Displacements of ``[reg + reg*s + disp]`` operands after a register was loaded
    with ``__ImageBase``: RVAs of tables.  Appends the refs and returns the new text
    (None when there are none)."""
    pieces = []
    last = 0
    nl = 0
    pos0 = 0
    never = 1 << 62
    for m in _IMAGEBASE_INDEXED_RE.finditer(text):
        s = m.start()
        nl += text.count(_NL, pos0, s)
        pos0 = s
        idx = nl - 1 + first
        if not (
            imagebase_regs.get(m.group(1), never) < idx
            or imagebase_regs.get(m.group(2), never) < idx
        ):
            continue
        target = int(m.group(3), 16)
        if target < _MIN_TABLE_RVA:
            continue
        pieces.append(text[last : m.start(3)])
        pieces.append(PLACEHOLDER)
        last = m.end(3)
        refs.append(Ref(insn_offsets[idx], DATA, target))
    if not pieces:
        return None
    pieces.append(text[last:])
    return "".join(pieces)


def _reloc_refs(
    text: str,
    rels: list[tuple[int, int, int]],
    width: int,
    insn_offsets: list[int],
    first: int,
    refs: list,
) -> str:
    """Relocated fields: each sentinel in the text becomes ``@``.  A relocation whose
    sentinel is not in the text (it straddles decoded garbage) gets an ``@`` appended
    to the line of the instruction where it starts."""
    parts = _SENTINEL_SPLIT_RE[width].split(text)
    found = parts[1::2]
    if len(found) == len(rels) and all(
        tok[-1] == "0123"[k] for tok, (_o, k, _t) in zip(found, rels, strict=True)
    ):
        for j, (off, _k, target) in enumerate(rels):
            idx = bisect_right(insn_offsets, off) - 1
            kind = DATA
            before = parts[2 * j]
            if before.endswith("[") and parts[2 * j + 2].startswith("]"):
                head = before[before.rfind(_NL) + 1 :]
                if head.startswith("call "):
                    kind = INDIRECT_CALL
                elif head.startswith(("jmp ", "notrack jmp ")):
                    kind = INDIRECT_JUMP
            parts[2 * j + 1] = PLACEHOLDER
            refs.append(Ref(insn_offsets[idx], kind, target))
        return "".join(parts)
    return _reloc_refs_slow(text, rels, width, insn_offsets, first, refs)


def _reloc_refs_slow(
    text: str,
    rels: list[tuple[int, int, int]],
    width: int,
    insn_offsets: list[int],
    first: int,
    refs: list,
) -> str:
    starts = line_starts(text)  # starts[i] = start of body line i; last = end of text
    body_offsets = insn_offsets[first:]
    edits = []
    for off, k, target in rels:
        li = max(bisect_right(body_offsets, off) - 1, 0)
        ls = starts[li]
        le = starts[li + 1] - 1 if li + 1 < len(starts) else len(text) - 1
        token = f"{sentinel(width, k):#x}"
        p = text.find(token, ls, le)
        ref_idx = li + first
        ref = Ref(insn_offsets[ref_idx], DATA, target)
        if p < 0:
            edits.append((le, le, " " + PLACEHOLDER, ref))
            continue
        if text[p - 1] == "[" and text[p + len(token)] == "]":
            if text.startswith("call ", ls):
                ref = Ref(ref.offset, INDIRECT_CALL, target)
            elif text.startswith(("jmp ", "notrack jmp "), ls):
                ref = Ref(ref.offset, INDIRECT_JUMP, target)
        edits.append((p, p + len(token), PLACEHOLDER, ref))
    edits.sort(key=_first)
    pieces = []
    last = 0
    for s, e, rep, ref in edits:
        if s < last:
            continue
        pieces.append(text[last:s])
        pieces.append(rep)
        refs.append(ref)
        last = e
    pieces.append(text[last:])
    return "".join(pieces)
