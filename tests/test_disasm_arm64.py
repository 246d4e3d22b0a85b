"""ARM64 normaliser against a straightforward reference implementation.

The reference below walks the instructions one by one and keeps the set of registers
that hold an ``adrp`` page, which is the rule set written out plainly; the module's
implementation reaches the same result by searching the text.  Random instruction
sequences (with many adrp/add/ldr/str/ldp/mov/bl/blr/ret and branch instructions on a
few registers, plus arbitrary words) must normalise identically with both.
"""

from __future__ import annotations

import re
import struct
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from hypothesis import given, settings
from hypothesis import strategies as st

from pehotpatch.disasm import Machine, Ref, normalize
from pehotpatch.disasm._decode import decoder
from pehotpatch.disasm.model import (
    CALL,
    DATA,
    ENTRY_PATCH_BYTES,
    JUMP,
    PLACEHOLDER,
    apply_relocs,
    internal_label,
)


@dataclass
class ReferenceResult:
    shape: str
    refs: list[Ref]
    insn_offsets: list[int]
    internal_targets: set[int]
    entry_is_branch_target: bool


# The instruction tables are shared with the implementation; what this reference
# checks is the algorithm (line by line, against the implementation's text search).
from pehotpatch.disasm.arm64 import (  # noqa: E402
    _ADD_RE,
    _BRANCHES,
    _LITERAL_LOADS,
    _LO12,
    _MEM_RE,
    _NO_DEST,
    _PAD,
    _PAIR_LOADS,
    _REG_RE,
    _TARGET_RE,
)


def _num(s: str) -> int:
    return int(s, 0)


def reference_normalize_arm64(
    code: bytes, rva: int, image_base: int, relocs: Sequence[int]
) -> ReferenceResult:
    code_len = len(code)
    dcode, rels = apply_relocs(code, rva, image_base, relocs, 8)
    pairs, sizes = decoder(Machine.ARM64).decode(dcode, 0)
    pairs = [(mn, ops) for mn, ops in pairs]
    # decoded at 0 like the module: make addresses absolute again where the rules
    # below expect them (branch, adr and literal targets, adrp pages)
    pairs = _absolute(pairs, sizes, rva)
    n = len(pairs)
    if n == 0:
        return ReferenceResult("", [], [], set(), False)
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
                    # as capstone prints it when decoding at address 0
                    new = line[: sp + 1 + tm.start()] + "#" + (f"{o:#x}" if o > 9 else str(o))
                else:
                    slots.append([offsets[j], CALL if mn == "bl" else JUMP, target])
                    new = line[: sp + 1 + tm.start()] + PLACEHOLDER
        elif mn == "adrp" and ops[1 : ops.find(",")].isdigit():
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
    return ReferenceResult("\n".join(lines[:n]), refs, offsets, internal_targets, entry_hit)


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


_ABS_TARGET = re.compile(rb"^(b|bl|cbn?z|tbn?z|b\.[a-z]+|adr|ldr|ldrsw|prfm)$")


def _absolute(pairs, sizes, rva):
    out = []
    off = 0
    for (mn, ops), size in zip(pairs, sizes, strict=True):
        if mn == b"adrp" and ops[1 : ops.find(b",")].isdigit():
            comma = ops.index(b",")
            page = int(ops[comma + 3 :], 0)
            real = (((rva + off) & ~0xFFF) + page - (off & ~0xFFF)) & ((1 << 64) - 1)
            ops = ops[: comma + 3] + hex(real).encode()
        elif _ABS_TARGET.match(mn) and b"[" not in ops and b"#" in ops:
            i = ops.rindex(b"#")
            try:
                v = int(ops[i + 1 :], 0)
            except ValueError:
                v = None
            if v is not None and (mn not in (b"b", b"bl") or i == 0):
                ops = ops[: i + 1] + hex((rva + v) & ((1 << 64) - 1)).encode()
        out.append((mn, ops))
        off += size
    return out


# ---- random ARM64 programs ----------------------------------------------------------------
REGS = [0, 1, 8, 9, 16, 19]


def enc(kind, a, b, c, pc, rva):
    """One instruction word; a, b, c are small random integers."""
    ra, rb_ = REGS[a % len(REGS)], REGS[b % len(REGS)]
    if kind == "adrp":
        delta = (c % 64) - 32
        imm = delta
        return 0x90000000 | ((imm & 3) << 29) | (((imm >> 2) & 0x7FFFF) << 5) | ra
    if kind == "add":
        return 0x91000000 | ((c * 8 % 4096) << 10) | (rb_ << 5) | ra
    if kind == "ldr":
        return 0xF9400000 | ((c % 512) << 10) | (rb_ << 5) | ra
    if kind == "ldrw0":  # ldr w, [x] (offset 0)
        return 0xB9400000 | (rb_ << 5) | ra
    if kind == "str":
        return 0xB9000000 | ((c % 1024) << 10) | (rb_ << 5) | ra
    if kind == "pre":  # ldr x, [x, #simm9]!
        return 0xF8400C00 | (((c % 64) * 8 & 0x1FF) << 12) | (rb_ << 5) | ra
    if kind == "post":  # ldr x, [x], #simm9
        return 0xF8400400 | ((c % 64 & 0x1FF) << 12) | (rb_ << 5) | ra
    if kind == "ldp":
        r2 = REGS[c % len(REGS)]
        return 0xA9400000 | (((c % 32) & 0x7F) << 15) | (r2 << 10) | (rb_ << 5) | ra
    if kind == "mov":
        return 0xAA0003E0 | (rb_ << 16) | ra
    if kind == "bl":
        return 0x94000000 | (((c * 4 - 0x80) >> 2) & 0x3FFFFFF)
    if kind == "blr":
        return 0xD63F0000 | (rb_ << 5)
    if kind == "ret":
        return 0xD65F03C0
    if kind == "bne":
        return 0x54000001 | ((((c % 40) * 4 - pc - 8 & ~3) >> 2 & 0x7FFFF) << 5)
    if kind == "cbz":
        return 0xB4000000 | ((((c % 40) * 4 - pc) >> 2 & 0x7FFFF) << 5) | ra
    if kind == "adr":
        imm = (c % 256) - 128
        return 0x10000000 | ((imm & 3) << 29) | (((imm >> 2) & 0x7FFFF) << 5) | ra
    if kind == "stxr":
        return 0xC8007C00 | (ra << 16) | (rb_ << 5) | REGS[c % len(REGS)]
    return (a * 0x9E3779B1 ^ b * 0x85EBCA77 ^ c * 0xC2B2AE3D) & 0xFFFFFFFF  # anything


KINDS = [
    "adrp", "adrp", "adrp", "add", "add", "ldr", "ldr", "ldrw0", "str", "pre", "post",
    "ldp", "mov", "bl", "blr", "ret", "bne", "cbz", "adr", "stxr", "word",
]  # fmt: skip

program = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 99), st.integers(0, 99), st.integers(0, 9999)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(prog=program, page=st.integers(1, 0x3FFFF), low=st.integers(0, 0x3FF))
def test_arm64_matches_reference(prog, page, low):
    rva = page * 0x1000 + low * 4
    words = [enc(k, a, b, c, i * 4, rva) for i, (k, a, b, c) in enumerate(prog)]
    code = struct.pack(f"<{len(words)}I", *words)
    got = normalize(Machine.ARM64, code, rva, image_base=0x140000000)
    ref = reference_normalize_arm64(code, rva, 0x140000000, ())
    assert [x.rstrip() for x in got.shape.split("\n")] == ref.shape.split("\n")
    assert got.refs == ref.refs
    assert got.insn_offsets == ref.insn_offsets
    assert got.internal_targets == ref.internal_targets
    assert got.entry_is_branch_target == ref.entry_is_branch_target
