"""ARM64 normalisation.

Addresses live in ``bl``/``b``/``b.cond``/``cbz``/``tbz`` targets, ``adr``, literal
``ldr`` and, mostly, ``adrp`` + ``add``/``ldr``/``str`` pairs: the ``adrp`` gives a 4 KiB
page, the next instruction using that register as its base adds the low 12 bits.  Both
halves move with the layout, so the pair is one data ref (at the ``adrp``, to the final
address) and both instructions lose their address bits in the shape:

    adrp x8, @               ; ref -> page + lo12
    ldr  w0, [x8, #:lo12:]   ; first use of x8: combined with the adrp

Branch targets inside the function are shown as offsets (``b.ne #0x1c``).  A later use
of the same, unmodified register is another address in the same page: it
becomes its own ref (``[x8, #:lo12:@]``).  The register is forgotten when an
instruction writes it (its first operand, the second of a load pair, a base write-back)
and, for x0-x18, at calls.  This is a linear, per-function approximation of data flow.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate, count
from operator import add

from pehotpatch.disasm._decode import decoder
from pehotpatch.disasm.model import (
    CALL,
    DATA,
    JUMP,
    PLACEHOLDER,
    NormalizedCode,
    Ref,
    apply_relocs,
    internal_label,
)
from pehotpatch.image.machine import Machine

_LO12 = "#:lo12:"
_PAD = frozenset(((b"udf", b"#0"), (b"nop", b"")))
_BRANCHES = frozenset(("b", "bl", "cbz", "cbnz", "tbz", "tbnz"))
_LITERAL_LOADS = frozenset(("ldr", "ldrsw", "prfm"))
# Instructions whose first operand is read, not written.
_NO_DEST = frozenset(
    (
        "cmp",
        "cmn",
        "tst",
        "ccmp",
        "ccmn",
        "fcmp",
        "fcmpe",
        "fccmp",
        "fccmpe",
        "cbz",
        "cbnz",
        "tbz",
        "tbnz",
        "br",
        "blr",
        "braa",
        "brab",
        "blraa",
        "blrab",
        "ret",
        "prfm",
        "prfum",
        "msr",
        "sys",
        "dc",
        "ic",
        "tlbi",
        "hint",
        "bti",
    )
)
_PAIR_LOADS = ("ldp", "ldnp", "ldpsw", "ldxp", "ldaxp")
_REG_RE = re.compile(r"[xw](\d+)\b")
_NUM = r"(-?(?:0x[0-9a-f]+|\d+))"
_ADD_RE = re.compile(r"((?:[xw]\d+|sp), )(x\d+), #" + r"(0x[0-9a-f]+|\d+)$")
_MEM_RE = re.compile(r"\[x(\d+)(?:, #" + _NUM + r")?\](!?)(, #)?")
_TARGET_RE = re.compile(r"#" + _NUM + r"$")


def _num(s: str) -> int:
    return int(s, 0)


# Lines that matter, found in the text of the whole function (which starts and ends with
# a newline).  The function is decoded at address 0, so branch targets inside it print
# as offsets and are left alone: only targets with at least as many hex digits as the
# function's last offset can be outside (the general pattern covers small functions).
_BRANCH_RE = re.compile(r"\n(b|bl|cbn?z|tbn?z|b\.[a-z]+) ([^\n]*?#)(0x[0-9a-f]+|\d+)(?=\n)")
_BRANCH_RE_DIGITS = {
    d: re.compile(r"\n(b|bl|cbn?z|tbn?z|b\.[a-z]+) ([^\n]*?#)(0x[0-9a-f]{" + str(d) + r",})(?=\n)")
    for d in range(2, 17)
}
# adr and literal loads: "adr x0, #0x1234", "ldr x1, #0x1234"
_ADDR_RE = re.compile(r"\n(adr|ldr|ldrsw|prfm) ([^\n\[]*?#)(0x[0-9a-f]+|\d+)(?=\n)")
_ADRP_RE = re.compile(r"\nadrp x(\d+), #(0x[0-9a-f]+|\d+)(?=\n)")
# Where registers stop holding a page: returns (all), calls (x0-x18)
_RET_RE = re.compile(r"\ne?ret ?(?=\n)")
_CALL_RE = re.compile(r"\nblr? ")
_REG_USE_RE = [re.compile(r"\b[xw]" + str(r) + r"\b") for r in range(32)]
_STATUS_STORES = ("stxr", "stlxr", "stxp", "stlxp")
# adrp xN, page followed by "add xN, xN, #lo" or "ldr* xN/wN, [xN, #lo]"
_PAIR_NEXT_RE = re.compile(
    r"\n(?:add x(\d+), x\1, #(0x[0-9a-f]+|\d+)"
    r"|ldr[a-z]* [xw](\d+), (\[x\3(?:, #(0x[0-9a-f]+|\d+))?\]))(?=\n)"
)
_MASK64 = (1 << 64) - 1
_PAGE = ~0xFFF


def normalize_arm64(
    code: bytes, rva: int, image_base: int, relocs: Sequence[int]
) -> NormalizedCode:
    code_len = len(code)
    dcode, rels = apply_relocs(code, rva, image_base, relocs, 8)
    pairs, sizes = decoder(Machine.ARM64).decode(dcode, 0)
    n = len(pairs)
    if n == 0:
        return NormalizedCode("", [], [], 0, b"", 0, Machine.ARM64, set(), False)
    if pairs[-1] in _PAD:
        k = n
        while k > 1 and pairs[k - 1] in _PAD:
            k -= 1
        pairs = pairs[:k]
        sizes = sizes[:k]
    offsets = list(accumulate(sizes, initial=0))
    total = offsets.pop()
    lines = [b"", *map(b" ".join, pairs), b""]
    text = b"\n".join(lines).decode("ascii", "replace")
    # nl[k]: position of the newline after lines[k]; body line j is text[nl[j] + 1 : nl[j + 1]]
    nl = list(map(add, accumulate(map(len, lines)), count()))

    # edits: (start, end, replacement, ref slot or None); a slot is [offset, kind, target]
    # (an adrp's target is completed by the first use of its register)
    edits: list[tuple[int, int, str, list | None]] = []
    slots: list[list] = []

    brx = _BRANCH_RE_DIGITS[len(f"{code_len - 1:x}")] if code_len > 16 else _BRANCH_RE
    for m in brx.finditer(text):
        v = int(m.group(3), 0)
        if v < code_len:
            continue
        mn = m.group(1)
        if (mn == "b" or mn == "bl") and m.group(2) != "#":
            continue
        j = bisect_left(nl, m.start(3)) - 1
        slot = [offsets[j], CALL if mn == "bl" else JUMP, (rva + v) & _MASK64]
        edits.append((m.start(3) - 1, m.end(3), PLACEHOLDER, slot))

    for m in _ADDR_RE.finditer(text):
        v = int(m.group(3), 0)
        if v < code_len:
            edits.append((m.start(3) - 1, m.end(3), internal_label(v, 0), None))
        else:
            j = bisect_left(nl, m.start(3)) - 1
            slot = [offsets[j], DATA, (rva + v) & _MASK64]
            edits.append((m.start(3) - 1, m.end(3), PLACEHOLDER, slot))

    if "\nadrp " in text:
        rets = [m.start() for m in _RET_RE.finditer(text)]
        calls = [m.start() for m in _CALL_RE.finditer(text)]
        for m in _ADRP_RE.finditer(text):
            j = bisect_left(nl, m.start(2)) - 1
            o = offsets[j]
            # decoded at 0: the printed page is relative to this adrp's own page
            page = (((rva + o) & _PAGE) + int(m.group(2), 0) - (o & _PAGE)) & _MASK64
            slot = [o, DATA, page]
            edits.append((m.start(2) - 1, m.end(2), PLACEHOLDER, slot))
            reg = m.group(1)
            pos = nl[j + 1]
            f = _PAIR_NEXT_RE.match(text, pos)
            if f is not None and (f.group(1) or f.group(3)) == reg:
                # the usual pair: the next instruction uses the page and overwrites it
                if f.group(1):
                    slot[2] = page + int(f.group(2), 0)
                    edits.append((f.start(2) - 1, f.end(2), _LO12, None))
                else:
                    slot[2] = page + (int(f.group(5), 0) if f.group(5) else 0)
                    edits.append((f.start(4), f.end(4), "[x" + reg + ", " + _LO12 + "]", None))
                continue
            _follow(text, nl, offsets, int(reg), pos, page, slot, rets, calls, edits)

    for off, _k, target in rels:
        j = max(bisect_right(offsets, off) - 1, 0)
        p = nl[j + 1]
        edits.append((p, p, " " + PLACEHOLDER, [offsets[j], DATA, target]))

    if edits:
        edits.sort(key=_first)
        pieces = []
        last = 1
        for s, e, rep, sl in edits:
            if s < last:  # overlapping edit: keep the first one
                continue
            pieces.append(text[last:s])
            pieces.append(rep)
            if sl is not None:
                slots.append(sl)
            last = e
        pieces.append(text[last:-1])
        shape = "".join(pieces)
        refs = [Ref(o, k, t) for o, k, t in slots]
    else:
        shape = text[1:-1]
        refs = []
    return NormalizedCode(shape, refs, offsets, sizes[0], b"", total, Machine.ARM64)


def _first(edit: tuple) -> int:
    return edit[0]


def _follow(
    text: str,
    nl: list[int],
    offsets: list[int],
    reg: int,
    pos: int,
    page: int,
    adrp_slot: list,
    rets: list[int],
    calls: list[int],
    edits: list,
) -> None:
    """Follow register ``reg``, loaded with ``page`` by an adrp whose line ends at
    ``pos``, through the lines that mention it: uses as a base become edits (the first
    completes ``adrp_slot``), and it is forgotten when written, at a return, and (x0-x18)
    at a call."""
    end = len(text)
    i = bisect_left(rets, pos)  # (a return or call line starts with the newline at pos)
    if i < len(rets):
        end = rets[i]
    if reg <= 18:
        i = bisect_left(calls, pos)
        if i < len(calls) and calls[i] < end:
            end = calls[i]
    used = [adrp_slot, page, False]  # the _use state
    xreg = "x" + str(reg)
    last_line = -1
    for m in _REG_USE_RE[reg].finditer(text, pos, end):
        j = bisect_left(nl, m.start()) - 1
        if j == last_line:
            continue
        last_line = j
        ls = nl[j] + 1
        line = text[ls : nl[j + 1]]
        sp = line.find(" ")
        mn = line[:sp]
        ops = line[sp + 1 :]
        if (mn in _BRANCHES or mn.startswith("b.")) and ops and ops[-1] != "]":
            continue  # reads registers only
        if mn == "adrp":
            return  # a new page
        if (mn == "adr" or (mn in _LITERAL_LOADS and "[" not in ops)) and "#" in ops:
            if _TARGET_RE.search(ops):
                rm = _REG_RE.match(ops)
                if rm is not None and int(rm.group(1)) == reg:
                    return
            continue
        if mn == "add":
            am = _ADD_RE.match(ops)
            if am is not None and am.group(2) == xreg:
                a = ls + sp + 1 + am.start(3) - 1
                edits.append(
                    (a, ls + sp + 1 + am.end(3), *_use2(used, _num(am.group(3)), offsets[j]))
                )
                if _writes(mn, ops, reg):
                    return
                continue
        if "[x" in ops:
            mm = _MEM_RE.search(ops)
            if mm is not None and int(mm.group(1)) == reg:
                if mm.group(4):  # post-index: [xN], #imm writes xN back
                    return
                lo = _num(mm.group(2)) if mm.group(2) else 0
                rep, slot = _use2(used, lo, offsets[j])
                a = ls + sp + 1 + mm.start()
                b = a + (mm.end(2) if mm.group(2) else mm.end(1)) - mm.start() + 1
                edits.append((a, b, f"[{xreg}, {rep}]", slot))
                if mm.group(3):  # pre-index write-back
                    return
        if _writes(mn, ops, reg):
            return


def _writes(mn: str, ops: str, reg: int) -> bool:
    """Whether the instruction writes ``reg`` (x or w)."""
    if mn not in _NO_DEST and not mn.startswith("st"):
        rm = _REG_RE.match(ops)
        if rm is None:
            return False
        if int(rm.group(1)) == reg:
            return True
        if mn in _PAIR_LOADS:
            rm2 = _REG_RE.match(ops, rm.end() + 2)
            return rm2 is not None and int(rm2.group(1)) == reg
        return False
    if mn.startswith(_STATUS_STORES):
        rm = _REG_RE.match(ops)  # the status register is written
        return rm is not None and int(rm.group(1)) == reg
    return False


def _use2(st: list, lo: int, offset: int) -> tuple[str, list | None]:
    """A use of an adrp register with low bits ``lo``: the first completes the adrp's
    ref, later ones are refs of their own.  Returns the operand text and the new slot."""
    target = st[1] + lo
    if not st[2]:
        st[2] = True
        st[0][2] = target
        return _LO12, None
    return _LO12 + PLACEHOLDER, [offset, DATA, target]
