"""x86 and x64 normalisation.

The text of a function body has one line per instruction and starts and ends with a
newline, so the line index of a position is the number of newlines before it, minus
one.  Each pass finds its pieces with one regular expression over the whole text:
direct branches, RIP-relative operands, absolute operands under base relocations, and
RVAs indexed from ``__ImageBase`` (MSVC x64 jump and index tables).  Jump and index
tables inside the function's range are found here and decoded as data by
:mod:`pehotpatch.disasm.x86_tables`.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import attrgetter

from pehotpatch.disasm._decode import decoder
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
from pehotpatch.disasm.x86_tables import (
    NEAR_RVA,
    X86_PAD,
    Region,
    Table,
    decode_around,
    leading_rva_table,
    table_regions,
    table_scale,
    trailing_rva_table,
)
from pehotpatch.image.machine import Machine

__all__ = ["normalize_x86"]

# Direct branches: the whole line is "mnemonic target"; capstone prints targets below 10
# in decimal.  (MPX "bnd" prefixes are only recognised in functions of up to 16 bytes.)
_BRANCH_RE_DIGITS = {
    d: re.compile(r"\n(call|j[a-z]+|loop[a-z]*|xbegin) (0x[0-9a-f]{" + str(d) + r",})(?=\n)")
    for d in range(2, 17)
}
_BRANCH_PREFIXED_RE = re.compile(
    r"\n((?:bnd |notrack )?(?:call|j[a-z]+|loop[a-z]*|xbegin)) (0x[0-9a-f]+|\d+)(?=\n)"
)
# RIP-relative operands: split gives [text, "[rip + 0x..]", text, ...]
_RIP_SPLIT_RE = re.compile(r"(\[rip(?: [+-] (?:0x[0-9a-f]+|\d+))?\])")
# [base + index*scale + disp] after `lea reg, [rip -> __ImageBase]`: MSVC x64 jump,
# index and array accesses, whose displacement is an RVA.
_IMAGEBASE_INDEXED_RE = re.compile(
    r"\[(r[a-z0-9]+) \+ (r[a-z0-9]+)(?:\*([1248]))? \+ (0x[0-9a-f]+)\]"
)
_MIN_TABLE_RVA = 0x1000
_SENTINEL_SPLIT_RE = {
    w: re.compile("(" + re.escape(f"{sentinel(w, 0):#x}"[:-1]) + "[0-3])") for w in (4, 8)
}
_NL = "\n"
_count = str.count
_REF_OFFSET = attrgetter("offset")
_JMP_HEADS = ("jmp ", "notrack jmp ")
_LONG_ABS_RE = re.compile(r"\n\.long (0x[0-9a-f]+)(?=\n)")

# Index displacements taken for RVAs without a __ImageBase load in the function: at
# least this large, and within NEAR_RVA of the code.
_MIN_INHERITED_RVA = 0x10000


class _AnyRegister:
    """Every register holds __ImageBase from before the first line (a function chunk)."""

    @staticmethod
    def get(_reg: str, _default: int) -> int:
        return -1


_ANY_REGISTER = _AnyRegister()


def normalize_x86(
    machine: Machine, code: bytes, rva: int, image_base: int, relocs: Sequence[int]
) -> NormalizedCode:
    """Normalise one x86 or x64 function (see :func:`pehotpatch.disasm.normalize`)."""
    x64 = machine is Machine.X64
    width = 8 if x64 else 4
    mask = (1 << (8 * width)) - 1
    if relocs:
        dcode, rels = apply_relocs(code, rva, image_base, relocs, width)
    else:
        dcode, rels = code, []
    # The body (what follows the hot-patch no-op) is decoded at address 0: branch
    # targets inside the function then print as offsets and need no rewriting.
    hp_nop = code[:2]
    if len(code) > 2 and hp_nop in HOTPATCH_NOP_ENCODINGS[machine]:
        base = 2
    else:
        base = 0
        hp_nop = b""
    dec = decoder(machine)
    pairs, sizes = dec.decode(dcode, -base & mask)
    if not pairs:
        return NormalizedCode("", [], [], 0, b"", 0, machine, set(), False)
    x = _X86Pass(machine, code, rva, image_base, base, hp_nop, rels, ())
    result = x.run(pairs, sizes)
    # Jump / index tables inside the function's range (MSVC puts them after the code):
    # decoded as instructions they are garbage that moves with the layout.  Decode again
    # around them and show them as data.  Tables are found from the code that uses them
    # or, on x64, as a run of RVAs after the last instruction (a chunk of a function
    # whose table is used from another chunk).
    regions = table_regions(code, rva, 0 if x64 else image_base, x.tables) if x.tables else []
    if x64:
        tail = trailing_rva_table(code, rva, pairs, sizes, regions)
        if tail is not None:
            regions.append(tail)
        head = leading_rva_table(code, rva, regions)
        if head is not None:
            regions.append(head)
        regions.sort()
    if regions:
        pairs, sizes = decode_around(dec, dcode, code, rva, image_base, x64, base, regions)
        kept = [r for r in rels if not any(a <= r[0] < e for a, e, _k in regions)]
        x = _X86Pass(machine, code, rva, image_base, base, hp_nop, kept, regions)
        result = x.run(pairs, sizes)
    return result


class _X86Pass:
    """One normalisation of decoded x86/x64 text (see :func:`normalize_x86`)."""

    __slots__ = (
        "machine", "code", "rva", "image_base", "base", "hp_nop", "rels", "regions",
        "tables",
    )  # fmt: skip

    def __init__(
        self,
        machine: Machine,
        code: bytes,
        rva: int,
        image_base: int,
        base: int,
        hp_nop: bytes,
        rels: list[tuple[int, int, int]],
        regions: Sequence[Region],
    ) -> None:
        self.machine = machine
        self.code = code
        self.rva = rva
        self.image_base = image_base
        self.base = base
        self.hp_nop = hp_nop
        self.rels = rels
        self.regions = regions
        self.tables: list[Table] = []

    def run(self, pairs: list[tuple[bytes, bytes]], sizes: bytes) -> NormalizedCode:
        machine = self.machine
        x64 = machine is Machine.X64
        mask = 0xFFFFFFFFFFFFFFFF if x64 else 0xFFFFFFFF
        code_len = len(self.code)
        rva = self.rva
        base = self.base
        if pairs[-1][0] in X86_PAD:  # trailing int3 / nop padding
            k = len(pairs)
            while k > 1 and pairs[k - 1][0] in X86_PAD:
                k -= 1
            pairs = pairs[:k]
            sizes = sizes[:k]
        insn_offsets = list(accumulate(sizes, initial=0))
        total = insn_offsets.pop()  # bytes covered
        first = 1 if base else 0
        lines = [b"", *map(b" ".join, pairs[1:] if base else pairs), b""]
        text = b"\n".join(lines).decode("ascii", "replace")
        refs: list[Ref] = []
        nstages = 0

        # Direct branches leaving the function
        count = text.count
        lim = code_len - base  # printed targets below this are inside the function
        # targets with fewer hex digits than lim - 1 are inside: skip them
        brx = _BRANCH_RE_DIGITS[len(f"{lim - 1:x}")] if lim > 16 else _BRANCH_PREFIXED_RE
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
                off = insn_offsets[idx] + sizes[idx]
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

        # Displacements relative to a register holding __ImageBase
        inherited = False
        if imagebase_regs:
            new = self._imagebase_refs(text, imagebase_regs, insn_offsets, first, refs)
            if new is not None:
                text = new
                nstages += 1
        elif x64 and "*" in text:
            # A function chunk can use the register its parent loaded: an index
            # displacement that looks like an RVA near the code is taken for one.
            new = self._imagebase_refs(text, _ANY_REGISTER, insn_offsets, first, refs,
                                       lo=max(_MIN_INHERITED_RVA, rva - NEAR_RVA), hi=rva + NEAR_RVA)
            if new is not None:
                text = new
                nstages += 1
                inherited = True

        # Table entries pointing outside the function
        if self.regions and "\n.long 0x" in text:
            text = self._table_entry_refs(text, insn_offsets, first, refs)
            nstages += 1

        # Relocated absolute addresses (x86 mostly)
        if self.rels:
            text = self._reloc_refs(text, insn_offsets, first, refs)
            nstages += 1

        if nstages > 1:
            refs.sort(key=_REF_OFFSET)
        nc = NormalizedCode(text[1:-1], refs, insn_offsets, sizes[0], self.hp_nop, total, machine)
        nc.position_dependent = bool(imagebase_regs or inherited or self.regions or self.tables)
        return nc

    def _imagebase_refs(
        self,
        text: str,
        imagebase_regs: dict[str, int] | _AnyRegister,
        insn_offsets: list[int],
        first: int,
        refs: list[Ref],
        lo: int = _MIN_TABLE_RVA,
        hi: int = 1 << 62,
    ) -> str | None:
        """``[reg + reg*s + disp]`` after ``reg`` was loaded with ``__ImageBase``: the
        displacement is an RVA (a table or array).  A table inside the function is noted
        in ``self.tables``.  Returns the new text (None when nothing changed)."""
        pieces = []
        last = 0
        nl = 0
        pos0 = 0
        never = 1 << 62
        rva, code_len, base = self.rva, len(self.code), self.base
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
            target = int(m.group(4), 16)
            if not lo <= target < hi:
                continue
            pieces.append(text[last : m.start(4)])
            last = m.end(4)
            if rva <= target < rva + code_len:
                pieces.append(internal_label(target - rva, base))
                self.tables.append((target - rva, int(m.group(3) or 1)))
                continue
            pieces.append(PLACEHOLDER)
            refs.append(Ref(insn_offsets[idx], DATA, target))
        if not pieces:
            return None
        pieces.append(text[last:])
        return "".join(pieces)

    def _table_entry_refs(
        self, text: str, insn_offsets: list[int], first: int, refs: list[Ref]
    ) -> str:
        pieces = []
        last = 0
        nl = 0
        pos0 = 0
        for m in _LONG_ABS_RE.finditer(text):
            s = m.start()
            nl += text.count(_NL, pos0, s + 1)
            pos0 = s + 1
            idx = nl - 1 + first
            pieces.append(text[last : m.start(1)])
            pieces.append(PLACEHOLDER)
            last = m.end(1)
            refs.append(Ref(insn_offsets[idx], DATA, int(m.group(1), 16)))
        pieces.append(text[last:])
        return "".join(pieces)

    def _reloc_refs(self, text: str, insn_offsets: list[int], first: int, refs: list) -> str:
        """Relocated fields: each sentinel in the text becomes ``@`` (``+0x..`` when it
        points into the function).  A relocation whose sentinel is not in the text (it
        straddles decoded garbage) gets an ``@`` appended to the line of the instruction
        where it starts."""
        rels = self.rels
        width = 4 if self.machine is Machine.X86 else 8
        parts = _SENTINEL_SPLIT_RE[width].split(text)
        found = parts[1::2]
        if not (
            len(found) == len(rels)
            and all(tok[-1] == "0123"[k] for tok, (_o, k, _t) in zip(found, rels, strict=True))
        ):
            return self._reloc_refs_slow(text, insn_offsets, first, refs)
        rva, code_len = self.rva, len(self.code)
        for j, (off, _k, target) in enumerate(rels):
            idx = bisect_right(insn_offsets, off) - 1
            before = parts[2 * j]
            if rva <= target < rva + code_len:
                parts[2 * j + 1] = internal_label(target - rva, self.base)
                scale = table_scale(before)
                if scale:
                    self.tables.append((target - rva, scale))
                continue
            kind = DATA
            if before.endswith("[") and parts[2 * j + 2].startswith("]"):
                ls = before.rfind(_NL) + 1
                if before.startswith("call ", ls):
                    kind = INDIRECT_CALL
                elif before.startswith(_JMP_HEADS, ls):
                    kind = INDIRECT_JUMP
            parts[2 * j + 1] = PLACEHOLDER
            refs.append(Ref(insn_offsets[idx], kind, target))
        return "".join(parts)

    def _reloc_refs_slow(self, text: str, insn_offsets: list[int], first: int, refs: list) -> str:
        width = 4 if self.machine is Machine.X86 else 8
        rva, code_len = self.rva, len(self.code)
        starts = line_starts(text)  # starts[i] = start of body line i; last = end of text
        body_offsets = insn_offsets[first:]
        edits = []
        for off, k, target in self.rels:
            li = max(bisect_right(body_offsets, off) - 1, 0)
            ls = starts[li]
            le = starts[li + 1] - 1 if li + 1 < len(starts) else len(text) - 1
            token = f"{sentinel(width, k):#x}"
            p = text.find(token, ls, le)
            inside = rva <= target < rva + code_len
            if inside and p > 0:
                scale = table_scale(text[ls:p])
                if scale:
                    self.tables.append((target - rva, scale))
            rep = internal_label(target - rva, self.base) if inside else PLACEHOLDER
            ref = None if inside else Ref(insn_offsets[li + first], DATA, target)
            if p < 0:
                edits.append((le, le, " " + rep, ref))
                continue
            if ref is not None and text[p - 1] == "[" and text[p + len(token)] == "]":
                if text.startswith("call ", ls):
                    ref = Ref(ref.offset, INDIRECT_CALL, target)
                elif text.startswith(_JMP_HEADS, ls):
                    ref = Ref(ref.offset, INDIRECT_JUMP, target)
            edits.append((p, p + len(token), rep, ref))
        edits.sort(key=_first)
        pieces = []
        last = 0
        for s, e, rep, ref in edits:
            if s < last:
                continue
            pieces.append(text[last:s])
            pieces.append(rep)
            if ref is not None:
                refs.append(ref)
            last = e
        pieces.append(text[last:])
        return "".join(pieces)



def _first(item: tuple) -> int:
    return item[0]

