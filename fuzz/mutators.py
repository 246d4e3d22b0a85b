"""Mutators: from a seed's bytes and :class:`~fuzz.layout_model.Layout` to a list of edits.

Structure-aware operations pick a field group first (so the few load-config fields are
hit as often as the many relocation entries), then a field, then a value worth trying:
the field's own hints, the file's hints (its size, SizeOfImage, section ends...),
boundary constants, small steps from the current value.  Others break references between
type records into cycles, remove string terminators, swap or duplicate table entries and
copy bytes between regions.  Generic operations flip, set, insert, delete and truncate
bytes anywhere (mostly inside the regions the readers use).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

from .edits import Edit
from .layout_model import Field, Layout

INTERESTING: dict[int, tuple[int, ...]] = {
    1: (0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF),
    2: (0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF, 0x100, 0x1000, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF),
    4: (0, 1, 2, 3, 4, 8, 0x10, 0x7F, 0x80, 0xFF, 0x100, 0x1000, 0x7FFF, 0xFFFF, 0x10000,
        0x100000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF),
    8: (0, 1, 0xFFFFFFFF, 0x100000000, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000,
        0xFFFFFFFFFFFFFFFF),
}
_FMT = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


def _read(data: bytes, f: Field) -> int:
    if f.off + f.size > len(data):
        return 0
    return struct.unpack_from(_FMT[f.size], data, f.off)[0]


def new_value(rng: random.Random, f: Field, cur: int, lay: Layout) -> int:
    mask = (1 << (8 * f.size)) - 1
    r = rng.random()
    if r < 0.35 and (f.hints or lay.hints):
        pool = f.hints if f.hints and (not lay.hints or rng.random() < 0.75) else lay.hints
        v = rng.choice(pool)
    elif r < 0.6:
        v = rng.choice(INTERESTING[f.size])
    elif r < 0.8:
        v = cur + rng.choice((-1, 1)) * rng.choice((1, 2, 3, 4, 8, 16, 0x100, 0x1000))
    elif r < 0.88:
        v = rng.choice((cur * 2, cur >> 1, cur | (1 << (8 * f.size - 1)), cur ^ mask))
    elif r < 0.96:
        v = cur ^ (1 << rng.randrange(8 * f.size))
    else:
        v = rng.getrandbits(8 * f.size)
    v &= mask
    if v == cur:
        v = (cur + 1) & mask
    return v


def _write(f: Field, v: int) -> Edit:
    return ("w", f.off, struct.pack(_FMT[f.size], v))


# ---- structure-aware operations --------------------------------------------------------


def op_field(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    group = lay.groups[rng.choice(sorted(lay.groups))]
    f = rng.choice(group)
    return [_write(f, new_value(rng, f, _read(data, f), lay))]


def op_type_cycle(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    """Make a type reach itself: A -> A, or A -> B -> A, or along a longer chain."""
    ref = rng.choice(lay.type_refs)
    r = rng.random()
    if r < 0.4:
        return [_write(ref.field, ref.owner)]
    by_owner: dict[int, list] = {}
    for t in lay.type_refs:
        by_owner.setdefault(t.owner, []).append(t)
    chain = [ref]
    while len(chain) < (2 if r < 0.8 else 6):
        nxt = by_owner.get(chain[-1].target)
        if not nxt:
            break
        chain.append(rng.choice(nxt))
    return [_write(chain[-1].field, ref.owner)]


def op_unterminate(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    off = rng.choice(lay.terminators)
    return [("w", off, rng.choice((b"A", b"AAAA", b"\xff" * 8, b"\x80")))]


# Text that means something to a renderer, a terminal, a format string or a decoder.
NAME_PAYLOADS = (b"[/]", b"[/bold]", b"[bold]", b"[", b"]", b"[link=file:///x]x", b"\\[x]",
                 b"\x1b[2J\x1b[31m", b"%s%n%x", b"{0}{", b"\xff\xfe\xc3", b"\xc3\xa9\xe2\x82\xac",
                 b"\t\r\n", b"\x7f\x01", b"@@", b"?foo@@YAXXZ", b"a" * 300, b"..\\..\\x", b"\"'<>&")


def op_name(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    """Replace the end of a name (just before its terminating NUL) with a payload."""
    off = rng.choice(lay.terminators)
    payload = rng.choice(NAME_PAYLOADS)
    return [("w", max(0, off - len(payload)), payload)]


def op_text(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    """Insert a payload into a text input (functions file, waivers) at a line start or anywhere."""
    starts = [0] + [i + 1 for i, c in enumerate(data) if c == 0x0A]
    pos = rng.choice(starts) if rng.random() < 0.5 else rng.randrange(len(data) + 1)
    return [("i", pos, rng.choice(NAME_PAYLOADS + (b"\n", b"=", b'"', b"[[waiver]]\n", b"\x00")))]


def op_table(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    tables = [t for t in lay.tables if t.count >= 1]
    t = rng.choice(tables)
    i = rng.randrange(t.count)
    a = t.off + i * t.stride
    r = rng.random()
    if t.count >= 2 and r < 0.5:
        j = rng.randrange(t.count)
        b = t.off + j * t.stride
        ea, eb = data[a : a + t.stride], data[b : b + t.stride]
        if r < 0.25:
            return [("w", a, eb), ("w", b, ea)]  # swap
        return [("w", b, ea)]  # duplicate
    if r < 0.75:
        return [("w", a, bytes(t.stride))]  # zero an entry (a premature terminator)
    # overwrite the terminating entry after the table (an unterminated table)
    end = t.off + t.count * t.stride
    return [("w", end, rng.choice((b"\xff", b"\x41")) * t.stride)]


def op_region_copy(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    _, so, sl = rng.choice(lay.regions)
    _, do, dl = rng.choice(lay.regions)
    n = min(rng.choice((4, 8, 16, 64, 256)), sl, dl)
    src = so + rng.randrange(max(1, sl - n + 1))
    dst = do + rng.randrange(max(1, dl - n + 1))
    return [("w", dst, data[src : src + n])]


def op_region_fill(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    _, off, length = rng.choice(lay.regions)
    n = min(rng.choice((1, 4, 16, 64, 512, 4096)), length)
    pos = off + rng.randrange(max(1, length - n + 1))
    fill = rng.choice((b"\0", b"\xff", b"A", b"\xcc"))
    if rng.random() < 0.3:
        return [("w", pos, rng.randbytes(n))]
    return [("w", pos, fill * n)]


# ---- generic operations ------------------------------------------------------------------


def _pos(rng: random.Random, data: bytes, lay: Layout, width: int = 1) -> int:
    if lay.regions and rng.random() < 0.75:
        _, off, length = rng.choice(lay.regions)
        return off + rng.randrange(max(1, length - width + 1))
    return rng.randrange(max(1, len(data) - width + 1))


def op_flip(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    p = _pos(rng, data, lay)
    if p >= len(data):
        return []
    return [("w", p, bytes([data[p] ^ (1 << rng.randrange(8))]))]


def op_word(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    width = rng.choice((1, 2, 4, 4, 8))
    f = Field("", _pos(rng, data, lay, width), width)
    return [_write(f, new_value(rng, f, _read(data, f), lay))]


def op_random_bytes(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    n = rng.choice((1, 2, 4, 8, 32))
    return [("w", _pos(rng, data, lay, n), rng.randbytes(n))]


def op_insert(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    n = rng.choice((1, 2, 4, 8, 64, 512))
    body = rng.randbytes(n) if rng.random() < 0.5 else bytes(n)
    return [("i", _pos(rng, data, lay), body)]


def op_delete(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    return [("d", _pos(rng, data, lay), rng.choice((1, 2, 4, 8, 64, 512)))]


def op_truncate(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    if lay.cuts and rng.random() < 0.7:
        n = rng.choice(lay.cuts) + rng.choice((0, 0, 0, -1, 1, -4, 4))
    else:
        n = rng.randrange(len(data) + 1)
    return [("t", max(0, n))]


Op = Callable[[random.Random, bytes, Layout], list[Edit]]


def _structure_ops(lay: Layout) -> list[tuple[Op, float]]:
    ops: list[tuple[Op, float]] = []
    if lay.groups:
        ops.append((op_field, 10.0))
    if lay.type_refs:
        ops.append((op_type_cycle, 1.5))
    if lay.terminators:
        ops += [(op_unterminate, 1.0), (op_name, 1.0)]
    if lay.kind == "raw":
        ops.append((op_text, 3.0))
    if any(t.count for t in lay.tables):
        ops.append((op_table, 1.0))
    if lay.regions:
        ops += [(op_region_copy, 0.7), (op_region_fill, 0.7)]
    return ops


_GENERIC: list[tuple[Op, float]] = [(op_flip, 3.0), (op_word, 3.0), (op_random_bytes, 1.0)]
_SHIFTING: list[tuple[Op, float]] = [(op_insert, 1.0), (op_delete, 1.0)]


def _pick(rng: random.Random, ops: list[tuple[Op, float]]) -> Op:
    return rng.choices([o for o, _ in ops], weights=[w for _, w in ops])[0]


def mutate(rng: random.Random, data: bytes, lay: Layout) -> list[Edit]:
    """A list of edits for one seed file: overwrites first (against the seed's layout),
    then possibly an insertion/deletion, then possibly a truncation."""
    n_ops = rng.choices((1, 2, 3, 4, 6, 8), weights=(40, 25, 12, 8, 8, 7))[0]
    structure = _structure_ops(lay)
    edits: list[Edit] = []
    for _ in range(n_ops):
        if structure and rng.random() < 0.7:
            edits += _pick(rng, structure)(rng, data, lay)
        else:
            edits += _pick(rng, _GENERIC)(rng, data, lay)
    if rng.random() < 0.06:
        edits += _pick(rng, _SHIFTING)(rng, data, lay)
    if rng.random() < 0.07:
        edits += op_truncate(rng, data, lay)
    return edits
