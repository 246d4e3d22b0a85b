"""The hot-patch table of a final image as the loader reads it (docs/FORMAT.md): where
it is, its header and base descriptor, its chunks of records, and every check the
loader makes before applying anything.  A table that breaks a check is refused as a
whole, with the reason (:class:`TableRefused`), as the loader refuses it."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pehotpatch.image.machine import Machine
from pehotpatch.image.pe import PEImage

INVERSE = 0x80000000
OBLIGATORY = 0x40000000
RESERVED = 0x3FF03000
TYPE_MASK = 0x000FC000
COUNT_MASK = 0x00000FFF
SITE_RVA, TARGET_RVA = 0x8000, 0x4000

FUNCTION, ABSOLUTE, REL32, CALL_TARGET = 0x1C000, 0x2C000, 0x3C000, 0x44000
INDIRECT, NO_CALL_TARGET, DYNAMIC_VALUE = 0x5C000, 0x64000, 0x78000
TYPE_NAMES = {FUNCTION: "FUNCTION", ABSOLUTE: "ABSOLUTE", REL32: "REL32",
              CALL_TARGET: "CALL_TARGET", INDIRECT: "INDIRECT",
              NO_CALL_TARGET: "NO_CALL_TARGET", DYNAMIC_VALUE: "DYNAMIC_VALUE"}
APPLIED = {FUNCTION, ABSOLUTE, CALL_TARGET, INDIRECT}
MACHINE_FLAGS = {Machine.X86: 0x4, Machine.ARM64: 0x8, Machine.X64: 0x10}
INFO_SIZES = {1: 20, 2: 24, 3: 28, 4: 36}
MAX_TABLE = 16 * 1024 * 1024


class TableRefused(Exception):
    """The loader would not apply this table; ``str()`` says why."""


@dataclass(frozen=True)
class Record:
    site: int
    target: int
    extra: tuple[int, ...]


@dataclass(frozen=True)
class Chunk:
    type: int
    inverse: bool
    records: tuple[Record, ...]

    @property
    def name(self) -> str:
        n = TYPE_NAMES.get(self.type, f"type {self.type:#x}")
        return f"INVERSE {n}" if self.inverse else n


@dataclass(frozen=True)
class LoaderTable:
    rva: int
    size: int
    sequence: int
    extra_words: int
    base_timestamp: int
    base_checksum: int
    base_flags: int
    chunks: tuple[Chunk, ...]


def table_rva(pe: PEImage) -> int:
    lc = pe.load_config
    if lc is None:
        raise TableRefused("the image has no load configuration")
    if lc.hotpatch_table_offset is None:
        raise TableRefused("the load configuration is too small to hold HotPatchTableOffset")
    if lc.hotpatch_table_offset == 0:
        raise TableRefused("HotPatchTableOffset is 0: the image carries no hot-patch table")
    return lc.hotpatch_table_offset


def read_table(pe: PEImage) -> LoaderTable:
    """Decode the table of ``pe`` (the loader copies ``Size`` bytes and reads only them)."""
    rva = table_rva(pe)
    head = pe.try_read(rva, 8)
    if head is None or rva + 8 > pe.size_of_image:
        raise TableRefused(f"HotPatchTableOffset {rva:#x} is outside the image")
    version, size = struct.unpack("<II", head)
    if version not in INFO_SIZES:
        raise TableRefused(f"IMAGE_HOT_PATCH_INFO Version {version} (the loader takes 1 to 4)")
    if size < INFO_SIZES[version] or size > MAX_TABLE or rva + size > pe.size_of_image:
        raise TableRefused(f"table Size {size:#x} does not fit (header {INFO_SIZES[version]} bytes, "
                           f"SizeOfImage {pe.size_of_image:#x})")
    raw = pe.try_read(rva, size)
    if raw is None:
        raise TableRefused("the table is not inside one section")

    def u32(off: int, what: str) -> int:
        if off < 0 or off + 4 > size:
            raise TableRefused(f"{what} at offset {off:#x} is outside the table's {size:#x} bytes")
        return int(struct.unpack_from("<I", raw, off)[0])

    seq = u32(8, "SequenceNumber")
    if seq == 0:
        raise TableRefused("SequenceNumber is 0")
    blist, bcount = u32(12, "BaseImageList"), u32(16, "BaseImageCount")
    if bcount != 1:
        raise TableRefused(f"BaseImageCount is {bcount} (the loader takes exactly 1)")
    extra = u32(24, "ExtraPatchSize") if version >= 3 else 0
    if extra > 64:
        raise TableRefused(f"ExtraPatchSize {extra} is implausible")
    boff = u32(blist, "the base list")
    if boff + 32 > size:
        raise TableRefused(f"IMAGE_HOT_PATCH_BASE at {boff:#x} runs past the table's Size")
    bseq, bflags, bts, bsum = (u32(boff + i, "IMAGE_HOT_PATCH_BASE") for i in (0, 4, 8, 12))
    del bseq
    pos = u32(boff + 24, "PatchTable")
    chunks: list[Chunk] = []
    stride = 4 * (2 + extra)
    while True:
        hdr = u32(pos, "chunk header (no terminating 0)")
        if hdr == 0:
            break
        if hdr & RESERVED:
            raise TableRefused(f"chunk at {pos:#x}: reserved bits set ({hdr:#010x})")
        if hdr & OBLIGATORY:
            raise TableRefused(f"chunk at {pos:#x}: OBLIGATORY chunks are refused")
        rtype, inverse, count = hdr & TYPE_MASK, bool(hdr & INVERSE), hdr & COUNT_MASK
        if not inverse and rtype != FUNCTION:
            raise TableRefused(f"chunk at {pos:#x}: a forward chunk of type {rtype:#x} (only FUNCTION)")
        if rtype == INDIRECT and not inverse:
            raise TableRefused(f"chunk at {pos:#x}: INDIRECT must be INVERSE")
        if rtype not in APPLIED:
            raise TableRefused(f"chunk at {pos:#x}: type {TYPE_NAMES.get(rtype, hex(rtype))} "
                               "is not applied by the loader")
        if pos + 4 + count * stride > size:
            raise TableRefused(f"chunk at {pos:#x}: {count} records run past the table's Size")
        recs = []
        for i in range(count):
            words = struct.unpack_from(f"<{2 + extra}I", raw, pos + 4 + i * stride)
            recs.append(Record(words[0], words[1], tuple(words[2:])))
        chunks.append(Chunk(rtype, inverse, tuple(recs)))
        pos += 4 + count * stride
    return LoaderTable(rva, size, seq, extra, bts, bsum, bflags, tuple(chunks))


def check_against(table: LoaderTable, base: PEImage, patch: PEImage) -> None:
    """The loader's checks that need both images: the base's identity, the machine, and
    every record's sites and targets inside the images they belong to."""
    if (table.base_timestamp, table.base_checksum) != (base.timestamp, base.checksum):
        raise TableRefused(
            f"the table is for a base with TimeDateStamp {table.base_timestamp:#010x} and CheckSum "
            f"{table.base_checksum:#010x}; this base has {base.timestamp:#010x} and {base.checksum:#010x}")
    mflag = table.base_flags & 0x1C
    if mflag not in (0, MACHINE_FLAGS[patch.machine]):
        raise TableRefused(f"IMAGE_HOT_PATCH_BASE Flags {table.base_flags:#x} name another machine")
    ptr = patch.machine.pointer_size
    for c in table.chunks:
        site_img, ref_img = (patch, base) if c.inverse else (base, patch)
        if c.type == FUNCTION:
            off, n = (0, 8) if patch.machine is Machine.ARM64 else (-6, 8)
        else:
            off, n = 0, ptr
        for r in c.records:
            if c.type == FUNCTION and r.site < 0x10:
                raise TableRefused(f"{c.name} record site {r.site:#x} is below 0x10")
            if c.type & SITE_RVA and (r.site + off < 0 or r.site + off + n > site_img.size_of_image):
                raise TableRefused(f"{c.name} record site {r.site:#x} is outside the "
                                   f"{'patch' if c.inverse else 'base'} image")
            if c.type & TARGET_RVA and r.target + ptr > ref_img.size_of_image:
                raise TableRefused(f"{c.name} record target {r.target:#x} is outside the "
                                   f"{'base' if c.inverse else 'patch'} image")
