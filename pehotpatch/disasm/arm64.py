"""ARM64 normalisation.

Addresses live in ``bl``/``b``/``b.cond``/``cbz``/``tbz`` targets, ``adr``, literal
``ldr`` and, mostly, ``adrp`` + ``add``/``ldr``/``str`` pairs: the ``adrp`` gives a 4 KiB
page, the next instruction using that register as its base adds the low 12 bits.  Both
halves move with the layout, so the pair is one data ref (at the ``adrp``, to the final
address) and both instructions lose their address bits in the shape:

    adrp x8, @               ; ref -> page + lo12
    ldr  w0, [x8, #:lo12:]   ; first use of x8: combined with the adrp

A later use of the same, unmodified register is another address in the same page: it
becomes its own ref (``[x8, #:lo12:@]``).  The register is forgotten when an
instruction writes it (its first operand, the second of a load pair, a base write-back)
and, for x0-x18, at calls.  This is a linear, per-function approximation of data flow.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

from pehotpatch.disasm._decode import decoder
from pehotpatch.disasm.model import (
    CALL,
    DATA,
    ENTRY_PATCH_BYTES,
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


def normalize_arm64(
    code: bytes, rva: int, image_base: int, relocs: Sequence[int]
) -> NormalizedCode:
    code_len = len(code)
    dcode, rels = apply_relocs(code, rva, image_base, relocs, 8)
    pairs, sizes = decoder(Machine.ARM64).decode(dcode, rva)
    n = len(pairs)
    if n == 0:
        return NormalizedCode("", [], [], 0, b"", 0, Machine.ARM64, set(), False)
    if pairs[-1] in _PAD:
        m = n
        while m > 1 and pairs[m - 1] in _PAD:
            m -= 1
        pairs = pairs[:m]
        sizes = sizes[:m]
        n = m
    ends = list(accumulate(sizes))
    offsets = [0, *ends[:-1]]
    lines = (
        (b"\n".join(map(b" ".join, pairs)) + b"\n")
        .replace(b" \n", b"\n")[:-1]
        .decode("ascii", "replace")
        .split("\n")
    )

    reloc_lines: dict[int, list[int]] = {}
    for off, _k, target in rels:
        reloc_lines.setdefault(max(bisect_right(offsets, off) - 1, 0), []).append(target)

    end_rva = rva + code_len
    entry_limit = ENTRY_PATCH_BYTES[Machine.ARM64]
    internal_targets: set[int] = set()
    entry_hit = False
    # Ref slots [offset, kind, target], in placeholder order; adrp slots get their
    # target filled in by the first use of the register.
    slots: list[list] = []
    # register number -> [slot, page, used]
    pending: dict[int, list] = {}

    for j in range(n):
        line = lines[j]
        sp = line.find(" ")
        if sp < 0:
            if pending and line in ("ret", "eret"):
                pending.clear()
            if j in reloc_lines:
                lines[j] = _append_relocs(line, offsets[j], reloc_lines[j], slots)
            continue
        mn = line[:sp]
        ops = line[sp + 1 :]
        c = mn[0]
        new = None
        if (mn in _BRANCHES or mn.startswith("b.")) and ops[-1] != "]":
            tm = _TARGET_RE.search(ops)
            if tm is not None and (mn != "b" and mn != "bl" or tm.start() == 0):
                target = int(tm.group(1), 0)
                if mn == "bl":
                    _forget_caller_saved(pending)
                if rva <= target < end_rva:
                    o = target - rva
                    internal_targets.add(o)
                    if o < entry_limit and mn != "bl":
                        entry_hit = True
                    new = line[: sp + 1 + tm.start()] + f"{o:#x}"
                else:
                    slots.append([offsets[j], CALL if mn == "bl" else JUMP, target])
                    new = line[: sp + 1 + tm.start()] + PLACEHOLDER
        elif mn == "adrp":
            comma = ops.find(",")
            reg = int(ops[1:comma])
            page = _num(ops[comma + 3 :])
            slot = [offsets[j], DATA, page]
            slots.append(slot)
            pending[reg] = [slot, page, False]
            new = line[: sp + 1 + comma + 2] + PLACEHOLDER
        elif (mn == "adr" or (mn in _LITERAL_LOADS and "[" not in ops)) and "#" in ops:
            tm = _TARGET_RE.search(ops)
            if tm is not None:
                target = int(tm.group(1), 0)
                if pending:
                    rm = _REG_RE.match(ops)
                    if rm is not None:
                        pending.pop(int(rm.group(1)), None)
                if rva <= target < end_rva:
                    new = line[: sp + 1 + tm.start()] + internal_label(target - rva, 0)
                else:
                    slots.append([offsets[j], DATA, target])
                    new = line[: sp + 1 + tm.start()] + PLACEHOLDER
        elif pending:
            if c == "b" and mn == "blr":
                _forget_caller_saved(pending)
            elif mn == "add":
                am = _ADD_RE.match(ops)
                if am is not None:
                    st = pending.get(int(am.group(2)[1:]))
                    if st is not None:
                        lo = _num(am.group(3))
                        new = line[: sp + 1 + am.start(3) - 1] + _use(st, lo, offsets[j], slots)
            if new is None and "[x" in ops:
                mm = _MEM_RE.search(ops)
                if mm is not None:
                    breg = int(mm.group(1))
                    st = pending.get(breg)
                    if st is not None:
                        if mm.group(4):  # post-index: [xN], #imm writes xN back
                            del pending[breg]
                        else:
                            lo = _num(mm.group(2)) if mm.group(2) else 0
                            tok = _use(st, lo, offsets[j], slots)
                            a = sp + 1 + mm.start()
                            new = (
                                line[:a]
                                + f"[x{breg}, {tok}]"
                                + mm.group(3)
                                + line[sp + 1 + mm.end() :]
                            )
                            if mm.group(3):  # pre-index write-back
                                del pending[breg]
            # the instruction's destination register(s) no longer hold the page
            if pending and mn not in _NO_DEST and not mn.startswith("st"):
                rm = _REG_RE.match(ops)
                if rm is not None:
                    pending.pop(int(rm.group(1)), None)
                    if mn in _PAIR_LOADS:
                        rm2 = _REG_RE.match(ops, rm.end() + 2)
                        if rm2 is not None:
                            pending.pop(int(rm2.group(1)), None)
            elif pending and mn.startswith(("stxr", "stlxr", "stxp", "stlxp")):
                rm = _REG_RE.match(ops)  # the status register is written
                if rm is not None:
                    pending.pop(int(rm.group(1)), None)
        if new is not None:
            lines[j] = new
        if j in reloc_lines:
            lines[j] = _append_relocs(lines[j], offsets[j], reloc_lines[j], slots)

    refs = [Ref(o, k, t) for o, k, t in slots]
    return NormalizedCode(
        "\n".join(lines[:n]),
        refs,
        offsets,
        sizes[0],
        b"",
        ends[-1],
        Machine.ARM64,
        internal_targets,
        entry_hit,
    )


def _use(st: list, lo: int, offset: int, slots: list[list]) -> str:
    """A use of an adrp register with low bits ``lo``: the first completes the adrp's
    ref, later ones are refs of their own.  Returns the operand text."""
    target = st[1] + lo
    if not st[2]:
        st[2] = True
        st[0][2] = target
        return _LO12
    slots.append([offset, DATA, target])
    return _LO12 + PLACEHOLDER


def _forget_caller_saved(pending: dict[int, list]) -> None:
    for r in [r for r in pending if r <= 18]:
        del pending[r]


def _append_relocs(line: str, offset: int, targets: list[int], slots: list[list]) -> str:
    for t in targets:
        slots.append([offset, DATA, t])
        line += " " + PLACEHOLDER
    return line
