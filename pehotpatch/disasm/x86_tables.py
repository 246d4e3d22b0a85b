"""Jump and index tables inside an x86/x64 function's code range.

MSVC places a switch's jump table (4-byte addresses) and index table (1-byte entries)
after the function's code, inside its ``.pdata`` range.  Decoded as instructions they
are garbage that moves with the layout; the normaliser finds their byte ranges here and
decodes the code around them, rendering the tables as ``.long``/``.byte`` data lines.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate

from pehotpatch.disasm._decode import Decoder
from pehotpatch.disasm.model import internal_label

# A table inside the function: (offset, entry size); regions: (start, end, kind)
Table = tuple[int, int]
Region = tuple[int, int, str]

X86_PAD = frozenset((b"int3", b"nop"))
_NL = "\n"
_BYTES_PER_LINE = 16
# A run of 4-byte values after the code is taken for an RVA table when they are this
# close to the function.
NEAR_RVA = 0x1000000
_FLOW_END = frozenset((b"ret", b"jmp", b"int3", b"ud2", b"nop", b"notrack jmp"))


def table_scale(before: str) -> int:
    """Entry size of a table whose address is the operand after ``before`` (the line's
    text so far): ``[reg*4 + T]`` -> 4, ``byte ptr [reg + T]`` -> 1, else 0."""
    line = before[before.rfind(_NL) + 1 :]
    if line.endswith("*4 + "):
        return 4
    if line.endswith(" + ") and "byte ptr [" in line:
        return 1
    return 0


def table_regions(code: bytes, rva: int, va_bias: int, tables: list[Table]) -> list[Region]:
    """Byte ranges of the tables: a table of 4-byte entries lasts while its entries are
    addresses inside the function (RVAs on x64, VAs on x86: ``va_bias`` is the image
    base then); a table of 1-byte entries lasts until the next table or the end of the
    code (trailing int3 padding excluded)."""
    n = len(code)
    starts = sorted({off for off, _s in tables if 0 <= off < n})
    regions: list[Region] = []
    for off, scale in sorted(set(tables)):
        if not 0 <= off < n or any(a <= off < e for a, e, _k in regions):
            continue
        i = bisect_right(starts, off)
        nxt = starts[i] if i < len(starts) else n
        if scale == 4:
            e = off
            while e + 4 <= nxt:
                t = int.from_bytes(code[e : e + 4], "little") - va_bias - rva
                if not 0 <= t < n:
                    break
                e += 4
            if e > off:
                regions.append((off, e, "long"))
        else:
            e = nxt
            if e == n:
                while e > off + 1 and code[e - 1] == 0xCC:
                    e -= 1
            regions.append((off, e, "byte"))
    regions.sort()
    return regions


def trailing_rva_table(
    code: bytes,
    rva: int,
    pairs: list[tuple[bytes, bytes]],
    sizes: bytes,
    regions: list[Region],
) -> Region | None:
    """A table of RVAs at the end of the code that nothing in this range uses (x64):
    at least two 4-byte values at aligned addresses, each within ``NEAR_RVA`` of the
    function, running to the end of the code (int3 padding excluded) and starting where
    an instruction ending the flow (``ret``/``jmp``, then maybe ``nop``/``int3``
    padding) ended."""
    end = len(code)
    while end > 0 and code[end - 1] == 0xCC:
        end -= 1
    if (rva + end) & 3 or end < 8 or any(e > end - 4 for _a, e, _k in regions):
        return None
    lo_ok, hi_ok = rva - NEAR_RVA, rva + NEAR_RVA
    p = end - 4
    while p >= 0 and lo_ok <= int.from_bytes(code[p : p + 4], "little") < hi_ok:
        p -= 4
    t = p + 4
    floor = max((e for _a, e, _k in regions), default=0)
    ends = list(accumulate(sizes))
    while t <= end - 8:
        if t >= floor:
            i = bisect_right(ends, t) - 1  # the instruction that ends at t, if any
            if i >= 0 and ends[i] == t:
                while i > 0 and pairs[i][0] in (b"nop", b"int3"):
                    i -= 1
                if pairs[i][0] in _FLOW_END and int.from_bytes(code[t : t + 4], "little") >= 0x1000:
                    return (t, end, "long")
        t += 4
    return None


_MIN_LEADING_ENTRIES = 4


def leading_rva_table(code: bytes, rva: int, regions: list[Region]) -> Region | None:
    """A table of RVAs at the start of the range (x64): MSVC gives a function's tail its
    own ``.pdata`` entry, and a switch table placed before that tail's code then opens
    it.  At least four aligned 4-byte values from offset 0, each at least 0x1000 and
    within ``NEAR_RVA`` of the function."""
    if rva & 3 or any(a < 4 * _MIN_LEADING_ENTRIES for a, _e, _k in regions):
        return None
    lo_ok, hi_ok = max(0x1000, rva - NEAR_RVA), rva + NEAR_RVA
    e = 0
    n = len(code) - 3
    while e < n and lo_ok <= int.from_bytes(code[e : e + 4], "little") < hi_ok:
        e += 4
    if e < 4 * _MIN_LEADING_ENTRIES:
        return None
    floor = min((a for a, _e, _k in regions), default=len(code))
    return (0, min(e, floor), "long")


def decode_around(
    dec: Decoder, dcode: bytes, code: bytes, rva: int, image_base: int, x64: bool, base: int,
    regions: list[Region],
) -> tuple[list[tuple[bytes, bytes]], bytes]:  # fmt: skip
    """Decode the code between ``regions`` and render the regions as data lines:
    ``.long +0x..`` (an address inside the function, as an offset) or ``.byte``."""
    mask = 0xFFFFFFFFFFFFFFFF if x64 else 0xFFFFFFFF
    bias = 0 if x64 else image_base
    pairs: list[tuple[bytes, bytes]] = []
    sizes = bytearray()
    pos = 0
    for a, e, kind in [*regions, (len(code), len(code), "")]:
        if pos < a:
            p, sz = dec.decode(dcode[pos:a], (pos - base) & mask)
            if kind:
                # alignment padding before a table depends on the address
                k = len(p)
                while k > 0 and p[k - 1][0] in X86_PAD:
                    k -= 1
                if 0 < k < len(p) and sz[k - 1] + sum(sz[k:]) < 256:
                    # counted with the instruction before it, and not shown
                    p = p[:k]
                    sz = sz[: k - 1] + bytes((sz[k - 1] + sum(sz[k:]),))
            pairs += p
            sizes += sz
        if kind == "long":
            for o in range(a, e, 4):
                t = int.from_bytes(code[o : o + 4], "little") - bias
                if rva <= t < rva + len(code):
                    pairs.append((b".long", internal_label(t - rva, base).encode()))
                else:  # outside: made a ref by the pass
                    pairs.append((b".long", f"{t:#x}".encode()))
                sizes.append(4)
        elif kind == "byte":
            for o in range(a, e, _BYTES_PER_LINE):
                chunk = code[o : min(o + _BYTES_PER_LINE, e)]
                pairs.append((b".byte", ", ".join(f"{b:#04x}" for b in chunk).encode()))
                sizes.append(len(chunk))
        pos = max(pos, e)
    return pairs, bytes(sizes)
