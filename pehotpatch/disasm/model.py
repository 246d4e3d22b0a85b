"""The normaliser's result types and the helpers shared by the per-ISA code."""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from pehotpatch.image.machine import Machine
from pehotpatch.vocab import RefKind

PLACEHOLDER = "@"

# What makes internal targets in an x86/x64 shape: direct branch lines ("jne 0x34") and
# jump-table entries shown as data (".long +0x34").
X86_TARGET_RE = re.compile(
    r"\n(?:(?:bnd |notrack )?(call|j[a-z]+|loop[a-z]*|xbegin) (0x[0-9a-f]+|\d+)"
    r"|\.long \+(0x[0-9a-f]+))(?=\n)"
)

# The same for ARM64 (branch targets print as "#0x1c", or in decimal below 10).
ARM64_TARGET_RE = re.compile(r"\n(b|bl|cbn?z|tbn?z|b\.[a-z]+) [^\n]*?#(0x[0-9a-f]+|\d+)(?=\n)")

# A jump (not a call) or table entry to offset 0 or 1 (x86/x64, counted from the body:
# behind the hot-patch no-op those are -2 and -1), or to 0..3 (ARM64).
_X86_JUMP = r"\n(?:(?:bnd |notrack )?(?:j[a-z]+|loop[a-z]*|xbegin) "
_X86_ENTRY_RE = re.compile(_X86_JUMP + r"[01]|\.long \+0x[01])(?=\n)")
_X86_ENTRY_PLAIN_RE = re.compile(r"\n(?:j[a-z]+|loop[a-z]*|xbegin) [01]\n")
_X86_ENTRY_BEHIND_NOP_RE = {
    Machine.X64: re.compile(_X86_JUMP + r"0xfffffffffffffff[ef]|\.long -0x[12])(?=\n)"),
    Machine.X86: re.compile(_X86_JUMP + r"0xfffffff[ef]|\.long -0x[12])(?=\n)"),
}
_ARM64_ENTRY_RE = re.compile(r"\n(?:b|cbn?z|tbn?z|b\.[a-z]+) [^\n]*?#[0-3](?=\n)")

#: The two-byte no-op that /hotpatch puts at a function's entry, per machine.
HOTPATCH_NOPS = {Machine.X64: b"\x66\x90", Machine.X86: b"\x8b\xff", Machine.ARM64: b""}
#: Encodings accepted as that no-op at the entry: ``89 ff`` is the other ``mov edi, edi``,
#: and clang puts ``66 90`` on x86 too.
HOTPATCH_NOP_ENCODINGS = {
    Machine.X64: frozenset((b"\x66\x90",)),
    Machine.X86: frozenset((b"\x8b\xff", b"\x89\xff", b"\x66\x90")),
    Machine.ARM64: frozenset(),
}

# How many bytes at the entry a hot-patch overwrites: a jump back into them makes the
# entry unpatchable.
ENTRY_PATCH_BYTES = {Machine.X64: 2, Machine.X86: 2, Machine.ARM64: 4}

# Reference kinds
CALL = RefKind.CALL
JUMP = RefKind.JUMP
DATA = RefKind.DATA
INDIRECT_CALL = RefKind.INDIRECT_CALL
INDIRECT_JUMP = RefKind.INDIRECT_JUMP


@dataclass(frozen=True, slots=True)
class Ref:
    """One external address in a function's code.

    ``offset`` is the offset (from the function start) of the instruction holding it,
    ``target`` the RVA it designates; ``kind`` is one of ``call`` (direct call),
    ``jump`` (direct jump leaving the function, tail calls included), ``data`` (an
    address taken or read: RIP-relative, x86 absolute with a base relocation, ARM64
    adrp pair, jump-table RVA), ``indirect_call`` / ``indirect_jump`` (through a memory
    slot such as an IAT entry; ``target`` is the slot's RVA).
    """

    offset: int
    kind: RefKind
    target: int


@dataclass(eq=False, slots=True)
class NormalizedCode:
    """The normalised form of one function.

    ``shape``: one line per instruction (``mnemonic operands``, with a trailing space
    when there are no operands) joined by newlines, with external addresses as ``@``
    and addresses inside the function as offsets: direct branch targets as plain
    offsets (``jne 0x34``, ``b.eq #0x34``), other addresses (RIP-relative operands,
    ``adr``, relocated absolutes) as ``+0x34``.  Offsets count from the first
    instruction after the hot-patch no-op (from the function start when there is none),
    so a function that differs only by that no-op has the same shape.  The no-op itself
    is not in the shape, and neither is trailing int3/nop padding.  Compare functions
    with :meth:`key` (each image with its own ``name_of``).

    ``refs``: one :class:`Ref` per ``@`` in ``shape``, in order.  ``Ref.offset`` and
    ``insn_offsets`` are real offsets from the function start (no-op included).

    Jump and index tables inside the function's range (MSVC puts them after the code)
    are shown as data lines, ``.long +0x34`` (an entry pointing into the function) and
    ``.byte 0x00, 0x01, ...``, when the code that uses them was recognised (or, on x64,
    as a run of RVAs after the last ``ret``/``jmp`` of a function chunk); alignment padding
    before a table is not shown (its bytes count with the instruction before); other bytes
    that do not decode are ``.byte`` lines of one byte (four on ARM64).  These lines
    count as instructions in ``insn_offsets``.

    ``internal_targets`` (computed on first use): offsets from the function start of the
    direct jump and call targets and jump-table entries inside the function.
    ``entry_is_branch_target``: one of those, other than a call, lands in the bytes a
    hot-patch overwrites at the entry (offset 0, or 1 on x86/x64); calls to the entry
    (recursion) do not count.

    ``position_dependent``: the normalisation used the function's address beyond the
    external targets (``__ImageBase``-relative tables, tables shown as data), so
    another function with the same bytes elsewhere may normalise differently.
    """

    shape: str
    refs: list[Ref]
    insn_offsets: list[int]
    first_insn_size: int
    hotpatch_nop: bytes
    size: int = 0  # bytes covered by insn_offsets (trailing padding excluded)
    machine: Machine = Machine.X64
    _targets: set[int] | None = field(default=None, repr=False)
    _entry_hit: bool | None = field(default=None, repr=False)
    # The shape depends on where the function is, not only on its bytes: it reads tables
    # through __ImageBase (their displacements are RVAs) or has tables shown as data.
    position_dependent: bool = False

    @property
    def internal_targets(self) -> set[int]:
        if self._targets is None:
            self._scan_branches()
        return self._targets  # type: ignore[return-value]

    @property
    def entry_is_branch_target(self) -> bool:
        if self._entry_hit is None:
            # one search, without collecting every target
            shape = self.shape
            if self.machine is Machine.ARM64:
                rx = _ARM64_ENTRY_RE
            elif self.hotpatch_nop:
                rx = _X86_ENTRY_BEHIND_NOP_RE[self.machine]
            elif ".long" in shape or "bnd " in shape:
                rx = _X86_ENTRY_RE
            else:
                rx = _X86_ENTRY_PLAIN_RE
            self._entry_hit = rx.search("\n" + shape + "\n") is not None
        return self._entry_hit

    def _scan_branches(self) -> None:
        # Every numeric branch target left in the shape is inside the function, relative
        # to the body start (externals are placeholders).
        base = len(self.hotpatch_nop)
        limit = ENTRY_PATCH_BYTES[self.machine]
        targets: set[int] = set()
        hit = False
        text = "\n" + self.shape + "\n"
        if self.machine is Machine.ARM64:
            for m in ARM64_TARGET_RE.finditer(text):
                off = int(m.group(2), 0)
                targets.add(off)
                if off < limit and m.group(1) != "bl":
                    hit = True
        else:
            mask = 0xFFFFFFFF if self.machine is Machine.X86 else 0xFFFFFFFFFFFFFFFF
            for m in X86_TARGET_RE.finditer(text):
                if m.group(3) is not None:  # a jump-table entry
                    off = int(m.group(3), 16) + base
                else:
                    off = (int(m.group(2), 16) + base) & mask
                targets.add(off)
                if off < limit and m.group(1) != "call":
                    hit = True
        self._targets = targets
        self._entry_hit = hit

    def symbolic_refs(self, name_of: Callable[[int], str]) -> tuple[tuple[str, str], ...]:
        """``(kind, name_of(target))`` per ref: compare these across images."""
        return tuple((r.kind, name_of(r.target)) for r in self.refs)

    def key(self, name_of: Callable[[int], str]) -> tuple[str, tuple[tuple[str, str], ...]]:
        """Equal keys (with each image's own ``name_of``) mean the same code."""
        return self.shape, self.symbolic_refs(name_of)

    def listing(self, name_of: Callable[[int], str]) -> list[str]:
        """Per-instruction normalised text with each ``@`` rendered as
        ``name_of(target)``: lines to feed a unified diff."""
        return list(self.iter_listing(name_of))

    def iter_listing(self, name_of: Callable[[int], str]) -> Iterator[str]:
        """:meth:`listing`, one line at a time (targets are named only for the lines
        taken)."""
        if not self.shape:
            return
        refs = self.refs
        i = 0
        for line in self.shape.split("\n"):
            if PLACEHOLDER in line:
                parts = line.split(PLACEHOLDER)
                pieces = [parts[0]]
                for p in parts[1:]:
                    pieces.append(name_of(refs[i].target) if i < len(refs) else PLACEHOLDER)
                    pieces.append(p)
                    i += 1
                line = "".join(pieces)
            yield line.rstrip()


# ---- relocations -------------------------------------------------------------------------
# Bytes under a base relocation are replaced by a sentinel before decoding, so the text
# does not depend on the address stored there, and the sentinel is then found in the
# text.  Consecutive relocations get different sentinels (an instruction can hold two).
_SENTINEL_BASE = {4: 0x3AB7C0D0, 8: 0x3AB7C0D0_00000000}
_N_SENTINELS = 4


def sentinel(width: int, k: int) -> int:
    return _SENTINEL_BASE[width] + k


def apply_relocs(
    code: bytes, rva: int, image_base: int, relocs: Sequence[int], width: int
) -> tuple[bytes, list[tuple[int, int, int]]]:
    """Replace relocated fields by sentinels.  Returns the new code and, per relocation
    inside the code, ``(offset, sentinel index, target RVA)``."""
    if not relocs:
        return code, []
    end = rva + len(code)
    lo = bisect_left(relocs, rva)
    hi = bisect_left(relocs, end - width + 1)
    if lo >= hi:
        return code, []
    buf = bytearray(code)
    out = []
    for i in range(lo, hi):
        off = relocs[i] - rva
        k = (i - lo) % _N_SENTINELS  # counted within the function: layout-independent
        value = int.from_bytes(buf[off : off + width], "little")
        buf[off : off + width] = sentinel(width, k).to_bytes(width, "little")
        out.append((off, k, value - image_base))
    return bytes(buf), out


def line_starts(text: str) -> list[int]:
    """Start of each line of ``text`` (which begins with a newline)."""
    return [m.end() for m in _NL_RE.finditer(text)]


_NL_RE = re.compile(r"\n")


def internal_label(off: int, base: int) -> str:
    d = off - base
    return f"+{d:#x}" if d >= 0 else f"-{-d:#x}"
